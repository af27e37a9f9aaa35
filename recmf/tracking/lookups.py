"""Finding runs again: an interrupted one to resume, a training run's bundle and split, a
registered model; recmf's run index answers the common local case without MLflow."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import recmf.tracking.run_index as run_index
from recmf.errors import RunNotFoundError
from recmf.settings import LoggerConfig
from recmf.tracking.names import BUNDLE_TAG, INTERRUPTED_TAG, MODEL_NAME, SPLIT_PATH
from recmf.tracking.run_index import sqlite_path
from recmf.tracking.store import _client, open_store


def find_interrupted_run(logger_cfg: LoggerConfig, run_id: str | None = None):
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


def _latest_run(logger_cfg: LoggerConfig, filter_string: str, max_results: int = 1) -> list:
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


def find_run(logger_cfg: LoggerConfig, run_id: str):
    """Any run by id, with a clear message when there is none."""
    import mlflow.exceptions

    try:
        return _client(logger_cfg.tracking_uri).get_run(str(run_id))
    except mlflow.exceptions.MlflowException:
        raise RunNotFoundError(
            f"no MLflow run with id {run_id!r} in tracking store {logger_cfg.tracking_uri!r}. "
            "Run ids are printed by `python scripts/train.py`; `mlflow ui` lists them."
        ) from None


def download_artifacts_to(logger_cfg: LoggerConfig, run_id: str, path: str, dest: Path) -> Path:
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


def local_bundle_fast(
    logger_cfg: LoggerConfig, run_id: str | None = None, schema: str | None = None
) -> Path | None:
    """The bundle folder of the latest training run on store ``schema`` (or of the given run),
    from recmf's run index beside a local ``sqlite:///`` tracking store, without importing
    MLflow (about 2.5 s); None when the index does not know, and the caller asks MLflow.
    """
    path = run_index.index_path(logger_cfg.tracking_uri)
    if path is None:
        return None
    return run_index.lookup(path, str(logger_cfg.experiment_name), run_id, schema)


def find_training_run(
    logger_cfg: LoggerConfig, run_id: str | None = None, schema: str | None = None
):
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


def run_model(logger_cfg: LoggerConfig, run_id: str):
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


def download_bundle(logger_cfg: LoggerConfig, run_id: str) -> Path:
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


def download_split(logger_cfg: LoggerConfig, run_id: str) -> Path:
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


def model_bundle(logger_cfg: LoggerConfig, model_uri: str) -> Path:
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
