"""MLflow plumbing: the run's logger, safe parameters, and finding a training run's bundle.

MLflow is imported inside the functions: it costs about 2.5 s and not every path needs it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recmf.errors import RunNotFoundError
from recmf.tracking import run_index
from recmf.tracking.run_index import sqlite_path

log = logging.getLogger(__name__)

KIND_TAG = "recmf_kind"  # "train" on training runs
BUNDLE_TAG = "recmf_bundle"  # "1" once a run's bundle is fully logged
PARENT_ENV = "RECMF_PARENT_RUN_ID"  # set by recmf.train.sweep in a multirun: trials nest under it
INTERRUPTED_TAG = "recmf_interrupted"  # the phase a SIGINT/SIGTERM stopped; "resumed" after
MODEL_NAME = "model"  # the run's MLflow model; its artifacts/bundle is the run's one bundle
SPLIT_PATH = "split/split.npz"  # the run's split, its own artifact (not in the model)


def safe_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, with the database password hidden."""
    from recmf.store.errors import safe_url

    data = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(data.get("db"), dict) and data["db"].get("url"):
        data["db"]["url"] = safe_url(data["db"]["url"])
    data.pop("hydra", None)
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


def make_logger(logger_cfg: DictConfig, tags: dict[str, str], run_id: str | None = None):
    """An MLFlowLogger whose run stays open until :func:`finish_run` (Lightning ends it per fit)."""
    from lightning.pytorch.loggers import MLFlowLogger

    class _RunLogger(MLFlowLogger):
        def finalize(self, status: str = "success") -> None:  # recmf closes the run itself
            pass

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
    """End the run as FINISHED, FAILED or KILLED (interrupted, resumable)."""
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


def find_interrupted_run(logger_cfg: DictConfig, run_id: str | None = None):
    """The given run if it was interrupted and not yet resumed to the end, or the latest one."""
    if run_id:
        run = find_run(logger_cfg, run_id)
        if run.data.tags.get(INTERRUPTED_TAG) in (None, "resumed") or run.info.status != "KILLED":
            raise RunNotFoundError(
                f"run {run_id!r} has nothing to resume (status {run.info.status}): only a "
                "training run stopped by SIGINT/SIGTERM can be resumed. Start a new one with "
                "`python scripts/train.py`."
            )
        return run
    runs = _latest_run(
        logger_cfg, f"attributes.status = 'KILLED' and tags.{INTERRUPTED_TAG} != 'resumed'"
    )
    if not runs:
        raise RunNotFoundError(
            f"no interrupted training run to resume in experiment {logger_cfg.experiment_name!r} "
            f"of tracking store {logger_cfg.tracking_uri!r}. Start one with "
            "`python scripts/train.py`."
        )
    return runs[0]


def _latest_run(logger_cfg: DictConfig, filter_string: str, max_results: int = 1) -> list:
    """The latest runs of the configured experiment matching ``filter_string`` (or [])."""
    client = _client(logger_cfg.tracking_uri)
    experiment = client.get_experiment_by_name(logger_cfg.experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )


def find_run(logger_cfg: DictConfig, run_id: str):
    """Any run by id, with a clear message when there is none."""
    import mlflow.exceptions

    try:
        return _client(logger_cfg.tracking_uri).get_run(str(run_id))
    except mlflow.exceptions.MlflowException:
        raise RunNotFoundError(
            f"no MLflow run with id {run_id!r} in tracking store {logger_cfg.tracking_uri!r}. "
            "Run ids are printed by `python scripts/train.py`; `mlflow ui` lists them."
        ) from None


def download_artifacts_to(logger_cfg: DictConfig, run_id: str, path: str, dest: Path) -> Path:
    """Copy a run's artifact folder ``path`` into ``dest``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.artifacts

    dest.mkdir(parents=True, exist_ok=True)
    open_store(logger_cfg.tracking_uri)
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, tracking_uri=logger_cfg.tracking_uri
    )
    shutil.copytree(local, dest, dirs_exist_ok=True)
    return dest


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


def ensure_experiment(logger_cfg: DictConfig) -> str:
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
            return client.create_experiment(name)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return client.get_experiment_by_name(name).experiment_id


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    open_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def local_bundle_fast(
    logger_cfg: DictConfig, run_id: str | None = None, schema: str | None = None
) -> Path | None:
    """The bundle folder of the latest training run on store ``schema`` (or of the given run),
    from recmf's run index beside a local ``sqlite:///`` tracking store, without importing
    MLflow (about 2.5 s); None when the index does not know, and the caller asks MLflow.
    """
    path = run_index.index_path(logger_cfg.tracking_uri)
    if path is None:
        return None
    return run_index.lookup(path, str(logger_cfg.experiment_name), run_id, schema)


def record_finished_run(
    logger_cfg: DictConfig, run_id: str, schema: str, bundle_dir: Path | None
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


def find_training_run(logger_cfg: DictConfig, run_id: str | None = None, schema: str | None = None):
    """The given training run, or the latest finished one with a bundle trained on ``schema``."""
    import mlflow.exceptions

    uri = logger_cfg.tracking_uri
    local = sqlite_path(uri)
    if local is not None and not local.is_file():  # nothing to find; do not create the store
        raise RunNotFoundError(
            f"no training run: the tracking store {uri!r} does not exist here "
            f"({str(local.resolve())!r}). Train one first: `python scripts/train.py` (run from "
            "the directory that holds mlflow.db, or set MLFLOW_TRACKING_URI)."
        )
    client = _client(uri)
    if run_id:
        try:
            run = client.get_run(str(run_id))
        except mlflow.exceptions.MlflowException:
            raise RunNotFoundError(
                f"no MLflow run with id {run_id!r} in tracking store {uri!r}. Run ids are printed "
                "by `python scripts/train.py`; `mlflow ui` lists them, or leave run_id unset to "
                "use the latest training run."
            ) from None
        if run.data.tags.get(BUNDLE_TAG) != "1":
            raise RunNotFoundError(
                f"run {run_id!r} is not a finished recmf training run with a model bundle (status "
                f"{run.info.status}); pass the id of a training run, or leave run_id unset."
            )
        return run
    finished = f"tags.{BUNDLE_TAG} = '1' and attributes.status = 'FINISHED'"
    on_schema = f" and params.`data.schema` = '{schema}'" if schema else ""
    runs = _latest_run(logger_cfg, finished + on_schema)
    if not runs:
        others = _latest_run(logger_cfg, finished, max_results=50) if schema else []
        names = sorted({r.data.params.get("data.schema") for r in others} - {None})
        where = f" trained on store schema {schema!r}" if schema else ""
        elsewhere = (
            f" (there are runs on schema {', '.join(names)}: pass db.schema={names[0]} or "
            "run_id=<id> to use one)"
            if names
            else ""
        )
        raise RunNotFoundError(
            f"no finished training run{where} in experiment {logger_cfg.experiment_name!r} of "
            f"tracking store {uri!r}{elsewhere}. Train one first: `python scripts/train.py"
            f"{f' db.schema={schema}' if schema else ''}` (run from the directory that holds "
            "mlflow.db, or set MLFLOW_TRACKING_URI)."
        )
    return runs[0]


def _local(uri: str) -> Path | None:
    """The local path of a plain path or ``file:`` URI; None for a remote one."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(str(uri))
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(str(uri)) if parsed.scheme == "" else None


def run_model(logger_cfg: DictConfig, run_id: str):
    """The MLflow model (``LoggedModel``) a training run logged, or None."""
    client = _client(logger_cfg.tracking_uri)
    run = client.get_run(str(run_id))
    ids = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
    models = [client.get_logged_model(i) for i in ids] or client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    return next((m for m in models if m.name == MODEL_NAME), None)


def bundle_in_model(artifact_location: str) -> Path | None:
    """The bundle folder inside a logged model's local artifact location; None if remote."""
    local = _local(artifact_location)
    return local / "artifacts" / "bundle" if local is not None else None


def download_bundle(logger_cfg: DictConfig, run_id: str) -> Path:
    """Local path of a run's bundle: the ``artifacts/bundle`` folder of the MLflow model it
    logged (the one copy of its weights); a local artifact store is read in place."""
    model = run_model(logger_cfg, run_id)
    if model is None:
        raise RunNotFoundError(
            f"run {run_id!r} has no MLflow model {MODEL_NAME!r} (a run of an older recmf, or not "
            "a training run); retrain with `python scripts/train.py`."
        )
    local = bundle_in_model(model.artifact_location)
    if local is not None and local.is_dir():
        return local
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.artifacts

    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{model.artifact_location.rstrip('/')}/artifacts/bundle",
        tracking_uri=logger_cfg.tracking_uri,
    )
    return Path(path)


def download_split(logger_cfg: DictConfig, run_id: str) -> Path:
    """Local path of a run's ``split/split.npz`` (the interactions it was trained and evaluated
    on, kept out of its model); a local artifact store is read in place."""
    client = _client(logger_cfg.tracking_uri)
    run = client.get_run(str(run_id))
    local = _local(run.info.artifact_uri)
    if local is not None and (local / SPLIT_PATH).is_file():
        return local / SPLIT_PATH
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.artifacts
    import mlflow.exceptions

    try:
        folder = mlflow.artifacts.download_artifacts(
            run_id=str(run_id), artifact_path="split", tracking_uri=logger_cfg.tracking_uri
        )
    except (mlflow.exceptions.MlflowException, OSError):
        folder = ""
    if not (Path(folder) / "split.npz").is_file():
        raise RunNotFoundError(
            f"run {run_id!r} has no `{SPLIT_PATH}` artifact to evaluate on (a run of an older "
            "recmf?). Retrain, or pass split=<a split.npz of this run>."
        )
    return Path(folder) / "split.npz"


def model_bundle(logger_cfg: DictConfig, model_uri: str) -> Path:
    """Local bundle folder of an MLflow model (``models:/recmf/3``, ``models:/recmf/latest``,
    ``runs:/<id>/model``), downloaded through the tracking store's registry."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(logger_cfg.tracking_uri)
    open_store(logger_cfg.tracking_uri)  # the registry's store would otherwise create the tables
    try:
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(model_uri)))
    except (MlflowException, OSError) as exc:
        reason = str(getattr(exc, "message", exc)).splitlines()[0]
        raise RunNotFoundError(
            f"no MLflow model {model_uri!r} in the tracking store {logger_cfg.tracking_uri} "
            f"({reason}). Pass model=models:/<name>/<version> (or /latest) of a registered "
            "model; `mlflow ui` lists them under Models."
        ) from None
    bundle = path / "artifacts" / "bundle"
    if not bundle.is_dir():
        raise RunNotFoundError(
            f"the MLflow model {model_uri!r} is not a recmf model (no artifacts/bundle in it)."
        )
    return bundle


def log_metrics(logger_cfg: DictConfig, run_id: str, metrics: dict[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    client = _client(logger_cfg.tracking_uri)
    for start in range(0, len(batch), 500):  # MLflow's per-batch limit is 1000 metrics
        client.log_batch(run_id, metrics=batch[start : start + 500])


def log_artifacts(logger_cfg: DictConfig, run_id: str, local_dir: Path, artifact_path: str):
    _client(logger_cfg.tracking_uri).log_artifacts(run_id, str(local_dir), artifact_path)


def set_tag(logger_cfg: DictConfig, run_id: str, key: str, value: str) -> None:
    _client(logger_cfg.tracking_uri).set_tag(run_id, key, value)


def metric_histories(
    logger_cfg: DictConfig, run_id: str, keys: list[str]
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


DATASET_CONTEXT = "training"


def split_profile(split) -> dict[str, Any]:
    """Sizes, what the split dropped, and each part's time range (its boundaries: the split is
    per user, so a part's range overlaps the others')."""
    out: dict[str, Any] = dict(split.sizes())
    for part in ("train", "val", "test"):
        ts = getattr(split, part).timestamp
        out[f"{part}_time_min"] = int(ts.min()) if len(ts) else None
        out[f"{part}_time_max"] = int(ts.max()) if len(ts) else None
    return out


def log_data_input(logger, snapshot: dict, split: dict, query: str) -> str:
    """Record what a run read as an MLflow dataset input; returns the digest logged.

    Source: the store (URL without password, schema, query). Digest: the first 32 hex digits
    of the order-independent content hash (MLflow keeps at most 36 characters; the whole hash
    is in the profile and in the ``data.content_hash`` param). Profile: counts, time watermark,
    split sizes and boundaries.
    """
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = {"url": snapshot["url"], "schema": snapshot["schema"], "query": query}
    profile = {k: v for k, v in snapshot.items() if k not in ("url", "schema")}
    profile["split"] = split
    digest = snapshot["content_hash"][:32]
    dataset = Dataset(
        name=f"recmf:{snapshot['schema']}",
        digest=digest,
        source_type="recmf-postgres",
        source=json.dumps(source, sort_keys=True),
        profile=json.dumps(profile, sort_keys=True),
    )
    context = InputTag(key="mlflow.data.context", value=DATASET_CONTEXT)
    logger.experiment.log_inputs(
        logger.run_id, datasets=[DatasetInput(dataset=dataset, tags=[context])]
    )
    return digest


def data_digest(logger_cfg: DictConfig, run_id: str) -> str | None:
    """The digest of the training data a run logged (None for runs from before lineage)."""
    run = _client(logger_cfg.tracking_uri).get_run(run_id)
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in dataset_input.tags}
        if tags.get("mlflow.data.context") == DATASET_CONTEXT:
            return dataset_input.dataset.digest
    return None
