"""Opening a tracking store: MLflow's first use of a fresh ``mlflow.db`` under a file lock.

MLflow is imported inside the functions: it costs about 2.5 s and not every path needs it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from recmf.settings import LoggerConfig
from recmf.tracking.run_index import sqlite_path

log = logging.getLogger("recmf.tracking")

_opened: set[str] = set()  # tracking URIs whose store this process has opened (MLflow caches it)

_opened_lock = threading.Lock()


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold the inter-process lock of a local sqlite tracking store, ``<file>.lock`` beside it.

    MLflow creates its tables (alembic migrations), its Default experiment and ours on first
    use with no locking of its own: two processes doing that at once in a fresh directory crash
    (``table params already exists``, a unique-constraint failure). Every recmf process opens the
    store, and creates the experiment, under this lock. Other stores: nothing to hold.
    """
    path = sqlite_path(tracking_uri)
    if path is None or os.name == "nt":  # no fcntl on Windows; MLflow does not lock there either
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock_file = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 (closed below)
    except PermissionError:  # a read-only folder: nothing can create the store there anyway
        yield
        return
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish setting up the tracking store %s", path)
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def open_store(tracking_uri: str) -> None:
    """Open (on first use: create) the tracking store under :func:`store_lock`, once per process.

    MLflow builds a store once per process and URI and then reuses it; only that first build
    writes to the database, so later clients need no lock.
    """
    uri = str(tracking_uri)
    with _opened_lock:
        if uri in _opened:
            return
        from mlflow.tracking import MlflowClient

        with store_lock(uri):
            MlflowClient(tracking_uri=uri)  # builds the store: tables, migrations, Default
        _opened.add(uri)


def artifacts_beside(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment of a local ``sqlite:///`` store keeps its runs' artifacts:
    ``mlruns/<experiment>/`` beside the database file (a file URI), so a store named from
    another folder (a benchmark's ``--workdir``) holds its artifacts too; MLflow's default,
    ``./mlruns`` of whichever folder the first run started in, scattered them. ``None`` (MLflow's
    default) for other stores."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip(".") or "experiment"
    return (db.resolve().parent / "mlruns" / folder).as_uri()


def ensure_experiment(logger_cfg: LoggerConfig) -> str:
    """The id of the configured experiment, created when missing, once even when processes race.

    Under the sqlite lock no two recmf processes create it at once; for other stores (a tracking
    server, a shared database) the loser of a race finds the winner's experiment.
    """
    import mlflow.exceptions
    from mlflow.tracking import MlflowClient

    uri, name = str(logger_cfg.tracking_uri), str(logger_cfg.experiment_name)
    with _opened_lock, store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        _opened.add(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifacts_beside(uri, name))
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return client.get_experiment_by_name(name).experiment_id


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    open_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)
