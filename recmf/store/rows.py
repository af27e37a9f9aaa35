"""Client-side preparation of ingested rows: string ids to codes, natural-key order, repeats.

Both are vectorised numpy/pyarrow work on the (n,) columns, kept apart from the SQL so that
they can be tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recmf.data.interactions import MAX_ID_BYTES
from recmf.data.split import key_order


def factorize(values: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)``: (n,) int64 codes into (k,) distinct str, in first-appearance order."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pd.Categorical):  # a streamed chunk's ids, checked when read
        codes = np.asarray(values.codes, dtype=np.int64)
        if not (codes < 0).any():
            return codes, np.asarray(values.categories, dtype=object)
    values = np.asarray(values)
    if values.dtype == object:  # hashes the str objects: 4x faster than converting to arrow
        codes, uniques = pd.factorize(values, sort=False, use_na_sentinel=True)
        names = uniques.tolist()
        if not (codes < 0).any() and all(type(u) is str for u in names) and _utf8(names):
            return _checked(codes.astype(np.int64), np.asarray(uniques, dtype=object), what)
    try:
        array = pa.array(values, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # e.g. ints in an object array: ids are text
        array = pa.array(np.asarray(values).astype(str), type=pa.string())
    if isinstance(array, pa.ChunkedArray):  # pa.array chunks large inputs; one dictionary wanted
        array = array.combine_chunks()
    if array.null_count:
        raise ValueError(
            f"{what} ids contain {array.null_count} missing values; every row needs one"
        )
    encoded = pc.dictionary_encode(array)
    uniques = encoded.dictionary.to_numpy(zero_copy_only=False)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return _checked(codes, uniques, what)


def _utf8(names: list[str]) -> bool:
    try:
        "".join(names).encode()
    except UnicodeEncodeError:  # a lone surrogate: the arrow path below says which id
        return False
    return True


def _checked(codes: np.ndarray, uniques: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)`` if every distinct id can be stored, else ValueError."""
    long = MAX_ID_BYTES // 4  # a str this short is within the limit, whatever its characters
    bad = [
        u
        for u in uniques.tolist()
        if u == "" or "\x00" in u or (len(u) > long and len(u.encode()) > MAX_ID_BYTES)
    ]
    if bad:
        raise ValueError(
            f"{what} id {bad[0][:100]!r} cannot be stored: ids must be non-empty, at most "
            f"{MAX_ID_BYTES} bytes in UTF-8 and contain no NUL character; fix the source data"
        )
    return codes, uniques


def sort_unique_rows(
    user_key: np.ndarray, item_key: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, int]:
    """Row order by (user_key, item_key, ts) keeping the first of repeated rows; and #repeats."""
    n = len(user_key)
    if n == 0:
        return np.arange(0), 0
    order = natural_order(user_key, item_key, ts)
    u, i, t = user_key[order], item_key[order], ts[order]
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (t[1:] == t[:-1])
    return order[~repeat], int(repeat.sum())


def natural_order(user_key: np.ndarray, item_key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The stable row order by (user_key, item_key, ts): repeated rows keep their order."""
    return key_order(user_key, item_key, ts)


def repeated_firsts(part: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept rows of ``part`` (``keep`` from :func:`sort_unique_rows`) whose (user, item,
    time) was repeated: the first row of each repeated key."""
    dropped = np.ones(len(part), dtype=bool)
    dropped[keep] = False
    key = ["user_key", "item_key", "ts"]
    repeated = set(part[dropped][key].tolist())  # rare: a python set is fine
    kept = part[keep]
    hit = np.fromiter((k in repeated for k in kept[key].tolist()), bool, len(kept))
    return kept[hit]


RECORD = np.dtype([("user_key", "<i8"), ("item_key", "<i8"), ("ts", "<i8"), ("rating", "<f4")])


class Spill:
    """Rows parked in files under ``directory`` until all have arrived, then handed back in
    parts that each hold every row of a range of user keys (a user's rows in arrival order).

    Each part can then be sorted and de-duplicated on its own (a repeated (user, item, time) row
    lies in one part), and the parts come in user-key order, so the store gets sorted rows
    without the client ever holding them all. A chunk is written as one file ordered by
    ``user_key >> shift`` (a stable sort), with that bucket's row counts kept in memory.
    """

    def __init__(self, directory: str | Path, shift: int = 8):
        self.directory, self.shift = Path(directory), shift
        self.chunks: list[tuple[Path, np.ndarray, np.ndarray]] = []  # file, buckets, their ends
        self.n_rows = 0

    def add(self, user_key, item_key, ts, rating) -> None:
        """Park a chunk of rows (int64 keys and times, float32 ratings, NaN where none)."""
        if len(user_key) == 0:
            return
        bucket = np.asarray(user_key) >> self.shift
        order = np.argsort(bucket, kind="stable")  # arrival order within a bucket
        records = np.empty(len(order), dtype=RECORD)
        for name, values in (("user_key", user_key), ("item_key", item_key), ("ts", ts),
                             ("rating", rating)):  # fmt: skip
            records[name] = np.asarray(values)[order]
        path = self.directory / f"chunk-{len(self.chunks)}.bin"
        records.tofile(path)
        buckets, counts = np.unique(bucket, return_counts=True)
        self.chunks.append((path, buckets, np.cumsum(counts)))
        self.n_rows += len(order)

    def parts(self, max_rows: int) -> Iterator[np.ndarray]:
        """RECORD arrays of consecutive buckets, about ``max_rows`` each (one bucket may hold
        more: a part never splits a bucket), in bucket order; within a part, the rows of one
        user keep their arrival order (the part is chunk by chunk, each chunk by bucket)."""
        if not self.chunks:
            return
        buckets = np.unique(np.concatenate([b for _, b, _ in self.chunks]))
        totals = np.zeros(len(buckets), dtype=np.int64)
        for _, b, ends in self.chunks:
            totals[np.searchsorted(buckets, b)] += np.diff(np.r_[0, ends])
        lo = 0
        while lo < len(buckets):  # greedy: add buckets while the part stays within max_rows
            ends = np.cumsum(totals[lo:])
            hi = lo + max(1, int(np.searchsorted(ends, max_rows, side="right")))
            yield self._read(buckets[lo], buckets[hi - 1])
            lo = hi

    def _read(self, first: int, last: int) -> np.ndarray:
        pieces = []
        for path, b, ends in self.chunks:
            i, j = np.searchsorted(b, first), np.searchsorted(b, last, side="right")
            start = int(ends[i - 1]) if i > 0 else 0
            stop = int(ends[j - 1]) if j > 0 else 0
            if stop > start:
                pieces.append(
                    np.fromfile(
                        path, dtype=RECORD, count=stop - start, offset=start * RECORD.itemsize
                    )
                )
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
