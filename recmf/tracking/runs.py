"""A training run's record: the Lightning logger, its parameters, tags, metrics and files."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import recmf.tracking.run_index as run_index
from recmf.settings import LoggerConfig
from recmf.tracking.names import PARENT_ENV
from recmf.tracking.store import _client, ensure_experiment, store_lock

log = logging.getLogger("recmf.tracking")


def safe_config(settings: Any) -> dict[str, Any]:
    """Settings (a dataclass, e.g. :class:`~recmf.settings.TrainConfig`) as plain data, with the
    database password hidden."""
    from recmf.store.errors import safe_url

    data = asdict(settings)
    if isinstance(data.get("db"), dict) and data["db"].get("url"):
        data["db"]["url"] = safe_url(data["db"]["url"])
    return data


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


FLUSH_SECONDS = 5.0  # metrics reach MLflow at least this often during a fit, and at its end
_BATCH = 900  # metrics per MLflow log_batch (its limit is 1000)


def make_logger(logger_cfg: LoggerConfig, tags: dict[str, str], run_id: str | None = None):
    """An MLFlowLogger whose run stays open until :func:`finish_run` (Lightning ends it per fit)
    and whose metrics are written in batches: every :data:`FLUSH_SECONDS`, at the end of each
    fit (Lightning's ``finalize``, also on an interrupt or error) and by :func:`finish_run`.
    One log_batch per logging step, twice an epoch, was 7% of a small data set's training
    (ML-100K: ~100 epochs of races and refit, each write a sqlite transaction)."""
    import time

    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities import rank_zero_only

    class _RunLogger(MLFlowLogger):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._pending: list = []  # mlflow Metric entities not written yet
            self._flushed_at = time.monotonic()

        @rank_zero_only
        def log_metrics(self, metrics, step: int | None = None) -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._pending += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
            if time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
                self.flush()

        @rank_zero_only
        def flush(self) -> None:
            pending, self._pending = self._pending, []
            for start in range(0, len(pending), _BATCH):
                self.experiment.log_batch(self.run_id, metrics=pending[start : start + _BATCH])
            self._flushed_at = time.monotonic()

        def finalize(self, status: str = "success") -> None:  # recmf closes the run itself
            self.flush()

    parent = os.environ.get(PARENT_ENV)
    if parent:
        tags = {**tags, "mlflow.parentRunId": parent}
    ensure_experiment(logger_cfg)  # the logger would create it unguarded, racing other processes
    return _RunLogger(
        experiment_name=logger_cfg.experiment_name,
        run_name=logger_cfg.run_name,
        tracking_uri=logger_cfg.tracking_uri,
        tags=None if run_id else tags,
        run_id=run_id,  # a resumed run logs on into its own record
    )


def finish_run(logger, status: str) -> None:
    """Write the metrics still held, then end the run as FINISHED, FAILED or KILLED
    (interrupted, resumable)."""
    logger.flush()
    logger.experiment.set_terminated(logger.run_id, status)


def tag_run(logger, key: str, value: str) -> None:
    """Set a tag on the logger's run."""
    logger.experiment.set_tag(logger.run_id, key, value)


def log_dir(logger, local_dir: Path, artifact_path: str) -> None:
    """Copy a local folder into the logger's run as artifacts under ``artifact_path``."""
    logger.experiment.log_artifacts(logger.run_id, str(local_dir), artifact_path)


def logged_model_location(logger, model_id: str) -> str:
    """Where MLflow keeps the files of a logged model (its artifact location URI)."""
    return logger.experiment.get_logged_model(model_id).artifact_location


def record_finished_run(
    logger_cfg: LoggerConfig, run_id: str, schema: str, bundle_dir: Path | None
) -> None:
    """Enter a run that just finished in the run index (local sqlite stores with a local
    artifact store only; elsewhere :func:`local_bundle_fast` always defers to MLflow)."""
    path = run_index.index_path(logger_cfg.tracking_uri)
    if path is None or bundle_dir is None:
        return
    start_time = _client(logger_cfg.tracking_uri).get_run(run_id).info.start_time
    try:
        with store_lock(logger_cfg.tracking_uri):
            run_index.record(
                path, str(logger_cfg.experiment_name), str(schema), run_id, bundle_dir, start_time
            )
    except OSError as exc:  # the run is complete in MLflow; lookups just take the slow path
        log.warning("could not update the run index %s (%s); lookups will ask MLflow", path, exc)


def log_metrics(logger_cfg: LoggerConfig, run_id: str, metrics: dict[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    client = _client(logger_cfg.tracking_uri)
    for start in range(0, len(batch), 500):  # MLflow's per-batch limit is 1000 metrics
        client.log_batch(run_id, metrics=batch[start : start + 500])


def log_artifacts(logger_cfg: LoggerConfig, run_id: str, local_dir: Path, artifact_path: str):
    _client(logger_cfg.tracking_uri).log_artifacts(run_id, str(local_dir), artifact_path)


def set_tag(logger_cfg: LoggerConfig, run_id: str, key: str, value: str) -> None:
    _client(logger_cfg.tracking_uri).set_tag(run_id, key, value)


def metric_histories(
    logger_cfg: LoggerConfig, run_id: str, keys: list[str]
) -> dict[str, list[tuple[int, float]]]:
    """Every logged (step, value) of each key of a run, in step order; keys never logged are left
    out. Lightning logs epoch-level metrics once per epoch, at the global step of that epoch.
    """
    client = _client(logger_cfg.tracking_uri)
    out = {}
    for key in keys:
        history = sorted(
            client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)
        )
        if history:
            out[key] = [(int(m.step), float(m.value)) for m in history]
    return out
