"""Ingest: raw interactions into the store in one transaction, by COPY, idempotently.

The steps, all inside the caller's transaction (a failure anywhere writes nothing):

1. Factorize the string ids on the client (a few thousand distinct ids for millions of rows),
   COPY the distinct ids into temp tables, insert the new ones (new keys follow first
   appearance in the input) and COPY back their surrogate keys.
2. Map rows to keys, sort them by the natural key (user_key, item_key, ts) and drop repeats within
   the file (the first wins). Sorted rows turn B-tree inserts into appends: 2.5x faster here.
3. COPY the rows (binary, fixed width) into a temp table and insert those not stored yet with an
   anti-join. ``LOCK ... SHARE ROW EXCLUSIVE`` on interactions, taken first, serialises
   concurrent ingests into one schema (readers are not blocked), which is what makes anti-joins
   safe here, for ids too; they are 2x faster than ``ON CONFLICT`` and leave no gaps in keys.
   Into an empty table the rows are COPYed straight in instead.
4. Refresh the feature rows of the touched users and items (see :mod:`recmf.store.features`).
5. Store the side features the source gives, if any (see :mod:`recmf.store.sides`); entities
   they name beyond the interactions' get keys after those, so a data set's vocabulary order
   does not depend on its features.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from recmf.store.copy_io import RowsProgress, copy_in, copy_out, encode_fixed, encode_rows
from recmf.store.features import FirstLoadFeatures, refresh_features
from recmf.store.rows import Spill, factorize, sort_unique_rows
from recmf.store.schema import NATURAL_KEY, UNTIMED, StoreTables
from recmf.store.sides import SideResult, write_side_features

if TYPE_CHECKING:
    from recmf.data.interactions import RawInteractions

log = logging.getLogger(__name__)

_STAGE = {"user": "recmf_stage_users", "item": "recmf_stage_items"}
_STAGE_TITLES = "recmf_stage_titles"
_STAGE_ROWS = "recmf_stage_rows"
_ROW_COLUMNS = ("user_key", "item_key", "rating", "ts")


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did; the first three counts are the store's totals afterwards."""

    n_users: int
    n_items: int
    n_interactions: int
    new_users: int
    new_items: int
    added: int
    duplicates_skipped: int  # rows already stored, plus repeats within the input
    features: tuple[SideResult, ...] = ()  # side features written, per side
    untimed: bool = False  # the source had no time column (row numbers stand for time)

    def summary(self) -> str:
        """One line for people: totals, then what this ingest changed."""
        line = (
            f"stored {self.n_users} users, {self.n_items} items, {self.n_interactions} "
            f"interactions (+{self.added} new, {self.duplicates_skipped} duplicates skipped)"
        )
        if self.untimed:
            line += "; no time column: row order stands for time, training splits at random"
        for f in self.features:
            made = f", {f.new_entities} of them new" if f.new_entities else ""
            line += f"; {f.side} features of {f.entities} {f.side}s{made} ({f.values} values)"
        return line


PART_ROWS = 1 << 20  # rows sorted and copied at a time: ~0.1 GB of client memory at most


def write_interactions(
    conn: sa.Connection,
    tables: StoreTables,
    source: RawInteractions | Iterable[RawInteractions],
    spill_dir: str | None = None,
) -> IngestResult:
    """Ingest ``source`` (one :class:`RawInteractions`, or chunks whose first carries titles
    and side features) inside the transaction open on ``conn``; see the module docstring.
    ``spill_dir``: where rows wait between the two passes (default: the system's temp dir)."""
    from recmf.data.interactions import RawInteractions

    chunks = iter([source] if isinstance(source, RawInteractions) else source)
    first = next(chunks)
    sides = [f for f in (first.user_features, first.item_features) if f is not None and len(f)]
    tx = _Transaction(conn, tables, first.item_titles or {})
    users, items = _Ids(tx, "user"), _Ids(tx, "item")
    n = 0
    with tempfile.TemporaryDirectory(prefix="recmf-ingest-", dir=spill_dir) as tmp:
        spill = Spill(tmp)
        for raw in itertools.chain([first], chunks):  # pass 1: keys, rows parked by user
            if len(raw) == 0:
                continue
            user_key, item_key = users.keys(raw.user_id), items.keys(raw.item_id)
            rating = raw.rating if raw.rating is not None else np.full(len(raw), np.nan)
            spill.add(user_key, item_key, raw.timestamp, rating.astype(np.float32))
            n += len(raw)
            del user_key, item_key, rating
            if n > len(raw):
                log.info("%d rows read and keyed", n)
        if n == 0 and not sides:
            raise ValueError(f"no interactions to ingest from {first.source or 'the source'}")
        added, repeats = tx.store_rows(spill) if n else (0, 0)
    log.info(
        "%d input rows: %d repeated within the input, %d already stored, %d added",
        n, repeats, n - repeats - added, added,
    )  # fmt: skip
    if not first.timed:  # row numbers stand for time: training must not read them as time
        stmt = postgresql.insert(tables.facts).values(fact=UNTIMED, value=first.source or "?")
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["fact"]))
    written = tuple(write_side_features(conn, tx.cursor, tables, f) for f in sides)
    tx.update_titles()  # of items this input or its features file created, and stored ones
    n_users, n_items, n_interactions = tx.totals()
    return IngestResult(
        n_users=n_users,
        n_items=n_items,
        n_interactions=n_interactions,
        new_users=users.new,
        new_items=items.new,
        added=added,
        duplicates_skipped=n - added,
        features=written,
        untimed=not first.timed,
    )


class _Ids:
    """One side's external ids to surrogate keys, chunk by chunk: the ids a chunk brings first
    are staged with the next codes and inserted in that order (keys follow first appearance);
    the codes of all ids of the input stay in memory (a few MB), their keys in an array."""

    def __init__(self, tx: _Transaction, side: str):
        self.tx, self.side = tx, side
        self.code_of: dict[str, int] = {}
        self.key_of_code = np.zeros(0, dtype=np.int64)
        self.new = 0  # ids the store did not have

    def keys(self, ids: np.ndarray) -> np.ndarray:
        """(n,) int64 keys of (n,) string ids."""
        codes, uniques = factorize(ids, self.side)
        code_of = self.code_of
        known = np.fromiter((code_of.get(u, -1) for u in uniques.tolist()), np.int64, len(uniques))
        fresh = np.flatnonzero(known < 0)
        if len(fresh):
            start = len(code_of)
            names = uniques[fresh]
            code_of.update(zip(names.tolist(), range(start, start + len(fresh)), strict=True))
            known[fresh] = np.arange(start, start + len(fresh))
            new, keys = self.tx.store_ids(self.side, start, names)
            self.new += new
            self.key_of_code = np.r_[self.key_of_code, keys]
        return self.key_of_code[known[codes]]


class _Transaction:
    """The SQL steps of one ingest, on one connection inside one transaction."""

    def __init__(self, conn: sa.Connection, tables: StoreTables, titles: dict):
        self.conn, self.tables, self.q = conn, tables, tables.qualified
        self.cursor = conn.connection.driver_connection.cursor()  # psycopg2, for COPY
        run = self.run
        run("SET LOCAL work_mem = '256MB'")  # hash joins and aggregates stay in memory
        # Taken before anything else, so concurrent ingests into this schema queue here.
        run(f"LOCK TABLE {self.q('interactions')} IN SHARE ROW EXCLUSIVE MODE")
        if run("SELECT current_setting('is_superuser')").scalar() == "on":
            # Keys come from users/items rows that this transaction just read or wrote, and
            # recmf never deletes those, so the per-row foreign-key triggers (7 s per million
            # rows here) can be skipped, as replication does. Without superuser they run.
            run("SET LOCAL session_replication_role = replica")
        for side in ("user", "item"):  # every id of the input, by code (first appearance)
            run(f"CREATE TEMP TABLE {_STAGE[side]} (code int4, {side}_id text) ON COMMIT DROP")
        run(f"CREATE TEMP TABLE {_STAGE_TITLES} (item_id text, title text) ON COMMIT DROP")
        if titles:
            payload = encode_rows(titles.items(), ("text", "text"))
            copy_in(self.cursor, _STAGE_TITLES, ("item_id", "title"), payload)

    def run(self, sql: str, params: dict | None = None) -> sa.CursorResult:
        return self.conn.exec_driver_sql(sql, params) if params else self.conn.exec_driver_sql(sql)

    def store_ids(self, side: str, start: int, ids: np.ndarray) -> tuple[int, np.ndarray]:
        """Stage ``ids`` (not staged before) as codes ``start``, ``start + 1``, ...; insert
        those the store lacks in that order; (#new, the key of each)."""
        stage, table = _STAGE[side], self.q(f"{side}s")
        payload = encode_rows(enumerate(ids.tolist(), start), ("int4", "text"))
        copy_in(self.cursor, stage, ("code", f"{side}_id"), payload)
        id_, key = f"{side}_id", f"{side}_key"
        new = self.run(
            f"INSERT INTO {table} ({id_}) SELECT s.{id_} FROM {stage} s WHERE s.code >= {start} "
            f"AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{id_} = s.{id_}) ORDER BY s.code"
        ).rowcount
        codes, keys = copy_out(
            self.cursor,
            f"SELECT s.code, t.{key} FROM {stage} s JOIN {table} t USING ({id_}) "
            f"WHERE s.code >= {start}",
            ("int4", "int8"),
        )
        out = np.full(len(ids), -1, dtype=np.int64)
        out[codes - start] = keys
        assert (out >= 0).all(), "every staged id has a key after the insert"
        return new, out

    def update_titles(self) -> None:
        """Set the staged titles of stored items: new ones, and ones stored before (titles of
        items not in the input update them; they do not create items)."""
        self.run(
            f"UPDATE {self.q('items')} i SET title = s.title FROM {_STAGE_TITLES} s WHERE "
            "i.item_id = s.item_id AND s.title IS NOT NULL AND i.title IS DISTINCT FROM s.title"
        )

    def store_rows(self, spill: Spill) -> tuple[int, int]:
        """Pass 2: the parked rows, a part at a time sorted by the natural key with repeats
        dropped (the first kept), into the table; (#added, #repeats within the input)."""
        first_load = self.is_first_load()
        table = self.q("interactions")
        if first_load:
            # nothing stored can conflict and the lock keeps other writers out: COPY straight
            # in and build the key index once afterwards (0.7 s per million rows here, against
            # 1.9 s through staging and an indexed insert)
            self.run(f"ALTER TABLE {table} DROP CONSTRAINT {NATURAL_KEY}")
            features = FirstLoadFeatures(self.cursor, self.tables)
            target = table
        else:
            self.run(
                f"CREATE TEMP TABLE {_STAGE_ROWS} "
                "(user_key int8, item_key int8, rating float4, ts int8) ON COMMIT DROP"
            )
            target = _STAGE_ROWS
        repeats = copied = 0
        progress = RowsProgress(spill.n_rows, f"COPY into {target}")
        for part in spill.parts(PART_ROWS):
            keep, dropped = sort_unique_rows(part["user_key"], part["item_key"], part["ts"])
            part = part[keep]
            rows = (part["user_key"], part["item_key"], part["rating"], part["ts"])
            payload = encode_fixed(
                rows, ("int8", "int8", "float4", "int8"),
                nulls=[None, None, np.isnan(rows[2]), None],
            )  # fmt: skip
            copy_in(self.cursor, target, _ROW_COLUMNS, payload)
            if first_load:
                features.add(*rows)
            repeats += dropped
            copied += len(part)
            del part, rows, payload, keep
            progress.update(copied + repeats)
        if first_load:
            self.run(
                f"ALTER TABLE {table} ADD CONSTRAINT {NATURAL_KEY} "
                "PRIMARY KEY (user_key, item_key, ts)"
            )
            features.finish()
            return copied, repeats
        added = self.run(
            f"INSERT INTO {table} (user_key, item_key, rating, ts) "
            f"SELECT s.user_key, s.item_key, s.rating, s.ts FROM {_STAGE_ROWS} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} i WHERE i.user_key = s.user_key "
            "AND i.item_key = s.item_key AND i.ts = s.ts)"
        ).rowcount
        if added:
            self.refresh_touched_features()
        return added, repeats

    def is_first_load(self) -> bool:
        """Whether interactions is empty and we may drop and re-add its primary key."""
        table = self.q("interactions")
        empty = self.run(f"SELECT NOT EXISTS (SELECT 1 FROM {table})").scalar()
        may_alter = self.run(
            "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = %(t)s::regclass",
            {"t": table},
        ).scalar()
        return bool(empty and may_alter)

    def refresh_touched_features(self) -> None:
        """Recompute the feature rows of every user and item in this input."""
        q = self.q
        refresh_features(
            self.conn,
            self.tables,
            f"SELECT u.user_key FROM {_STAGE['user']} s JOIN {q('users')} u USING (user_id)",
            f"SELECT i.item_key FROM {_STAGE['item']} s JOIN {q('items')} i USING (item_id)",
        )

    def totals(self) -> tuple[int, int, int]:
        """(n_users, n_items, n_interactions) in the store now."""
        q = self.q
        row = self.run(
            f"SELECT (SELECT count(*) FROM {q('users')}), (SELECT count(*) FROM {q('items')}), "
            f"(SELECT count(*) FROM {q('interactions')})"
        ).one()
        return int(row[0]), int(row[1]), int(row[2])
