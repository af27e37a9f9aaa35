"""Client-side preparation of ingested rows: string ids to codes, natural-key order, repeats.

Both are vectorised numpy/pyarrow work on the (n,) columns, kept apart from the SQL so that
they can be tested without a database.
"""

from __future__ import annotations

import numpy as np

from recmf.data.interactions import MAX_ID_BYTES


def factorize(values: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)``: (n,) int64 codes into (k,) distinct str, in first-appearance order."""
    import pyarrow as pa
    import pyarrow.compute as pc

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
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), uniques


def sort_unique_rows(
    user_key: np.ndarray, item_key: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, int]:
    """Row order by (user_key, item_key, ts) keeping the first of repeated rows; and #repeats."""
    n = len(user_key)
    if n == 0:
        return np.arange(0), 0
    span = int(item_key.max()) + 1
    if int(user_key.max()) < (1 << 62) // span:  # one packed int64 key: one argsort, not three
        pair = user_key * span + item_key
        order = np.argsort(pair, kind="stable")
        pair_sorted, ts_sorted = pair[order], ts[order]
        same = pair_sorted[1:] == pair_sorted[:-1]
        if same.any():  # only rows sharing (user, item) still need ordering by time
            run = np.zeros(n, dtype=bool)
            run[1:] |= same
            run[:-1] |= same
            idx = np.flatnonzero(run)
            order[idx] = order[idx][np.lexsort((ts_sorted[idx], pair_sorted[idx]))]
    else:
        order = np.lexsort((ts, item_key, user_key))
    u, i, t = user_key[order], item_key[order], ts[order]
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (t[1:] == t[:-1])
    return order[~repeat], int(repeat.sum())
