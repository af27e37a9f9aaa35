"""The run's MLflow model: logged from code, with its signature, and registered.

What the model *is* lives in :mod:`recmf.serve.pyfunc`; this module only hands it to MLflow.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from recmf.tracking import MODEL_NAME, open_store


@dataclass(frozen=True)
class ServedModel:
    """How MLflow loads and describes the served model (from :mod:`recmf.serve.pyfunc`)."""

    entry: Path  # the file MLflow runs to build the model ("models from code")
    columns: tuple[str, ...]  # the output table's columns
    types: tuple[str, ...]  # their MLflow types
    requirements: list[str]  # pip requirements recorded with the model


def _signature(columns: tuple[str, ...], types: tuple[str, ...]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id")]),
        outputs=Schema([ColSpec(t, c) for c, t in zip(columns, types, strict=True)]),
        params=ParamSchema(
            [ParamSpec("k", "long", 10), ParamSpec("exclude_seen", "boolean", True)]
        ),
    )


def log_model(
    run_id: str,
    tracking_uri: str,
    bundle_dir: Path,
    db: dict,
    name: str | None,
    served: ServedModel,
):
    """Log the pyfunc to the run (model ``model``) and register it as ``name`` (None: not).

    The bundle goes into the model's own artifacts (``artifacts/bundle``): it is the run's only
    copy of the weights. Returns MLflow's ``ModelInfo``.
    """
    import warnings

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri)
    # A name another process registers at the same moment is fine: MLflow then adds a version
    # (its unique constraint decides, and versions are numbered under the database's write lock).
    open_store(tracking_uri)  # a no-op after make_logger; creates a fresh store under the lock
    chatter = io.StringIO()  # the registry prints "Successfully registered ..." on stderr
    with (
        mlflow.start_run(run_id=run_id),
        warnings.catch_warnings(),
        contextlib.redirect_stderr(chatter),
    ):
        # its advice to add type hints and an input example: the signature is given explicitly,
        # and an example would make logging call the store
        warnings.filterwarnings("ignore", message=".*(type hints|input example).*")
        # MLflow wraps model loading in its own filter ("once"), which overrides the one above
        warnings.showwarning = lambda *args, **kwargs: None
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(served.entry),
            artifacts={"bundle": str(bundle_dir)},
            model_config={"db": db},
            signature=_signature(served.columns, served.types),
            pip_requirements=served.requirements,  # given: inferring them loads the model twice
            registered_model_name=name,
        )
    if logging.getLogger().isEnabledFor(logging.INFO):  # verbose=true: MLflow's words too
        sys.stderr.write(chatter.getvalue())
    return info
