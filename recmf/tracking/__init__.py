"""The only code that calls MLflow: a run's record, finding runs again, lineage, the model.

One module per job (:mod:`~recmf.tracking.store` opens the tracking store,
:mod:`~recmf.tracking.runs` records a run, :mod:`~recmf.tracking.lookups` finds runs and their
files, :mod:`~recmf.tracking.lineage` the data a run read, :mod:`~recmf.tracking.models` the
served model, :mod:`~recmf.tracking.sweeps` a sweep's parent run); the names below are what
the rest of recmf uses. MLflow is imported inside the functions (about 2.5 s).
"""

from recmf.tracking.lineage import data_digest, log_data_input, split_profile
from recmf.tracking.lookups import (
    bundle_in_model,
    download_artifacts_to,
    download_bundle,
    download_split,
    find_interrupted_run,
    find_run,
    find_training_run,
    local_bundle_fast,
    model_bundle,
    run_model,
)
from recmf.tracking.names import (
    BUNDLE_TAG,
    DATASET_CONTEXT,
    INTERRUPTED_TAG,
    KIND_TAG,
    MODEL_NAME,
    PARENT_ENV,
    SPLIT_PATH,
)
from recmf.tracking.runs import (
    finish_run,
    flatten,
    log_artifacts,
    log_dir,
    log_metrics,
    logged_model_location,
    make_logger,
    metric_histories,
    record_finished_run,
    safe_config,
    set_tag,
    tag_run,
)
from recmf.tracking.store import artifacts_beside, ensure_experiment, open_store, store_lock

__all__ = [
    "BUNDLE_TAG",
    "DATASET_CONTEXT",
    "INTERRUPTED_TAG",
    "KIND_TAG",
    "MODEL_NAME",
    "PARENT_ENV",
    "SPLIT_PATH",
    "artifacts_beside",
    "bundle_in_model",
    "data_digest",
    "download_artifacts_to",
    "download_bundle",
    "download_split",
    "ensure_experiment",
    "find_interrupted_run",
    "find_run",
    "find_training_run",
    "finish_run",
    "flatten",
    "local_bundle_fast",
    "log_artifacts",
    "log_data_input",
    "log_dir",
    "log_metrics",
    "logged_model_location",
    "make_logger",
    "metric_histories",
    "model_bundle",
    "open_store",
    "record_finished_run",
    "run_model",
    "safe_config",
    "set_tag",
    "split_profile",
    "store_lock",
    "tag_run",
]
