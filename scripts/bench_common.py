"""What every benchmark mode shares: the repository root and where results are saved."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def save(args: argparse.Namespace, default_name: str, result: dict) -> Path:
    """Write ``result`` as JSON to ``--out`` (default: ``--workdir/default_name``)."""
    out = Path(args.out or Path(args.workdir) / default_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return out


def best_of(fn, repeat: int) -> float:
    """The fastest of ``repeat`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
