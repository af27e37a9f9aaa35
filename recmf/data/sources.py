"""Sources of interactions: seeded synthetic data, MovieLens 100K, and any delimited file.

Every source returns :class:`RawInteractions` (external string ids, not positions); the store
assigns keys on ingest. Files are validated completely before any database work, so a bad file
writes nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from recmf.data.delimited import (
    id_column,
    rating_column,
    read_columns,
    time_column,
    title_column,
)
from recmf.data.interactions import RawInteractions
from recmf.data.synthetic import synthetic
from recmf.errors import ConfigError, DataFormatError
from recmf.settings import (
    MISSING,
    CsvConfig,
    DatasetConfig,
    MovieLensConfig,
    SyntheticConfig,
)

SOURCES = ("synthetic", "movielens-100k", "csv")
__all__ = ["SOURCES", "RawInteractions", "load_source", "synthetic", "movielens_100k", "csv_source"]


def load_source(dataset: DatasetConfig) -> RawInteractions:
    """The interactions a ``dataset`` setting describes (dispatch on its type)."""
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
        return synthetic(
            d.n_users, d.n_items, d.n_interactions, d.rank, d.popularity_exponent, d.seed
        )
    if isinstance(dataset, MovieLensConfig):
        return movielens_100k(dataset.path, dataset.url, dataset.md5, dataset.cache_dir)
    if isinstance(dataset, CsvConfig):
        d = dataset
        return csv_source(
            d.path,
            d.sep,
            d.header,
            asdict(d.columns),
            d.items_path,
            d.items_sep,
            asdict(d.items_columns),
            d.time_unit,
        )
    raise AssertionError(dataset)  # unreachable: every type is handled above


def movielens_100k(
    path: str | Path | None = None,
    url: str | None = None,
    md5: str | None = None,
    cache_dir: str | Path = ".recmf/downloads",
) -> RawInteractions:
    """MovieLens 100K from an ``ml-100k`` folder, or downloaded once into ``cache_dir``.

    Args:
        path: folder holding ``u.data`` (user, item, rating, time; tab separated) and ``u.item``
            (``|`` separated, latin-1; id and title first). ``None`` downloads ``url``.
        url: the zip archive published by GroupLens.
        md5: its published checksum; a mismatch deletes the download and raises.
        cache_dir: where the archive is kept and unpacked (relative to the working directory).
    """
    if path is None:
        if not url or not md5:
            raise ConfigError(
                "dataset=movielens-100k needs dataset.path=/path/to/ml-100k, or "
                "dataset.url and dataset.md5 to download it"
            )
        folder = _download_ml100k(url, md5, Path(cache_dir).expanduser().absolute())
    else:
        folder = Path(path).expanduser().absolute()
    if not folder.is_dir():
        raise DataFormatError(
            folder,
            "folder not found; expected the unpacked ml-100k folder "
            "with u.data and u.item (dataset.path=/path/to/ml-100k)",
        )
    cols = read_columns(
        folder / "u.data",
        sep="\t",
        header=False,
        quoting=False,
        columns={"user": 0, "item": 1, "rating": 2, "time": 3},
        expected="MovieLens u.data: user, item, rating, time separated by tabs",
    )
    items = read_columns(
        folder / "u.item",
        sep="|",
        header=False,
        quoting=False,
        encoding="latin-1",
        columns={"item": 0, "title": 1},
        expected="MovieLens u.item: item id|title|... in latin-1",
    )
    titles = title_column(items)
    return RawInteractions(
        user_id=id_column(cols, "user"),
        item_id=id_column(cols, "item"),
        rating=rating_column(cols),
        timestamp=time_column(cols),
        item_titles=titles,
        source=f"movielens-100k from {folder}",
    )


def _download_ml100k(url: str, md5: str, cache_dir: Path) -> Path:
    """The unpacked ml-100k folder under ``cache_dir``, downloading and checking it once."""
    folder = cache_dir / "ml-100k"
    if (folder / "u.data").is_file() and (folder / "u.item").is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / "ml-100k.zip"
    if not archive.is_file() or _md5(archive) != md5:
        part = archive.with_suffix(".zip.part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as exc:
            part.unlink(missing_ok=True)
            raise ConfigError(
                f"could not download MovieLens 100K from {url}: {exc}. Download and "
                "unzip it yourself and pass dataset.path=/path/to/ml-100k"
            ) from None
        got = _md5(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise ConfigError(
                f"the download from {url} has md5 {got}, expected {md5} "
                "(dataset.md5); it was deleted. Retry, or download and unzip it "
                "yourself and pass dataset.path=/path/to/ml-100k"
            )
        part.replace(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(cache_dir)
    except zipfile.BadZipFile:
        raise DataFormatError(archive, "is not a zip archive; delete it and retry") from None
    return folder


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def csv_source(
    path: str | Path,
    sep: str = ",",
    header: bool = True,
    columns: Any = None,
    items_path: str | Path | None = None,
    items_sep: str = ",",
    items_columns: Any = None,
    time_unit: str = "s",
) -> RawInteractions:
    """Interactions from any delimited file, with a column mapping.

    Args:
        path: the interactions file (UTF-8, a byte order mark is fine; ``"`` quotes fields).
        sep: field separator.
        header: whether line 1 names the columns; then ``columns`` are names, else 0-based
            positions. Applies to the items file too.
        columns: mapping with ``user`` and ``item`` (required), ``rating`` and ``time``
            (optional, ``None`` when absent). Times are integer unix seconds or ISO 8601;
            without a time column each row's 0-based number is its time, keeping file order.
        items_path: optional file of item titles.
        items_sep: its separator.
        items_columns: mapping with ``item`` and ``title`` for the items file.
        time_unit: ``"s"`` or ``"ms"``, the unit of numeric times (floored to seconds).
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
    cols = read_columns(
        path,
        sep=sep,
        header=header,
        columns=mapping,
        expected="one interaction per line with the columns in dataset.columns",
    )
    rating = rating_column(cols) if "rating" in mapping else None
    if "time" in mapping:
        timestamp = time_column(cols, unit=time_unit)
    else:
        timestamp = np.arange(cols.n_rows, dtype=np.int64)
    titles: dict[str, str] = {}
    if items_path is not None:
        item_map = dict(items_columns or {})
        if not {"item", "title"} <= set(item_map):
            raise ConfigError(
                "dataset.items_columns needs item and title, e.g. "
                f"{{item: movieId, title: title}}; got {item_map!r}"
            )
        items = read_columns(
            items_path,
            sep=items_sep,
            header=header,
            columns={"item": item_map["item"], "title": item_map["title"]},
            expected="one item per line with an id and a title",
        )
        titles = title_column(items)
    return RawInteractions(
        user_id=id_column(cols, "user"),
        item_id=id_column(cols, "item"),
        rating=rating,
        timestamp=timestamp,
        item_titles=titles,
        source=f"csv {cols.path.absolute()}",
    )
