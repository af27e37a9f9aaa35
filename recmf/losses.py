"""Training losses. Ranking losses are the default: MSE on ratings ranks poorly (see README)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recmf.checks import LOSSES, USER_BATCHED  # noqa: F401  (names live where configs are checked)


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """-log sigma(s_pos - s_neg), averaged; ``neg`` is (B,) or (B, n_neg)."""
    if neg.dim() == 2:
        pos = pos.unsqueeze(1)
    return -F.logsigmoid(pos - neg).mean()


def bce_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with positives labelled 1 and sampled negatives 0."""
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def softmax_loss(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Full-softmax cross-entropy of each (row, item) pair against the whole catalogue.

    Args:
        logits: (B, n_items) scores of a chunk of users.
        rows: (P,) row in the chunk of each positive pair.
        cols: (P,) item of each positive pair.
    """
    log_probs = torch.log_softmax(logits, dim=1)
    return -log_probs[rows, cols].mean()


def mse_loss(pred: torch.Tensor, rating: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, rating)
