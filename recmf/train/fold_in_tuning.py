"""The fold-in constants of a bundle, chosen on validation at the end of training.

Users with validation items are folded in from their training items alone
(:func:`recmf.serve.fold_in.fold_in`) and ranked on their validation items, for each point of
:data:`GRID`; the bundle keeps the best.
"""

from __future__ import annotations

import numpy as np

from recmf.data.split import user_time_order
from recmf.serve.fold_in import fold_in, fold_in_scores

GRID = [{"reg": reg, "recency": recency} for reg in (1.0, 3.0, 10.0, 30.0) for recency in (0, 1, 3)]


def histories_of(users: np.ndarray, user_idx, item_idx, timestamp) -> list[np.ndarray]:
    """Each of ``users``' items in time order (earliest first), from aligned row arrays."""
    keep = np.isin(user_idx, users)
    u, i, t = user_idx[keep], item_idx[keep], timestamp[keep]
    order = user_time_order(u, t, i)
    u, i = u[order], i[order]
    bounds = np.searchsorted(u, users), np.searchsorted(u, users, side="right")
    return [i[lo:hi] for lo, hi in zip(*bounds, strict=True)]


def evaluate_fold_in(
    weights: dict[str, np.ndarray],
    users: np.ndarray,
    histories: list[np.ndarray],
    exclude,
    truth,
    k: int,
    **params: float,
) -> float:
    """NDCG@k of ``users`` (global indices, sorted) folded in from ``histories`` (their items in
    time order), ranked with ``exclude`` (a :class:`~recmf.data.sparse.UserItems`) left out, against
    ``truth``."""
    import torch

    from recmf.eval.ranking import evaluate_ranking

    x = fold_in(weights, histories, **params)
    row_of = np.full(exclude.n_users, -1, dtype=np.int64)
    row_of[users] = np.arange(len(users))
    scores = torch.from_numpy(fold_in_scores(weights, x))

    def score_fn(chunk: torch.Tensor) -> torch.Tensor:
        return scores[torch.from_numpy(row_of[chunk.numpy()])]

    n_items = weights["item_emb"].shape[0]
    result, _ = evaluate_ranking(score_fn, truth, exclude, [k], n_items)
    return float(result[f"ndcg_at_{k}"])


def tune(weights: dict[str, np.ndarray], split, k: int, max_users: int = 1000, seed: int = 0):
    """The constants of :data:`GRID` with the best validation NDCG@k when users with validation
    items are folded in from their training items alone (up to ``max_users``)."""
    from recmf.data.sparse import UserItems

    n_users = split.train.n_users
    train = UserItems.from_pairs(split.train.user_idx, split.train.item_idx, n_users)
    counts = (train.counts() > 0).numpy()
    val_users = np.unique(split.val.user_idx)
    val_users = val_users[counts[val_users]]
    rng = np.random.default_rng(seed)
    if len(val_users) > max_users:
        val_users = np.sort(rng.choice(val_users, max_users, replace=False))
    keep = np.isin(split.val.user_idx, val_users)
    truth = UserItems.from_pairs(split.val.user_idx[keep], split.val.item_idx[keep], n_users)
    tr = split.train
    hist = histories_of(val_users, tr.user_idx, tr.item_idx, tr.timestamp)
    scores = [evaluate_fold_in(weights, val_users, hist, train, truth, k, **p) for p in GRID]
    best = int(np.argmax(scores))
    return {"params": GRID[best], f"val_ndcg_at_{k}": scores[best], "users": len(val_users)}
