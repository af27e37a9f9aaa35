"""``benchmark.py scale``: recmf at MovieLens-20M scale, on synthetic data of that shape.

The data: ``rows`` interactions of ``rows / 145`` users and ``rows / 740`` items (MovieLens-20M's
ratios), drawn by :func:`recmf.data.synthetic.synthetic` (a planted low-rank taste, Zipf item
popularity, noise, per-user times), written once as a CSV shaped like MovieLens' ``ratings.csv``
(``userId,movieId,rating,timestamp``) under ``--workdir`` and reused.

Per size:

- **Ingest** of that CSV end to end, the way a user runs it (``scripts/ingest.py`` in its own
  process, into a fresh embedded store: ``initdb``, server start and stop included): wall time,
  rows/s and the process's peak RSS (``wait4``'s ``ru_maxrss``; the PostgreSQL server's own
  memory is its settings': shared_buffers 128 MB, 256 MB of work_mem / maintenance_work_mem).
- **Time to quality** (``--train``): recmf (``scripts/train.py`` with ``refit=false``, the
  config in :data:`RECMF`, in its own process) and implicit's ALS (64 factors, a small grid,
  in its own process) on the same split and validation part, each until its validation NDCG@10
  stops improving. Each one's validation NDCG@10 against wall time from the start of training
  (data loading excluded for both; recmf: from its MLflow run's creation, after the store read
  and the split; ALS: fitting only, not its validation scoring), best validation and test
  NDCG@10, total time and peak RSS; and ``time_to_quality_ratio``: recmf's time to ALS's best
  validation NDCG@10 over ALS's time to it (``null`` when recmf never reaches it).
  ``time_to_quality_ratio_fitting_only`` is the same with recmf's validation passes taken out
  too (its ``time/validation_seconds``), as ALS's scoring is. With ``model.init=svd`` the curve
  starts with the validated start (epoch 0). A plot of both curves is written beside the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_common import ROOT, save

INGEST = ROOT / "scripts" / "ingest.py"
COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="ingest (and, later, time to quality) at 1M-20M rows")
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also train recmf and ALS on the ingested data: time to quality",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where recmf trains and evaluates (ALS runs on the CPU: implicit's pip wheels have "
        "no GPU build)",
    )
    p.add_argument(
        "--als-params",
        nargs=2,
        type=float,
        metavar=("REG", "ALPHA"),
        default=None,
        help="fit ALS at this one grid point instead of the 3x3 grid (regularization, alpha)",
    )
    p.add_argument("--workdir", default=".recmf/benchmark/scale")
    p.add_argument("--out", default=None)


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    grid = ALS_GRID if args.als_params is None else [
        {"factors": 64, "regularization": args.als_params[0], "alpha": args.als_params[1]}
    ]  # fmt: skip
    out: dict = {"cpu_count": os.cpu_count(), "device": device, "sizes": []}
    for rows in args.rows:
        csv = csv_of(rows, args.seed, workdir)
        data_dir = workdir / "pgdata"
        result = {"rows": rows, "csv_bytes": csv.stat().st_size}
        result["ingest"] = i = ingest(csv, data_dir)
        out["sizes"].append(result)
        print(
            f"ingest {rows:,} rows ({result['csv_bytes'] / 2**20:.0f} MiB CSV), fresh store: "
            f"{i['seconds']:.1f} s end to end, {i['rows_per_s'] / 1e6:.2f} M rows/s, peak RSS "
            f"{i['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        if args.train:
            result.update(time_to_quality(data_dir, workdir, rows, args.seed, device, grid))
            r, a = result["recmf"], result["ALS"]
            reach = result["recmf_seconds_to_als_best"]
            print(
                f"  {rows:,} rows: ALS best validation NDCG@10 {a['best_val_ndcg']:.4f} "
                f"after {a['seconds_to_best']:.1f} s (test {a['test_ndcg']:.4f}, "
                f"{a['params']}, total {a['total_seconds']:.1f} s, peak "
                f"{a['peak_rss_mib']:.0f} MiB); recmf best {r['best_val_ndcg']:.4f} at epoch "
                f"{r['best_epoch']} (test {r['test_ndcg']:.4f}, total {r['total_seconds']:.1f} s, "
                f"peak {r['peak_rss_mib']:.0f} MiB), reaches ALS's best after "
                + (f"{reach:.1f} s: {result['time_to_quality_ratio']:.2f}x ALS's time "
                   f"({result['recmf_fitting_seconds_to_als_best']:.1f} s without its "
                   f"validation passes: {result['time_to_quality_ratio_fitting_only']:.2f}x)"
                   if reach is not None else "never"),
                flush=True,
            )  # fmt: skip
            if device == "cuda":  # the yardstick: implicit's published GPU ALS speed
                result["published_gpu_als_seconds_to_best"] = g = (
                    PUBLISHED_GPU_ALS_S_PER_ITERATION * a["best_iteration"]
                )
                print(f"  implicit's published GPU ALS ({PUBLISHED_GPU_ALS_S_PER_ITERATION} s an "
                      f"iteration at this scale) would take {g:.1f} s to ALS's best iteration "
                      f"({a['best_iteration']})", flush=True)  # fmt: skip
        shutil.rmtree(data_dir, ignore_errors=True)
    saved = save(args, "scale.json", out)
    if args.train:
        plot(out, saved.with_suffix(".png"))
    return 0


# recmf for time to quality: the config for large data sets (configs/experiment/large.yaml);
# the synthetic times are a random order of each user's items (no recency signal by
# construction), so no recency weighting, and the L2 fixed at the default's usual choice rather
# than raced (a race would be counted as time)
RECMF = ["experiment=large", "refit=false", "model.recency=0", "model.reg=0.08"]
ALS_GRID = [{"factors": 64, "regularization": r, "alpha": a} for r in (1.0, 10.0, 100.0)
            for a in (0.3, 1.0, 3.0)]  # fmt: skip
ALS_MAX_ITERATIONS, ALS_PATIENCE = 30, 3
# implicit's GPU ALS on MovieLens-20M-sized data, as its authors publish it (issue 14's yardstick)
PUBLISHED_GPU_ALS_S_PER_ITERATION = 0.33


def time_to_quality(
    data_dir: Path, workdir: Path, rows: int, seed: int, device: str, grid: list[dict]
) -> dict:
    """recmf (on ``device``) and ALS (on the CPU, over ``grid``) on the same split (recmf's
    run's), each in a child process."""
    import sqlite3

    tracking = workdir / "mlflow.db"
    logger = [f"logger.tracking_uri=sqlite:///{tracking.resolve()}",
              "logger.experiment_name=scale", f"db.data_dir={data_dir.resolve()}",
              "db.schema=bench_scale"]  # fmt: skip
    on = f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}"
    train = _child([sys.executable, str(ROOT / "scripts" / "train.py"), *logger, *RECMF,
                    f"seed={seed}", "progress=lines", on])  # fmt: skip
    run_id = train["stdout"].strip().splitlines()[-1].split()[1].rstrip(":")
    _child([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *logger, f"run_id={run_id}",
            "ks=[10]", f"device={device}"])  # fmt: skip
    with sqlite3.connect(tracking) as db:
        (start,) = db.execute("SELECT start_time FROM runs WHERE run_uuid=?", (run_id,)).fetchone()

        def series(key: str) -> list[tuple[float, int]]:  # (value, timestamp) in logged order
            return db.execute(
                "SELECT value, timestamp FROM metrics WHERE run_uuid=? AND key=? "
                "ORDER BY timestamp, step", (run_id, key)).fetchall()  # fmt: skip

        curve, validating = series("val/ndcg_at_10"), series("time/validation_seconds")
        (test,) = db.execute(
            "SELECT value FROM metrics WHERE run_uuid=? AND key=?", (run_id, "test/ndcg_at_10")
        ).fetchone()
        (init,) = db.execute(
            "SELECT value FROM params WHERE run_uuid=? AND key='model.init'", (run_id,)
        ).fetchone()
    recmf_curve = [[(t - start) / 1000, v] for v, t in curve]
    # the same points without the time spent validating (as ALS's curve counts fitting only)
    spent = itertools.accumulate(s for s, _ in validating)
    fitting_curve = [[t - s, v] for (t, v), s in zip(recmf_curve, spent, strict=True)]
    # one validation figure per epoch, in order; model.init=svd validates its start (epoch 0)
    first = 0 if init == "svd" else 1
    best_epoch, best = max(enumerate((v for v, _ in curve), first), key=lambda ev: ev[1])
    recmf = {
        "config": RECMF,
        "device": device,
        "run_id": run_id,
        "curve": recmf_curve,  # [seconds since the run started training, validation NDCG@10]
        "fitting_curve": fitting_curve,  # [those seconds less validation's, validation NDCG@10]
        "first_epoch": first,  # of the curve: 0 when the start was validated
        "best_val_ndcg": best,
        "best_epoch": best_epoch,
        "test_ndcg": test,
        "total_seconds": train["seconds"],  # the whole train.py process, store read included
        "peak_rss_mib": train["peak_rss_mib"],
    }
    als_json = workdir / f"als-{rows}.json"
    als_run = _child([sys.executable, __file__, "als", run_id, str(tracking.resolve()),
                      str(als_json), str(seed), json.dumps(grid)])  # fmt: skip
    als = json.loads(als_json.read_text())
    als["peak_rss_mib"] = als_run["peak_rss_mib"]
    reach = next((t for t, v in recmf_curve if v >= als["best_val_ndcg"]), None)
    fitting = next((t for t, v in fitting_curve if v >= als["best_val_ndcg"]), None)
    return {
        "recmf": recmf,
        "ALS": als,
        "recmf_seconds_to_als_best": reach,
        "time_to_quality_ratio": None if reach is None else reach / als["seconds_to_best"],
        # both without validation: recmf's fitting time to ALS's best over ALS's
        "recmf_fitting_seconds_to_als_best": fitting,
        "time_to_quality_ratio_fitting_only": (
            None if fitting is None else fitting / als["seconds_to_best"]
        ),
    }


def _child(command: list[str]) -> dict:
    """Run ``command``; its wall seconds, its own peak RSS (``wait4``) and stdout; exit with
    its stderr's tail if it fails. Output goes to files: a full pipe would stall it."""
    import tempfile

    env = {k: v for k, v in os.environ.items() if k != "RECMF_DATABASE_URL"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{Path(command[1]).name} failed:\n{stderr[-3000:]}")
    return {"seconds": seconds, "stdout": stdout, "peak_rss_mib": usage.ru_maxrss / 1024}


class _Stalled(Exception):
    """Raised by the ALS callback to end a fit whose validation stopped improving."""


def als_curves(run_id: str, tracking: str, out: str, seed: int, grid: list[dict]) -> None:
    """The ALS child: every grid point fitted an iteration at a time on the run's training part,
    scored on its validation part after each, until it stops improving; the best one's curve."""
    import sqlite3

    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_peers import _matrix, _metrics
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recmf.data.sparse import UserItems
    from recmf.data.split import sample_users
    from recmf.eval.split_file import SavedSplit
    from recmf.settings import LoggerConfig
    from recmf.tracking import download_split

    saved = SavedSplit.load(download_split(LoggerConfig(f"sqlite:///{tracking}"), run_id))
    parts = [saved.pairs(p) for p in ("train", "val", "test")]
    n_users = int(max(u.max(initial=-1) for u, _ in parts)) + 1
    n_items = int(max(i.max(initial=-1) for _, i in parts)) + 1
    train = UserItems.from_pairs(*saved.pairs("train"), n_users)
    # the users recmf's run validated on: all, or its seeded sample (val_users)
    val_u, val_i = saved.pairs("val")
    with sqlite3.connect(tracking) as db:
        params = dict(db.execute(
            "SELECT key, value FROM params WHERE run_uuid=? AND key IN ('val_users', 'seed')",
            (run_id,)).fetchall())  # fmt: skip
    ranked = sample_users(np.unique(val_u), int(params.get("val_users", 0)), int(params["seed"]))
    keep = np.isin(val_u, ranked)
    val = UserItems.from_pairs(val_u[keep], val_i[keep], n_users)
    x = _matrix(*saved.pairs("train"), n_users, n_items)
    runs = []
    t_all = time.perf_counter()
    for params in grid:
        model = AlternatingLeastSquares(
            **params, iterations=ALS_MAX_ITERATIONS, random_state=seed, num_threads=0
        )
        curve, best, clock = [], [-1.0, 0, None], [0.0, 0.0]  # clock: start, scoring seconds

        def after(iteration: int, _elapsed: float, _loss, model=model, curve=curve, best=best,
                  clock=clock) -> None:  # fmt: skip
            fitted = time.perf_counter() - clock[0] - clock[1]  # fitting only, setup included
            t1 = time.perf_counter()
            u, v = np.array(model.user_factors), np.array(model.item_factors)
            ndcg = _metrics(lambda users: u[users] @ v.T, val, train, [10], n_items)["ndcg_at_10"]
            curve.append([fitted, ndcg])
            if ndcg > best[0]:
                best[:] = [ndcg, iteration + 1, (u, v)]
            clock[1] += time.perf_counter() - t1
            if iteration + 1 - best[1] >= ALS_PATIENCE:
                raise _Stalled  # validation stopped improving

        clock[0] = time.perf_counter()
        with threadpool_limits(1, "blas"), contextlib.suppress(_Stalled):
            model.fit(x, show_progress=False, callback=after)
        runs.append({"params": params, "curve": curve, "best": tuple(best)})
    total = time.perf_counter() - t_all
    chosen = max(runs, key=lambda r: r["best"][0])
    val_ndcg, iteration, (u, v) = chosen["best"]
    seen = UserItems.from_pairs(*saved.pairs("train", "val"), n_users)
    test = UserItems.from_pairs(*saved.pairs("test"), n_users)
    test_ndcg = _metrics(lambda users: u[users] @ v.T, test, seen, [10], n_items)["ndcg_at_10"]
    result = {
        "params": chosen["params"],
        "curve": chosen["curve"],  # [fitting seconds, validation NDCG@10] per iteration
        "val_users": len(ranked),  # scored on the users recmf's run validated on
        "best_val_ndcg": val_ndcg,
        "best_iteration": iteration,
        "seconds_to_best": chosen["curve"][iteration - 1][0],
        "test_ndcg": test_ndcg,
        "total_seconds": total,  # the whole grid, validation scoring included
        "grid": [
            {"params": r["params"], "best_val_ndcg": r["best"][0], "iterations": len(r["curve"])}
            for r in runs
        ],  # fmt: skip
    }
    Path(out).write_text(json.dumps(result, indent=2))


def plot(out: dict, path: Path) -> None:
    """Validation NDCG@10 against wall time, recmf and ALS, one panel per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s in out["sizes"] if "recmf" in s]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for name in ("recmf", "ALS"):
            t, v = zip(*size[name]["curve"], strict=True)
            ax.plot(t, v, marker=".", label=name)
        ax.set_title(f"{size['rows']:,} rows")
        ax.set_xlabel("seconds of training")
        ax.set_ylabel("validation NDCG@10")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


def csv_of(rows: int, seed: int, workdir: Path) -> Path:
    """The size's CSV, written once, by a child process: this one stays small, so the ingest's
    process, forked from it, does not start with (and count in its peak) the generator's GBs."""
    path = workdir / f"ratings-{rows}-seed{seed}.csv"
    if not path.exists():
        subprocess.run([sys.executable, __file__, str(rows), str(seed), str(path)], check=True)
    return path


def _write_csv(rows: int, seed: int, path: Path) -> None:
    """Generate the size's data and write it (a temporary name until complete)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    sys.path.insert(0, str(ROOT))
    from recmf.data.synthetic import synthetic

    raw = synthetic(max(100, rows // 145), max(50, rows // 740), rows, 8, 1.0, seed)
    table = pa.table(
        {
            COLUMNS["user"]: pa.array(np.char.lstrip(raw.user_id.astype(str), "U")),
            COLUMNS["item"]: pa.array(np.char.lstrip(raw.item_id.astype(str), "I")),
            COLUMNS["rating"]: pa.array(raw.rating),
            COLUMNS["time"]: pa.array(raw.timestamp),
        }
    )
    del raw
    partial = path.with_suffix(".partial")
    pacsv.write_csv(table, partial, pacsv.WriteOptions(quoting_style="none"))
    partial.rename(path)


def ingest(csv: Path, data_dir: Path) -> dict:
    """``scripts/ingest.py`` of ``csv`` into a fresh embedded store, in its own process."""
    shutil.rmtree(data_dir, ignore_errors=True)
    command = [
        sys.executable,
        str(INGEST),
        "dataset=csv",
        f"dataset.path={csv.resolve()}",
        *(f"dataset.columns.{role}={name}" for role, name in COLUMNS.items()),
        f"db.data_dir={data_dir.resolve()}",
        "db.schema=bench_scale",
    ]
    run = _child(command)
    seconds, stdout, peak = run["seconds"], run["stdout"], run["peak_rss_mib"]
    rows = int(stdout.split(" interactions (+")[0].rsplit(" ", 1)[1])
    return {
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mib": peak,
        "stored": stdout.strip().splitlines()[-1],
    }


if __name__ == "__main__":  # the children: csv_of's (ROWS SEED PATH) and ALS's (als ...)
    if sys.argv[1] == "als":
        grid = json.loads(sys.argv[6]) if len(sys.argv) > 6 else ALS_GRID
        als_curves(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), grid)
    else:
        _write_csv(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
