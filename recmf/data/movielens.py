"""MovieLens 100K: u.data interactions, u.item titles, genres and release years, u.user
demographics; read from a folder, or downloaded once and checked against its published md5."""

from __future__ import annotations

import datetime
import hashlib
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from recmf.data.delimited import (
    Columns,
    feature_column,
    first_row,
    id_column,
    physical_line,
    rating_column,
    read_columns,
    time_column,
    title_column,
    unique_ids,
)
from recmf.data.features import FeatureColumn, FeatureSpec, RawFeatures
from recmf.data.interactions import RawInteractions
from recmf.errors import ConfigError, DataFormatError


def movielens_100k(
    path: str | Path | None = None,
    url: str | None = None,
    md5: str | None = None,
    cache_dir: str | Path = ".recmf/downloads",
) -> RawInteractions:
    """MovieLens 100K from an ``ml-100k`` folder, or downloaded once into ``cache_dir``.

    Item features: ``genres`` (multi, the genres flagged in ``u.item``, named by ``u.genre``) and
    ``year`` (numeric, of the release date; NaN where it has none). User features, when the
    folder has ``u.user``: ``age`` (numeric), ``gender`` and ``occupation`` (categorical).

    Args:
        path: folder holding ``u.data`` (user, item, rating, time; tab separated), ``u.item``
            (``|`` separated, latin-1: id|title|release date|video release date|IMDb URL|one 0/1
            flag per genre), and optionally ``u.genre`` (``name|index`` lines; the standard 19
            genres without it) and ``u.user`` (id|age|gender|occupation|zip code).
            ``None`` downloads ``url``.
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
    genres = _ml100k_genres(folder / "u.genre")
    layout = f"id|title|release date|video release date|IMDb URL|{len(genres)} genre flags"
    _check_field_count(folder / "u.item", 5 + len(genres), layout)
    items = read_columns(
        folder / "u.item",
        sep="|",
        header=False,
        quoting=False,
        encoding="latin-1",
        columns={"item": 0, "title": 1, "date": 2}
        | {f"genre {k}": 5 + k for k in range(len(genres))},
        expected=f"MovieLens u.item: {layout} in latin-1",
    )
    item_features = RawFeatures(
        "item",
        unique_ids(items, "item"),
        [_ml100k_genre_column(items, genres), _ml100k_year_column(items)],
        source=str(items.path),
    )
    return RawInteractions(
        user_id=id_column(cols, "user"),
        item_id=id_column(cols, "item"),
        rating=rating_column(cols),
        timestamp=time_column(cols),
        item_titles=title_column(items),
        source=f"movielens-100k from {folder}",
        item_features=item_features,
        user_features=_ml100k_users(folder / "u.user"),
    )


ML100K_GENRES = (  # the order of u.item's flags, as u.genre lists them
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ML100K_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$", re.ASCII)


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    """Genre names in the order of u.item's flags: ``u.genre`` if there, else the standard 19."""
    if not path.is_file():
        return ML100K_GENRES
    found: dict[int, tuple[str, int]] = {}  # index -> (name, line)
    with open(path, encoding="latin-1") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            name, _, index = text.rstrip("\r\n").partition("|")
            if not name.strip() or not re.fullmatch(r"\d+", index, re.ASCII):
                raise DataFormatError(
                    path,
                    f"expected a genre name and its 0-based index separated by '|', like "
                    f"'Action|1'; found {text.strip()!r}",
                    line=number,
                )
            if int(index) in found:
                name_before, line_before = found[int(index)]
                raise DataFormatError(
                    path,
                    f"index {index} is also {name_before!r}'s, on line {line_before}; each "
                    "genre has its own index, the position of its flag in u.item",
                    line=number,
                )
            found[int(index)] = (name.strip(), number)
    if sorted(found) != list(range(len(found))) or not found:
        raise DataFormatError(
            path,
            f"has genre indices {sorted(found)}; expected 0, 1, 2, ... each once (the position "
            "of each genre's flag in u.item)",
        )
    return tuple(found[k][0] for k in range(len(found)))


def _check_field_count(path: Path, n_fields: int, layout: str) -> None:
    """Line 1 of a MovieLens file has ``n_fields`` (``read_columns`` holds the others to it)."""
    row = first_row(path, "|", "latin-1", quoting=False) if path.is_file() else None
    if row is not None and len(row) != n_fields:
        raise DataFormatError(
            path,
            f"expected {n_fields} fields separated by '|' ({layout}), found {len(row)}",
            line=physical_line(path, 1),
        )


def _ml100k_genre_column(items: Columns, genres: tuple[str, ...]) -> FeatureColumn:
    flags = np.column_stack(
        [items.values[f"genre {k}"].to_numpy(zero_copy_only=False) for k in range(len(genres))]
    )  # (n_items, n_genres) str
    on = flags == "1"
    bad = ~on & (flags != "0")
    if bad.any():
        row, k = (int(x) for x in np.argwhere(bad)[0])  # row-major: the earliest line
        raise items.fail(
            row,
            f"the flag of genre {genres[k]!r} (field {6 + k}) is {flags[row, k]!r}; expected "
            "0 or 1",
        )
    patterns, inverse = np.unique(on, axis=0, return_inverse=True)
    names = np.empty(len(patterns), dtype=object)
    names[:] = [tuple(g for g, flag in zip(genres, p, strict=True) if flag) for p in patterns]
    return FeatureColumn("genres", "multi", names[inverse.reshape(-1)])


def _ml100k_year_column(items: Columns) -> FeatureColumn:
    encoded = pc.dictionary_encode(items.values["date"])  # a few hundred distinct dates
    years = np.empty(len(encoded.dictionary), dtype=np.float64)
    for k, text in enumerate(encoded.dictionary.to_pylist()):
        year = _release_year(text.strip())
        if year is None:
            row = int(np.flatnonzero(encoded.indices.to_numpy() == k)[0])
            raise items.fail(
                row,
                f"release date {text!r} is not a date like 01-Jan-1995 (day, English month "
                "abbreviation, year) nor empty",
            )
        years[k] = year
    return FeatureColumn("year", "numeric", years[encoded.indices.to_numpy()])


def _release_year(text: str) -> float | None:
    """The year of a date like ``01-Jan-1995``; NaN for an empty text, ``None`` if not a date."""
    if not text:
        return float("nan")
    match = _ML100K_DATE.match(text)
    if match is None or match[2].title() not in _MONTHS:
        return None
    day, month, year = int(match[1]), _MONTHS.index(match[2].title()) + 1, int(match[3])
    try:
        datetime.date(year, month, day)
    except ValueError:  # 31-Feb-1995
        return None
    return float(year)


def _ml100k_users(path: Path) -> RawFeatures | None:
    """Age, gender and occupation from ``u.user``; ``None`` when the folder has none."""
    if not path.exists():
        return None
    layout = "user id|age|gender|occupation|zip code"
    _check_field_count(path, 5, layout)
    specs = [
        FeatureSpec("age", 1, "numeric"),
        FeatureSpec("gender", 2, "categorical"),
        FeatureSpec("occupation", 3, "categorical"),
    ]
    cols = read_columns(
        path,
        sep="|",
        header=False,
        quoting=False,
        encoding="latin-1",
        columns={"user": 0} | {f"features.{s.name}": s.column for s in specs},
        expected=f"MovieLens u.user: {layout}",
    )
    return RawFeatures(
        "user", unique_ids(cols, "user"), [feature_column(cols, s) for s in specs], str(cols.path)
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
