"""The MLflow model of a training run: a pyfunc that answers top-K requests, for REST serving.

``mlflow models serve -m models:/recmf/latest --env-manager local`` loads it and answers
``POST /invocations`` with a table of user ids (column ``user_id``) and params ``k`` and
``exclude_seen``; each answer row is (user_id, rank, item_id, title, score, path). It is logged
"from code" (:mod:`recmf.pyfunc_entry`): the model directory holds the bundle (npz + JSON) and
a reference to this module, no pickled object.

Histories come from the store the run trained from (``RECMF_DATABASE_URL`` wins, for a password
the run never recorded); when the store cannot be reached, from the bundle (the data as of
training), and the answer's ``path`` still says how each user was scored.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
COLUMNS = ("user_id", "rank", "item_id", "title", "score", "path")
REQUIREMENTS = ["numpy", "pandas", "sqlalchemy", "psycopg2-binary", "mlflow", "omegaconf"]


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    types = ("string", "long", "string", "string", "double", "string")
    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id")]),
        outputs=Schema([ColSpec(t, c) for c, t in zip(COLUMNS, types, strict=True)]),
        params=ParamSchema(
            [ParamSpec("k", "long", 10), ParamSpec("exclude_seen", "boolean", True)]
        ),
    )


def store_config(db_cfg: Any) -> dict:
    """What the served model needs to reach the store: URL without password, schema, and the
    embedded server's data directory made absolute (the server may run from elsewhere)."""
    from recmf.store.errors import safe_url

    url = db_cfg.get("url")
    return {
        "url": safe_url(url) if url else None,
        "schema": db_cfg.get("schema"),
        "data_dir": str(Path(db_cfg.get("data_dir") or ".recmf/pgdata").resolve()),
    }


def log_model(run_id: str, tracking_uri: str, bundle_dir: Path, db: dict, name: str | None):
    """Log the pyfunc to the run (artifact ``model``) and register it as ``name`` (None: not)."""
    import warnings

    import mlflow

    from recmf.tracking import open_store

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
            name="model",
            python_model=str(ENTRY),
            artifacts={"bundle": str(bundle_dir)},
            model_config={"db": db},
            signature=_signature(),
            pip_requirements=REQUIREMENTS,  # listed: inferring them would load the model twice
            registered_model_name=name,
        )
    if logging.getLogger().isEnabledFor(logging.INFO):  # verbose=true: MLflow's words too
        sys.stderr.write(chatter.getvalue())
    return info


class RecmfModel:
    """The pyfunc's Python side (wrapped by :mod:`recmf.pyfunc_entry` in a ``PythonModel``)."""

    def __init__(self) -> None:
        self.recommender = None
        self.db: dict = {}
        self._store = None
        self._lock = threading.Lock()  # the server calls predict from many threads at once

    def load(self, bundle_dir: str, model_config: dict | None) -> None:
        from recmf.bundle import Bundle
        from recmf.recommender import Recommender

        self.recommender = Recommender(Bundle.load(bundle_dir))
        self.db = dict((model_config or {}).get("db") or {})

    def _history(self, users: list[str]) -> dict[str, list[str]]:
        """Each user's items now, from the store; from the bundle if the store is unreachable."""
        from recmf.store import FeatureStore, StoreError

        try:
            with self._lock:  # one store (one connection pool) per process, opened once
                if self._store is None:
                    from omegaconf import OmegaConf

                    url = os.environ.get("RECMF_DATABASE_URL") or self.db.get("url")
                    if url and "***" in url:  # the run hid the password: it must come from env
                        url = None
                    cfg = OmegaConf.create({**self.db, "url": url})
                    self._store = FeatureStore.open(cfg, create=False)  # never creates schemas
                store = self._store
            return store.user_history(users)
        except StoreError as exc:
            log.warning("store unreachable, using the history as of training: %s", exc)
            with self._lock:
                if self._store is not None:
                    self._store.close()
                self._store = None
            return self._bundle_history(users)

    def _bundle_history(self, users: list[str]) -> dict[str, list[str]]:
        rec = self.recommender
        known = [u for u in users if rec.vocab.has_user(u)]
        if not known:
            return {}
        import numpy as np

        u, i = rec.bundle.pairs("train", "val", "test")
        out = {}
        for user, idx in zip(known, rec.vocab.user_idx(known), strict=True):
            out[user] = [str(x) for x in rec.vocab.item_ids[np.unique(i[u == idx])]]
        return out

    def predict(self, users: list[str], k: int, exclude_seen: bool):
        import pandas as pd

        from recmf import checks

        k = checks.positive_int("k", k)
        recs = self.recommender.recommend(users, k, self._history(users), exclude_seen)
        rows = [
            (r.user_id, rank, item.item_id, item.title, item.score, r.path)
            for r in recs
            for rank, item in enumerate(r.items, 1)
        ]
        return pd.DataFrame(rows, columns=list(COLUMNS))
