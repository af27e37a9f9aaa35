"""Fold-in: an embedding for a user the model never trained, from their items, in closed form.

numpy only (the serving path imports neither torch nor MLflow);
:func:`recmf.train.fold_in_tuning.tune` picks the two constants on validation data at the end
of training, and the bundle carries them.
"""

from __future__ import annotations

import numpy as np

# Used when a bundle carries no tuned values (ML-100K's choice): the ridge strength and the
# recency weighting of the user's items.
FOLD_IN_DEFAULTS = {"reg": 10.0, "recency": 3.0}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def fold_in(
    weights: dict[str, np.ndarray],
    histories: list[np.ndarray],
    reg: float,
    recency: float = 0.0,
) -> np.ndarray:
    """User vectors for users the model never trained, from their items, in closed form.

    The model scores ``x . v_i + b_i`` and was trained to put probability
    ``softmax(x . V + b)_i`` on each user's items. For a new user the fit of x to their items
    against the frozen item embeddings V and biases b, with an L2 penalty, is the ridge system
    of one Newton step from x = 0 (where the model's ranking is popularity, p0 = softmax(b)):

        (sum(w) Cov_p0(V) + reg I) x = sum_i w_i (v_i - E_p0[v])

    i.e. the user's items' weighted offset from the popularity-weighted mean item, whitened by
    how items vary. One d x d solve per user; V and b are never changed.

    Args:
        weights: the bundle's arrays: ``item_emb`` (n_items, d), optional ``item_bias``.
        histories: per user, the item positions (model vocabulary) they interacted with,
            earliest first (a repeated item counts once, at its latest place).
        reg: the ridge strength.
        recency: w_i = exp(-recency * age), age 0 for the latest item and 1 for the earliest,
            as training weighs rows (:func:`recmf.data.split.recency_weights`).
    """
    v = np.asarray(weights["item_emb"], dtype=np.float64)
    n_items, d = v.shape
    bias = weights.get("item_bias")
    p0 = _softmax(np.zeros(n_items) if bias is None else np.asarray(bias, np.float64).ravel())
    mean = p0 @ v
    centred = v - mean
    cov = centred.T @ (centred * p0[:, None])
    out = np.zeros((len(histories), d), dtype=np.float64)
    for row, items in enumerate(histories):
        n = len(items)
        if not n:
            continue
        # each distinct item at its latest place: positions counted from the end
        unique, from_end = np.unique(np.asarray(items)[::-1], return_index=True)
        w = np.exp(-recency * from_end / max(n - 1, 1))
        rhs = (w[:, None] * centred[unique]).sum(0)
        out[row] = np.linalg.solve(w.sum() * cov + reg * np.eye(d), rhs)
    return out.astype(np.float32)


def fold_in_scores(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(B, n_items) scores of folded-in user vectors ``x`` (item biases added when present)."""
    scores = x @ weights["item_emb"].T
    if "item_bias" in weights:
        scores += weights["item_bias"].T
    return scores
