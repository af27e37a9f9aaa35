"""Shared fixtures: a real PostgreSQL for the whole session, and a fresh schema per test.

The server is ``RECMF_TEST_DATABASE_URL`` when set, else an embedded PostgreSQL started in a
temporary folder. If it cannot start, the tests that need it fail: never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import recmf.config  # noqa: F401  (registers the config schemas that compose() needs)
from recmf.settings import DbConfig


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's PostgreSQL (plain ``postgresql://``, as a user would give it)."""
    url = os.environ.get("RECMF_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from recmf.store.server import EmbeddedServer

    # Raises StoreError (the fixture errors, every dependent test fails) if it cannot start.
    server = EmbeddedServer.start(tmp_path_factory.mktemp("pg") / "pgdata", cleanup_mode="delete")
    yield server.url
    server.release()


@pytest.fixture(scope="session")
def pg_admin(pg_url: str) -> Iterator[sa.Engine]:
    """An engine on the session's server, for setting up and dropping test schemas."""
    from recmf.store.server import normalise_url

    engine = sa.create_engine(normalise_url(pg_url))
    yield engine
    engine.dispose()


@pytest.fixture
def make_db_cfg(pg_url: str, pg_admin: sa.Engine, tmp_path) -> Iterator:
    """Factory of db configs, each with its own fresh schema, dropped after the test."""
    schemas: list[str] = []

    def make() -> DbConfig:
        schema = f"t_{uuid.uuid4().hex[:8]}"
        schemas.append(schema)
        return DbConfig(pg_url, schema, str(tmp_path / "pgdata"))

    yield make
    with pg_admin.begin() as conn:
        for schema in schemas:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def db_cfg(make_db_cfg) -> DbConfig:
    """A ``db`` config (url, schema, data_dir) for a fresh schema on the session's server."""
    return make_db_cfg()


@pytest.fixture
def store(db_cfg: DbConfig) -> Iterator:
    """An open :class:`FeatureStore` on a fresh schema."""
    from recmf.store import FeatureStore

    with FeatureStore.open(db_cfg) as opened:
        yield opened
