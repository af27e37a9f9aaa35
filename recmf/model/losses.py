"""Training losses. Ranking losses are the default: MSE on ratings ranks poorly (see README)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recmf.checks import LOSSES, USER_BATCHED  # noqa: F401  (names live where configs are checked)
from recmf.model.mf import product_scores


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


class _FullSoftmax(torch.autograd.Function):
    """:func:`full_softmax_loss`'s forward and backward over one (K, B, n_items) buffer."""

    @staticmethod
    def forward(ctx, u, bu, v, bi, rows, cols, weights):
        scores = product_scores(u, bu, v, bi)  # (K, B, n_items)
        flat = rows * scores.shape[2] + cols
        picked = scores.view(len(scores), -1).index_select(1, flat)  # (K, P)
        top = scores.amax(2, keepdim=True)
        exp = scores.sub_(top).exp_()  # in place: the buffer now holds exp(s - max)
        sums = exp.sum(2)  # (K, B)
        lse = top.squeeze(2) + sums.log()
        w = torch.ones_like(picked) if weights is None else weights.to(picked.dtype)
        total = w.sum(1)  # (K,)
        ctx.save_for_backward(u, v, flat, rows, w, sums, total)
        ctx.exp, ctx.has_bu, ctx.has_bi = exp, bu is not None, bi is not None
        return ((lse.index_select(1, rows) - picked) * w).sum(1) / total

    @staticmethod
    def backward(ctx, grad):
        u, v, flat, rows, w, sums, total = ctx.saved_tensors
        g, ctx.exp = ctx.exp, None
        # d loss / d s = (row weight / total) * softmax(s) - (pair weight / total) at the pairs
        grad, total = grad.unsqueeze(1), total.unsqueeze(1)  # (K, 1)
        share = torch.zeros_like(sums).index_add_(1, rows, w) / total
        g.mul_((share * grad / sums).unsqueeze(2))
        g.view(len(g), -1).index_add_(1, flat, w * (-grad / total))
        du, dv = torch.bmm(g, v), torch.bmm(g.transpose(1, 2), u)
        dbi = g.sum(1) if ctx.has_bi else None
        # a row's softmax gradient sums to zero: the user's bias cannot change its loss
        dbu = torch.zeros_like(sums) if ctx.has_bu else None
        return du, dbu, dv, dbi, None, None, None


def full_softmax_loss(
    u: torch.Tensor,
    bu: torch.Tensor | None,
    v: torch.Tensor,
    bi: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`softmax_loss` of the scores ``u @ v.T + bi + bu``, without building them as an
    autograd graph: one (B, n_items) buffer holds the scores, then their exponentials, then
    their gradient (the graph's logsumexp, index and sum kept five such buffers alive, and each
    new one is fresh memory the kernel must map and zero).

    Args:
        u: (B, d) user vectors; bu: (B,) user biases (the global one included) or None.
        v: (n_items, d) item vectors; bi: (n_items,) item biases or None.
        rows, cols, weights: as :func:`softmax_loss`.

    With a leading dimension K on ``u`` (K, B, d), ``bu`` (K, B), ``v`` (K, n_items, d), ``bi``
    (K, n_items) and ``weights`` (K, P), it is K models' losses at once, (K,): each its own
    scores over the same pairs (the race of :mod:`recmf.model.race`), one batched product each way.
    """
    if u.dim() == 3:
        return _FullSoftmax.apply(u, bu, v, bi, rows, cols, weights)

    def one(x):
        return None if x is None else x.unsqueeze(0)

    # K = 1: bmm of one matrix gives mm's values to the bit (checked), so one code path
    return _FullSoftmax.apply(u[None], one(bu), v[None], one(bi), rows, cols, one(weights))[0]


def mse_loss(pred: torch.Tensor, rating: torch.Tensor, weights=None) -> torch.Tensor:
    return _mean((pred - rating) ** 2, weights)
