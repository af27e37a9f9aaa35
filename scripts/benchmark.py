"""Benchmarks: numbers for the README, printed and saved as JSON. Not tests.

Usage:
    python scripts/benchmark.py quality --data ../shared/data/ml-100k
    python scripts/benchmark.py quality --data ../shared/data/ml-100k --seeds 1 2 3 \
        --min-ndcg 0.175 --min-precision 0.15        # exits 1 below either floor (CI)

``quality`` runs ingest -> train -> evaluate through the same functions as the scripts, with
the shipped experiment config for the data set, into its own database schema and MLflow store
(``.recmf/benchmark``), and prints recmf's metrics beside the popularity baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = ("precision_at_5", "recall_at_5", "precision_at_10", "recall_at_10", "ndcg_at_10")


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(name, overrides=overrides)


def quality(args: argparse.Namespace) -> int:
    from recmf import cli, pipeline
    from recmf.datasets import load_source
    from recmf.store import FeatureStore

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    logger = [
        f"logger.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        "logger.experiment_name=benchmark",
    ]
    data = [
        f"experiment={args.experiment}",
        f"dataset.path={Path(args.data).resolve()}",
        f"db.schema={args.schema}",
    ]
    runs = []
    for seed in args.seeds:
        cfg = _compose("train", [*data, *logger, f"seed={seed}", *args.overrides])
        t0 = time.perf_counter()
        with FeatureStore.open(cfg.db) as store:
            ingest = cli.run(lambda cfg=cfg, store=store: store.ingest(load_source(cfg.dataset)))
        ingest_s = time.perf_counter() - t0
        trained = cli.run(lambda cfg=cfg: pipeline.train(cfg))
        ecfg = _compose("evaluate", [*logger, f"run_id={trained.run_id}", "ks=[5,10,20]"])
        result = cli.run(lambda ecfg=ecfg: pipeline.evaluate(ecfg))
        runs.append(
            {
                "seed": seed,
                "run_id": trained.run_id,
                "train_seconds": trained.train_seconds,
                "best_epoch": trained.best_epoch,
                "ingest_seconds": ingest_s,
                "ingest": ingest.summary(),
                "model": result.metrics,
                "popularity": result.baseline,
            }
        )
        print(
            f"seed {seed}: ndcg@10 {result.metrics['ndcg_at_10']:.4f} "
            f"p@10 {result.metrics['precision_at_10']:.4f} "
            f"({trained.train_seconds:.1f} s training, run {trained.run_id})",
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
    out = Path(args.out or work / f"quality-{args.experiment}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "experiment": args.experiment,
                "data": str(args.data),
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"saved {out}")
    failed = []
    if args.min_ndcg is not None and summary["ndcg_at_10"]["recmf"] < args.min_ndcg:
        failed.append(f"NDCG@10 {summary['ndcg_at_10']['recmf']:.4f} < {args.min_ndcg}")
    if args.min_precision is not None and summary["precision_at_10"]["recmf"] < args.min_precision:
        failed.append(f"P@10 {summary['precision_at_10']['recmf']:.4f} < {args.min_precision}")
    if failed:
        print("quality floor not met: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quality", help="ingest -> train -> evaluate on a data set folder")
    q.add_argument("--data", required=True, help="a MovieLens-100K folder (u.data, u.item)")
    q.add_argument("--experiment", default="ml100k", help="configs/experiment/<name>.yaml")
    q.add_argument("--schema", default="bench_ml100k", help="database schema to ingest into")
    q.add_argument("--seeds", type=int, nargs="+", default=[42])
    q.add_argument("--workdir", default=".recmf/benchmark", help="holds its MLflow store")
    q.add_argument("--out", default=None, help="JSON path (default: in --workdir)")
    q.add_argument("--min-ndcg", type=float, default=None, help="fail below this NDCG@10")
    q.add_argument("--min-precision", type=float, default=None, help="fail below this P@10")
    q.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data!r} is not a folder; pass a MovieLens-100K folder")
    return quality(args)


if __name__ == "__main__":
    sys.exit(main())
