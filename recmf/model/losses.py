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


# Up to this many users a step, the scores are laid out items-major, (K, n_items, B): with few
# users the products are faster that way (ml-latest-small, 64 users x 9.7k items, a race of five:
# a step's softmax 26.6 -> 22.5 ms; one model, 128 users: the same; 256: 4% slower)
ITEMS_MAJOR = 128


class _FullSoftmax(torch.autograd.Function):
    """:func:`full_softmax_loss`'s forward and backward over one (K, B, n_items) buffer (or
    (K, n_items, B): :data:`ITEMS_MAJOR`)."""

    @staticmethod
    def forward(ctx, u, bu, v, bi, rows, cols, weights, reg):
        n_users, n_items = u.shape[1], v.shape[1]
        ctx.axis = axis = 1 if n_users <= ITEMS_MAJOR else 2  # the items' axis of the scores
        if axis == 2:
            scores = product_scores(u, bu, v, bi)  # (K, B, n_items)
            flat = rows * n_items + cols
        else:  # (K, n_items, B): the item bias inside the product, the user's added in place
            if bi is None:
                scores = torch.bmm(v, u.transpose(1, 2))
            else:
                scores = torch.baddbmm(bi.unsqueeze(2), v, u.transpose(1, 2))
            if bu is not None:
                scores.add_(bu.unsqueeze(1))
            flat = cols * n_users + rows
        picked = scores.view(len(scores), -1).index_select(1, flat)  # (K, P)
        top = scores.amax(axis, keepdim=True)
        exp = scores.sub_(top).exp_()  # in place: the buffer now holds exp(s - max)
        sums = exp.sum(axis)  # (K, B)
        lse = top.squeeze(axis) + sums.log()
        w = torch.ones_like(picked) if weights is None else weights.to(picked.dtype)
        total = w.sum(1)  # (K,)
        loss = ((lse.index_select(1, rows) - picked) * w).sum(1) / total
        ctx.l2 = None
        if reg is not None:  # reg x the squares of the rows the pairs touch, per pair
            per_user = torch.bincount(rows, minlength=u.shape[1]).to(u.dtype)
            per_item = torch.bincount(cols, minlength=v.shape[1]).to(u.dtype)
            touched = per_item.nonzero().squeeze(1)  # a step's pairs touch a part of the items
            per_item = per_item.index_select(0, touched)
            rows_v = v.index_select(1, touched)  # (K, T, d)
            l2 = u.pow(2).sum(2) @ per_user + rows_v.pow(2).sum(2) @ per_item  # (K,)
            reg = reg / len(rows)
            loss = loss + reg * l2
            ctx.l2 = (reg, per_user, per_item, touched, rows_v)
        ctx.save_for_backward(u, v, flat, rows, w, sums, total)
        ctx.exp, ctx.has_bu, ctx.has_bi = exp, bu is not None, bi is not None
        return loss

    @staticmethod
    def backward(ctx, grad):
        u, v, flat, rows, w, sums, total = ctx.saved_tensors
        g, ctx.exp = ctx.exp, None
        # d loss / d s = (row weight / total) * softmax(s) - (pair weight / total) at the pairs
        grad, total = grad.unsqueeze(1), total.unsqueeze(1)  # (K, 1)
        share = torch.zeros_like(sums).index_add_(1, rows, w) / total
        g.mul_((share * grad / sums).unsqueeze(ctx.axis))
        g.view(len(g), -1).index_add_(1, flat, w * (-grad / total))
        if ctx.axis == 2:
            du, dv = torch.bmm(g, v), torch.bmm(g.transpose(1, 2), u)
        else:
            du, dv = torch.bmm(g.transpose(1, 2), v), torch.bmm(g, u)
        if ctx.l2 is not None:  # d (reg n |row|^2) = 2 reg n row, added to the rows touched only
            reg, per_user, per_item, touched, rows_v = ctx.l2
            ctx.l2 = None
            scale = (2 * reg * grad.squeeze(1)).view(-1, 1, 1)  # (K, 1, 1)
            du.add_(u * per_user.view(1, -1, 1) * scale)
            dv.index_add_(1, touched, rows_v.mul_(per_item.view(1, -1, 1) * scale))
        dbi = g.sum(3 - ctx.axis) if ctx.has_bi else None
        # a row's softmax gradient sums to zero: the user's bias cannot change its loss
        dbu = torch.zeros_like(sums) if ctx.has_bu else None
        return du, dbu, dv, dbi, None, None, None, None


def full_softmax_loss(
    u: torch.Tensor,
    bu: torch.Tensor | None,
    v: torch.Tensor,
    bi: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor | None = None,
    reg: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """:func:`softmax_loss` of the scores ``u @ v.T + bi + bu``, without building them as an
    autograd graph: one (B, n_items) buffer holds the scores, then their exponentials, then
    their gradient (the graph's logsumexp, index and sum kept five such buffers alive, and each
    new one is fresh memory the kernel must map and zero).

    Args:
        u: (B, d) user vectors; bu: (B,) user biases (the global one included) or None.
        v: (n_items, d) item vectors; bi: (n_items,) item biases or None.
        rows, cols, weights: as :func:`softmax_loss`.
        reg: adds ``reg`` x the squared norm of each user row and item row the pairs touch, per
            pair it is in, over the number of pairs (the L2 of
            :class:`recmf.model.lit_module.MFLitModule`), its gradient added to the rows touched
            only (as a separate autograd term it was a sixth of a race step on ml-latest-small:
            the squares and gradients of every candidate's whole item table).

    With a leading dimension K on ``u`` (K, B, d), ``bu`` (K, B), ``v`` (K, n_items, d), ``bi``
    (K, n_items), ``weights`` (K, P) and ``reg`` (K,)), it is K models' losses at once, (K,):
    each its own scores over the same pairs (the race of :mod:`recmf.model.race`), one batched
    product each way.
    """
    if reg is not None:
        reg = torch.as_tensor(reg, dtype=u.dtype, device=u.device).reshape(-1)
    if u.dim() == 3:
        return _FullSoftmax.apply(u, bu, v, bi, rows, cols, weights, reg)

    def one(x):
        return None if x is None else x.unsqueeze(0)

    # K = 1: bmm of one matrix gives mm's values to the bit (checked), so one code path
    return _FullSoftmax.apply(u[None], one(bu), v[None], one(bi), rows, cols, one(weights), reg)[0]


def mse_loss(pred: torch.Tensor, rating: torch.Tensor, weights=None) -> torch.Tensor:
    return _mean((pred - rating) ** 2, weights)
