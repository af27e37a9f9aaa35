"""What several test files share: the repository root, a tiny training config, a script runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [  # a training run of a few seconds on the synthetic data set
    "dataset.n_users=60",
    "dataset.n_items=40",
    "dataset.n_interactions=1500",
    "latent_dim=8",
    "trainer.max_epochs=4",
    "patience=2",
    "refit=false",
]


def run_script(script: str, args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """``python scripts/<script> args`` in ``cwd``, output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def start_script(script: str, args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """``python scripts/<script> args`` started in ``cwd`` (text pipes), not waited for."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
