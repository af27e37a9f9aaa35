"""The ingest verb: load the configured data source and add it to the feature store."""

from __future__ import annotations

import logging
import time

from recmf.data.sources import load_source
from recmf.settings import IngestConfig
from recmf.store import FeatureStore, IngestResult

log = logging.getLogger("recmf")


def run_ingest(cfg: IngestConfig) -> IngestResult:
    """Read ``cfg.dataset`` and ingest it into the store of ``cfg.db``; idempotent.

    The source is read and validated completely before the store is opened, so a bad file
    neither writes nor starts anything.
    """
    start = time.perf_counter()
    raw = load_source(cfg.dataset)
    log.info(
        "read %d interactions from %s in %.2f s", len(raw), raw.source, time.perf_counter() - start
    )
    with FeatureStore.open(cfg.db) as store:
        start = time.perf_counter()
        result = store.ingest(raw)
        log.info(
            "ingested into %s (schema %s) in %.2f s",
            store.url_safe,
            store.schema,
            time.perf_counter() - start,
        )
    return result
