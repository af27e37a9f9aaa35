"""Side features in the store: typed tables keyed by the surrogate keys, written by COPY.

``feature_kinds`` names each feature of a side and its kind; ``<side>_categories`` holds the text
values of categorical and multi features (one row per value), ``<side>_numbers`` the numeric ones.
Unknown is no row. An ingest replaces, for each entity it names, the values of the features it
gives (so ingesting the same file twice changes nothing, and a corrected file corrects), inside
the ingest's transaction: all of it is stored or none. Entities named only by a features file
are created (an item added with its features before anyone has interacted with it); they are
not part of a training vocabulary until they have interactions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from recmf.data.features import FeatureColumn, RawFeatures
from recmf.store.copy_io import copy_in, copy_out_csv, encode_rows
from recmf.store.errors import StoreError
from recmf.store.rows import factorize
from recmf.store.schema import StoreTables

_STAGE = "recmf_stage_{side}_features"


@dataclass(frozen=True)
class SideResult:
    """What one side's features did in an ingest."""

    side: str
    entities: int  # entities the source gave features for
    new_entities: int  # of those, created by this ingest (no interactions yet)
    values: int  # value rows written (categorical/multi values plus numbers)


def write_side_features(
    conn: sa.Connection, cursor: Any, tables: StoreTables, features: RawFeatures, key_type: str
) -> SideResult:
    """Store ``features`` inside the transaction open on ``conn``; see the module docstring.
    ``key_type``: the store's surrogate keys, int4 or int8 (:func:`recmf.store.schema.key_type`).

    Raises:
        StoreError: a feature is stored with another kind than the source gives it.
    """
    side, q = features.side, tables.qualified
    key = f"{side}_key"
    owner = "users" if side == "user" else "items"
    codes, ids = factorize(features.ids, side)
    if len(ids) != len(features.ids):
        raise ValueError(f"{side} features name some {side} ids twice ({features.source})")
    _check_kinds(conn, tables, features)
    stage = _STAGE.format(side=side)
    conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} (code int4, id text) ON COMMIT DROP")
    copy_in(cursor, stage, ("code", "id"), encode_rows(enumerate(ids.tolist()), ("int4", "text")))
    new = conn.exec_driver_sql(
        f"INSERT INTO {q(owner)} ({side}_id) SELECT s.id FROM {stage} s WHERE NOT EXISTS "
        f"(SELECT 1 FROM {q(owner)} o WHERE o.{side}_id = s.id) ORDER BY s.code"
    ).rowcount
    key_of_code = np.full(len(ids), -1, dtype=np.int64)
    for code, k in conn.exec_driver_sql(
        f"SELECT s.code, o.{key} FROM {stage} s JOIN {q(owner)} o ON o.{side}_id = s.id"
    ):
        key_of_code[code] = k
    keys = key_of_code[codes]
    names = [c.name for c in features.columns]
    for what in ("categories", "numbers"):  # replace what this source gives, nothing else
        conn.exec_driver_sql(
            f"DELETE FROM {q(f'{side}_{what}')} t USING {stage} s, {q(owner)} o "
            f"WHERE o.{side}_id = s.id AND t.{key} = o.{key} AND t.feature = ANY(%(names)s)",
            {"names": names},
        )
    categories, numbers = [], []
    for column in features.columns:
        if column.kind == "numeric":
            known = ~np.isnan(column.values)
            numbers += zip(keys[known].tolist(), [column.name] * int(known.sum()),
                           column.values[known].tolist(), strict=True)  # fmt: skip
        else:
            for k, value in zip(keys.tolist(), column.values.tolist(), strict=True):
                values = (value,) if column.kind == "categorical" else value
                categories += [(k, column.name, v) for v in dict.fromkeys(values or ()) if v]
    for what, rows, value_type in (
        ("categories", categories, "text"),
        ("numbers", numbers, "float8"),
    ):
        if rows:
            payload = encode_rows(rows, (key_type, "text", value_type))
            copy_in(cursor, q(f"{side}_{what}"), (key, "feature", "value"), payload)
    return SideResult(side, len(ids), new, len(categories) + len(numbers))


def _check_kinds(conn: sa.Connection, tables: StoreTables, features: RawFeatures) -> None:
    """Record new features' kinds; refuse a feature whose stored kind differs."""
    kinds = tables.feature_kinds
    stored = dict(
        conn.execute(
            sa.select(kinds.c.feature, kinds.c.kind).where(kinds.c.side == features.side)
        ).all()
    )
    given = features.kinds()
    clash = [f"{n} is stored as {stored[n]}, given as {k}" for n, k in given.items()
             if n in stored and stored[n] != k]  # fmt: skip
    if clash:
        raise StoreError(
            f"{features.side} features of {features.source or 'the source'} clash with the "
            f"store (schema {tables.schema!r}): {'; '.join(clash)}. A feature keeps the kind it "
            "was first ingested with: give it the same kind, or another name"
        )
    new = [{"side": features.side, "feature": n, "kind": k}
           for n, k in given.items() if n not in stored]  # fmt: skip
    if new:
        conn.execute(sa.insert(kinds), new)


def has_side_tables(conn: sa.Connection, tables: StoreTables) -> bool:
    """Whether the schema has the side-feature tables (a store of an earlier recmf opened
    read-only has not)."""
    found = conn.exec_driver_sql(
        "SELECT to_regclass(%(t)s)", {"t": tables.qualified("feature_kinds")}
    ).scalar()
    return found is not None


def read_side_features(
    conn: sa.Connection, cursor: Any, tables: StoreTables, side: str
) -> RawFeatures | None:
    """Every stored feature of ``side``, for every entity that has at least one value; None
    when the side has no features. Entities come in key order, columns in name order."""
    if not has_side_tables(conn, tables):
        return None
    kinds = tables.feature_kinds
    declared = dict(
        conn.execute(
            sa.select(kinds.c.feature, kinds.c.kind)
            .where(kinds.c.side == side)
            .order_by(kinds.c.feature)
        ).all()
    )
    if not declared:
        return None
    q, key = tables.qualified, f"{side}_key"
    owner = "users" if side == "user" else "items"
    cat_keys, cat_features, cat_values = copy_out_csv(
        cursor,
        f"SELECT {key}, feature, value FROM {q(f'{side}_categories')} "
        f"ORDER BY {key}, feature, value",
        ("int8", "text", "text"),
    )
    rows = conn.exec_driver_sql(
        f"SELECT {key}, feature, value FROM {q(f'{side}_numbers')} ORDER BY {key}, feature"
    ).all()
    num_keys = np.array([r[0] for r in rows], dtype=np.int64)
    entity_keys = np.union1d(cat_keys, num_keys)
    if len(entity_keys) == 0:
        return None
    id_rows = conn.exec_driver_sql(
        f"SELECT {key}, {side}_id FROM {q(owner)} WHERE {key} = ANY(%(keys)s)",
        {"keys": entity_keys.tolist()},
    ).all()
    id_of = dict(id_rows)
    position = {int(k): p for p, k in enumerate(entity_keys.tolist())}
    n = len(entity_keys)
    columns = []
    for name, kind in declared.items():
        if kind == "numeric":
            values = np.full(n, np.nan)
            for k, feature, value in rows:
                if feature == name:
                    values[position[k]] = value
        else:
            lists: list[list[str]] = [[] for _ in range(n)]
            for k, feature, value in zip(
                cat_keys.tolist(), cat_features.tolist(), cat_values.tolist(), strict=True
            ):
                if feature == name:
                    lists[position[k]].append(value)
            if kind == "multi":
                values = np.empty(n, dtype=object)
                values[:] = [tuple(v) for v in lists]
            else:
                values = np.array([v[0] if v else None for v in lists], dtype=object)
        columns.append(FeatureColumn(name, kind, values))
    ids = np.array([id_of[int(k)] for k in entity_keys.tolist()], dtype=object)
    return RawFeatures(side, ids, columns, source=f"store schema {tables.schema}")


def features_hash(features: list[RawFeatures]) -> str | None:
    """SHA-256 of the stored feature values (by external id, so independent of keys and of
    row order); None when there are none."""
    if not features:
        return None
    digest = hashlib.sha256(b"recmf-side-features-v1")
    for f in sorted(features, key=lambda f: f.side):
        order = np.argsort(f.ids.astype(str), kind="stable")
        for column in sorted(f.columns, key=lambda c: c.name):
            digest.update(f"\x00{f.side}\x00{column.name}\x00{column.kind}\x00".encode())
            for p in order.tolist():
                value = column.values[p]
                if column.kind == "numeric":
                    text = "" if np.isnan(value) else repr(float(value))
                elif column.kind == "multi":
                    text = "\x1f".join(sorted(value))
                else:
                    text = "" if value is None else value
                digest.update(f"{f.ids[p]}\x1e{text}\x1d".encode())
    return digest.hexdigest()
