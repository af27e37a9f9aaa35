"""Delimited files read into validated columns, with errors that name the file and line.

pyarrow's CSV reader parses millions of rows per second on one core, keeps every field a string
(ids stay verbatim: ``"007"`` is not 7), rejects rows with the wrong number of fields, and skips
a UTF-8 byte order mark. Values are then checked column by column, vectorised; only when a check
fails do we go back to the file to turn the row into a 1-based line number (counting the header
line and blank lines; a quoted value spanning several lines counts as one).
"""

from __future__ import annotations

import contextlib
import csv
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recmf.data.features import MAX_VALUE_BYTES, FeatureColumn, FeatureSpec
from recmf.data.interactions import MAX_ID_BYTES
from recmf.errors import ConfigError, DataFormatError

# ASCII digits only, as arrow's casts: to Python's re, "١" (Arabic-Indic one) is a digit too.
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$", re.ASCII)
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # ratings are stored as REAL
_TIME_LIMIT = {"s": 10**11, "ms": 10**14}  # |time| before year 5138 either way


@dataclass
class Columns:
    """The requested columns of a delimited file, as pyarrow string arrays, by role."""

    path: Path
    header: bool
    values: dict[str, pa.Array]  # role -> (n,) string array
    n_rows: int
    offset: int = 0  # the file's data row that is row 0 here (stream_columns' blocks)

    def line(self, row: int) -> int:
        """1-based line number in the file of data row ``row`` (0-based, of these columns)."""
        return physical_line(self.path, self.offset + row + 1 + int(self.header))

    def fail(self, row: int, problem: str) -> DataFormatError:
        return DataFormatError(self.path, problem, line=self.line(row))


def physical_line(path: Path, record: int) -> int:
    """Line number of the ``record``-th non-blank line (pyarrow skips blank lines when counting)."""
    seen = 0
    with open(path, "rb") as f:
        for lineno, text in enumerate(f, 1):
            if text in (b"\n", b"\r\n", b"\r"):
                continue
            seen += 1
            if seen == record:
                return lineno
    return record


def read_columns(
    path: str | Path,
    *,
    sep: str,
    header: bool,
    columns: dict[str, str | int],
    encoding: str = "utf-8",
    quoting: bool = True,
    expected: str = "",
    columns_key: str | None = None,
) -> Columns:
    """Read the columns named (``header``) or numbered from 0 (no header) in ``columns``.

    Args:
        path: the delimited file.
        sep: field separator, one character.
        header: whether line 1 names the columns.
        columns: role (e.g. ``"user"``) -> column name or 0-based position.
        encoding: text encoding of the file.
        quoting: whether ``"`` quotes fields (off for formats like MovieLens' ``u.item``).
        expected: a phrase describing the expected file, used in error messages.
        columns_key: the config key that sets ``columns``, named in hints; by default
            ``dataset.items_columns`` for a file with a title column, else ``dataset.columns``.
    """
    reader = _Reader(Path(path).expanduser(), sep, header, columns, encoding, quoting, expected,
                     columns_key)  # fmt: skip
    with reader.errors():
        table = pacsv.read_csv(reader.path, **reader.options())
    reader.raise_bad_row()
    if table.num_rows == 0:
        reader.raise_no_rows()
    values = {role: table.column(name).combine_chunks() for role, name in reader.wanted.items()}
    return Columns(path=reader.path, header=header, values=values, n_rows=table.num_rows)


def stream_columns(
    path: str | Path,
    *,
    sep: str,
    header: bool,
    columns: dict[str, str | int],
    block_bytes: int,
    expected: str = "",
) -> Iterator[Columns]:
    """:func:`read_columns` a block of about ``block_bytes`` of the file at a time: memory stays
    bounded whatever the file's size. Each block's ``offset`` is its first row's number in the
    file, so its errors name the file's line. Settings and line 1 are checked before the first
    block is yielded; a bad row, bad text or no rows at all raise when reached."""
    reader = _Reader(Path(path).expanduser(), sep, header, columns, "utf-8", True, expected, None)
    return _blocks(reader, block_bytes)


_ARROW_BLOCK = 4 << 20  # pyarrow's streaming reader holds ~16 blocks ahead: 0.5 GB at 32 MB


def _blocks(reader: _Reader, block_bytes: int) -> Iterator[Columns]:
    options = reader.options()
    options["read_options"].block_size = min(block_bytes, _ARROW_BLOCK)
    offset = 0
    batches: list[pa.RecordBatch] = []

    def columns() -> Columns:
        table = pa.Table.from_batches(batches)
        values = {role: table.column(name).combine_chunks() for role, name in reader.wanted.items()}
        batches.clear()
        return Columns(reader.path, reader.header, values, table.num_rows, offset)

    with reader.errors():
        stream = pacsv.open_csv(reader.path, **options)
        while True:
            try:
                batch = stream.read_next_batch()
            except StopIteration:
                break
            reader.raise_bad_row()
            batches.append(batch)
            if sum(b.nbytes for b in batches) >= block_bytes:  # small arrow blocks, big chunks
                cols = columns()
                yield cols
                offset += cols.n_rows
        reader.raise_bad_row()
        if batches:
            cols = columns()
            if cols.n_rows:
                yield cols
                offset += cols.n_rows
    if offset == 0:
        reader.raise_no_rows()


class _Reader:
    """A delimited file's settings, checked against line 1, as pyarrow reader options; the
    file's errors as :class:`DataFormatError` with its line."""

    def __init__(self, path, sep, header, columns, encoding, quoting, expected, columns_key):
        self.path, self.sep, self.header = path, sep, header
        self.encoding, self.quoting = encoding, quoting
        self.what = f"; expected {expected}" if expected else ""
        if not path.is_file():
            problem = "is a folder, not a file" if path.is_dir() else "file not found"
            raise DataFormatError(path, f"{problem}{self.what}")
        keys = _Keys.of(columns, columns_key)
        if len(sep) != 1:
            raise ConfigError(
                f"separator {sep!r} for {path} is not one character; set {keys.sep} to a single "
                f"character, e.g. '{keys.sep}=\";\"'"
            )
        names = _first_row(path, sep, encoding, quoting)
        if names is None:
            raise DataFormatError(path, f"the file is empty{self.what}")
        if _is_utf8(encoding) and any("\ufffd" in name for name in names):
            _raise_if_not_utf8(path)  # a header such as "caf\xe9" would read as a missing column
        self.wanted = _column_names(path, names, header, columns, sep, keys)
        self.bad: list[tuple[int, int, int, str]] = []

    def _on_bad_row(self, row: pacsv.InvalidRow) -> str:
        if not self.bad:
            self.bad.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    def options(self) -> dict:
        return {
            "read_options": pacsv.ReadOptions(
                use_threads=False,  # row numbers of bad rows are only known single-threaded
                encoding=self.encoding,
                autogenerate_column_names=not self.header,
            ),
            "parse_options": pacsv.ParseOptions(
                delimiter=self.sep,
                quote_char='"' if self.quoting else False,
                newlines_in_values=self.quoting,
                invalid_row_handler=self._on_bad_row,
            ),
            "convert_options": pacsv.ConvertOptions(
                include_columns=list(dict.fromkeys(self.wanted.values())),
                column_types={name: pa.string() for name in self.wanted.values()},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        }

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            if _is_utf8(self.encoding):
                _raise_if_not_utf8(self.path)
            raise DataFormatError(
                self.path,
                f"cannot be read as {self.encoding} delimited text ({exc}){self.what}",
            ) from None

    def raise_bad_row(self) -> None:
        if self.bad:
            number, n_expected, n_actual, text = self.bad[0]
            raise DataFormatError(
                self.path,
                f"expected {n_expected} fields separated by {self.sep!r} (as on line 1), "
                f"found {n_actual}: {text[:100]!r}",
                line=physical_line(self.path, number)
                if number is not None and number > 0
                else None,
            )

    def raise_no_rows(self) -> None:
        after = " after the header" if self.header else ""
        raise DataFormatError(self.path, f"has no data rows{after}{self.what}")


@dataclass(frozen=True)
class _Keys:
    """The config keys a user types to fix a file's columns, named in error hints."""

    columns: str  # e.g. "dataset.columns"; a role's key is f"{columns}.{role}"
    sep: str
    header: str = "dataset.header"

    @classmethod
    def of(cls, columns: dict[str, str | int], columns_key: str | None) -> _Keys:
        if columns_key is None:  # csv_source's items file is the one with titles
            columns_key = "dataset.items_columns" if "title" in columns else "dataset.columns"
        # dataset.columns -> dataset.sep, dataset.items_columns -> dataset.items_sep, ...
        head, _, last = columns_key.rpartition(".")
        sep = last.removesuffix("columns") + "sep"
        return cls(columns=columns_key, sep=f"{head}.{sep}" if head else sep)


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _raise_if_not_utf8(path: Path) -> None:
    """Raise a :class:`DataFormatError` naming the first line that is not UTF-8, if any."""
    with open(path, "rb") as f:
        # b"\n" never occurs inside a multi-byte UTF-8 character, so lines decode on their own
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line, column = number, exc.start  # column: 0-based byte in the line
                break
        else:
            return
    utf16 = line == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff")
    source = "utf-16" if utf16 else "latin1"
    byte = raw[column]
    seen = "" if utf16 else f" ({bytes([byte]).decode('latin-1')!r} in latin-1)"
    out = path.with_name(f"{path.stem}.utf8{path.suffix}")
    raise DataFormatError(
        path,
        f"is not UTF-8 text: byte {column + 1} of the line is 0x{byte:02x}{seen}, which is "
        f"not valid UTF-8{' (a UTF-16 byte order mark)' if utf16 else ''}. Convert the file to "
        f"UTF-8 and read the converted one instead, e.g. `iconv -f {source} -t utf-8 "
        f"{shlex.quote(str(path))} > {shlex.quote(str(out))}` (with -f naming the file's real "
        "encoding, which `file -i` may tell)",
        line=line,
    )


def first_row(
    path: str | Path, sep: str, encoding: str = "utf-8", quoting: bool = True
) -> list[str] | None:
    """The fields of the first non-blank line (a header's names), or ``None`` for an empty file."""
    return _first_row(Path(path).expanduser(), sep, encoding, quoting)


def _first_row(path: Path, sep: str, encoding: str, quoting: bool) -> list[str] | None:
    enc = "utf-8-sig" if _is_utf8(encoding) else encoding
    with open(path, encoding=enc, errors="replace", newline="") as f:
        quote = {} if quoting else {"quoting": csv.QUOTE_NONE}
        for row in csv.reader(f, delimiter=sep, **quote):
            if row:  # blank lines before the first row are skipped, as pyarrow does
                return row
    return None


def _column_names(
    path: Path,
    names: list[str],
    header: bool,
    columns: dict[str, str | int],
    sep: str,
    keys: _Keys,
) -> dict[str, str]:
    """Role -> the column name pyarrow will use; errors name what line 1 offers."""
    out = {}
    for role, col in columns.items():
        if header:
            if str(col) not in names:
                raise DataFormatError(
                    path,
                    f"has no column {str(col)!r} for the {role}; the header has "
                    f"{names!r} (separator {sep!r}){_sep_hint(names, sep, keys)}. Set "
                    f"{keys.columns}.{role} to one of them; or, if line 1 is data, not names, set "
                    f"{keys.header}=false and give 0-based positions, e.g. "
                    f"{keys.columns}.{role}=0",
                    line=1,
                )
            out[role] = str(col)
        else:
            if isinstance(col, bool) or not isinstance(col, int) or not 0 <= col < len(names):
                raise DataFormatError(
                    path,
                    f"column {col!r} for the {role} is not a 0-based position among the "
                    f"{len(names)} fields of line 1 (separator {sep!r})"
                    f"{_sep_hint(names, sep, keys)}. With {keys.header}=false set "
                    f"{keys.columns}.{role} to a position from 0 to {len(names) - 1}, e.g. "
                    f"{keys.columns}.{role}=0; or, if line 1 names the columns, set "
                    f"{keys.header}=true and give names",
                    line=1,
                )
            out[role] = f"f{col}"
    return out


def _sep_hint(names: list[str], sep: str, keys: _Keys) -> str:
    """When line 1 is one field holding another common separator, suggest that separator."""
    if len(names) != 1:
        return ""
    found = [c for c in (",", ";", "\t", "|") if c != sep and c in names[0]]
    if not found:
        return ""
    quoted = "\\t" if found[0] == "\t" else found[0]  # as Hydra reads a quoted value
    return (
        f"; line 1 is a single field, so the separator may be {found[0]!r}: pass "
        f"'{keys.sep}=\"{quoted}\"'"
    )


def id_column(cols: Columns, role: str) -> np.ndarray:
    """Verbatim string ids as an object array; empty, NUL or over ``MAX_ID_BYTES`` is an error."""
    codes, uniques = id_codes(cols, role)
    # Index the few unique strings: the (n,) array shares their str objects, cheap to build.
    return uniques[codes]


def id_codes(cols: Columns, role: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`id_column` as (n,) codes into its distinct ids (first appearance first), without
    an (n,) array of objects."""
    encoded = pc.dictionary_encode(cols.values[role])
    uniques = encoded.dictionary.to_numpy(zero_copy_only=False)
    n_bytes = pc.binary_length(encoded.dictionary).to_numpy(zero_copy_only=False)
    has_nul = pc.match_substring(encoded.dictionary, "\x00").to_numpy(zero_copy_only=False)
    for bad, problem in (
        (n_bytes == 0, f"the {role} id is empty; expected a non-empty {role} id"),
        (has_nul, f"the {role} id contains a NUL character, which PostgreSQL cannot store"),
        (
            n_bytes > MAX_ID_BYTES,
            f"the {role} id is longer than {MAX_ID_BYTES} bytes (UTF-8); shorten or hash it",
        ),
    ):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            row = int(np.flatnonzero(encoded.indices.to_numpy() == first)[0])
            raise cols.fail(row, problem)
    return encoded.indices.to_numpy(zero_copy_only=False), uniques


def title_column(cols: Columns, id_role: str = "item", role: str = "title") -> dict[str, str]:
    """``{id: title}`` from an id column and a title column (later lines win)."""
    ids = id_column(cols, id_role).tolist()
    nul = np.flatnonzero(
        pc.match_substring(cols.values[role], "\x00").to_numpy(zero_copy_only=False)
    )
    if len(nul):
        raise cols.fail(
            int(nul[0]), "the title contains a NUL character, which PostgreSQL cannot store"
        )
    titles = cols.values[role].to_numpy(zero_copy_only=False).tolist()
    return dict(zip(ids, titles, strict=True))


def rating_column(cols: Columns, role: str = "rating") -> np.ndarray:
    """float64 ratings; an empty field is NaN (no rating).

    Anything else must be a decimal number (``4``, ``3.5``, ``-1``, ``1e-3``; no ``nan`` or
    ``inf``) within the 32-bit float range, since the store keeps ratings as REAL.
    """
    text = pc.utf8_trim_whitespace(cols.values[role])
    empty = pc.equal(text, "")
    try:
        values = pc.cast(pc.if_else(empty, None, text), pa.float64())
    except pa.ArrowInvalid:
        row = next(k for k, t in enumerate(text.to_pylist()) if t and not _is_float(t))
        raise cols.fail(
            row, f"rating {text[row].as_py()!r} is not a number; expected e.g. 4 or 3.5, or empty"
        ) from None
    out = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    given = ~empty.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):  # arrow reads "nan" and "inf" as numbers; we do not
        bad = given & ~(np.abs(out) <= _FLOAT32_MAX)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise cols.fail(
            row,
            f"rating {text[row].as_py()!r} is not a finite number within the 32-bit float range "
            "the store keeps (|rating| <= 3.4e38); expected e.g. 4 or 3.5, or empty",
        )
    return out


def _is_float(text: str) -> bool:
    """Whether arrow casts ``text`` to a float (the slow path that finds the first bad row)."""
    try:
        pc.cast(pa.array([text]), pa.float64())
    except pa.ArrowInvalid:
        return False
    return True


def numeric_times(cols: Columns, role: str = "time") -> bool:
    """Whether the first row's time is a number (else ISO 8601): it decides for the file."""
    return bool(_NUMBER.match(pc.utf8_trim_whitespace(cols.values[role][0]).as_py()))


def time_column(
    cols: Columns, role: str = "time", unit: str = "s", numeric: bool | None = None
) -> np.ndarray:
    """int64 unix seconds from integer seconds (or milliseconds, ``unit="ms"``) or ISO 8601.

    The first data row decides which of the two the column holds (``numeric``: what the
    file's first row decided, for a later block of :func:`stream_columns`). Numbers must be whole
    (``964982703``, ``964982703.0``) and below year 5138 in absolute value; milliseconds are
    floored to seconds. ISO 8601 times without a zone are UTC; fractions of a second are floored.
    """
    import pandas as pd

    if unit not in _TIME_LIMIT:
        raise ConfigError(
            f"time unit {unit!r} is not one of {sorted(_TIME_LIMIT)}; e.g. dataset.time_unit=s"
        )
    arrow_text = pc.utf8_trim_whitespace(cols.values[role])
    empty = np.flatnonzero(pc.equal(arrow_text, "").to_numpy(zero_copy_only=False))
    if len(empty):
        raise cols.fail(int(empty[0]), "the time is empty; expected unix seconds or ISO 8601")
    if numeric if numeric is not None else numeric_times(cols, role):
        unit_name = "integer unix seconds like 964982703" if unit == "s" else "integer unix ms"
        kind = f"{unit_name} (as on the first data line)"
        try:  # the common case, and 30x faster than pandas
            seconds = pc.cast(arrow_text, pa.int64()).to_numpy(zero_copy_only=False)
            bad = np.zeros(len(seconds), dtype=bool)
        except pa.ArrowInvalid:
            text = arrow_text.to_numpy(zero_copy_only=False)
            numbers = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
            bad = ~np.isfinite(numbers) | (numbers != np.floor(numbers))
            seconds = np.where(bad, 0, numbers)
        limit = _TIME_LIMIT[unit]
        with np.errstate(invalid="ignore"):
            far = ~bad & ~(np.abs(seconds) < limit)  # also keeps float64 -> int64 exact
        if far.any():
            row = int(np.flatnonzero(far)[0])
            hint = "; milliseconds? then set dataset.time_unit=ms" if unit == "s" else ""
            raise cols.fail(
                row,
                f"time {arrow_text[row].as_py()!r} is out of range: expected {unit_name} "
                f"below {limit:.0e} in absolute value (year 5138){hint}".replace("e+", "e"),
            )
        seconds = np.asarray(seconds, dtype=np.int64)
        if unit == "ms":
            seconds = seconds // 1000  # floor, also before 1970
    else:
        text = arrow_text.to_numpy(zero_copy_only=False)
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        bad = np.asarray(parsed.isna())
        epoch = pd.Timestamp("1970-01-01", tz="UTC")
        delta = (parsed[~bad] if bad.any() else parsed) - epoch
        seconds = np.asarray(delta // pd.Timedelta(seconds=1), dtype=np.int64)
        kind = "an ISO 8601 time like 2024-05-01T12:30:00Z (as on the first data line)"
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise cols.fail(row, f"time {arrow_text[row].as_py()!r} is not valid; expected {kind}")
    return np.asarray(seconds, dtype=np.int64)


# --- side features: one line per user or item, an id and feature columns ----------------------


def feature_roles(
    path: str | Path, sep: str, header: bool, specs: list[FeatureSpec], key: str
) -> dict[str, str | int]:
    """``read_columns`` roles (``features.<name>``) of ``specs``, checked against line 1.

    Args:
        key: the config key of the specs (``dataset.items_features``), named in errors.

    Raises:
        ConfigError: a feature's column is not in the header (or, without one, not a position
            among line 1's fields). A missing or empty file is left to ``read_columns``.
    """
    path = Path(path).expanduser()
    names = _first_row(path, sep, "utf-8", True) if path.is_file() and len(sep) == 1 else None
    keys = _Keys.of({}, key.removesuffix("features") + "columns")
    for spec in specs if names is not None else ():
        col, where = spec.column, f"{key}.{spec.name}.column"
        hint = _sep_hint(names, sep, keys)
        if header and str(col) not in names:
            raise ConfigError(
                f"{where} is {col!r}, but the header of {path} has no such column; it has "
                f"{names!r} (separator {sep!r}){hint}. Set {where} to one of them"
            )
        if not header and (isinstance(col, str) or not 0 <= col < len(names)):
            raise ConfigError(
                f"{where} is {col!r}, which is not a 0-based position among the {len(names)} "
                f"fields of line 1 of {path} (separator {sep!r}, dataset.header=false){hint}. "
                f"Set {where} to a position from 0 to {len(names) - 1}"
            )
    return {f"features.{spec.name}": spec.column for spec in specs}


def unique_ids(cols: Columns, role: str) -> np.ndarray:
    """``id_column``, refusing an id given on two lines (a features file has one per entity)."""
    import pandas as pd

    ids = id_column(cols, role)
    repeated = np.flatnonzero(pd.Index(ids).duplicated())
    if len(repeated):
        row = int(repeated[0])
        first = int(np.flatnonzero(ids == ids[row])[0])
        raise cols.fail(
            row,
            f"the {role} id {ids[row]!r} is also on line {cols.line(first)}; a features file "
            f"has one line per {role}: merge the two lines",
        )
    return ids


class _BadValue(ValueError):
    """A feature value a source refuses; the caller adds the file and line."""


def feature_column(cols: Columns, spec: FeatureSpec, role: str | None = None) -> FeatureColumn:
    """The values of one feature from its text column (role ``features.<name>`` by default).

    A field is stripped of surrounding whitespace; empty, one of ``spec.missing``, or without a
    match of ``spec.pattern`` is unknown (``None``, ``()``, NaN). A number must be decimal and
    finite; a multi value has no empty element (``a||b``) and repeats are dropped; a text value
    is at most ``MAX_VALUE_BYTES`` (UTF-8) and has no NUL.
    """
    encoded = pc.dictionary_encode(cols.values[role or f"features.{spec.name}"])
    parse = {"categorical": _categorical, "multi": _multi, "numeric": _numeric}[spec.kind]
    # parse each distinct field once: in order of first appearance, so the first bad one found
    # is on the earliest line
    uniques = encoded.dictionary.to_pylist()
    parsed = np.empty(len(uniques), dtype=np.float64 if spec.kind == "numeric" else object)
    for k, text in enumerate(uniques):
        try:
            parsed[k] = parse(_extract(text, spec), spec)
        except _BadValue as exc:
            row = int(np.flatnonzero(encoded.indices.to_numpy(zero_copy_only=False) == k)[0])
            raise cols.fail(row, f"feature {spec.name!r}: {exc}") from None
    return FeatureColumn(spec.name, spec.kind, parsed[encoded.indices.to_numpy()])


def _extract(text: str, spec: FeatureSpec) -> str | None:
    value = text.strip()
    if value in spec.missing:
        return None
    if spec.pattern is not None:
        match = spec.pattern.search(value)
        value = None if match is None or match.group(1) is None else match.group(1).strip()
    return value


def _categorical(value: str | None, spec: FeatureSpec) -> str | None:
    return _text_value(value) if value else None


def _multi(value: str | None, spec: FeatureSpec) -> tuple[str, ...]:
    if not value:
        return ()
    parts = [part.strip() for part in value.split(spec.sep)]
    if "" in parts:
        raise _BadValue(
            f"{value!r} has an empty element (the separator {spec.sep!r} at its start or end, or "
            f"twice in a row); expected values like 'a{spec.sep}b', or an empty field for none"
        )
    return tuple(dict.fromkeys(_text_value(part) for part in parts))


def _numeric(value: str | None, spec: FeatureSpec) -> float:
    if not value:
        return float("nan")
    if not _NUMBER.match(value):
        raise _BadValue(
            f"{value!r} is not a number; expected a decimal number like 1995 or 3.5, or an "
            "empty field for unknown"
        )
    number = float(value)
    if not np.isfinite(number):
        raise _BadValue(f"{value!r} is not a finite number; expected e.g. 1995 or 3.5")
    return number


def _text_value(value: str) -> str:
    if "\x00" in value:
        raise _BadValue(f"{value[:40]!r} contains a NUL character, which PostgreSQL cannot store")
    n_bytes = len(value.encode("utf-8"))
    if n_bytes > MAX_VALUE_BYTES:
        raise _BadValue(
            f"a value of {n_bytes} bytes (UTF-8) is longer than the {MAX_VALUE_BYTES} the store "
            f"keeps: {value[:40]!r}...; shorten it"
        )
    return value
