"""``benchmark.py quality``: ingest -> train -> evaluate, recmf beside ALS, EASE and popularity.

Runs the same functions as the scripts, with the shipped experiment config for the data set,
into its own database schema and MLflow store, once per seed; the peers (``bench_peers.py``)
are tuned, refit and scored on the split of each recmf run, in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_common import save
from bench_peers import PEERS

KEYS = ("precision_at_5", "recall_at_5", "precision_at_10", "recall_at_10", "ndcg_at_10")
LABELS = dict(zip(KEYS, ("P@5", "R@5", "P@10", "R@10", "NDCG@10"), strict=True))


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
    q.add_argument(
        "--peers",
        nargs="+",
        default=list(PEERS),
        help="peers trained on the same split: ALS (needs the bench extra), EASE, or none",
    )
    q.add_argument(
        "--min-peer-ratio",
        type=float,
        default=None,
        help="fail below this multiple of the better peer's NDCG@10 (and P@10)",
    )
    q.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")


def run(args: argparse.Namespace) -> int:
    """Train and evaluate once per seed, print the mean table; 1 if a floor is not met."""
    from bench_peers import PeerUnavailable, run_peer

    from recmf import cli, pipeline, tracking
    from recmf.config import compose_settings
    from recmf.data.sources import load_source
    from recmf.eval.split_file import SavedSplit
    from recmf.store import FeatureStore

    peers = [] if args.peers == ["none"] else args.peers
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        print(
            f"error: --peers {' '.join(args.peers)}: unknown {unknown}; choose from "
            f"{' '.join(PEERS)}, or none",
            file=sys.stderr,
        )
        return 2

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
        methods = {
            "recmf": {
                **result.metrics,
                "fit_seconds": trained.train_seconds,
                "val_ndcg_at_10": trained.best_val,
                "params": {**trained.selected, "best_epoch": trained.best_epoch},
            },
            "popularity": {**result.baseline, "fit_seconds": 0.0},
        }
        saved = SavedSplit.load(tracking.download_split(ecfg.logger, trained.run_id))
        for name in peers:  # on the very split recmf trained and was evaluated on
            try:
                peer = run_peer(name, saved, seed, [5, 10, 20])
            except PeerUnavailable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            methods[name] = {
                **peer.metrics,
                "fit_seconds": peer.fit_seconds,
                "val_ndcg_at_10": peer.val_ndcg,
                "params": peer.params,
            }
        runs.append(
            {
                "seed": seed,
                "run_id": trained.run_id,
                "train_seconds": trained.train_seconds,
                "best_epoch": trained.best_epoch,
                "best_val": trained.best_val,  # what a configuration is chosen on, never the test
                "ingest_seconds": ingest_s,
                "ingest": ingest.summary(),
                "methods": methods,
            }
        )
        print(
            f"seed {seed}: ndcg@10 {result.metrics['ndcg_at_10']:.4f} "
            f"p@10 {result.metrics['precision_at_10']:.4f} "
            f"(validation {trained.monitor} {trained.best_val:.4f} at epoch {trained.best_epoch}"
            f"{''.join(f', {k} {_shown(v)}' for k, v in trained.selected.items())}; "
            f"{trained.train_seconds:.1f} s training, run {trained.run_id})",
            flush=True,
        )

    print(f"\n{args.experiment} from {args.data}, {len(runs)} seed(s), mean (± half-range):")
    header = "".join(f"{LABELS[k]:>19}" for k in KEYS)
    print(f"{'method':<12}{header}{'fit s':>9}  chosen on validation")
    summary = {}
    for name in ("recmf", *peers, "popularity"):
        row = summary[name] = {}
        for key in (*KEYS, "fit_seconds"):
            values = [r["methods"][name][key] for r in runs]
            row[key] = statistics.mean(values)
            row[f"{key}_spread"] = (max(values) - min(values)) / 2
        row["params"] = [r["methods"][name].get("params") for r in runs]
        cells = "".join(f"{row[k]:>10.4f} ± {row[k + '_spread']:.4f}" for k in KEYS)
        chosen = row["params"][0] if name in peers else ""
        if name == "recmf":  # per seed: what model.recency / model.reg = auto chose
            keys = [k for k in row["params"][0] if k != "best_epoch"]
            chosen = "; ".join(
                ", ".join(f"{k} {_shown(p[k])}" for k in keys) for p in row["params"]
            ) if keys else ""  # fmt: skip
        print(f"{name:<12}{cells}{row['fit_seconds']:>9.1f}  {chosen or ''}")
    result = {"experiment": args.experiment, "data": str(args.data), "methods": summary}
    save(args, f"quality-{args.schema}.json", {**result, "runs": runs})
    return _check_floors(args, summary, peers)


def _check_floors(args: argparse.Namespace, summary: dict, peers: list[str]) -> int:
    """Print the ratios to popularity and the better peer; 1 (with the reasons on stderr) below
    any floor given."""
    failed = []
    ours = summary["recmf"]
    if args.min_ndcg is not None and ours["ndcg_at_10"] < args.min_ndcg:
        failed.append(f"NDCG@10 {ours['ndcg_at_10']:.4f} < {args.min_ndcg}")
    if args.min_precision is not None and ours["precision_at_10"] < args.min_precision:
        failed.append(f"P@10 {ours['precision_at_10']:.4f} < {args.min_precision}")
    ratio = ours["ndcg_at_10"] / summary["popularity"]["ndcg_at_10"]
    print(f"NDCG@10 is {ratio:.2f}x popularity")
    if args.min_ratio is not None and ratio < args.min_ratio:
        failed.append(f"NDCG@10 only {ratio:.2f}x popularity < {args.min_ratio}x")
    for key, label in (("ndcg_at_10", "NDCG@10"), ("precision_at_10", "P@10")):
        if not peers:
            break
        best = max(peers, key=lambda name: summary[name][key])
        peer_ratio = ours[key] / summary[best][key]
        print(f"{label} is {peer_ratio:.3f}x the better peer's ({best} {summary[best][key]:.4f})")
        if args.min_peer_ratio is not None and peer_ratio < args.min_peer_ratio:
            failed.append(f"{label} only {peer_ratio:.3f}x {best} < {args.min_peer_ratio}x")
    if args.min_peer_ratio is not None and not peers:
        failed.append("--min-peer-ratio needs --peers")
    if failed:
        print("quality floor not met: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def _shown(value) -> str:
    """A chosen value as the config spells it: ``true`` / ``false``, numbers in ``g`` form."""
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"
