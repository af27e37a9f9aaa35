"""The MLflow model of a training run: a pyfunc that answers top-K requests, for REST serving.

``mlflow models serve -m models:/recmf/latest --env-manager local`` loads it and answers
``POST /invocations`` with a table of user ids (column ``user_id``) and params ``k`` and
``exclude_seen``; each answer row is (user_id, rank, item_id, title, score, path, note). It is
logged "from code" (:mod:`recmf.serve.pyfunc_entry`, by :func:`recmf.tracking.models.log_model`):
the model directory holds the bundle (npz + JSON: weights, vocabulary, item counts, meta; no
interactions) and a reference to this module, no pickled object.

Histories come from the store the run trained from (``RECMF_DATABASE_URL`` wins, for a password
the run never recorded), and so do, for a two-tower model, the items added after training (kept
per process with their embeddings, read again when the items table changes, and at least every
:data:`REFRESH_S` seconds for features added to or corrected for items already stored) and the
features of users it can only score from them. When the store cannot be reached the answer
still comes: users the model knows by the model, others by popularity, ``path`` says which, and
``note`` says that the items they have already seen could not be excluded; new items are those
of the last successful read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from recmf.settings import DbConfig

log = logging.getLogger(__name__)
ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # the file MLflow runs to load the model
COLUMNS = ("user_id", "rank", "item_id", "title", "score", "path", "note")
TYPES = ("string", "long", "string", "string", "double", "string", "string")  # MLflow's names
REQUIREMENTS = ["numpy", "pandas", "sqlalchemy", "psycopg2-binary", "mlflow"]
# New items are read in full at least this often: features ingested for an item already in the
# store change neither the items table's row count nor its largest key (the per-request check)
REFRESH_S = 60.0


def store_config(db: DbConfig) -> dict:
    """What the served model needs to reach the store: URL without password, schema, and the
    embedded server's data directory made absolute (the server may run from elsewhere)."""
    from recmf.store.errors import safe_url

    return {
        "url": safe_url(db.url) if db.url else None,
        "schema": db.schema,
        "data_dir": str(Path(db.data_dir).resolve()),
    }


class RecmfModel:
    """The pyfunc's Python side, wrapped in a ``PythonModel`` by :mod:`recmf.serve.pyfunc_entry`."""

    def __init__(self) -> None:
        self.recommender = None
        self.db: dict = {}
        self._store = None
        self._new_items = None  # the store's new items as last read (recmf.serve.cold.NewItems)
        self._new_items_at = 0.0  # time.monotonic() of that read
        self._lock = threading.Lock()  # the server calls predict from many threads at once

    def load(self, bundle_dir: str, model_config: dict | None) -> None:
        from recmf.serve.bundle import Bundle
        from recmf.serve.recommender import Recommender

        self.recommender = Recommender(Bundle.load(bundle_dir))
        self.db = dict((model_config or {}).get("db") or {})

    def _read(self, users: list[str]) -> tuple:
        """(each user's items now, the store's new items, user features) from the store;
        (None, the new items last read, None) when the store cannot be reached."""
        from recmf.serve.cold import read_new_items, read_user_features
        from recmf.store import FeatureStore, StoreError

        bundle = self.recommender.bundle
        try:
            with self._lock:  # one store (one connection pool) per process, opened once
                if self._store is None:
                    url = os.environ.get("RECMF_DATABASE_URL") or self.db.get("url")
                    if url and "***" in url:  # the run hid the password: it must come from env
                        url = None
                    db = DbConfig(
                        url, self.db.get("schema"), self.db.get("data_dir") or ".recmf/pgdata"
                    )
                    self._store = FeatureStore.open(db, create=False)  # never creates schemas
                store, since = self._store, self._new_items
                if time.monotonic() - self._new_items_at > REFRESH_S:
                    since, self._new_items_at = None, time.monotonic()  # this thread re-reads
            history = store.user_history(users)
            new_items = read_new_items(store, bundle, since)  # `since` while nothing was added
            if new_items is not since:
                with self._lock:
                    self._new_items, self._new_items_at = new_items, time.monotonic()
            return history, new_items, read_user_features(store, bundle, users, history)
        except StoreError as exc:
            log.warning("store unreachable, seen items cannot be excluded: %s", exc)
            with self._lock:
                if self._store is not None:
                    self._store.close()
                self._store = None
                return None, self._new_items, None

    def predict(self, users: list[str], k: int, exclude_seen: bool):
        import pandas as pd

        from recmf import checks

        k = checks.positive_int("k", k)
        history, new_items, user_features = self._read(users)
        recs = self.recommender.recommend(
            users, k, history, exclude_seen, new_items=new_items, user_features=user_features
        )
        rows = [
            (r.user_id, rank, item.item_id, item.title, item.score, r.path, "; ".join(r.notes))
            for r in recs
            for rank, item in enumerate(r.items, 1)
        ]
        return pd.DataFrame(rows, columns=list(COLUMNS))
