"""``benchmark.py speed``: store, training, evaluation and recommend speed, each beside its
reference (the measurements themselves are in ``bench_speed_lib.py``).

Each training measurement runs in a child process (``benchmark.py _train ...``, see
:func:`train_child`) so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bench_common import ROOT, save, spread

# The entry point whose hidden ``_train`` command runs :func:`train_child`.
BENCHMARK = Path(__file__).resolve().with_name("benchmark.py")


def add_parser(sub: argparse._SubParsersAction) -> None:
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


def run(args: argparse.Namespace) -> int:
    """Run the measurements asked for, print one line each, save them as JSON."""
    import bench_speed_lib as sp
    import bench_speed_store

    from recmf.settings import DbConfig

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict = {"device": device, "cpu_count": os.cpu_count()}
    db = DbConfig(os.environ.get("RECMF_DATABASE_URL"), "bench_speed")
    if args.store_rows:
        out["store"] = s = bench_speed_store.store_io(db, args.store_rows)
        print(
            f"store, {s['rows']:,} rows: read {s['read_rows_per_s'] / 1e6:.2f} M rows/s "
            f"{spread(s['read_runs_seconds'])} vs psql COPY binary (timed in its session) "
            f"{s['psql_copy_binary_rows_per_s'] / 1e6:.2f} M rows/s "
            f"{spread(s['psql_runs_seconds'])} ({s['read_vs_ceiling']:.0%} of the ceiling); ingest "
            f"{s['ingest_rows_per_s'] / 1e6:.2f} M rows/s",
            flush=True,
        )
    out["training"] = []
    for rows in args.train_rows:
        for loss in args.losses:
            batch = args.user_batch if loss == "softmax" else args.batch
            t = _training(rows, loss, batch, device, args)
            out["training"].append(t)
            print(
                f"train {loss}, {rows:,} rows ({t['users']:,} users x {t['items']:,} items), "
                f"batch {batch}: recmf {spread(t['recmf_runs_seconds'])}/epoch, peak RSS "
                f"{t['recmf_peak_rss_gib']:.2f} GiB vs plain loop "
                f"{spread(t['reference_runs_seconds'])}, peak RSS "
                f"{t['reference_peak_rss_gib']:.2f} GiB ({t['ratio']:.2f}x)",
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
            f"evaluate {e['ranked_users']:,} users (those with test items) x {e['items']:,} "
            f"items, top-20: recmf {spread(e['recmf_runs_seconds'])} vs bare matmul+topk of "
            f"the same users {spread(e['bare_runs_seconds'])} ({e['ratio']:.2f}x)",
            flush=True,
        )
    if args.recommend:
        out["recommend"] = r = _recommend_speed(db)
        print(
            f"recommend CLI median {r['recommend_cli_seconds']:.2f} s (runs "
            f"{min(r['cli_runs_seconds']):.2f}-{max(r['cli_runs_seconds']):.2f}) vs import torch "
            f"median {r['import_torch_seconds']:.2f} s (runs {min(r['torch_runs_seconds']):.2f}-"
            f"{max(r['torch_runs_seconds']):.2f}) ({r['ratio']:.2f}x); in-process top-10 "
            f"{r['top_k_one_user_ms']:.2f} ms",
            flush=True,
        )
    save(args, f"speed-{device}.json", out)
    return 0


def _recommend_speed(db) -> dict:
    """A store of the default synthetic data and a bundle over it, then the timings."""
    import tempfile

    import bench_speed_lib as sp

    from recmf.data.sources import synthetic
    from recmf.data.split import temporal_split
    from recmf.model.mf import MatrixFactorization
    from recmf.serve.bundle import Bundle
    from recmf.store import FeatureStore

    db = replace(db, schema="bench_speed_small")
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


def _training(rows: int, loss: str, batch: int, device: str, args) -> dict:
    """recmf and the plain loop, each in processes of its own (so each peak memory is its own),
    alternating recmf, loop, recmf, loop; the best epoch of each side and all its runs."""
    runs: dict[str, list[dict]] = {"recmf": [], "reference": []}
    for _ in range(2):
        for side in runs:
            cmd = [sys.executable, str(BENCHMARK), "_train", str(rows), loss, str(batch)]
            cmd += [device, str(args.dim), args.catalogue, side]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first = runs["recmf"][0]
    out = {k: first[k] for k in ("rows", "loss", "batch", "device", "users", "items", "dim")}
    for side, results in runs.items():
        out[f"{side}_runs_seconds"] = [r["epoch_seconds"] for r in results]
        out[f"{side}_epoch_seconds"] = min(out[f"{side}_runs_seconds"])
        out[f"{side}_peak_rss_gib"] = max(r["peak_rss_gib"] for r in results)
    out["ratio"] = out["recmf_epoch_seconds"] / out["reference_epoch_seconds"]
    out["recmf_samples_per_s"] = rows / out["recmf_epoch_seconds"]
    return out


def train_child(argv: list[str]) -> int:
    """One side's training measurement in its own process, so its peak memory is its own.

    ``argv``: rows, loss, batch, device, dim, catalogue (``movielens`` or ``fixed``), side
    (``recmf`` or ``reference``); prints the result as one JSON line, which :func:`run` reads.
    """
    import bench_speed_lib as sp

    rows, loss, batch, device, dim = int(argv[0]), argv[1], int(argv[2]), argv[3], int(argv[4])
    if argv[5] == "fixed":  # MovieLens-20M's catalogue whatever the number of interactions
        n_users, n_items = 137_931, 27_027
    else:  # MovieLens-20M's shape: the catalogue grows with the interactions
        n_users, n_items = max(100, rows // 145), max(50, rows // 740)
    result = sp.training(rows, n_users, n_items, dim, batch, loss, device, argv[6])
    result.update(users=n_users, items=n_items, dim=dim)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    status = Path("/proc/self/status").read_text()
    hwm_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    result["peak_rss_gib"] = hwm_kib / 2**20
    print(json.dumps(result))
    return 0
