"""``benchmark.py scale``: recmf at MovieLens-20M scale, on synthetic data of that shape.

The data: ``rows`` interactions of ``rows / 145`` users and ``rows / 740`` items (MovieLens-20M's
ratios), drawn by :func:`recmf.data.synthetic.synthetic` (a planted low-rank taste, Zipf item
popularity, noise, per-user times), written once as a CSV shaped like MovieLens' ``ratings.csv``
(``userId,movieId,rating,timestamp``) under ``--workdir`` and reused.

Measured so far, per size: **ingest** of that CSV end to end, the way a user runs it
(``scripts/ingest.py`` in its own process, into a fresh embedded store: ``initdb``, server start
and stop included), its wall time, rows/s and the process's peak RSS (``wait4``'s ``ru_maxrss``;
the PostgreSQL server's own memory is its settings': shared_buffers 128 MB, and 256 MB of
work_mem / maintenance_work_mem during the ingest). The training part (time to ALS's quality) is
not built yet.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--workdir", default=".recmf/benchmark/scale")
    p.add_argument("--out", default=None)


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict = {"cpu_count": os.cpu_count(), "sizes": []}
    for rows in args.rows:
        csv = csv_of(rows, args.seed, workdir)
        result = {"rows": rows, "csv_bytes": csv.stat().st_size, "ingest": ingest(csv, workdir)}
        out["sizes"].append(result)
        i = result["ingest"]
        print(
            f"ingest {rows:,} rows ({result['csv_bytes'] / 2**20:.0f} MiB CSV), fresh store: "
            f"{i['seconds']:.1f} s end to end, {i['rows_per_s'] / 1e6:.2f} M rows/s, peak RSS "
            f"{i['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    save(args, "scale.json", out)
    return 0


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


def ingest(csv: Path, workdir: Path) -> dict:
    """``scripts/ingest.py`` of ``csv`` into a fresh embedded store, in its own process."""
    data_dir = workdir / "pgdata"
    shutil.rmtree(data_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RECMF_DATABASE_URL"}
    command = [
        sys.executable,
        str(INGEST),
        "dataset=csv",
        f"dataset.path={csv.resolve()}",
        *(f"dataset.columns.{role}={name}" for role, name in COLUMNS.items()),
        f"db.data_dir={data_dir.resolve()}",
        "db.schema=bench_scale",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max of all
    seconds = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.stdout.close(), proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest failed:\n{stderr[-3000:]}")
    shutil.rmtree(data_dir, ignore_errors=True)
    rows = int(stdout.split(" interactions (+")[0].rsplit(" ", 1)[1])
    return {
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "stored": stdout.strip().splitlines()[-1],
    }


if __name__ == "__main__":  # csv_of's child: python bench_scale.py ROWS SEED PATH
    _write_csv(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
