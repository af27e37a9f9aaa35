"""Training losses. Ranking losses are the default: MSE on ratings ranks poorly (see README)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recmf.checks import LOSSES, USER_BATCHED  # noqa: F401  (names live where configs are checked)


def _mean(per_pair: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over positive pairs, weighted when weights are given (shape (P,) or (P, n_neg))."""
    if weights is None:
        return per_pair.mean()
    if per_pair.dim() == 2:
        per_pair = per_pair.mean(1)
    return (per_pair * weights).sum() / weights.sum()


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor, weights=None) -> torch.Tensor:
    """-log sigma(s_pos - s_neg), averaged; ``neg`` is (B,) or (B, n_neg)."""
    if neg.dim() == 2:
        pos = pos.unsqueeze(1)
    return _mean(-F.logsigmoid(pos - neg), weights)


def bce_loss(pos: torch.Tensor, neg: torch.Tensor, weights=None) -> torch.Tensor:
    """Binary cross-entropy with positives labelled 1 and sampled negatives 0."""
    return _mean(F.softplus(-pos), weights) + _mean(F.softplus(neg), weights)


def softmax_loss(
    logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weights=None
) -> torch.Tensor:
    """Full-softmax cross-entropy of each (row, item) pair against the whole catalogue.

    Args:
        logits: (B, n_items) scores of a chunk of users.
        rows: (P,) row in the chunk of each positive pair.
        cols: (P,) item of each positive pair.
        weights: (P,) optional weight of each pair.
    """
    # the pairs' log-softmax as logit - logsumexp: indexing a log_softmax output with [rows, cols]
    # backpropagates through an accumulating index_put, a third of a step on CPU
    picked = logits.flatten().index_select(0, rows * logits.shape[1] + cols)
    return _mean(torch.logsumexp(logits, 1).index_select(0, rows) - picked, weights)


def mse_loss(pred: torch.Tensor, rating: torch.Tensor, weights=None) -> torch.Tensor:
    return _mean((pred - rating) ** 2, weights)
