"""Stops the embedded PostgreSQL once no process that uses it is alive, however its users exit.

pgserver stops the server when its last registered user exits through ``atexit``. A user killed
outright (SIGKILL, or SIGTERM's default action: uvicorn, under ``mlflow models serve``, re-raises
SIGTERM after its graceful shutdown) never unregisters, and the server would run on with no user.
One watcher process per data directory, started by :func:`ensure_watcher`, polls the pids
pgserver keeps in ``<pgdata>/.handle_pids.json``, forgets the dead ones, stops postgres (a fast
shutdown) when none is left, and exits then or as soon as the server is gone.

Every decision is taken under pgserver's own inter-process lock, so a watcher never stops a
server that a process is starting or attaching to. Run as ``python -P watcher.py PGDATA LOCK``:
a file, not ``-m recmf.store.watcher``, because the package would import numpy and SQLAlchemy
into a process that lives as long as the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HANDLES = ".handle_pids.json"  # pgserver's list of user pids (a JSON list of ints)
WATCHER_LOCK = ".recmf_watcher.lock"  # held (flock) by the data directory's live watcher
POLL_S = 1.0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as dead."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def prune_dead_users(pgdata: Path) -> list[int]:
    """Drop the pids of dead processes from pgserver's user list; return the live ones.

    The caller holds pgserver's inter-process lock. Writes only when something was dropped.
    """
    path = pgdata / HANDLES
    try:
        pids = json.loads(path.read_text() or "[]")
    except FileNotFoundError:
        return []
    live = [pid for pid in pids if alive(pid)]
    if live != pids:
        path.write_text(json.dumps(live))
    return live


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the postgres running on ``pgdata``, or None when none runs."""
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    if not first.strip().isdigit():  # being written right now: postgres is there
        return -1
    pid = int(first)
    return pid if alive(pid) else None


def _settled(pgdata: Path) -> bool:
    """Whether postgres runs and every user it lists is alive: nothing for the watcher to do."""
    try:
        pids = json.loads((pgdata / HANDLES).read_text())
    except (OSError, ValueError):  # ValueError: read while pgserver rewrites it
        return False
    return bool(pids) and all(alive(pid) for pid in pids) and postmaster_pid(pgdata) is not None


def stop_postgres(pid: int) -> None:
    """Stop the postmaster ``pid``: SIGINT, the fast shutdown ``pg_ctl stop -m fast`` asks for.

    A signal, not pg_ctl: pg_ctl runs as the server's user and must reach pgdata by its path,
    which fails when a parent folder lost its o+x (pytest resets its temp root to 0700).
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.name() != "postgres":  # postmaster.pid outlived its server, the pid was reused
            return
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    except psutil.TimeoutExpired:
        proc.send_signal(signal.SIGQUIT)  # immediate shutdown: recovery runs at the next start
    except psutil.NoSuchProcess:
        pass


def ensure_watcher(pgdata: Path, lock_path: Path) -> None:
    """Start the watcher of ``pgdata`` unless one runs; the caller has registered its pid.

    Args:
        pgdata: the server's data directory (absolute).
        lock_path: pgserver's inter-process lock file, as this process sees it.
    """
    import fcntl

    fd = os.open(pgdata / WATCHER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a watcher holds it, and it gives it up only under pgserver's lock
    finally:
        os.close(fd)
    # -P: the script's folder (recmf/store, with modules named like `errors`) stays off sys.path.
    # A new session: Ctrl+C or killpg of the user's process group must not reach the watcher.
    subprocess.run(
        [sys.executable, "-P", __file__, str(pgdata), str(lock_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        check=True,
        timeout=60,
    )


def watch(pgdata: Path, lock_path: Path) -> None:
    """Poll until the server is gone or stopped for want of users (see the module docstring)."""
    import fcntl

    import fasteners  # pgserver's lock: the same class on the same file

    pg_lock = fasteners.InterProcessLock(lock_path)
    with pg_lock:
        if postmaster_pid(pgdata) is None:
            return
        # Created under pgserver's lock: a cleanup_mode="delete" rmtree of pgdata runs under it
        # too, and would fail on a file appearing mid-way.
        fd = os.open(pgdata / WATCHER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return  # another watcher, or a user's probe whose owner starts one right after
    while True:
        if _settled(pgdata):  # the common case, read without pgserver's machine-wide lock
            time.sleep(POLL_S)
            continue
        with pg_lock:
            pid = postmaster_pid(pgdata)
            if pid is not None and pid > 0 and not prune_dead_users(pgdata):
                stop_postgres(pid)
            if postmaster_pid(pgdata) is None:
                # Let go of the watcher lock before pgserver's: a user that registers after
                # this then finds no watcher and starts one.
                os.close(fd)
                return
        time.sleep(POLL_S)


def main(argv: list[str]) -> None:
    """``watcher.py PGDATA LOCK``: detach (the starter waits only for the first fork), watch."""
    if os.fork() > 0:
        os._exit(0)  # the starter reaps this one at once; init adopts the watcher, no zombie
    watch(Path(argv[0]), Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
