"""The PostgreSQL feature store: schema, embedded or external server, bulk COPY I/O, features."""

from recmf.store.errors import StoreError, safe_url
from recmf.store.feature_store import FeatureStore
from recmf.store.writer import IngestResult

__all__ = ["FeatureStore", "IngestResult", "StoreError", "safe_url"]
