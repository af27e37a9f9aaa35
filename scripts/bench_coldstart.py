"""``benchmark.py coldstart``: cold items and cold users on MovieLens-100K, ranked from side
features by the reference methods (and, through :data:`METHODS`, by anything added later).

Protocols (the draw is always ``default_rng(0)``; ``--seeds`` seed the methods):
  cold_items  the first ceil(0.2 n) positions of ``permutation(n)`` over the sorted distinct item
              ids are withheld with all their rows; each user with a withheld row ranks only
              the withheld items; all of its withheld rows are relevant, whatever the rating.
  cold_users  the same draw over user ids; each withheld user ranks every training item; its
              rows on training items are relevant.
A method with a grid is tuned on the same carve-out made inside the training part with
``default_rng(1)`` (best validation NDCG@10), then scored on the test protocol.

recmf's two towers (``bench_coldstart_recmf.py``) run with the experiment file of each protocol
(NDCG@10, seeds 0 1 2: cold items 0.287, cold users 0.566; a few seconds per training on a CPU):
  python scripts/benchmark.py coldstart --data ../shared/data/ml-100k --out /tmp/coldstart.json
  python scripts/benchmark.py coldstart --data ../shared/data/ml-100k --protocols cold_users \
      --methods "recmf (arch=tower)" --tower-grid model.reg=0.1,0.3 select=cold,temporal
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import bench_coldstart_recmf as towers
import numpy as np
from bench_common import save

K = 10
SHARE = 0.2
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # buckets <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+


@dataclass(frozen=True)
class Features:
    """Side features keyed by external id: ``matrix[i]`` describes ``ids[i]`` (sorted)."""

    ids: np.ndarray  # (n,) int64
    matrix: np.ndarray  # (n, n_features) float64
    names: list[str]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The feature rows of ``ids`` (external ids, all present)."""
        pos = np.searchsorted(self.ids, ids)
        assert np.array_equal(self.ids[np.minimum(pos, len(self.ids) - 1)], ids), "unknown id"
        return self.matrix[pos]


@dataclass(frozen=True)
class MovieLens:
    """Interaction rows (external ids) with the side features of every user and item."""

    user_id: np.ndarray  # (n_rows,)
    item_id: np.ndarray  # (n_rows,)
    timestamp: np.ndarray  # (n_rows,) unix seconds
    item_features: Features
    user_features: Features

    def subset(self, mask: np.ndarray) -> MovieLens:
        return replace(
            self,
            user_id=self.user_id[mask],
            item_id=self.item_id[mask],
            timestamp=self.timestamp[mask],
        )


@dataclass(frozen=True)
class Task:
    """One ranking problem: what a method may learn from, and whom it ranks what for."""

    protocol: str
    train: MovieLens  # the training rows; features cover the withheld ids too
    withheld: np.ndarray  # item ids (cold_items) or user ids (cold_users), sorted
    user_id: np.ndarray  # (n_eval,) the users ranked, sorted
    candidate_id: np.ndarray  # (n_candidates,) the items they rank, sorted
    relevant: np.ndarray  # (n_eval, n_candidates) bool


def load(folder: Path) -> MovieLens:
    """u.data, u.item and u.user of an ml-100k folder."""
    import pandas as pd

    missing = [f for f in ("u.data", "u.item", "u.user") if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"--data {str(folder)!r} lacks {missing}; pass a MovieLens-100K folder")
    rows = pd.read_csv(folder / "u.data", sep="\t", header=None, usecols=[0, 1, 3])
    items = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1")
    users = pd.read_csv(folder / "u.user", sep="|", header=None, dtype={4: str})
    year = pd.to_datetime(items[2], format="%d-%b-%Y", errors="coerce").dt.year
    decade = np.where(year.isna(), "unknown", (year // 10 * 10).astype("Int64").astype(str))
    genres = items.iloc[:, 5:24].to_numpy(np.float64)
    age = np.digitize(users[1].to_numpy(), AGE_EDGES)  # 0 (<18) .. 6 (56+)
    item_parts = [(genres, [f"genre={g}" for g in range(19)]), _one_hot("decade", decade)]
    user_parts = [_one_hot("age", age), _one_hot("gender", users[2]), _one_hot("job", users[3])]
    data = MovieLens(
        rows[0].to_numpy(np.int64),
        rows[1].to_numpy(np.int64),
        rows[3].to_numpy(np.int64),
        _features(items[0], item_parts),
        _features(users[0], user_parts),
    )
    known = np.isin(data.item_id, data.item_features.ids) & np.isin(data.user_id, users[0])
    if not known.all():
        raise ValueError(
            f"{(~known).sum()} rows of u.data name an item missing from u.item or a user "
            "missing from u.user; every id of u.data needs its features row"
        )
    return data


def _one_hot(prefix: str, values) -> tuple[np.ndarray, list[str]]:
    names, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    return np.eye(len(names))[codes], [f"{prefix}={v}" for v in names]


def _features(ids, parts: list[tuple[np.ndarray, list[str]]]) -> Features:
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids)
    matrix = np.hstack([x for x, _ in parts])[order]
    return Features(ids[order], matrix, [n for _, names in parts for n in names])


def withhold(ids: np.ndarray, seed: int, share: float = SHARE) -> np.ndarray:
    """The first ceil(share * n) positions of ``default_rng(seed).permutation(n)`` over the
    sorted distinct ``ids``, as ids (sorted). The ceiling is exact (0.2 * 15 is 3, not 4)."""
    distinct = np.unique(ids)
    n_held = math.ceil(Fraction(str(share)) * len(distinct))
    return np.sort(distinct[np.random.default_rng(seed).permutation(len(distinct))[:n_held]])


def _task(protocol, train, withheld, test_users, test_items, candidates) -> Task:
    users = np.unique(test_users)
    relevant = np.zeros((len(users), len(candidates)), dtype=bool)
    relevant[np.searchsorted(users, test_users), np.searchsorted(candidates, test_items)] = True
    return Task(protocol, train, withheld, users, candidates, relevant)


def cold_items(data: MovieLens, seed: int) -> Task:
    held = withhold(data.item_id, seed)
    test = np.isin(data.item_id, held)
    users, items = data.user_id[test], data.item_id[test]
    return _task("cold_items", data.subset(~test), held, users, items, held)


def cold_users(data: MovieLens, seed: int) -> Task:
    held = withhold(data.user_id, seed)
    is_held = np.isin(data.user_id, held)
    candidates = np.unique(data.item_id[~is_held])
    test = is_held & np.isin(data.item_id, candidates)
    users, items = data.user_id[test], data.item_id[test]
    return _task("cold_users", data.subset(~is_held), held, users, items, candidates)


PROTOCOLS: dict[str, Callable[[MovieLens, int], Task]] = {
    "cold_items": cold_items,
    "cold_users": cold_users,
}


# --- methods: score(task, params, seed) -> (n_eval, n_candidates), higher ranks first ---------


def score_random(task: Task, params: dict, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(task.relevant.shape)


def score_popularity(task: Task, params: dict, seed: int) -> np.ndarray:
    count = dict(zip(*np.unique(task.train.item_id, return_counts=True), strict=True))
    pop = np.array([count.get(i, 0) for i in task.candidate_id], dtype=np.float64)
    return np.broadcast_to(pop, task.relevant.shape)  # the same list for every user


def score_feature_popularity(task: Task, params: dict, seed: int) -> np.ndarray:
    """Ridge regression of log(1 + count) on the item features of the training items; the same
    predicted list for every user."""
    ids, counts = np.unique(task.train.item_id, return_counts=True)
    x, y = task.train.item_features.rows(ids), np.log1p(counts)
    x_mean, y_mean = x.mean(0), y.mean()
    xc = x - x_mean  # centred: the intercept is the mean, unpenalised
    w = np.linalg.solve(xc.T @ xc + params["alpha"] * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    pred = (task.train.item_features.rows(task.candidate_id) - x_mean) @ w + y_mean
    return np.broadcast_to(pred, task.relevant.shape)


@dataclass(frozen=True)
class Method:
    """A scorer, the protocols it applies to, and the grid its parameters are tuned over."""

    score: Callable[[Task, dict, int], np.ndarray]
    protocols: tuple[str, ...]
    grid: tuple[dict, ...] = ({},)


# The hook: a method is one more entry (recmf's, whose config comes from the command line, is
# added by run: towers.TOWER).
METHODS: dict[str, Method] = {
    "random": Method(score_random, ("cold_items", "cold_users")),
    # cold items only: on cold users the training counts themselves are known (popularity).
    "feature popularity": Method(
        score_feature_popularity,
        ("cold_items",),
        tuple({"alpha": 10.0**e} for e in range(-2, 5)),  # 0.01 .. 10,000
    ),
    "popularity": Method(score_popularity, ("cold_users",)),
}


def methods(protocol: str, registry: dict[str, Method] | None = None) -> dict[str, Method]:
    """The methods of ``registry`` (default :data:`METHODS`) that apply to ``protocol``."""
    return {n: m for n, m in (registry or METHODS).items() if protocol in m.protocols}


def evaluate(scores: np.ndarray, relevant: np.ndarray, k: int = K) -> dict[str, float]:
    """Mean P@k, R@k and NDCG@k over users with a relevant item (recmf.eval.metrics)."""
    import torch

    from recmf.eval.metrics import ndcg_at_k, precision_at_k, recall_at_k

    keep = relevant.any(1)
    top = np.argsort(-scores[keep], axis=1, kind="stable")[:, :k]  # ties: lower id first
    hits = torch.from_numpy(np.take_along_axis(relevant[keep], top, 1))
    n_rel = torch.from_numpy(relevant[keep].sum(1))
    return {
        f"precision_at_{k}": float(precision_at_k(hits, k).mean()),
        f"recall_at_{k}": float(recall_at_k(hits, n_rel, k).mean()),
        f"ndcg_at_{k}": float(ndcg_at_k(hits, n_rel, k).mean()),
    }


def measure(method: Method, task: Task, val: Task, seed: int) -> tuple[dict, dict, list]:
    """Tune on ``val`` (best NDCG@k, the first of equals), then the metrics on ``task``; and the
    validation NDCG@k of each grid point (empty without a grid)."""
    params, ndcg = method.grid[0], []
    if len(method.grid) > 1:
        ndcg = [
            evaluate(method.score(val, p, seed), val.relevant)[f"ndcg_at_{K}"] for p in method.grid
        ]
        params = method.grid[int(np.argmax(ndcg))]
    return evaluate(method.score(task, params, seed), task.relevant), params, ndcg


def benchmark(
    data: MovieLens,
    seeds: list[int],
    registry: dict[str, Method] | None = None,
    protocols: list[str] | None = None,
) -> tuple[dict, dict[str, Task]]:
    """Per protocol (default: all) and method (of ``registry``, default :data:`METHODS`), per
    seed: (test metrics, parameters chosen, validation NDCG@k per grid point); and the tasks."""
    runs: dict = {}
    tasks = {p: make(data, 0) for p, make in PROTOCOLS.items() if p in (protocols or PROTOCOLS)}
    for protocol, task in tasks.items():
        val = PROTOCOLS[protocol](task.train, 1)  # the same carve-out inside the training part
        runs[protocol] = {
            name: [measure(method, task, val, s) for s in seeds]
            for name, method in methods(protocol, registry).items()
        }
    return runs, tasks


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("coldstart", help="cold items and cold users ranked from side features")
    c.add_argument("--data", required=True, help="ml-100k folder (u.data, u.item, u.user)")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seed the methods")
    c.add_argument("--workdir", default=".recmf/benchmark")
    c.add_argument("--out", default=None)
    c.add_argument("--methods", nargs="+", default=None, help="run only these (default: all)")
    c.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    towers.add_arguments(c)


def run(args: argparse.Namespace) -> int:
    """Print a table per protocol (mean over seeds ± half-range) and save the means."""
    tower = Method(towers.scorer(args), tuple(PROTOCOLS), towers.grid(args))
    registry = {**METHODS, towers.TOWER: tower}
    unknown = sorted(set(args.methods or ()) - set(registry))
    if unknown:
        raise SystemExit(f"--methods {unknown}: no such method; choose from {list(registry)}")
    registry = {n: m for n, m in registry.items() if args.methods is None or n in args.methods}
    runs, tasks = benchmark(load(Path(args.data)), list(args.seeds), registry, args.protocols)
    result: dict = {}
    for protocol, by_method in runs.items():
        t = tasks[protocol]
        print(
            f"\n{protocol}: {len(t.withheld)} {protocol[5:]} withheld; {len(t.user_id)} users "
            f"rank {len(t.candidate_id)} items; seeds {' '.join(map(str, args.seeds))}"
        )
        print(f"  {'method':<22}{'P@10':<18}{'R@10':<18}{'NDCG@10':<18}params")
        result[protocol] = {}
        for name, r in by_method.items():
            means, cells = {}, []
            for key in (f"precision_at_{K}", f"recall_at_{K}", f"ndcg_at_{K}"):
                vals = np.array([metrics[key] for metrics, _, _ in r])
                means[key] = float(vals.mean())
                cells.append(f"{vals.mean():.4f} ± {(vals.max() - vals.min()) / 2:.4f}")
            params = sorted({str(p) for _, p, _ in r if p}) or ["-"]
            print(f"  {name:<22}" + "".join(f"{c:<18}" for c in cells) + ", ".join(params))
            grid = registry[name].grid
            for g, p in enumerate(grid if len(grid) > 1 else ()):  # per seed: the tuning
                ndcg = " ".join(f"{v[g]:.4f}" for _, _, v in r)
                print(f"  {'':<22}validation NDCG@{K} {ndcg}  {p}")
            result[protocol][name] = means
    result["seeds"] = list(args.seeds)
    result["withheld"] = {p[5:]: int(len(t.withheld)) for p, t in tasks.items()}
    save(args, "coldstart-ml100k.json", result)
    return 0
