"""The peers of ``benchmark.py quality``: implicit's ALS and EASE, on recmf's own split.

Each peer reads the very split the recmf run was trained and evaluated on (the run's ``split``
artifact: same users, same items, same rounding), is tuned on its validation part with a small
grid (best validation NDCG@10, the user's training items excluded, as recmf selects its epoch),
refit with the chosen values on train + validation (as recmf refits), and scored on the test
part with recmf's own metric code (train and validation items excluded). Interactions are
implicit: every row counts 1, whatever its rating; no recency weighting.

``implicit`` is a benchmark extra (``pip install -e ".[bench]"``), never a runtime dependency.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

PEERS = ("ALS", "EASE")
# ALS: factors, L2 regularization, confidence scaling (c = 1 + alpha * r); 15 iterations. The
# ranges were widened until the validation optima lay inside them (temporal splits: ML-100K
# regularization 10, alpha 1, ml-latest-small 3, 0.3; split=random chose 30, 3 on both);
# implicit's defaults (0.01, alpha 1) gave ML-100K validation NDCG@10 0.16.
ALS_GRID = [
    {"factors": f, "regularization": r, "alpha": a}
    for f in (64, 128)
    for r in (1.0, 3.0, 10.0, 30.0, 100.0)
    for a in (0.1, 0.3, 1.0, 3.0, 10.0)
]
EASE_GRID = [{"lambda": lam} for lam in (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)]
ALS_ITERATIONS = 15


@dataclass
class PeerResult:
    metrics: dict[str, float]  # test metrics, "{metric}_at_{k}"
    params: dict  # the values chosen on validation
    val_ndcg: float  # their validation NDCG@10
    fit_seconds: float  # the grid on train and the refit on train + validation
    grid: list[tuple[dict, float]] = field(default_factory=list)  # (params, validation NDCG@10)


class PeerUnavailable(RuntimeError):
    """A peer whose library is not installed."""


def _matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int):
    from scipy.sparse import csr_matrix

    x = csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    x.data[:] = 1.0  # a pair seen twice still counts once
    return x


def _fit_als(x, params: dict, seed: int):
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        raise PeerUnavailable(
            'ALS needs implicit 0.7 (a benchmark extra): pip install -e ".[bench]", or leave it '
            "out with --peers EASE"
        ) from None
    from threadpoolctl import threadpool_limits  # implicit's own dependency

    with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS pool slows it
        model = AlternatingLeastSquares(
            factors=params["factors"],
            regularization=params["regularization"],
            alpha=params["alpha"],
            iterations=ALS_ITERATIONS,
            random_state=seed,
            num_threads=0,
        )
        model.fit(x, show_progress=False)
    u, v = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda users: u[users] @ v.T


def _fit_ease(x, params: dict, seed: int):
    import torch

    xt = torch.from_numpy(x.toarray())
    gram = xt.T @ xt
    gram.diagonal().add_(params["lambda"])
    # X'X + lambda I is symmetric positive definite: a float32 Cholesky inverse takes 6-7 s for
    # ml-latest-small's 9.7k items against 19-23 s for a float64 inverse, scores within 1e-5
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    b = -p / p.diagonal()  # B = I - P diag(1/diag P), zero diagonal
    b.diagonal().zero_()
    return lambda users: (xt[users] @ b).numpy()


FITS = {"ALS": (_fit_als, ALS_GRID), "EASE": (_fit_ease, EASE_GRID)}
DETERMINISTIC = {"EASE"}  # the same split gives the same result whatever the seed
_done: dict[tuple, PeerResult] = {}  # (peer, split) -> result, for the seeds after the first


def _metrics(score, truth, exclude, ks, n_items) -> dict[str, float]:
    import torch

    from recmf.eval.ranking import evaluate_ranking

    def score_fn(users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(score(users.numpy()), dtype=np.float32))

    return evaluate_ranking(score_fn, truth, exclude, ks, n_items)[0]


def run_peer(name: str, saved, seed: int, ks: list[int]) -> PeerResult:
    """Tune ``name`` on ``saved``'s validation part, refit on train + validation, score test."""
    from recmf.data.sparse import UserItems

    digest = hashlib.sha256()
    for k in sorted(saved.arrays):  # the split's content, not a copy of it, keys the cache
        digest.update(saved.arrays[k].tobytes())
    key = (name, digest.hexdigest())
    if name in DETERMINISTIC and key in _done:
        return _done[key]  # fit_seconds: those of the one computation
    fit, grid = FITS[name]
    parts = [saved.pairs(p) for p in ("train", "val", "test")]
    n_users = int(max(u.max(initial=-1) for u, _ in parts)) + 1
    n_items = int(max(i.max(initial=-1) for _, i in parts)) + 1
    t0 = time.perf_counter()
    train = UserItems.from_pairs(*saved.pairs("train"), n_users)
    val = UserItems.from_pairs(*saved.pairs("val"), n_users)
    x_train = _matrix(*saved.pairs("train"), n_users, n_items)
    scored = []
    for params in grid:
        ndcg = _metrics(fit(x_train, params, seed), val, train, [10], n_items)["ndcg_at_10"]
        scored.append((params, ndcg))
    best, best_val = max(scored, key=lambda pv: pv[1])
    score = fit(_matrix(*saved.pairs("train", "val"), n_users, n_items), best, seed)
    seconds = time.perf_counter() - t0
    seen = UserItems.from_pairs(*saved.pairs("train", "val"), n_users)
    test = UserItems.from_pairs(*saved.pairs("test"), n_users)
    metrics = _metrics(score, test, seen, ks, n_items)
    _done[key] = result = PeerResult(metrics, best, best_val, seconds, scored)
    return result
