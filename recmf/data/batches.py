"""Batches as slices of device-resident index tensors, never per-sample Dataset items.

Per-sample datasets with a collate function are the trap measured in the design notes (about
0.08 M samples/s against 118 M for a plain loop); here an epoch is one permutation on the device
and every batch is a slice of it.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from recmf.checks import USER_BATCHED
from recmf.data.sparse import UserItems
from recmf.data.split import Split, recency_weights, sample_users


class _Epochs:
    """Base of the batch iterables: one fresh permutation per pass, the same on every rank.

    ``batch_size`` is the global batch: under DDP, rank r of w takes positions r, r+w, ... of
    each global batch, so the ranks' slices are disjoint, cover the epoch, and every rank takes
    the same number of steps (what DDP's gradient all-reduce needs).
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch = 0
        self.epoch_fn = None  # the trainer's epoch, so a resumed fit draws what it would have
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cpu")

    def _local_batches(self):
        """This rank's index slices of this epoch's permutation, one per global batch."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=gen, device=self.device)
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield perm[start : start + self.batch_size][self.rank :: self.world_size]

    def _sync_epoch(self) -> None:
        if self.epoch_fn is not None:
            self.epoch = self.epoch_fn()

    def _generator(self) -> torch.Generator:
        """Seeded per epoch and rank, so ranks draw different negatives."""
        seed = self.seed + 7919 * self.epoch + 104_729 * self.rank
        return torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        # a last global batch too small to give every rank a sample is dropped
        return max(1, full + (rest >= self.world_size))


class UserChunks(_Epochs):
    """Chunks of users with all their training items, for losses over the whole catalogue."""

    def __init__(self, users: torch.Tensor, items: UserItems, batch_size: int, seed: int):
        super().__init__(len(users), batch_size, seed)
        self.users, self.items = users, items

    def __iter__(self):
        self._sync_epoch()
        for local in self._local_batches():
            users = self.users[local]
            rows, cols, weights = self.items.weighted_rows(users)
            yield {"users": users, "rows": rows, "cols": cols, "weights": weights}


class InteractionSlices(_Epochs):
    """Slices of shuffled interactions, with negatives drawn uniformly on the device."""

    def __init__(self, user_idx, item_idx, rating, weights, n_items, n_negatives, batch_size, seed):
        super().__init__(len(user_idx), batch_size, seed)
        self.user_idx, self.item_idx, self.rating = user_idx, item_idx, rating
        self.weights = weights
        self.n_items, self.n_negatives = n_items, n_negatives

    def __iter__(self):
        self._sync_epoch()
        gen = self._generator()
        for rows in self._local_batches():
            batch = {"users": self.user_idx[rows], "items": self.item_idx[rows], "weights": None}
            if self.weights is not None:
                batch["weights"] = self.weights[rows]
            if self.n_negatives:
                shape = (len(rows), self.n_negatives)
                batch["negatives"] = torch.randint(
                    self.n_items, shape, generator=gen, device=self.device
                )
            if self.rating is not None:
                batch["ratings"] = self.rating[rows]
            yield batch


class ValUsers:
    """Chunks of the users who have validation items (or a sample of them, ``val_users``; no
    shuffling), each batch carrying what ranking them needs, so the module reads its batches and
    nothing else.

    A batch is ``{"users", "exclude", "truth", "ratings", "candidates"}``: ``users`` a slice
    of the users to rank; ``exclude`` (their training items) and ``truth`` (their validation
    items) the whole CSR tables, by reference (ranking indexes them by user; nothing is
    copied); ``ratings`` the validation (user, item, rating) triple for ``val/rmse``, on the
    first batch only (None on the others), so the RMSE stays one mean over all of them;
    ``candidates`` a boolean mask of the items ranked (None: all; ``Split.val_candidates``).
    """

    def __init__(
        self,
        users: torch.Tensor,
        chunk_size: int,
        exclude: UserItems,
        truth: UserItems,
        ratings: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        candidates: torch.Tensor | None = None,
    ):
        self.users, self.chunk_size = users, chunk_size
        self.exclude, self.truth, self.ratings = exclude, truth, ratings
        self.candidates = candidates

    def __iter__(self):
        for start in range(0, len(self.users), self.chunk_size):
            yield {
                "users": self.users[start : start + self.chunk_size],
                "exclude": self.exclude,
                "truth": self.truth,
                "ratings": self.ratings if start == 0 else None,
                "candidates": self.candidates,
            }

    def __len__(self) -> int:
        return max(1, -(-len(self.users) // self.chunk_size))


class InteractionsDataModule(L.LightningDataModule):
    """Serves a :class:`Split` to Lightning as device-resident tensors.

    It owns its batches and their placement through Lightning's hooks: :meth:`setup` moves every
    index tensor to the trainer's root device once and gives the training batches this rank's
    share and the trainer's epoch; :meth:`transfer_batch_to_device` then has nothing to move.
    The validation batches carry the items to exclude, the truth and the validation ratings
    (see :class:`ValUsers`), so the LightningModule never reads this object.

    Args:
        split: Train/validation/test interactions.
        loss: Decides the batch shape: chunks of users for ``softmax``, interactions otherwise.
        batch_size: Users per batch for user-batched losses, interactions per batch otherwise.
        n_negatives: Negatives per positive for ``bpr``/``bce``.
        eval_chunk_size: Users per validation chunk.
        seed: Seeds the per-epoch permutations and negatives.
        recency: Weighs each user's training rows by ``exp(-recency * age)``, age 0 for the
            latest and 1 for the oldest (see :func:`recmf.data.split.recency_weights`); 0 = equal.
            A sequence of strengths gives (pairs, strengths) weights (user-batched losses only).
        fade: :func:`~recmf.data.split.recency_weights`' ``fade``: one value, or one per strength.
        val_users: Validation ranks at most this many of the users with validation items, drawn
            by ``seed`` (:func:`recmf.data.split.sample_users`); 0 = all of them.
    """

    def __init__(
        self,
        split: Split,
        loss: str,
        batch_size: int,
        n_negatives: int = 1,
        eval_chunk_size: int = 2048,
        seed: int = 0,
        recency: float | tuple[float, ...] = 0.0,
        val_users: int = 0,
        fade: bool | tuple[bool, ...] = False,
    ):
        super().__init__()
        self.split, self.loss = split, loss
        self.batch_size, self.n_negatives = batch_size, n_negatives
        self.eval_chunk_size, self.seed = eval_chunk_size, seed
        n_users = split.train.n_users
        train = split.train
        if isinstance(recency, int | float):
            self.weights = recency_weights(train, recency, bool(fade)) if recency else None
        else:  # one column per strength: the candidates of a selection race (recmf.model.race)
            fades = (fade,) * len(recency) if isinstance(fade, bool) else fade
            self.weights = np.stack(
                [recency_weights(train, r, f) for r, f in zip(recency, fades, strict=True)], axis=1
            )
        pair_weights = self.weights if loss in USER_BATCHED else None  # only softmax reads them
        self.train_items = UserItems.from_pairs(
            train.user_idx, train.item_idx, n_users, pair_weights
        )
        self.val_items = UserItems.from_pairs(split.val.user_idx, split.val.item_idx, n_users)
        self._train = self._make_train_batches()
        val = split.val
        rated = ~np.isnan(val.rating)  # (user, item, rating) of validation, for val/rmse
        self.val_ratings = tuple(
            torch.from_numpy(np.ascontiguousarray(a[rated]))
            for a in (
                val.user_idx.astype(np.int64),
                val.item_idx.astype(np.int64),
                val.rating.astype(np.float32),
            )
        )
        # at most ~16M scores (64 MB) per validation chunk: 2048 users x 27k items was 221 MB
        chunk = max(64, min(eval_chunk_size, (1 << 24) // max(1, train.n_items)))
        ranked = torch.nonzero(self.val_items.counts() > 0).squeeze(1)
        # a sample of them when asked: at 20M rows a pass over all 138k users took ~10 s
        ranked = torch.from_numpy(sample_users(ranked.numpy(), val_users, seed))
        candidates = None
        if split.val_candidates is not None:
            candidates = torch.zeros(train.n_items, dtype=torch.bool)
            candidates[torch.as_tensor(split.val_candidates, dtype=torch.long)] = True
        self._val = ValUsers(
            ranked, chunk, self.train_items, self.val_items, self.val_ratings, candidates
        )

    def _make_train_batches(self) -> _Epochs:
        train = self.split.train
        if self.loss in USER_BATCHED:
            users = torch.nonzero(self.train_items.counts() > 0).squeeze(1)
            return UserChunks(users, self.train_items, self.batch_size, self.seed)
        rating = None
        if self.loss == "mse":
            rating = torch.from_numpy(np.asarray(train.rating, dtype=np.float32))
        return InteractionSlices(
            # the split's own (int32) arrays, shared: no second copy (embeddings take int32)
            torch.from_numpy(np.ascontiguousarray(train.user_idx)),
            torch.from_numpy(np.ascontiguousarray(train.item_idx)),
            rating,
            None if self.weights is None else torch.from_numpy(self.weights),
            train.n_items,
            0 if self.loss == "mse" else self.n_negatives,
            self.batch_size,
            self.seed,
        )

    def to(self, device: torch.device, rank: int = 0, world_size: int = 1, epoch_fn=None) -> None:
        """Move every index tensor to ``device`` once; batches are then slices on that device."""
        self.train_items = self.train_items.to(device)
        self.val_items = self.val_items.to(device)
        t = self._train
        t.device, t.rank, t.world_size = torch.device(device), rank, world_size
        t.epoch_fn = epoch_fn
        for name in ("users", "user_idx", "item_idx", "rating", "weights"):
            if getattr(t, name, None) is not None:
                setattr(t, name, getattr(t, name).to(device))
        if isinstance(t, UserChunks):
            t.items = self.train_items
        self.val_ratings = tuple(t.to(device) for t in self.val_ratings)
        v = self._val
        v.users, v.exclude, v.truth = v.users.to(device), self.train_items, self.val_items
        v.ratings = self.val_ratings
        if v.candidates is not None:
            v.candidates = v.candidates.to(device)

    def setup(self, stage: str) -> None:
        """Lightning's hook, on every rank before the first batch: place the batches on the
        trainer's root device, with this rank's share of each global batch and the trainer's
        epoch (so a resumed fit draws what an uninterrupted one would have)."""
        trainer = self.trainer
        if trainer is None:  # a bare data module: CPU batches, rank 0 of 1
            return
        self.to(
            trainer.strategy.root_device,
            trainer.global_rank,
            trainer.world_size,
            lambda: trainer.current_epoch,
        )

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Nothing to move: :meth:`setup` put every tensor on the device, so the batches are born
        there (Lightning's default would still walk each batch and rebuild its CSR tables)."""
        return batch

    def train_dataloader(self):
        return self._train

    def val_dataloader(self):
        return self._val
