"""Benchmarks: numbers for the README, printed and saved as JSON. Not tests.

Usage:
    python scripts/benchmark.py quality --data ../shared/data/ml-100k
    python scripts/benchmark.py quality --data ../shared/data/ml-100k --seeds 1 2 3 \
        --min-ndcg 0.175 --min-precision 0.15        # exits 1 below either floor (CI)
    python scripts/benchmark.py rmse --data ../shared/data/ml-100k     # 5-fold CV, loss=mse
    python scripts/benchmark.py foldin --data ../shared/data/ml-100k   # new users, no retraining
    python scripts/benchmark.py serve          # 2,000 REST requests from 32 clients: p50/p99
    python scripts/benchmark.py speed                  # store, training, evaluation, recommend
    python scripts/benchmark.py speed --device cuda --train-rows 20000000
    python scripts/benchmark.py quality --dataset csv --experiment none --schema bench_mlsmall \
        --data ../shared/data/ml-latest-small/ratings.csv \
        --items ../shared/data/ml-latest-small/movies.csv    # the default config on any CSV

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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = ("precision_at_5", "recall_at_5", "precision_at_10", "recall_at_10", "ndcg_at_10")


def _compose(name: str, overrides: list[str]):
    from recmf.config import compose

    return compose(name, overrides)


def _save(args: argparse.Namespace, default_name: str, result: dict) -> Path:
    """Write ``result`` as JSON to ``--out`` (default: ``--workdir/default_name``)."""
    out = Path(args.out or Path(args.workdir) / default_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return out


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
    data = [f"dataset={args.dataset}", f"db.schema={args.schema}"]
    if args.experiment != "none":  # "none": the default config, no data-set-specific file
        data.append(f"experiment={args.experiment}")
    data.append(f"dataset.path={Path(args.data).resolve()}")
    if args.items:
        data.append(f"dataset.items_path={Path(args.items).resolve()}")
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
    result = {"experiment": args.experiment, "data": str(args.data), "summary": summary}
    _save(args, f"quality-{args.schema}.json", {**result, "runs": runs})
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


def rmse(args: argparse.Namespace) -> int:
    from recmf import cli
    from recmf.datasets import load_source
    from recmf.rating_cv import kfold_rmse
    from recmf.store import FeatureStore

    overrides = [
        f"experiment={args.experiment}",
        f"dataset.path={Path(args.data).resolve()}",
        f"db.schema={args.schema}",
        f"seed={args.seed}",
        *args.overrides,
    ]
    cfg = _compose("train", overrides)
    with FeatureStore.open(cfg.db) as store:
        cli.run(lambda: store.ingest(load_source(cfg.dataset)))
        data = store.read_interactions()
    t0 = time.perf_counter()
    result = kfold_rmse(data, cfg, n_folds=args.folds, seed=args.seed)
    seconds = time.perf_counter() - t0
    for f in result["folds"]:
        print(
            f"fold {f['fold']}: rmse {f['rmse']:.4f} mae {f['mae']:.4f} "
            f"(val rmse {f['val_rmse']:.4f}, epoch {f['best_epoch']}, "
            f"{f['train_seconds']:.1f} s)",
            flush=True,
        )
    spread = np.std([f["rmse"] for f in result["folds"]])
    print(
        f"\n{args.experiment}, random {args.folds}-fold CV of {len(data)} ratings: "
        f"RMSE {result['rmse']:.4f} (std over folds {spread:.4f}), MAE {result['mae']:.4f}, "
        f"{seconds:.0f} s"
    )
    about = {"experiment": args.experiment, "data": str(args.data), "seconds": seconds}
    _save(args, f"rmse-{args.experiment}.json", {**about, **result})
    if args.max_rmse is not None and result["rmse"] > args.max_rmse:
        print(f"RMSE {result['rmse']:.4f} > {args.max_rmse}", file=sys.stderr)
        return 1
    return 0


def foldin(args: argparse.Namespace) -> int:
    import tempfile

    from recmf import cli, pipeline
    from recmf.datasets import load_source
    from recmf.fitting import quiet_lightning
    from recmf.fold_in import held_out_users
    from recmf.store import FeatureStore

    overrides = [f"dataset={args.dataset}", f"db.schema={args.schema}", f"seed={args.seed}"]
    if args.experiment != "none":
        overrides.append(f"experiment={args.experiment}")
    overrides.append(f"dataset.path={Path(args.data).resolve()}")
    cfg = _compose("train", [*overrides, *args.overrides])
    with FeatureStore.open(cfg.db) as store:
        cli.run(lambda: store.ingest(load_source(cfg.dataset)))
    data, _ = pipeline.load_interactions(cfg)
    quiet_lightning()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recmf-foldin-") as tmp:
        result = held_out_users(data, cfg, args.holdout, args.seed, Path(tmp))
    result["seconds"] = time.perf_counter() - t0
    key = f"ndcg_at_{cfg.k}"
    print(
        f"{result['held_out_users']} users held out of training ({args.holdout:.0%} of those "
        f"with test items), {result['evaluated_users']} evaluated, NDCG@{cfg.k}:\n"
        f"  trained with them    {result['trained'][key]:.4f}\n"
        f"  folded in            {result['fold_in'][key]:.4f}  "
        f"({result['fold_in_vs_trained']:.0%} of trained; {result['fold_in']['params']})\n"
        f"  popularity           {result['popularity'][key]:.4f}  "
        f"(fold-in {result['fold_in_vs_popularity']:.2f}x)"
    )
    _save(args, f"foldin-{args.schema}-seed{args.seed}.json", result)
    if args.min_ratio is not None and result["fold_in_vs_trained"] < args.min_ratio:
        print(f"fold-in below {args.min_ratio:.0%} of trained", file=sys.stderr)
        return 1
    return 0


def serve(args: argparse.Namespace) -> int:
    """Load on the REST model server: N requests from C concurrent clients on loopback."""
    import os
    import signal
    import socket
    import subprocess
    import threading
    import urllib.request

    work = Path(args.workdir).resolve() / "serve"
    work.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    if not args.tracking_uri:  # a fresh model on the synthetic data set, in its own schema
        from recmf import cli, pipeline

        # registered as models:/recmf/latest in the benchmark's own tracking store
        overrides = [f"logger.tracking_uri={uri}", "db.schema=bench_serve"]
        overrides.append("registered_model=recmf")
        cfg = _compose("train", overrides)
        cli.run(lambda: pipeline.train(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli), "models", "serve", "-m", args.model, "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "--workers", str(args.workers)]
    server = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    users = [f"U{i}" for i in range(1, 201)] + ["NOBODY"]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        body = {"dataframe_split": {"columns": ["user_id"], "data": [[users[i % len(users)]]]}}
        body["params"] = {"k": 10}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                rows = json.loads(response.read())["predictions"]
                ok = response.status == 200 and len(rows) == 10
        except OSError as exc:
            ok, rows = False, str(exc)
        with lock:
            latencies.append(time.perf_counter() - t0)
            if not ok:
                errors.append(str(rows)[:200])

    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print("the model server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        for i in range(args.clients):  # warm every worker's store connection
            call(i)
        latencies.clear()
        counter = iter(range(args.requests))
        counter_lock = threading.Lock()

        def client() -> None:
            while True:
                with counter_lock:
                    i = next(counter, None)
                if i is None:
                    return
                call(i)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    lat = np.array(latencies) * 1000
    result = {
        "requests": args.requests,
        "clients": args.clients,
        "workers": args.workers,
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": wall,
        "requests_per_s": args.requests / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_count": os.cpu_count(),
    }
    print(
        f"{args.requests} requests from {args.clients} clients ({args.workers} server workers): "
        f"{len(errors)} errors, {result['requests_per_s']:.0f} requests/s, "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )
    _save(args, "serve.json", result)
    return 1 if errors else 0


def speed(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from omegaconf import OmegaConf

    from recmf import speed as sp

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict = {"device": device, "cpu_count": os.cpu_count()}
    db = OmegaConf.create(
        {
            "url": os.environ.get("RECMF_DATABASE_URL"),
            "schema": "bench_speed",
            "data_dir": ".recmf/pgdata",
        }
    )
    if args.store_rows:
        out["store"] = s = sp.store_io(db, args.store_rows)
        print(
            f"store, {s['rows']:,} rows: read {s['read_rows_per_s'] / 1e6:.2f} M rows/s vs "
            f"psql \\copy binary {s['psql_copy_binary_rows_per_s'] / 1e6:.2f} M rows/s "
            f"({s['read_vs_ceiling']:.0%} of the ceiling); ingest "
            f"{s['ingest_rows_per_s'] / 1e6:.2f} M rows/s",
            flush=True,
        )
    out["training"] = []
    for rows in args.train_rows:
        for loss in args.losses:
            batch = args.user_batch if loss == "softmax" else args.batch
            cmd = [
                sys.executable,
                __file__,
                "_train",
                str(rows),
                loss,
                str(batch),
                device,
                str(args.dim),
                args.catalogue,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            t = json.loads(proc.stdout.strip().splitlines()[-1])
            out["training"].append(t)
            print(
                f"train {loss}, {rows:,} rows ({t['users']:,} users x {t['items']:,} items), "
                f"batch {batch}: recmf "
                f"{t['recmf_epoch_seconds']:.2f} s/epoch vs plain loop "
                f"{t['reference_epoch_seconds']:.2f} s ({t['ratio']:.2f}x), peak RSS "
                f"{t['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
    if args.eval_users:
        e = sp.evaluation(
            args.eval_users,
            args.eval_items,
            args.eval_users * 145,
            args.dim,
            20,
            args.chunk,
            device,
        )
        out["evaluation"] = e
        print(
            f"evaluate {e['users']:,} users x {e['items']:,} items, top-20: recmf "
            f"{e['recmf_seconds']:.2f} s vs bare matmul+topk {e['bare_matmul_topk_seconds']:.2f}"
            f" s ({e['ratio']:.2f}x)",
            flush=True,
        )
    if args.recommend:
        out["recommend"] = r = _recommend_speed(db)
        print(
            f"recommend CLI {r['recommend_cli_seconds']:.2f} s vs import torch "
            f"{r['import_torch_seconds']:.2f} s ({r['ratio']:.2f}x); in-process top-10 "
            f"{r['top_k_one_user_ms']:.2f} ms",
            flush=True,
        )
    path = Path(args.out or Path(args.workdir) / f"speed-{device}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"saved {path}")
    return 0


def _recommend_speed(db) -> dict:
    """A store of the default synthetic data and a bundle over it, then the timings."""
    import os
    import tempfile

    from omegaconf import OmegaConf

    from recmf import speed as sp
    from recmf.bundle import Bundle
    from recmf.datasets import synthetic
    from recmf.model import MatrixFactorization
    from recmf.split import temporal_split
    from recmf.store import FeatureStore

    db = OmegaConf.merge(db, {"schema": "bench_speed_small"})
    with FeatureStore.open(db) as store:
        store.ingest(synthetic())
        data = store.read_interactions()
        history = store.user_history(["U1"])["U1"]
    model = MatrixFactorization(data.n_users, data.n_items, 64)
    meta = {"loss": "softmax", "data": {"schema": db.schema}}
    tmp = Path(tempfile.mkdtemp(prefix="recmf-speed-"))
    bundle = Bundle.from_model(model, data.vocab, temporal_split(data), meta).save(tmp / "b")
    overrides = [f"db.schema={db.schema}", f"db.data_dir={Path(db.data_dir).resolve()}"]
    out = sp.recommend_cli(ROOT, bundle, overrides, "U1", dict(os.environ))
    out.update(sp.recommend_in_process(bundle, "U1", history))
    return out


def _train_child(argv: list[str]) -> int:
    """One training measurement in its own process, so its peak memory is its own."""
    from recmf import speed as sp

    rows, loss, batch, device, dim = int(argv[0]), argv[1], int(argv[2]), argv[3], int(argv[4])
    if argv[5] == "fixed":  # MovieLens-20M's catalogue whatever the number of interactions
        n_users, n_items = 137_931, 27_027
    else:  # MovieLens-20M's shape: the catalogue grows with the interactions
        n_users, n_items = max(100, rows // 145), max(50, rows // 740)
    result = sp.training(rows, n_users, n_items, dim, batch, loss, device)
    result.update(users=n_users, items=n_items, dim=dim)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    status = Path("/proc/self/status").read_text()
    hwm_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    result["peak_rss_gib"] = hwm_kib / 2**20
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
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
    r = sub.add_parser("rmse", help="rating prediction under random k-fold cross-validation")
    r.add_argument("--data", required=True, help="a MovieLens-100K folder")
    r.add_argument("--experiment", default="ml100k_rmse")
    r.add_argument("--schema", default="bench_ml100k")
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--seed", type=int, default=0, help="seeds the folds and the models")
    r.add_argument("--workdir", default=".recmf/benchmark")
    r.add_argument("--out", default=None)
    r.add_argument("--max-rmse", type=float, default=None, help="fail above this mean RMSE")
    r.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    f = sub.add_parser("foldin", help="users held out of training, folded in at request time")
    f.add_argument("--data", required=True, help="ml-100k folder (or a file for --dataset csv)")
    f.add_argument("--dataset", default="movielens-100k")
    f.add_argument("--experiment", default="ml100k", help="'none' for the default config")
    f.add_argument("--schema", default="bench_ml100k")
    f.add_argument("--holdout", type=float, default=0.1, help="share of test users held out")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--min-ratio", type=float, default=None, help="exit 1 below this ratio")
    f.add_argument("--workdir", default=".recmf/benchmark")
    f.add_argument("--out", default=None)
    f.add_argument("overrides", nargs="*", help="train config overrides, after --")
    v = sub.add_parser("serve", help="REST load: concurrent requests to mlflow models serve")
    v.add_argument("--tracking-uri", default=None, help="default: train a fresh synthetic model")
    v.add_argument("--model", default="models:/recmf/latest")
    v.add_argument("--requests", type=int, default=2000)
    v.add_argument("--clients", type=int, default=32)
    v.add_argument("--workers", type=int, default=2, help="server worker processes")
    v.add_argument("--workdir", default=".recmf/benchmark")
    v.add_argument("--out", default=None)
    p = sub.add_parser("speed", help="store, training, evaluation and recommend speed")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--store-rows", type=int, default=5_000_000, help="0 skips the store")
    p.add_argument("--train-rows", type=int, nargs="*", default=[1_000_000, 5_000_000])
    p.add_argument("--losses", nargs="+", default=["bpr", "softmax"])
    p.add_argument(
        "--catalogue",
        choices=["movielens", "fixed"],
        default="movielens",
        help="users and items grow with the rows (MovieLens-20M ratios) or stay at 138k x 27k",
    )
    p.add_argument("--batch", type=int, default=65536, help="interactions per step (bpr)")
    p.add_argument("--user-batch", type=int, default=1024, help="users per step (softmax)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--eval-users", type=int, default=138_000, help="0 skips evaluation")
    p.add_argument("--eval-items", type=int, default=27_000)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--recommend", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--workdir", default=".recmf/benchmark")
    p.add_argument("--out", default=None)
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_train":
        return _train_child(sys.argv[2:])
    args = parser.parse_args(argv)
    if args.mode == "speed":
        return speed(args)
    if args.mode == "serve":
        return serve(args)
    if not Path(args.data).exists():
        parser.error(f"--data {args.data!r} does not exist; pass a MovieLens-100K folder or CSV")
    if args.mode == "foldin":
        return foldin(args)
    return quality(args) if args.mode == "quality" else rmse(args)


if __name__ == "__main__":
    sys.exit(main())
