"""The dot-product matrix factorization, a plain ``nn.Module`` that knows nothing of Lightning."""

from __future__ import annotations

import torch
from torch import nn


class MatrixFactorization(nn.Module):
    """score(u, i) = <p_u, q_i> + b_i + b_u + b, with the biases optional.

    Args:
        n_users: Rows of the user table.
        n_items: Rows of the item table.
        latent_dim: Embedding width.
        use_bias: Learn user, item and global biases.
        init_std: Standard deviation of the normal initialisation of the embeddings.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        latent_dim: int,
        use_bias: bool = True,
        init_std: float = 0.1,
    ):
        super().__init__()
        self.n_users, self.n_items, self.latent_dim = n_users, n_items, latent_dim
        self.use_bias = use_bias
        self.user_emb = nn.Embedding(n_users, latent_dim)
        self.item_emb = nn.Embedding(n_items, latent_dim)
        nn.init.normal_(self.user_emb.weight, std=init_std)
        nn.init.normal_(self.item_emb.weight, std=init_std)
        if use_bias:
            self.user_bias = nn.Embedding(n_users, 1)
            self.item_bias = nn.Embedding(n_items, 1)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)
            self.global_bias = nn.Parameter(torch.zeros(()))

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Scores of aligned (user, item) pairs, shape (B,)."""
        score = (self.user_emb(user_idx) * self.item_emb(item_idx)).sum(-1)
        if self.use_bias:
            score = score + self.user_bias(user_idx).squeeze(-1)
            score = score + self.item_bias(item_idx).squeeze(-1) + self.global_bias
        return score

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        """Scores of the given users against every item, shape (B, n_items)."""
        return product_scores(*self.score_parts(user_idx))

    def rank_scores(self, user_idx: torch.Tensor) -> torch.Tensor:
        """:meth:`score_all` less each user's own bias: the same order within each row, one
        pass over the (B, n_items) scores fewer (validation of 138k x 27k: ~6.0 -> ~4.7 s)."""
        users, _, items, item_bias = self.score_parts(user_idx)
        return product_scores(users, None, items, item_bias)

    def score_parts(self, user_idx: torch.Tensor):
        """What :meth:`score_all` adds up, unadded: (user vectors (B, d), user biases (B,) with
        the global one, item vectors (n_items, d), item biases (n_items,)); biases None
        without them (:func:`recmf.model.losses.full_softmax_loss` takes these)."""
        users = self.user_emb(user_idx)
        if not self.use_bias:
            return users, None, self.item_emb.weight, None
        bu = self.user_bias(user_idx).squeeze(-1) + self.global_bias
        return users, bu, self.item_emb.weight, self.item_bias.weight.view(-1)

    def hparams(self) -> dict:
        """Constructor arguments, to rebuild the module from saved weights."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "latent_dim": self.latent_dim,
            "use_bias": self.use_bias,
        }


def product_scores(
    u: torch.Tensor, bu: torch.Tensor | None, v: torch.Tensor, bi: torch.Tensor | None
) -> torch.Tensor:
    """``u @ v.T + bi + bu``, (B, n_items), from a model's :meth:`score_parts`.

    The item bias inside the product (addmm), the user's added in place (the product's backward
    does not read its output): no (B, n_items) temporaries, which were half of a validation pass
    (scores and top-10 of 34k users x 6.8k items in 2048-user chunks, dim 64: 1.86 -> 0.86 s;
    same values and gradients, checked to the bit).

    With a leading dimension K (``u`` (K, B, d), ``bu`` (K, B), ``v`` (K, n_items, d), ``bi``
    (K, n_items)): K models' scores at once, (K, B, n_items), by batched products.
    """
    if u.dim() == 3:
        if bi is None:
            scores = torch.bmm(u, v.transpose(1, 2))
        else:
            scores = torch.baddbmm(bi.unsqueeze(1), u, v.transpose(1, 2))
        return scores if bu is None else scores.add_(bu.unsqueeze(2))
    if bi is None:
        scores = u @ v.T
    else:  # bi as a (1, n_items) view: strides DDP accepts
        scores = torch.addmm(bi.view(1, -1), u, v.T)
    return scores if bu is None else scores.add_(bu.view(-1, 1))


# The item bias of an item no training pair holds (with the full softmax): its embedding is zero,
# so every user scores it this far below any item the model learnt (a full softmax would only
# push it down for ever: the model's probability of an item it never saw is ~0).
UNTRAINED_BIAS = -1e4


class Catalogue(nn.Module):
    """The items a full softmax runs over: those with a pair in the training part. The others
    (on a temporal split, items rated only in the latest rows: 26% of ml-latest-small's) can
    never be relevant in validation or test (:func:`recmf.data.split.temporal_split` drops such
    rows), so they are pinned below every trained item (:meth:`pin`) and left out of every
    softmax step and ranking pass (ml-latest-small temporal: a fourth fewer scores each).

    ``items`` (T,) the trained items, sorted; ``position`` (n_items,) each item's place among
    them, -1 for an untrained one. Buffers: they move with the module that holds this one.
    """

    def __init__(self, trained: torch.Tensor, n_items: int):
        super().__init__()
        items = torch.nonzero(trained).squeeze(1) if trained.dtype == torch.bool else trained
        position = torch.full((n_items,), -1, dtype=torch.long)
        position[items] = torch.arange(len(items))
        self.register_buffer("items", items.long(), persistent=False)
        self.register_buffer("position", position, persistent=False)

    @classmethod
    def of(cls, item_counts: torch.Tensor) -> Catalogue | None:
        """The catalogue of items with a positive count, or None when that is every item."""
        trained = item_counts > 0
        return None if bool(trained.all()) else cls(trained, len(item_counts))

    @torch.no_grad()
    def pin(self, model: MatrixFactorization) -> None:
        """Zero the untrained items' embeddings and set their biases to :data:`UNTRAINED_BIAS`
        (``model`` has biases): no step changes them (they get no gradient), and no user ranks
        them above a trained item."""
        untrained = self.position < 0
        model.item_emb.weight[untrained] = 0.0
        model.item_bias.weight[untrained] = UNTRAINED_BIAS

    def select(self, table: torch.Tensor, dim: int) -> torch.Tensor:
        """The trained items' entries of ``table`` along ``dim``."""
        return table.index_select(dim, self.items)
