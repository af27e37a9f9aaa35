"""Sources of interactions: seeded synthetic data, MovieLens 100K, and any delimited file.

Every source returns :class:`RawInteractions` (external string ids, not positions); the store
assigns keys on ingest. Files are validated completely before any database work, so a bad file
writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from recmf.data.delimited import (
    Columns,
    feature_column,
    feature_roles,
    id_codes,
    id_column,
    numeric_times,
    rating_column,
    read_columns,
    stream_columns,
    time_column,
    title_column,
    unique_ids,
)
from recmf.data.features import FeatureSpec, RawFeatures, feature_specs
from recmf.data.interactions import RawInteractions
from recmf.data.movielens import ML100K_GENRES, movielens_100k
from recmf.data.synthetic import synthetic
from recmf.errors import ConfigError
from recmf.settings import (
    MISSING,
    CsvConfig,
    DatasetConfig,
    MovieLensConfig,
    SyntheticConfig,
)

SOURCES = ("synthetic", "movielens-100k", "csv")
__all__ = [
    "ML100K_GENRES",
    "SOURCES",
    "RawInteractions",
    "load_source",
    "stream_source",
    "synthetic",
    "movielens_100k",
    "csv_source",
]


def load_source(dataset: DatasetConfig) -> RawInteractions:
    """The interactions a ``dataset`` setting describes (dispatch on its type), read whole."""
    return next(stream_source(dataset, block_bytes=None))  # unstreamed: one chunk


BLOCK_BYTES = 32 << 20  # of a CSV per chunk when streaming: ~1.07M lines of a ratings.csv


def stream_source(
    dataset: DatasetConfig, block_bytes: int | None = BLOCK_BYTES
) -> Iterator[RawInteractions]:
    """The interactions a ``dataset`` setting describes, in chunks: a CSV ``block_bytes`` of
    its text at a time (``None``: whole); the first chunk carries titles and side features.
    Settings are checked on the call, the data as the chunks are taken."""
    if not isinstance(dataset, SyntheticConfig | MovieLensConfig | CsvConfig):
        raise ConfigError(
            f"unknown dataset name {getattr(dataset, 'name', dataset)!r}; expected one of "
            f"{list(SOURCES)} (e.g. dataset=synthetic, dataset=movielens-100k or dataset=csv)"
        )
    unset = [f.name for f in fields(dataset) if getattr(dataset, f.name) == MISSING]
    if unset:
        raise ConfigError(
            f"dataset={dataset.name} needs dataset.{unset[0]}; pass dataset.{unset[0]}=... on "
            "the command line"
        )
    if isinstance(dataset, SyntheticConfig):
        d = dataset
        raw = synthetic(d.n_users, d.n_items, d.n_interactions, d.rank, d.popularity_exponent,
                        d.seed)  # fmt: skip
        return iter([raw]) if block_bytes is None else _slices(raw, SLICE_ROWS)
    if isinstance(dataset, MovieLensConfig):
        d = dataset
        return iter([movielens_100k(d.path, d.url, d.md5, d.cache_dir)])
    if isinstance(dataset, CsvConfig):
        d = dataset
        return csv_chunks(
            d.path,
            d.sep,
            d.header,
            asdict(d.columns),
            d.items_path,
            d.items_sep,
            asdict(d.items_columns),
            d.time_unit,
            items_features=d.items_features,
            users_path=d.users_path,
            users_sep=d.users_sep,
            users_columns=d.users_columns,
            users_features=d.users_features,
            block_bytes=block_bytes,
        )
    raise AssertionError(dataset)  # unreachable: every type is handled above


SLICE_ROWS = 1 << 20  # rows per chunk of an in-memory source: the ingest's copies stay small


def _slices(raw: RawInteractions, rows: int) -> Iterator[RawInteractions]:
    """``raw`` in chunks of ``rows`` (views); the first carries titles and features."""
    for lo in range(0, max(len(raw), 1), rows):
        part = slice(lo, lo + rows)
        rating = None if raw.rating is None else raw.rating[part]
        yield dataclasses.replace(
            raw,
            user_id=raw.user_id[part],
            item_id=raw.item_id[part],
            rating=rating,
            timestamp=raw.timestamp[part],
            **({} if lo == 0 else {"item_titles": {}, "item_features": None,
                                   "user_features": None}),
        )  # fmt: skip


def csv_chunks(
    path: str | Path,
    sep: str = ",",
    header: bool = True,
    columns: Any = None,
    items_path: str | Path | None = None,
    items_sep: str = ",",
    items_columns: Any = None,
    time_unit: str = "s",
    *,
    items_features: Any = None,
    users_path: str | Path | None = None,
    users_sep: str = ",",
    users_columns: Any = None,
    users_features: Any = None,
    block_bytes: int | None = None,
) -> Iterator[RawInteractions]:
    r"""Interactions from any delimited file, with a column mapping, a block of about
    ``block_bytes`` at a time (``None``: the whole file at once); side features from others.

    Args:
        path: the interactions file (UTF-8, a byte order mark is fine; ``"`` quotes fields).
        sep: field separator.
        header: whether line 1 names the columns; then ``columns`` are names, else 0-based
            positions. Applies to the items and users files too.
        columns: mapping with ``user`` and ``item`` (required), ``rating`` and ``time``
            (optional, ``None`` when absent). Times are integer unix seconds or ISO 8601;
            without a time column each row's 0-based number is its time, keeping file order,
            and the data are marked untimed: training splits them at random.
        items_path: optional file of item titles and features, one line per item.
        items_sep: its separator.
        items_columns: mapping with ``item`` and ``title`` for the items file (``title`` may be
            ``None`` when ``items_features`` are given).
        time_unit: ``"s"`` or ``"ms"``, the unit of numeric times (floored to seconds).
        items_features: feature name -> ``{column, kind, sep, pattern, missing}`` read from
            ``items_path`` (:func:`recmf.data.features.feature_specs`); e.g. ``{"year":
            {"column": "title", "kind": "numeric", "pattern": r"\((\d{4})\)\s*$"}}``.
        users_path: optional file of user features, one line per user.
        users_sep: its separator.
        users_columns: mapping with ``user``, the users file's id column.
        users_features: as ``items_features``, read from ``users_path``.
        block_bytes: the size of the file's blocks (memory stays bounded by it), or ``None``.

    Settings and the side files' headers are checked on the call; the files are read as the
    chunks are taken. The first chunk carries the titles and side features.
    """
    if path is None:
        raise ConfigError("dataset=csv needs dataset.path=/path/to/interactions.csv")
    mapping = {k: v for k, v in dict(columns or {}).items() if v is not None}
    missing = [role for role in ("user", "item") if role not in mapping]
    unknown = sorted(set(mapping) - {"user", "item", "rating", "time"})
    if missing or unknown:
        raise ConfigError(
            f"dataset.columns needs user and item (and optionally rating, time); "
            f"got {dict(columns or {})!r}. E.g. dataset.columns.user=userId"
        )
    if time_unit not in ("s", "ms"):
        raise ConfigError(
            f"dataset.time_unit must be s or ms (of numeric times); got {time_unit!r}"
        )
    # every setting of the side files is checked (their headers too) before any file is read
    items = _side_file("item", items_path, items_sep, header, items_columns, items_features)
    users = _side_file("user", users_path, users_sep, header, users_columns, users_features)
    expected = "one interaction per line with the columns in dataset.columns"
    if block_bytes is None:
        blocks = iter([read_columns(path, sep=sep, header=header, columns=mapping,
                                    expected=expected)])  # fmt: skip
    else:
        blocks = stream_columns(
            path, sep=sep, header=header, columns=mapping, block_bytes=block_bytes,
            expected=expected,
        )  # fmt: skip
    return _csv_chunks(blocks, items, users, mapping, time_unit, coded=block_bytes is not None)


def _categorical(codes: np.ndarray, uniques: np.ndarray) -> Any:
    import pandas as pd

    return pd.Categorical.from_codes(codes, pd.Index(uniques, dtype=object))


def csv_source(path: str | Path, *args: Any, **kwargs: Any) -> RawInteractions:
    """:func:`csv_chunks` read whole, as one :class:`RawInteractions`."""
    return next(csv_chunks(path, *args, **kwargs, block_bytes=None))


def _csv_chunks(
    blocks, items, users, mapping: dict, time_unit: str, coded: bool
) -> Iterator[RawInteractions]:
    """The interactions of each block; the first also carries the side files' titles and
    features (read first, so that they are checked before any interaction is stored)."""
    item_features, item_cols = items.read() if items else (None, None)
    user_features, _ = users.read() if users else (None, None)
    titles = title_column(item_cols) if items and "title" in items.roles else {}
    numeric = None  # numbers or ISO 8601: the file's first row decides for every block
    for cols in blocks:
        rating = rating_column(cols) if "rating" in mapping else None
        if "time" in mapping:
            numeric = numeric_times(cols) if numeric is None else numeric
            timestamp = time_column(cols, unit=time_unit, numeric=numeric)
        else:  # each row's number in the file
            timestamp = np.arange(cols.offset, cols.offset + cols.n_rows, dtype=np.int64)
        if coded:  # the store takes the codes as they are: no (n,) arrays of str objects
            user_id, item_id = (_categorical(*id_codes(cols, role)) for role in ("user", "item"))
        else:
            user_id, item_id = id_column(cols, "user"), id_column(cols, "item")
        yield RawInteractions(
            user_id=user_id,
            item_id=item_id,
            rating=rating,
            timestamp=timestamp,
            item_titles=titles,
            source=f"csv {cols.path.absolute()}",
            item_features=item_features,
            user_features=user_features,
            timed="time" in mapping,
        )
        titles, item_features, user_features = {}, None, None  # carried by the first chunk


@dataclass(frozen=True)
class _SideFile:
    """A checked items or users file of ``csv_source``: an id, maybe titles, features."""

    side: str
    path: str | Path
    sep: str
    header: bool
    roles: dict[str, str | int]  # read_columns' role -> column
    specs: list[FeatureSpec]

    def read(self) -> tuple[RawFeatures | None, Columns]:
        cols = read_columns(
            self.path,
            sep=self.sep,
            header=self.header,
            columns=self.roles,
            expected=f"one {self.side} per line with an id"
            + (" and a title" if "title" in self.roles else "")
            + (" and the features' columns" if self.specs else ""),
            columns_key=f"dataset.{self.side}s_columns",
        )
        if not self.specs:
            return None, cols
        ids = unique_ids(cols, self.side)
        columns = [feature_column(cols, spec) for spec in self.specs]
        return RawFeatures(self.side, ids, columns, str(cols.path.absolute())), cols


def _side_file(
    side: str, path: Any, sep: str, header: bool, columns: Any, features: Any
) -> _SideFile | None:
    """The checked settings of the items (titles, features) or users (features) file, if any."""
    key = f"dataset.{side}s"
    specs = feature_specs(f"{key}_features", features)
    if specs and path is None:
        raise ConfigError(
            f"{key}_features needs {key}_path, the file to read them from (one line per "
            f"{side}, with the {side} id and the features' columns); pass {key}_path=..."
        )
    if path is None:
        return None
    given = dict(columns or {})
    roles = {side: given.get(side)}
    if side == "item" and given.get("title") is not None:
        roles["title"] = given["title"]
    elif side == "item" and not specs:
        roles["title"] = None  # titles are what an items file without features is for
    elif side == "user" and not specs:
        raise ConfigError(
            f"{key}_path is set but {key}_features names no feature to read from it; add one, "
            f"e.g. {key}_features.age={{column: age, kind: numeric}}, or drop {key}_path"
        )
    if any(col is None for col in roles.values()):
        needs = "item and title" if side == "item" and not specs else side
        raise ConfigError(
            f"{key}_columns needs {needs} (the columns of {key}_path), e.g. "
            f"{{{side}: {side}Id{', title: title' if 'title' in roles else ''}}}; got {given!r}"
        )
    roles |= feature_roles(path, sep, header, specs, f"{key}_features")
    return _SideFile(side, path, sep, header, roles, specs)
