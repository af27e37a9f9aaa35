"""First runs started together in a fresh directory: real processes, a fresh MLflow sqlite file.

MLflow creates its tables, its Default experiment and recmf's experiment on first use with no
locking of its own; two scripts doing it at once crashed (``table params already exists``,
alembic's "expected to match one row", a unique-constraint failure). recmf.tracking does that
under a file lock beside the sqlite file; these tests start the scripts together and need all of
them to succeed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.scripts import ROOT, TINY, start_script

DATA = [a for a in TINY if a.startswith("dataset.")]  # ingest the same rows train ingests


def _env(db_url: str | None) -> dict[str, str]:
    """The user's environment in a fresh directory: MLflow's default ``sqlite:///mlflow.db``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RECMF_DATABASE_URL", None)
    if db_url:
        env["RECMF_DATABASE_URL"] = db_url
    return env


def _together(jobs: list[tuple[str, list[str]]], cwd: Path, env: dict) -> list[tuple]:
    """Start every ``(script, args)`` at once; (script, returncode, stdout, stderr) of each."""
    procs = [
        (
            script,
            start_script(script, args, cwd, env),
        )
        for script, args in jobs
    ]
    out = []
    for script, proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        out.append((script, proc.returncode, stdout, stderr))
    return out


def _assert_all_succeeded(results: list[tuple]) -> None:
    for script, code, _, stderr in results:
        assert code == 0 and "Traceback" not in stderr, f"{script} exited {code}:\n{stderr[-4000:]}"


def _finished_training_runs(cwd: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "recmf"]
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    return [r for r in runs if r.data.tags.get("recmf_kind") == "train"]


@pytest.mark.slow
def test_scripts_started_together_in_a_fresh_directory_all_succeed(pg_url, make_db_cfg, tmp_path):
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    schema = [f"db.schema={make_db_cfg().schema}"]  # fresh, dropped after the test
    env = _env(pg_url)

    first = _together(
        [
            ("train.py", [*schema, *TINY]),
            ("train.py", [*schema, *TINY]),
            ("ingest.py", [*schema, *DATA]),
        ],
        cwd,
        env,
    )
    _assert_all_succeeded(first)
    assert len(_finished_training_runs(cwd)) == 2
    # each row stored once, by whichever process came first
    added = [re.search(r"\(\+(\d+) new", out + err) for _, _, out, err in first]
    assert sum(int(m.group(1)) for m in added if m) == 1500

    second = _together(
        [
            ("evaluate.py", schema),
            ("recommend.py", [*schema, "user=U1"]),
            ("train.py", [*schema, *TINY]),
        ],
        cwd,
        env,
    )
    _assert_all_succeeded(second)
    assert len(_finished_training_runs(cwd)) == 3
    from mlflow.tracking import MlflowClient

    # three registrations of one name (the schema's), numbered without a gap or a clash
    versions = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}").search_model_versions()
    assert len({v.name for v in versions}) == 1
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]


@pytest.mark.slow
def test_two_first_trainings_with_the_embedded_server_both_succeed(tmp_path):
    """The issue's case exactly: `python scripts/train.py` twice at once, nothing configured."""
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    results = _together([("train.py", TINY), ("train.py", TINY)], cwd, _env(None))
    _assert_all_succeeded(results)
    assert len(_finished_training_runs(cwd)) == 2
    # the server the two shared is stopped by whichever let go last (postgres removes the file)
    pid_file = cwd / ".recmf" / "pgdata" / "postmaster.pid"
    deadline = time.monotonic() + 15
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_file.exists(), "the embedded PostgreSQL outlived both of its users"


def test_store_lock_makes_a_second_opener_wait_and_say_so(tmp_path, caplog):
    from recmf.tracking.run_index import sqlite_path
    from recmf.tracking.store import store_lock

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sqlite_path(uri) == tmp_path / "mlflow.db"
    assert sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_path("http://localhost:5000") is None
    events = []

    def second() -> None:
        with store_lock(uri):
            events.append("second holds it")

    with caplog.at_level(logging.INFO, logger="recmf.tracking"), store_lock(uri):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive() and events == []  # flock: one holder, even within a process
        events.append("first lets go")
    thread.join(timeout=10)
    assert events == ["first lets go", "second holds it"]
    waits = [r.getMessage() for r in caplog.records if "waiting for another" in r.getMessage()]
    assert waits == [
        f"waiting for another process to finish setting up the tracking store "
        f"{tmp_path / 'mlflow.db'}"
    ]
