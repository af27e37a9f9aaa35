"""Interrupted training resumes: SIGTERM/SIGINT to a real training process, then ``resume=``."""

from __future__ import annotations

import os
import shlex
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
    "model.recency=2",  # fixed: a selection (auto) keeps no per-epoch state (tested below)
    "model.reg=0.08",
    "model.init=random",  # several refit epochs to interrupt (from the SVD start the best is 1)
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
    schema = f"resume_{uuid.uuid4().hex[:8]}"
    args = [f"db.schema={schema}", *CONFIG]
    whole = _train(args, cwd, env)  # the uninterrupted reference (it ingests the data too)
    assert whole.returncode == 0, whole.stderr[-3000:]
    whole_line = whole.stdout.strip().splitlines()[-1]
    return {"cwd": cwd, "env": env, "args": args, "schema": schema, "whole": whole_line}


def _result(line: str) -> tuple[str, str]:
    """(run id, the rest: metric, value, epoch) of train.py's summary line."""
    words = line.split()
    return words[1].rstrip(":"), " ".join(words[2:6])


@pytest.mark.slow
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
    # the printed command, run verbatim: it must read the run's own schema, not the default one
    printed = err.split("Continue it with: ")[1].split(" (or resume=last)")[0]
    python, script, *args = shlex.split(printed)
    assert (python, script) == ("python", "scripts/train.py")
    resumed = _train(args, cwd, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ingesting" not in resumed.stderr  # the run's schema holds its data already
    got_id, got = _result(resumed.stdout.strip().splitlines()[-1])
    assert got_id == run_id  # the same run, continued
    assert f"store schema {setup['schema']}," in resumed.stdout
    _, want = _result(setup["whole"])
    assert got.split()[:3] == want.split()[:3]  # metric name, value to 4 decimals, epoch
    assert client.get_run(run_id).info.status == "FINISHED"
    again = _train([f"resume={run_id}"], cwd, env)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_interrupt_before_any_completed_epoch_does_not_claim_one_was_saved(tmp_path):
    from recmf import tracking
    from recmf.errors import TrainingInterrupted
    from recmf.settings import LoggerConfig, TrainConfig
    from recmf.train import resume

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrainConfig(logger=LoggerConfig(uri))
    logger = tracking.make_logger(cfg.logger, {tracking.KIND_TAG: "train"})
    workdir = tmp_path / "ckpt"
    first = TrainingInterrupted("train", 0)
    resume.save_point(cfg, logger, workdir, first, "digest")
    assert "no epoch had completed" in str(first) and "epoch is saved" not in str(first)
    assert f"resume={logger.run_id} logger.tracking_uri={uri}" in str(first)
    (workdir / "last.ckpt").write_bytes(b"an epoch's checkpoint")
    later = TrainingInterrupted("train", 3)
    resume.save_point(cfg, logger, workdir, later, "digest")
    assert f"the last completed epoch is saved to run {logger.run_id}" in str(later)
    refit = TrainingInterrupted("refit", 0)
    resume.save_point(cfg, logger, workdir, refit, "digest")
    assert "no refit epoch had completed" in str(refit)
    select = TrainingInterrupted("select", 4)
    resume.save_point(cfg, logger, workdir, select, "digest")
    assert "a resume starts the selection again from its first epoch" in str(select)
    assert "epoch is saved" not in str(select)


@pytest.mark.slow
def test_a_run_interrupted_while_choosing_its_settings_resumes_to_the_same_result(setup):
    """model.recency=auto: SIGTERM during the race; the resume runs the selection again and
    ends where an uninterrupted run ends."""
    cwd, env = setup["cwd"], setup["env"]
    args = [a for a in setup["args"] if not a.startswith(("model.recency", "model.reg"))]
    whole = _train(args, cwd, env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    errors = cwd / "select.err"
    with errors.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *args, "progress=lines"],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err_file, text=True,
        )  # fmt: skip
        deadline = time.time() + 240
        while "select epoch 2/" not in errors.read_text():
            assert proc.poll() is None and time.time() < deadline, errors.read_text()[-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    err = errors.read_text()
    assert proc.returncode == 130 and "during its select phase" in err and "Traceback" not in err
    run_id = err.split("so run ")[1].split(" ")[0]
    resumed = _train([f"resume={run_id}"], cwd, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got_id, got = _result(resumed.stdout.strip().splitlines()[-1])
    _, want = _result(whole.stdout.strip().splitlines()[-1])
    assert got_id == run_id and got.split()[:3] == want.split()[:3]


def test_resume_takes_the_password_from_the_same_url_given_now_and_refuses_another():
    from recmf.config import _with_password
    from recmf.errors import ConfigError

    saved = "postgresql+psycopg2://bob:***@db.example:5432/recs"
    given = "postgresql+psycopg2://bob:s3cret@db.example:5432/recs"
    assert _with_password(saved, given, "r1") == given
    assert _with_password(None, given, "r1") is None  # the run used the embedded server
    plain = "postgresql+psycopg2://bob@db.example:5432/recs"
    assert _with_password(plain, None, "r1") == plain  # nothing hidden: the saved URL is whole
    for other in (None, "postgresql+psycopg2://bob:s3cret@elsewhere:5432/recs"):
        with pytest.raises(ConfigError, match=r"RECMF_DATABASE_URL") as err:
            _with_password(saved, other, "r1")
        assert "s3cret" not in str(err.value)
