"""The ingest verb: load the configured data source and add it to the feature store."""

from __future__ import annotations

import itertools
import logging
import time

from recmf.data import sources
from recmf.errors import DataFormatError
from recmf.settings import IngestConfig
from recmf.store import FeatureStore, IngestResult

log = logging.getLogger("recmf")


def run_ingest(cfg: IngestConfig) -> IngestResult:
    """Read ``cfg.dataset`` and ingest it into the store of ``cfg.db``; idempotent.

    The settings, the side files and the first block of the data (32 MB of a CSV: all of most
    files) are read and checked before the store is opened, so such a bad file neither writes
    nor starts anything. The other blocks are read inside the ingest's one transaction (memory
    stays bounded whatever the file's size): a bad line there rolls it back, nothing is stored.
    """
    start = time.perf_counter()
    chunks = sources.stream_source(cfg.dataset, sources.BLOCK_BYTES)  # read now: patchable
    first = next(chunks)
    with FeatureStore.open(cfg.db) as store:
        try:
            result = store.ingest(itertools.chain([first], chunks))
        except DataFormatError as exc:  # in a later block: the blocks before it were rolled back
            rolled_back = f"{exc.problem}. Nothing of the file was stored (the ingest rolled back)"
            raise DataFormatError(exc.path, rolled_back, exc.line) from None
        log.info(
            "read and ingested %d rows into %s (schema %s) in %.2f s",
            result.added + result.duplicates_skipped,
            store.url_safe,
            store.schema,
            time.perf_counter() - start,
        )
    return result
