"""The feature store: interactions, ids and aggregates in PostgreSQL, read back as numpy columns."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from recmf.data.interactions import Interactions, Vocab
from recmf.settings import DbConfig
from recmf.store.copy_io import copy_out, copy_out_csv
from recmf.store.db_errors import store_error
from recmf.store.errors import StoreError, safe_url
from recmf.store.schema import (
    UNTIMED,
    StoreTables,
    check_tables,
    create_schema,
    key_type,
    make_tables,
    validate_schema_name,
)
from recmf.store.server import EmbeddedServer, connect_engine, data_dir_path, resolve_url
from recmf.store.sides import features_hash, read_side_features
from recmf.store.snapshot import content_hash
from recmf.store.writer import IngestResult, write_interactions

if TYPE_CHECKING:
    from recmf.data.features import RawFeatures
    from recmf.data.interactions import RawInteractions

log = logging.getLogger(__name__)


class FeatureStore:
    """Interactions of one data set, kept in one PostgreSQL schema.

    Open with :meth:`open`; use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, engine: sa.Engine, tables: StoreTables, url_safe: str, server: EmbeddedServer | None
    ):
        self._engine = engine
        self._tables = tables
        self._server = server
        self.url_safe = url_safe
        self.schema = tables.schema

    @classmethod
    def open(cls, db_cfg: DbConfig, create: bool = True) -> FeatureStore:
        """Connect to ``db_cfg.url`` (or the embedded server) and create the schema if missing.

        Args:
            db_cfg: ``url`` (``None``: the embedded server under ``data_dir``), ``schema``
                and ``data_dir`` (relative to the working directory).
            create: create the schema and its tables when missing; ``False`` (readers of a
                store that must exist already) raises instead, and writes nothing.

        Raises:
            StoreError: bad URL or schema name, server unreachable, authentication failed,
                schema missing (``create=False``), tables of another recmf version.
        """
        schema = validate_schema_name(db_cfg.schema)
        url, server = resolve_url(db_cfg)
        engine = None
        try:
            data_dir = str(data_dir_path(db_cfg.data_dir)) if server else None
            engine = connect_engine(url, embedded=server is not None, data_dir=data_dir)
            store = cls(engine, make_tables(schema), safe_url(url), server)
            where = repr(store.url_safe)
            with store._errors("opening the store"), engine.begin() as conn:
                if create:
                    create_schema(conn, store._tables, where)
                elif not check_tables(conn, store._tables, where):
                    raise StoreError(
                        f"schema {schema!r} at {where} holds no recmf store: nothing was "
                        "ingested there. Check db.schema (a run's data.schema parameter names "
                        f"the schema it trained on), or ingest first: python scripts/ingest.py "
                        f"db.schema={schema}"
                    )
        except BaseException:
            if engine is not None:
                engine.dispose()
            if server is not None:
                server.release()
            raise
        return store

    def close(self) -> None:
        """Release connections; the embedded server stops when its last user lets go."""
        self._engine.dispose()
        if self._server is not None:
            self._server.release()
            self._server = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore(url={self.url_safe!r}, schema={self.schema!r})"

    @contextlib.contextmanager
    def _errors(self, doing: str, after: str = "") -> Iterator[None]:
        """Turn database errors a user can act on into :class:`StoreError` (password hidden).

        Args:
            doing: what failed, for the message.
            after: a sentence appended to the message, e.g. what became of the data.
        """
        import psycopg2

        try:
            yield
        except (sa.exc.DBAPIError, psycopg2.Error) as exc:  # COPY raises psycopg2's own errors
            url = self._engine.url.render_as_string(hide_password=False)
            error = store_error(exc, f"{doing} failed in schema {self.schema!r}", url, after)
            if error is None:
                raise
            raise error from None

    def ingest(self, raw: RawInteractions | Iterable[RawInteractions]) -> IngestResult:
        """Add ``raw`` in one transaction, skipping rows already stored (same user, item, time).

        ``raw``: the interactions, or chunks of them (:func:`recmf.data.sources.stream_source`)
        read as they are needed, so memory stays bounded. Ingesting the same data twice changes
        nothing; a failure (a bad line in a later chunk too) writes nothing. The result counts
        repeats within ``raw`` and rows already stored as duplicates skipped. See
        :mod:`recmf.store.writer` for how.
        """
        after = (
            "An ingest is one transaction, stored whole or not at all (here: not, unless the "
            "connection was lost during its commit); running it again is safe: it adds only "
            "what is missing"
        )
        with self._errors("ingest", after), self._engine.begin() as conn:
            result = write_interactions(conn, self._tables, raw)
        return result

    def n_interactions(self) -> int:
        """Number of stored interactions."""
        with self._errors("counting interactions"), self._engine.connect() as conn:
            return int(
                conn.scalar(sa.select(sa.func.count()).select_from(self._tables.interactions))
            )

    def interactions_query(self) -> str:
        """The SQL that :meth:`read_interactions` copies out (recorded as the run's source)."""
        q = self._tables.qualified
        return (
            f"SELECT user_key, item_key, coalesce(rating, 'NaN'::real), ts FROM {q('interactions')}"
        )

    def read_interactions(self) -> Interactions:
        """All interactions as numpy columns, with a vocabulary of the users and items in them.

        Rows come in storage order (stable while the data is unchanged); ``user_idx``/``item_idx``
        are positions in the vocabulary, which is ordered by surrogate key (first ingested
        first). ``rating`` is NaN where none was given. One consistent snapshot of the tables.
        """
        q = self._tables.qualified
        snapshot = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        with (
            self._errors("reading interactions"),
            self._engine.connect().execution_options(**snapshot) as conn,
            conn.begin(),
        ):
            # A scan joining another scan of a big table midway would rotate the row order.
            conn.exec_driver_sql("SET LOCAL synchronize_seqscans = off")
            cursor = conn.connection.driver_connection.cursor()
            # the vocabulary: users and items with interactions (those with aggregate rows),
            # not those only a features file named (they are cold: no embedding to train)
            user_keys, user_ids = copy_out_csv(
                cursor,
                f"SELECT u.user_key, u.user_id FROM {q('users')} u "
                f"JOIN {q('user_features')} f USING (user_key) ORDER BY u.user_key",
                ("int8", "text"),
            )
            item_keys, item_ids, titles = copy_out_csv(
                cursor,
                f"SELECT i.item_key, i.item_id, i.title FROM {q('items')} i "
                f"JOIN {q('item_features')} f USING (item_key) ORDER BY i.item_key",
                ("int8", "text", "text"),
            )
            # coalesce: every row fixed-width (a NULL would be a field without bytes).
            # Keys become int32 positions chunk by chunk, so the keys are never held in full.
            key = key_type(conn, self._tables)
            user_idx, item_idx, rating, ts = copy_out(
                cursor,
                self.interactions_query(),
                (key, key, "float4", "int8"),
                convert=(_position_fn(user_keys), _position_fn(item_keys), None, None),
            )
            untimed = self._fact(conn, UNTIMED)
        vocab = Vocab(user_ids=user_ids, item_ids=item_ids, item_titles=titles)
        return Interactions(
            user_idx=user_idx,
            item_idx=item_idx,
            rating=rating,
            timestamp=ts,
            vocab=vocab,
            timed=untimed is None,
        )

    def _fact(self, conn: sa.Connection, fact: str) -> str | None:
        """A stored fact's value; None when unset (or the store predates the facts table and
        was opened read-only, so it was not created)."""
        facts = self._tables.facts
        if conn.scalar(sa.text("SELECT to_regclass(:t)"), {"t": self._tables.qualified("facts")}):
            return conn.scalar(sa.select(facts.c.value).where(facts.c.fact == fact))
        return None

    def snapshot(self, interactions: Interactions | None = None) -> dict:
        """What a training run records about its data: counts, latest time and a content hash.

        Args:
            interactions: what :meth:`read_interactions` returned, to avoid reading it again.
        """
        data = self.read_interactions() if interactions is None else interactions
        sides = [f for f in (self.read_features("user"), self.read_features("item")) if f]
        digest = content_hash(data)
        with_features = features_hash(sides)
        if with_features:  # a store without side features keeps the digest it always had
            digest = hashlib.sha256(f"{digest}:{with_features}".encode()).hexdigest()
        out = {
            "url": self.url_safe,
            "schema": self.schema,
            "n_users": int(data.n_users),
            "n_items": int(data.n_items),
            "n_interactions": len(data),
            "max_timestamp": int(data.timestamp.max()) if len(data) else None,
            "timed": data.timed,  # False: no time column (row order), split at random
            "content_hash": digest,
        }
        for f in sides:  # e.g. item_side_features "genres:multi,year:numeric"
            out[f"{f.side}_side_features"] = ",".join(f"{n}:{k}" for n, k in f.kinds().items())
            out[f"n_{f.side}s_with_features"] = len(f)
        return out

    def read_features(self, side: str) -> RawFeatures | None:
        """The stored side features of ``side`` (``"user"`` or ``"item"``), one row per
        entity with at least one value (whether or not it has interactions); None when none."""
        with (
            self._errors(f"reading {side} features"),
            self._engine.connect().execution_options(postgresql_readonly=True) as conn,
            conn.begin(),
        ):
            cursor = conn.connection.driver_connection.cursor()
            return read_side_features(conn, cursor, self._tables, side)

    def user_history(self, user_ids: list[str]) -> dict[str, list[str]]:
        """For each known user id, the item ids they interacted with, earliest first.

        Unknown users are absent from the result; a user with repeated interactions with an
        item lists it once.
        """
        ids = sorted({str(u) for u in user_ids})
        if not ids:
            return {}
        t = self._tables
        first = sa.func.min(t.interactions.c.ts).label("first_ts")
        rows_q = (
            sa.select(t.users.c.user_id, t.items.c.item_id, first)
            .select_from(t.users.join(t.interactions).join(t.items))
            .where(t.users.c.user_id.in_(ids))
            .group_by(t.users.c.user_id, t.items.c.item_id)
            .order_by(t.users.c.user_id, first, t.items.c.item_id)
        )
        with self._errors("reading user history"), self._engine.connect() as conn:
            known = conn.scalars(sa.select(t.users.c.user_id).where(t.users.c.user_id.in_(ids)))
            out: dict[str, list[str]] = {u: [] for u in known}
            for user, item, _ in conn.execute(rows_q):
                out[user].append(item)
        return out

    def new_items(
        self, known_ids: np.ndarray, unless: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
        """The stored items whose ids are not in ``known_ids`` (a model's vocabulary): items
        added after it was trained, or that had no interactions then.

        Returns ``(ids, titles, version)``, titles ``""`` where none; ``version`` is the items
        table's (row count, largest key). Pass it back as ``unless`` and the answer is None
        while the table is unchanged: one index scan, and neither the table nor the
        vocabulary crosses the connection (items are never deleted, so the pair changes
        whenever an item is added, even by an ingest that committed late).
        """
        q = self._tables.qualified
        snapshot = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        with (
            self._errors("reading new items"),
            self._engine.connect().execution_options(**snapshot) as conn,
            conn.begin(),
        ):
            count, last = conn.exec_driver_sql(
                f"SELECT count(*), coalesce(max(item_key), 0) FROM {q('items')}"
            ).one()
            version = (int(count), int(last))
            if unless is not None and tuple(unless) == version:
                return None
            cursor = conn.connection.driver_connection.cursor()
            ids, titles = copy_out_csv(
                cursor,
                f"SELECT item_id, title FROM {q('items')} ORDER BY item_key",
                ("text", "text"),
            )
        new = ~np.isin(ids.astype(str), np.asarray(known_ids).astype(str))
        return ids[new].astype(object), titles[new].astype(object), version

    def list_users(self, limit: int = 20) -> list[str]:
        """Up to ``limit`` user ids, first ingested first (for "did you mean" messages)."""
        users = self._tables.users
        query = sa.select(users.c.user_id).order_by(users.c.user_key).limit(int(limit))
        with self._errors("listing users"), self._engine.connect() as conn:
            return list(conn.scalars(query))

    def item_titles(self, item_ids: list[str]) -> dict[str, str]:
        """Titles of the given item ids that have one."""
        ids = sorted({str(i) for i in item_ids})
        if not ids:
            return {}
        items = self._tables.items
        query = sa.select(items.c.item_id, items.c.title).where(
            items.c.item_id.in_(ids), items.c.title.is_not(None)
        )
        with self._errors("reading item titles"), self._engine.connect() as conn:
            return {item: title for item, title in conn.execute(query)}


def _position_fn(keys: np.ndarray):
    """Function mapping an array of ``keys`` (all present, sorted) to their int32 positions."""
    if len(keys) >= 2**31:
        raise ValueError(f"{len(keys)} ids do not fit int32 positions")
    if len(keys) and int(keys[-1]) - int(keys[0]) == len(keys) - 1:
        first = keys[0]  # gap-free keys (the usual case): a subtraction, not a gather
        return lambda values: (values - first).astype(np.int32)
    lookup = np.full(int(keys.max()) + 1 if len(keys) else 0, -1, dtype=np.int32)
    lookup[keys] = np.arange(len(keys), dtype=np.int32)
    return lambda values: lookup[values]
