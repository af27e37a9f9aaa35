"""Seeded synthetic interactions whose right answer is known: planted low-rank taste.

A matrix-factorization model can recover the planted factors, so it must beat the popularity
baseline clearly on this data; popularity still follows a power law so that the baseline is
not trivial. Deterministic for a seed; 60k rows take well under a second.
"""

from __future__ import annotations

import numpy as np

from recmf.data.interactions import RawInteractions
from recmf.errors import ConfigError

_GENRES = (
    "action",
    "comedy",
    "drama",
    "horror",
    "romance",
    "sci-fi",
    "thriller",
    "mystery",
    "animation",
    "documentary",
    "western",
    "musical",
)


def synthetic(
    n_users: int = 1000,
    n_items: int = 800,
    n_interactions: int = 60000,
    rank: int = 8,
    popularity_exponent: float = 1.0,
    seed: int = 0,
) -> RawInteractions:
    """Seeded interactions with planted low-rank taste and power-law item popularity.

    Each user draws items without replacement with probability proportional to
    ``popularity * exp(2 * taste)``, where taste is the dot product of ``rank``-dimensional user
    and item factors (unit variance); per-user counts are lognormal (at least 5) and sum to
    ``n_interactions``. Ratings 1-5 follow taste plus noise; times increase per user in a random
    order of the user's items. Ids are ``U1..Un`` and ``I1..In``.
    """
    if n_users < 1 or n_items < 5 or rank < 1 or n_interactions < 5 * n_users:
        raise ConfigError(
            f"synthetic data needs n_users >= 1, n_items >= 5, rank >= 1 and "
            f"n_interactions >= 5 * n_users (5 per user); got n_users={n_users}, "
            f"n_items={n_items}, rank={rank}, n_interactions={n_interactions}"
        )
    rng = np.random.default_rng(seed)
    user_f = rng.standard_normal((n_users, rank))
    item_f = rng.standard_normal((n_items, rank))
    log_pop = -popularity_exponent * np.log1p(rng.permutation(n_items))  # Zipf over a random order
    counts = _user_counts(rng, n_users, n_items, n_interactions)

    # Gumbel-top-k: the top c keys of log p + Gumbel noise are a draw of c items without
    # replacement with probabilities p. Users go in chunks to bound memory at ~4M scores.
    users, items, scores = [], [], []
    chunk = max(1, (1 << 22) // n_items)
    for lo in range(0, n_users, chunk):
        hi = min(lo + chunk, n_users)
        taste = user_f[lo:hi] @ item_f.T / np.sqrt(rank)  # (c, n_items), unit variance
        keys = log_pop + 2.0 * taste + rng.gumbel(size=taste.shape)
        k = int(counts[lo:hi].max())
        if k < n_items:  # only the k best keys per user matter
            top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(n_items), (hi - lo, 1))
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), 1), 1)
        keep = np.arange(k) < counts[lo:hi, None]  # (c, k): each user's first c_u draws
        rows = np.broadcast_to(np.arange(lo, hi)[:, None], keep.shape)[keep]
        users.append(rows)
        items.append(top[keep])
        scores.append(taste[rows - lo, top[keep]])
    user, item, score = (np.concatenate(a) for a in (users, items, scores))

    # Times: per user, a start in 2020 then exponential gaps (mean a day), in a random order of
    # the user's items, so that the latest interactions are not systematically the weakest.
    shuffle = np.lexsort((rng.random(len(user)), user))  # within each user; users stay grouped
    item, score = item[shuffle], score[shuffle]
    gaps = rng.exponential(86_400.0, len(user)).astype(np.int64) + 1
    csum = np.cumsum(gaps)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ts = 1_577_836_800 + rng.integers(0, 365 * 86_400, n_users)[user] + csum - csum[starts][user]
    rating = np.clip(np.rint(2.5 + score + 0.5 * rng.standard_normal(len(user))), 1, 5)

    user_names = np.array([f"U{k}" for k in range(1, n_users + 1)])
    item_names = np.array([f"I{k}" for k in range(1, n_items + 1)])
    genre = np.argmax(item_f, axis=1) % len(_GENRES)
    titles = {f"I{k + 1}": f"Item {k + 1} ({_GENRES[g]})" for k, g in enumerate(genre.tolist())}
    return RawInteractions(
        user_id=user_names[user],
        item_id=item_names[item],
        rating=rating,
        timestamp=ts,
        item_titles=titles,
        source=f"synthetic(n_users={n_users}, n_items={n_items}, n_interactions={n_interactions}, "
        f"rank={rank}, popularity_exponent={popularity_exponent}, seed={seed})",
    )


def _user_counts(rng: np.random.Generator, n_users: int, n_items: int, total: int) -> np.ndarray:
    """Lognormal per-user counts in [5, n_items] summing to ``total`` where feasible."""
    raw = rng.lognormal(0.0, 0.8, n_users)
    counts = np.clip(np.rint(raw / raw.sum() * total), 5, n_items).astype(np.int64)
    for _ in range(100):  # move the rounding/clipping remainder onto users with room
        diff = int(total - counts.sum())
        room = np.flatnonzero(counts < n_items if diff > 0 else counts > 5)
        if diff == 0 or len(room) == 0:
            break
        pick = rng.choice(room, size=min(abs(diff), len(room)), replace=False)
        counts[pick] += np.sign(diff)
    return counts
