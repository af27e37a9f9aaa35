"""The embedded PostgreSQL stops when its last user exits, however that user exits.

Real processes throughout: each test starts child Pythons that open the store on an embedded
server in a fresh data directory, ends them (normally, SIGTERM, SIGINT, SIGKILL; and a real
``mlflow models serve``) and looks for a postgres process of that directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.scripts import ROOT, TINY, run_script

pytestmark = pytest.mark.slow  # each test starts a server of its own (a few seconds)

# A user of the store: opens it, says "ready", then answers one line at a time on stdin:
# "count" -> the store's interaction count (a query on the server), "exit" -> close and exit.
USER = """
import signal, sys
from recmf.settings import DbConfig
from recmf.store import FeatureStore

cfg = DbConfig(None, "recmf", sys.argv[1])
store = FeatureStore.open(cfg)
# Ctrl+C's default even when started from a background job, which inherits SIGINT ignored (and
# Python then installs no KeyboardInterrupt handler): the SIGINT case would wait forever
signal.signal(signal.SIGINT, signal.default_int_handler)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "count":
        print(f"count {store.n_interactions()}", flush=True)
    elif line.strip() == "exit":
        break
store.close()
"""

# The watcher polls every second and a fast shutdown takes well under one; the rest is slack
# for pgserver's machine-wide lock, which other servers' initdb and start hold for seconds.
DEADLINE_S = 30


def _start_user(pgdata: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", USER, str(pgdata)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _expect(proc, "ready")
    return proc


def _expect(proc: subprocess.Popen, line: str) -> None:
    got = proc.stdout.readline().strip()
    if got != line:
        proc.kill()  # else reading its stderr to the end would wait for it forever
        pytest.fail(f"expected {line!r}, got {got!r}; stderr: {proc.stderr.read()[-3000:]}")


def _postgres_of(pgdata: Path) -> list[psutil.Process]:
    """Postmasters serving ``pgdata``: pg_ctl starts them as ``postgres -D <pgdata> ...``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(proc)
    return found


def _users(pgdata: Path) -> list[int]:
    """The pids pgserver lists as users of the server."""
    while True:
        try:
            return json.loads((pgdata / ".handle_pids.json").read_text())
        except ValueError:  # read while pgserver rewrites it
            time.sleep(0.05)


def _assert_server_goes(pgdata: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while _postgres_of(pgdata):
        assert time.monotonic() < deadline, (
            f"postgres of {pgdata} still runs {DEADLINE_S} s after its last user exited"
        )
        time.sleep(0.2)


def _end(procs: list[subprocess.Popen], pgdata: Path) -> None:
    """Kill what a failed test left: the users, then the server (its watcher then exits)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for postmaster in _postgres_of(pgdata):
        postmaster.kill()


SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL]


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_embedded_server_stops_when_its_only_user_is_signalled(tmp_path, sig):
    pgdata = (tmp_path / "pgdata").resolve()
    user = _start_user(pgdata)
    try:
        assert _postgres_of(pgdata)
        user.send_signal(sig)
        user.wait(timeout=DEADLINE_S)
        _assert_server_goes(pgdata)
    finally:
        _end([user], pgdata)


def test_embedded_server_outlives_a_killed_user_while_another_uses_it(tmp_path):
    pgdata = (tmp_path / "pgdata").resolve()
    first = second = None
    try:
        first = _start_user(pgdata)
        second = _start_user(pgdata)
        postmaster = _postgres_of(pgdata)
        first.kill()
        first.wait()
        # The watcher forgets the dead pid: then it has looked, and left the server running.
        deadline = time.monotonic() + DEADLINE_S
        while first.pid in _users(pgdata):
            assert time.monotonic() < deadline, "pgserver's user list still holds the killed user"
            time.sleep(0.2)
        second.stdin.write("count\n")
        second.stdin.flush()
        _expect(second, "count 0")
        assert _postgres_of(pgdata) == postmaster  # the same server all along
        second.stdin.write("exit\n")
        second.stdin.flush()
        assert second.wait(timeout=DEADLINE_S) == 0
        _assert_server_goes(pgdata)
    finally:
        _end([p for p in (first, second) if p is not None], pgdata)


def test_embedded_server_serves_processes_that_come_and_go_while_one_is_killed(tmp_path):
    """Starts, attaches and stops race the watcher: the server stops and starts again under
    the churn (a killed user's watcher among them), and no process ever finds it gone."""
    pgdata = (tmp_path / "pgdata").resolve()
    churn = (
        "import sys\nfrom recmf.settings import DbConfig\nfrom recmf.store import FeatureStore\n"
        "cfg = DbConfig(None, 'recmf', sys.argv[1])\n"
        "for _ in range(4):\n"
        "    with FeatureStore.open(cfg) as store:\n"
        "        assert store.n_interactions() == 0\n"
    )
    killed = _start_user(pgdata)
    churners = []
    try:
        for _ in range(4):
            churners.append(
                subprocess.Popen(
                    [sys.executable, "-c", churn, str(pgdata)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        killed.kill()
        for proc in churners:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
        _assert_server_goes(pgdata)
    finally:
        _end([killed, *churners], pgdata)


def test_embedded_server_stops_when_mlflow_models_serve_is_terminated(tmp_path):
    """The issue's case: uvicorn ends on SIGTERM by re-raising it, so no atexit handler runs."""
    env = {k: v for k, v in os.environ.items() if k != "RECMF_DATABASE_URL"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pgdata = (tmp_path / ".recmf" / "pgdata").resolve()  # db.data_dir's default, under the cwd
    trained = run_script("train.py", TINY, cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    _assert_server_goes(pgdata)  # the training run was its only user
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = [Path(sys.executable).with_name("mlflow"), "models", "serve", "-m"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [*serve, "models:/recmf/latest", "--env-manager", "local", "-p", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,  # a file: an unread pipe would fill up and stall the server
        stderr=subprocess.STDOUT,
        start_new_session=True,  # killpg below reaches it and its uvicorn, as Ctrl+C would
    )
    try:
        deadline = time.monotonic() + 90
        body = b'{"dataframe_split": {"columns": ["user_id"], "data": [["U1"]]}}'
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        while True:  # the first prediction opens the store: the embedded server starts
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert b'"path": "model"' in response.read()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow models serve did not answer in 90 s"
                time.sleep(0.5)
        assert _postgres_of(pgdata)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=DEADLINE_S)
        _assert_server_goes(pgdata)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        _end([], pgdata)
