"""A content hash of interactions: same rows, same hash, whatever their order or surrogate keys.

Each row is hashed from its external user id, item id, rating and time (ids through a 64-bit
BLAKE2 digest, fields chained through the splitmix64 finaliser), and the row hashes are summed
and xor-ed, which is order-independent. The final value is a SHA-256 of those sums and counts.
Vectorised: about 0.1 s per million rows, so every training run can record it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from recmf.data.interactions import Interactions

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _id_hashes(ids: np.ndarray) -> np.ndarray:
    digests = b"".join(
        hashlib.blake2b(str(s).encode("utf-8"), digest_size=8).digest() for s in ids.tolist()
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


_HASH_CHUNK = 1 << 20  # rows hashed per pass: the uint64 temporaries stay at a few MB each


def content_hash(interactions: Interactions) -> str:
    """SHA-256 hex digest of the set of (user_id, item_id, rating, timestamp) rows."""
    vocab = interactions.vocab
    n = len(interactions)
    user_ids, item_ids = _id_hashes(vocab.user_ids), _id_hashes(vocab.item_ids)
    total, xor = 0, 0
    with np.errstate(over="ignore"):
        for lo in range(0, n, _HASH_CHUNK):
            hi = min(n, lo + _HASH_CHUNK)
            rating = np.asarray(interactions.rating[lo:hi], dtype=np.float32)
            rating = np.where(np.isnan(rating), np.float32(np.nan), rating)  # one NaN pattern
            h = _mix(user_ids[interactions.user_idx[lo:hi]] + _GOLDEN)
            h = _mix(h ^ item_ids[interactions.item_idx[lo:hi]])
            h = _mix(h ^ np.asarray(interactions.timestamp[lo:hi], dtype=np.int64).view(np.uint64))
            h = _mix(h ^ rating.view(np.uint32).astype(np.uint64))
            total = (total + int(h.sum(dtype=np.uint64))) % (1 << 64)
            xor ^= int(np.bitwise_xor.reduce(h))
    text = f"recmf-interactions-v1:{n}:{total}:{xor}"
    return hashlib.sha256(text.encode()).hexdigest()
