"""Interrupted training resumes: SIGTERM/SIGINT to a real training process, then ``resume=``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = [
    "dataset.n_users=300",
    "dataset.n_items=120",
    "dataset.n_interactions=15000",
    "latent_dim=16",
    "trainer.max_epochs=12",
    "patience=12",  # every epoch runs: the interruption lands mid-training
    "registered_model=null",
]


def _train(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _interrupt_after_first_epoch(args, cwd: Path, env: dict, sig: int, phase_dir: str):
    """Start training, send ``sig`` once a checkpoint of the given phase exists."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    pattern = f"*/{phase_dir}last.ckpt"
    while not list((cwd / ".recmf" / "checkpoints").glob(pattern)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def setup(pg_url, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("resume")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "RECMF_DATABASE_URL": pg_url,
    }
    args = [f"db.schema=resume_{uuid.uuid4().hex[:8]}", *CONFIG]
    whole = _train(args, cwd, env)  # the uninterrupted reference (it ingests the data too)
    assert whole.returncode == 0, whole.stderr[-3000:]
    return {"cwd": cwd, "env": env, "args": args, "whole": whole.stdout.strip().splitlines()[-1]}


def _result(line: str) -> tuple[str, str]:
    """(run id, the rest: metric, value, epoch) of train.py's summary line."""
    words = line.split()
    return words[1].rstrip(":"), " ".join(words[2:6])


@pytest.mark.parametrize(
    ("sig", "phase_dir", "phase"),
    [(signal.SIGTERM, "", "train"), (signal.SIGINT, "refit/", "refit")],
)
def test_interrupted_training_resumes_to_the_uninterrupted_result(setup, sig, phase_dir, phase):
    from mlflow.tracking import MlflowClient

    cwd, env = setup["cwd"], setup["env"]
    code, out, err = _interrupt_after_first_epoch(setup["args"], cwd, env, sig, phase_dir)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and f"during its {phase} phase" in err
    run_id = err.split("saved to run ")[1].split(".")[0]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    logged = {a.path for a in client.list_artifacts(run_id, "resume")}
    assert "resume/state.json" in logged and "resume/last.ckpt" in logged
    # the checkpoints must come from MLflow, not from this machine's leftovers
    for f in sorted((cwd / ".recmf" / "checkpoints" / run_id).rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    resumed = _train([f"resume={run_id}"], cwd, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got_id, got = _result(resumed.stdout.strip().splitlines()[-1])
    assert got_id == run_id  # the same run, continued
    _, want = _result(setup["whole"])
    assert got.split()[:3] == want.split()[:3]  # metric name, value to 4 decimals, epoch
    assert client.get_run(run_id).info.status == "FINISHED"
    again = _train([f"resume={run_id}"], cwd, env)
    assert again.returncode == 2 and "nothing to resume" in again.stderr
