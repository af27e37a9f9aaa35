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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bench_coldstart_recmf as towers
import numpy as np
from bench_coldstart_data import PROTOCOLS, MovieLens, Task, load, withhold  # noqa: F401
from bench_common import save

K = 10


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
