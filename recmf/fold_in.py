"""Fold-in: an embedding for a user the model never trained, from their items, in closed form.

numpy only (the serving path imports neither torch nor MLflow); :func:`tune` picks the two
constants on validation data at the end of training, with torch, and the bundle carries them.
"""

from __future__ import annotations

import numpy as np

# Used when a bundle carries no tuned values (ML-100K's choice): the ridge strength and the
# recency weighting of the user's items.
FOLD_IN_DEFAULTS = {"reg": 10.0, "recency": 3.0}
GRID = [{"reg": reg, "recency": recency} for reg in (1.0, 3.0, 10.0, 30.0) for recency in (0, 1, 3)]


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
            as training weighs rows (:func:`recmf.split.recency_weights`).
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


def histories_of(users: np.ndarray, user_idx, item_idx, timestamp) -> list[np.ndarray]:
    """Each of ``users``' items in time order (earliest first), from aligned row arrays."""
    keep = np.isin(user_idx, users)
    u, i, t = user_idx[keep], item_idx[keep], timestamp[keep]
    order = np.lexsort((i, t, u))
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
    time order), ranked with ``exclude`` (a :class:`~recmf.sparse.UserItems`) left out, against
    ``truth``."""
    import torch

    from recmf.evaluation import evaluate_ranking

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
    from recmf.sparse import UserItems

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


def held_out_users(data, cfg, holdout: float, seed: int, workdir) -> dict:
    """Benchmark: users held out of training entirely, folded in at request time, against the
    same users trained normally and against popularity (NDCG@k and P@k on their test items).

    The split is the usual per-user temporal one. Model A trains on every user; model B on
    every user but a random ``holdout`` share of those with test items, whose train and
    validation rows B never sees. Those users are then folded into B from their train and
    validation items (what the store holds for them before the test period), with the constants
    B's own validation chose (:func:`tune`), and ranked on their test items with those items
    excluded, as are A's rankings of the same users.
    """
    import torch

    from recmf.bundle import Bundle
    from recmf.evaluation import evaluate_ranking, popularity_scores
    from recmf.fitting import fit_select_refit
    from recmf.sparse import UserItems
    from recmf.split import Split, temporal_split

    k = int(cfg.k)
    split = temporal_split(data, cfg.split.test_fraction, cfg.split.val_fraction)
    rng = np.random.default_rng(seed)
    candidates = np.unique(split.test.user_idx)
    held = np.sort(rng.choice(candidates, max(1, int(holdout * len(candidates))), replace=False))

    def without(part):
        return part.subset(~np.isin(part.user_idx, held))

    def only(part):
        return part.subset(np.isin(part.user_idx, held))

    split_b = Split(without(split.train), without(split.val), split.test, 0, 0)
    fit_a = fit_select_refit(cfg, split, False, workdir)
    fit_b = fit_select_refit(cfg, split_b, False, workdir)
    weights_b = Bundle.from_model(fit_b.model, data.vocab, split_b, {}).weights
    chosen = tune(fit_b.selected_weights or weights_b, split_b, k, seed=seed)  # as training does
    n_users, n_items = data.n_users, data.n_items
    past_u = np.concatenate([only(split.train).user_idx, only(split.val).user_idx])
    past_i = np.concatenate([only(split.train).item_idx, only(split.val).item_idx])
    past_t = np.concatenate([only(split.train).timestamp, only(split.val).timestamp])
    history = UserItems.from_pairs(past_u, past_i, n_users)
    test = only(split.test)
    truth = UserItems.from_pairs(test.user_idx, test.item_idx, n_users)
    with torch.no_grad():
        trained, n_eval = evaluate_ranking(fit_a.model.score_all, truth, history, [k], n_items)
        seen_b = np.concatenate([split_b.train.item_idx, split_b.val.item_idx])
        pop = popularity_scores(torch.from_numpy(seen_b), n_items)
        popular, _ = evaluate_ranking(pop, truth, history, [k], n_items)
    hist = histories_of(held, past_u, past_i, past_t)
    folded = evaluate_fold_in(weights_b, held, hist, history, truth, k, **chosen["params"])
    key = f"ndcg_at_{k}"
    return {
        "held_out_users": int(len(held)),
        "evaluated_users": int(n_eval),
        "fold_in": {"params": chosen["params"], key: folded},
        "trained": {key: trained[key], f"precision_at_{k}": trained[f"precision_at_{k}"]},
        "popularity": {key: popular[key], f"precision_at_{k}": popular[f"precision_at_{k}"]},
        "fold_in_vs_trained": folded / trained[key] if trained[key] else float("nan"),
        "fold_in_vs_popularity": folded / popular[key] if popular[key] else float("nan"),
    }
