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


def interleaved(sides: dict, repeat: int) -> dict[str, list[float]]:
    """Seconds of each of ``sides`` (name -> callable), run A B A B ... ``repeat`` times each, so
    that drift in the machine's load falls on both sides alike."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def spread(times: list[float]) -> str:
    """``1.23 s (1.20-1.31)``: the best of the runs and their range."""
    return f"{min(times):.2f} s ({min(times):.2f}-{max(times):.2f})"
