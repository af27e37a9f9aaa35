"""Benchmarks: numbers for the README, printed and saved as JSON. Not tests.

Usage:
    python scripts/benchmark.py quality --data ../shared/data/ml-100k
    python scripts/benchmark.py quality --data ../shared/data/ml-100k --seeds 1 2 3 \
        --min-ndcg 0.175 --min-precision 0.15        # exits 1 below either floor (CI)
    python scripts/benchmark.py rmse --data ../shared/data/ml-100k     # 5-fold CV, loss=mse
    python scripts/benchmark.py foldin --data ../shared/data/ml-100k   # new users, no retraining
    python scripts/benchmark.py coldstart --data ../shared/data/ml-100k  # cold items / users
    python scripts/benchmark.py serve          # 2,000 REST requests from 32 clients: p50/p99
    python scripts/benchmark.py speed                  # store, training, evaluation, recommend
    python scripts/benchmark.py speed --device cuda --train-rows 20000000
    python scripts/benchmark.py scale --rows 1000000 5000000 20000000  # ingest at scale
    python scripts/benchmark.py quality --dataset csv --experiment none --schema bench_mlsmall \
        --data ../shared/data/ml-latest-small/ratings.csv \
        --items ../shared/data/ml-latest-small/movies.csv    # the default config on any CSV

``quality`` runs ingest -> train -> evaluate through the same functions as the scripts, with
the shipped experiment config for the data set, into its own database schema and MLflow store
(``.recmf/benchmark``), and prints recmf's metrics beside the popularity baseline.

Each mode is a module beside this one (``bench_quality.py``, ``bench_rmse.py``,
``bench_foldin.py``, ``bench_coldstart.py``, ``bench_serve.py``, ``bench_speed.py``,
``bench_scale.py``) with
``add_parser`` and ``run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bench_coldstart
import bench_common
import bench_foldin
import bench_quality
import bench_rmse
import bench_scale
import bench_serve
import bench_speed

sys.path.insert(0, str(bench_common.ROOT))  # this checkout's recmf, installed or not

# In the order ``--help`` lists them.
MODES = {
    "quality": bench_quality,
    "rmse": bench_rmse,
    "foldin": bench_foldin,
    "coldstart": bench_coldstart,
    "serve": bench_serve,
    "speed": bench_speed,
    "scale": bench_scale,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for module in MODES.values():
        module.add_parser(sub)
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_train":
        return bench_speed.train_child(sys.argv[2:])  # the speed mode's child process
    args = parser.parse_args(argv)
    if "data" in vars(args) and not Path(args.data).exists():
        parser.error(f"--data {args.data!r} does not exist; pass a MovieLens-100K folder or CSV")
    return MODES[args.mode].run(args)


if __name__ == "__main__":
    sys.exit(main())
