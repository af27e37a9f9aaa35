"""The data of ``benchmark.py coldstart``: MovieLens-100K's rows with the side features of every
user and item (one-hot), and the two protocols that withhold items or users (see
``bench_coldstart.py``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

SHARE = 0.2
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # buckets <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+


@dataclass(frozen=True)
class Features:
    """Side features keyed by external id: ``matrix[i]`` describes ``ids[i]`` (sorted)."""

    ids: np.ndarray  # (n,) int64
    matrix: np.ndarray  # (n, n_features) float64
    names: list[str]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The feature rows of ``ids`` (external ids, all present)."""
        pos = np.searchsorted(self.ids, ids)
        assert np.array_equal(self.ids[np.minimum(pos, len(self.ids) - 1)], ids), "unknown id"
        return self.matrix[pos]


@dataclass(frozen=True)
class MovieLens:
    """Interaction rows (external ids) with the side features of every user and item."""

    user_id: np.ndarray  # (n_rows,)
    item_id: np.ndarray  # (n_rows,)
    timestamp: np.ndarray  # (n_rows,) unix seconds
    item_features: Features
    user_features: Features

    def subset(self, mask: np.ndarray) -> MovieLens:
        return replace(
            self,
            user_id=self.user_id[mask],
            item_id=self.item_id[mask],
            timestamp=self.timestamp[mask],
        )


@dataclass(frozen=True)
class Task:
    """One ranking problem: what a method may learn from, and whom it ranks what for."""

    protocol: str
    train: MovieLens  # the training rows; features cover the withheld ids too
    withheld: np.ndarray  # item ids (cold_items) or user ids (cold_users), sorted
    user_id: np.ndarray  # (n_eval,) the users ranked, sorted
    candidate_id: np.ndarray  # (n_candidates,) the items they rank, sorted
    relevant: np.ndarray  # (n_eval, n_candidates) bool


def load(folder: Path) -> MovieLens:
    """u.data, u.item and u.user of an ml-100k folder."""
    import pandas as pd

    missing = [f for f in ("u.data", "u.item", "u.user") if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"--data {str(folder)!r} lacks {missing}; pass a MovieLens-100K folder")
    rows = pd.read_csv(folder / "u.data", sep="\t", header=None, usecols=[0, 1, 3])
    items = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1")
    users = pd.read_csv(folder / "u.user", sep="|", header=None, dtype={4: str})
    year = pd.to_datetime(items[2], format="%d-%b-%Y", errors="coerce").dt.year
    decade = np.where(year.isna(), "unknown", (year // 10 * 10).astype("Int64").astype(str))
    genres = items.iloc[:, 5:24].to_numpy(np.float64)
    age = np.digitize(users[1].to_numpy(), AGE_EDGES)  # 0 (<18) .. 6 (56+)
    item_parts = [(genres, [f"genre={g}" for g in range(19)]), _one_hot("decade", decade)]
    user_parts = [_one_hot("age", age), _one_hot("gender", users[2]), _one_hot("job", users[3])]
    data = MovieLens(
        rows[0].to_numpy(np.int64),
        rows[1].to_numpy(np.int64),
        rows[3].to_numpy(np.int64),
        _features(items[0], item_parts),
        _features(users[0], user_parts),
    )
    known = np.isin(data.item_id, data.item_features.ids) & np.isin(data.user_id, users[0])
    if not known.all():
        raise ValueError(
            f"{(~known).sum()} rows of u.data name an item missing from u.item or a user "
            "missing from u.user; every id of u.data needs its features row"
        )
    return data


def _one_hot(prefix: str, values) -> tuple[np.ndarray, list[str]]:
    names, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    return np.eye(len(names))[codes], [f"{prefix}={v}" for v in names]


def _features(ids, parts: list[tuple[np.ndarray, list[str]]]) -> Features:
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids)
    matrix = np.hstack([x for x, _ in parts])[order]
    return Features(ids[order], matrix, [n for _, names in parts for n in names])


def withhold(ids: np.ndarray, seed: int, share: float = SHARE) -> np.ndarray:
    """The first ceil(share * n) positions of ``default_rng(seed).permutation(n)`` over the
    sorted distinct ``ids``, as ids (sorted). The ceiling is exact (0.2 * 15 is 3, not 4)."""
    distinct = np.unique(ids)
    n_held = math.ceil(Fraction(str(share)) * len(distinct))
    return np.sort(distinct[np.random.default_rng(seed).permutation(len(distinct))[:n_held]])


def _task(protocol, train, withheld, test_users, test_items, candidates) -> Task:
    users = np.unique(test_users)
    relevant = np.zeros((len(users), len(candidates)), dtype=bool)
    relevant[np.searchsorted(users, test_users), np.searchsorted(candidates, test_items)] = True
    return Task(protocol, train, withheld, users, candidates, relevant)


def cold_items(data: MovieLens, seed: int) -> Task:
    held = withhold(data.item_id, seed)
    test = np.isin(data.item_id, held)
    users, items = data.user_id[test], data.item_id[test]
    return _task("cold_items", data.subset(~test), held, users, items, held)


def cold_users(data: MovieLens, seed: int) -> Task:
    held = withhold(data.user_id, seed)
    is_held = np.isin(data.user_id, held)
    candidates = np.unique(data.item_id[~is_held])
    test = is_held & np.isin(data.item_id, candidates)
    users, items = data.user_id[test], data.item_id[test]
    return _task("cold_users", data.subset(~is_held), held, users, items, candidates)


PROTOCOLS: dict[str, Callable[[MovieLens, int], Task]] = {
    "cold_items": cold_items,
    "cold_users": cold_users,
}
