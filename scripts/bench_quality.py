"""``benchmark.py quality``: ingest -> train -> evaluate, recmf beside the popularity baseline.

Runs the same functions as the scripts, with the shipped experiment config for the data set,
into its own database schema and MLflow store, once per seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_common import save

KEYS = ("precision_at_5", "recall_at_5", "precision_at_10", "recall_at_10", "ndcg_at_10")


def add_parser(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quality", help="ingest -> train -> evaluate on a data set folder")
    q.add_argument(
        "--data", required=True, help="a MovieLens-100K folder, or a ratings CSV with --dataset csv"
    )
    q.add_argument("--dataset", default="movielens-100k", choices=["movielens-100k", "csv"])
    q.add_argument("--items", default=None, help="CSV of item titles (with --dataset csv)")
    q.add_argument(
        "--experiment",
        default="ml100k",
        help="configs/experiment/<name>.yaml, or none for the default config",
    )
    q.add_argument("--schema", default="bench_ml100k", help="database schema to ingest into")
    q.add_argument("--seeds", type=int, nargs="+", default=[42])
    q.add_argument("--workdir", default=".recmf/benchmark", help="holds its MLflow store")
    q.add_argument("--out", default=None, help="JSON path (default: in --workdir)")
    q.add_argument("--min-ndcg", type=float, default=None, help="fail below this NDCG@10")
    q.add_argument("--min-precision", type=float, default=None, help="fail below this P@10")
    q.add_argument(
        "--min-ratio",
        type=float,
        default=None,
        help="fail below this multiple of popularity's NDCG@10",
    )
    q.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")


def run(args: argparse.Namespace) -> int:
    """Train and evaluate once per seed, print the mean table; 1 if a floor is not met."""
    from recmf import cli, pipeline
    from recmf.config import compose_settings
    from recmf.data.sources import load_source
    from recmf.store import FeatureStore

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    logger = [
        f"logger.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        "logger.experiment_name=benchmark",
    ]
    data = [f"dataset={args.dataset}", f"db.schema={args.schema}"]
    if args.experiment != "none":  # "none": the default config, no data-set-specific file
        data.append(f"experiment={args.experiment}")
    data.append(f"dataset.path={Path(args.data).resolve()}")
    if args.items:
        data.append(f"dataset.items_path={Path(args.items).resolve()}")
    runs = []
    for seed in args.seeds:
        cfg = compose_settings("train", [*data, *logger, f"seed={seed}", *args.overrides])
        t0 = time.perf_counter()
        with FeatureStore.open(cfg.db) as store:
            ingest = cli.run(lambda cfg=cfg, store=store: store.ingest(load_source(cfg.dataset)))
        ingest_s = time.perf_counter() - t0
        trained = cli.run(lambda cfg=cfg: pipeline.train(cfg))
        ecfg = compose_settings("evaluate", [*logger, f"run_id={trained.run_id}", "ks=[5,10,20]"])
        result = cli.run(lambda ecfg=ecfg: pipeline.evaluate(ecfg))
        runs.append(
            {
                "seed": seed,
                "run_id": trained.run_id,
                "train_seconds": trained.train_seconds,
                "best_epoch": trained.best_epoch,
                "best_val": trained.best_val,  # what a configuration is chosen on, never the test
                "ingest_seconds": ingest_s,
                "ingest": ingest.summary(),
                "model": result.metrics,
                "popularity": result.baseline,
            }
        )
        print(
            f"seed {seed}: ndcg@10 {result.metrics['ndcg_at_10']:.4f} "
            f"p@10 {result.metrics['precision_at_10']:.4f} "
            f"(validation {trained.monitor} {trained.best_val:.4f} at epoch {trained.best_epoch}; "
            f"{trained.train_seconds:.1f} s training, run {trained.run_id})",
            flush=True,
        )

    def stats(side: str, key: str) -> tuple[float, float]:
        values = [r[side][key] for r in runs]
        return statistics.mean(values), (max(values) - min(values)) / 2

    print(f"\n{args.experiment} from {args.data}, {len(runs)} seed(s), mean (± half-range):")
    print(f"{'metric':<16}{'recmf':>18}{'popularity':>14}")
    summary = {}
    for key in KEYS:
        m, spread = stats("model", key)
        b, _ = stats("popularity", key)
        summary[key] = {"recmf": m, "recmf_spread": spread, "popularity": b}
        print(f"{key:<16}{m:>10.4f} ± {spread:.4f}{b:>14.4f}")
    train_s = statistics.mean(r["train_seconds"] for r in runs)
    print(f"{'train seconds':<16}{train_s:>10.2f}")
    result = {"experiment": args.experiment, "data": str(args.data), "summary": summary}
    save(args, f"quality-{args.schema}.json", {**result, "runs": runs})
    return _check_floors(args, summary)


def _check_floors(args: argparse.Namespace, summary: dict) -> int:
    """Print the ratio to popularity; 1 (with the reasons on stderr) below any floor given."""
    failed = []
    if args.min_ndcg is not None and summary["ndcg_at_10"]["recmf"] < args.min_ndcg:
        failed.append(f"NDCG@10 {summary['ndcg_at_10']['recmf']:.4f} < {args.min_ndcg}")
    if args.min_precision is not None and summary["precision_at_10"]["recmf"] < args.min_precision:
        failed.append(f"P@10 {summary['precision_at_10']['recmf']:.4f} < {args.min_precision}")
    ratio = summary["ndcg_at_10"]["recmf"] / summary["ndcg_at_10"]["popularity"]
    print(f"NDCG@10 is {ratio:.2f}x popularity")
    if args.min_ratio is not None and ratio < args.min_ratio:
        failed.append(f"NDCG@10 only {ratio:.2f}x popularity < {args.min_ratio}x")
    if failed:
        print("quality floor not met: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0
