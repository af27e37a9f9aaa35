"""Plain data that crosses module boundaries: interactions as a source delivers them (external
ids), interactions as numpy columns (positions), and the id vocabulary between the two.

Ids are not positions: ``user_id``/``item_id`` are the external strings (``"U1"``), ``user_idx``/
``item_idx`` are contiguous integer rows. :class:`Vocab` is the one mapping between them and is
saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recmf.errors import ConfigError

if TYPE_CHECKING:
    from recmf.data.features import RawFeatures

MAX_ID_BYTES = 2048  # UTF-8; PostgreSQL's B-tree (unique index on ids) refuses entries over 2704


@dataclass
class RawInteractions:
    """Interactions as a source delivers them, aligned by position."""

    # (n,) str (object or unicode dtype), verbatim external ids; or a pandas Categorical of
    # them (the chunks of a streamed CSV: codes into the chunk's distinct ids)
    user_id: np.ndarray
    item_id: np.ndarray  # (n,) str, or a Categorical
    rating: np.ndarray | None  # (n,) float64, NaN where a row has none; None: source has none
    timestamp: np.ndarray  # (n,) int64 unix seconds
    item_titles: dict[str, str] = field(default_factory=dict)  # item_id -> title, may be empty
    source: str = ""  # human description, no secrets
    # side features (recmf.data.features): their ids need no row here (an item added with its
    # features before anyone has seen it)
    item_features: RawFeatures | None = None
    user_features: RawFeatures | None = None
    # False: the source had no time column and ``timestamp`` is each row's number (file order),
    # which training does not take for time (it splits such data at random)
    timed: bool = True

    def __post_init__(self) -> None:
        self.timestamp = np.asarray(self.timestamp, dtype=np.int64)
        if self.rating is not None:
            self.rating = np.asarray(self.rating, dtype=np.float64)
        n = len(self.user_id)
        for name in ("item_id", "timestamp") + (("rating",) if self.rating is not None else ()):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"RawInteractions.{name} has {len(getattr(self, name))} rows, "
                    f"user_id has {n}; every column needs one value per row"
                )

    def __len__(self) -> int:
        return len(self.user_id)


class UnknownUserError(KeyError):
    """A user id that the vocabulary (or the store) does not know."""

    def __init__(self, unknown: list[str], hint: str = ""):
        self.unknown = list(unknown)
        shown = ", ".join(repr(u) for u in self.unknown[:5])
        more = f" and {len(self.unknown) - 5} more" if len(self.unknown) > 5 else ""
        super().__init__(f"unknown user id(s): {shown}{more}. {hint}".strip())

    def __str__(self) -> str:  # KeyError quotes its message; a user should read plain text
        return str(self.args[0])


@dataclass(frozen=True)
class Vocab:
    """External ids and titles, indexed by row position."""

    user_ids: np.ndarray  # (n_users,) str
    item_ids: np.ndarray  # (n_items,) str
    item_titles: np.ndarray  # (n_items,) str, "" where unknown
    _user_pos: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    _item_pos: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_ids", np.asarray(self.user_ids, dtype=str))
        object.__setattr__(self, "item_ids", np.asarray(self.item_ids, dtype=str))
        object.__setattr__(self, "item_titles", np.asarray(self.item_titles, dtype=str))
        assert len(self.item_ids) == len(self.item_titles), "one title per item"

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _positions(self, which: str) -> dict[str, int]:
        attr = f"_{which}_pos"
        pos = getattr(self, attr)
        if pos is None:
            ids = self.user_ids if which == "user" else self.item_ids
            pos = {str(v): i for i, v in enumerate(ids.tolist())}
            object.__setattr__(self, attr, pos)
        return pos

    def has_user(self, user_id: str) -> bool:
        return str(user_id) in self._positions("user")

    def user_idx(self, user_ids: list[str] | np.ndarray) -> np.ndarray:
        """Row positions of external user ids; raises :class:`UnknownUserError`."""
        pos = self._positions("user")
        missing = [u for u in map(str, user_ids) if u not in pos]
        if missing:
            raise UnknownUserError(missing)
        return np.fromiter((pos[str(u)] for u in user_ids), dtype=np.int64, count=len(user_ids))

    def item_idx(
        self, item_ids: list[str] | np.ndarray, *, drop_unknown: bool = False
    ) -> np.ndarray:
        """Row positions of external item ids; unknown ones raise ``KeyError`` or are dropped."""
        pos = self._positions("item")
        if drop_unknown:
            return np.array([pos[i] for i in map(str, item_ids) if i in pos], dtype=np.int64)
        return np.array([pos[str(i)] for i in item_ids], dtype=np.int64)


@dataclass(frozen=True)
class Interactions:
    """One row per (user, item, time) event, as numpy columns aligned by position."""

    user_idx: np.ndarray  # (n,) int32 or int64, row in vocab.user_ids (the store reads int32)
    item_idx: np.ndarray  # (n,) int32 or int64, row in vocab.item_ids
    rating: np.ndarray  # (n,) float32, NaN where the source had no rating
    timestamp: np.ndarray  # (n,) int64 unix seconds
    vocab: Vocab
    timed: bool = True  # False: ``timestamp`` is row order (no time column, see RawInteractions)

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        for name in ("item_idx", "rating", "timestamp"):
            assert len(getattr(self, name)) == n, f"{name} must align with user_idx"

    def __len__(self) -> int:
        return len(self.user_idx)

    @property
    def n_users(self) -> int:
        return self.vocab.n_users

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    @property
    def has_ratings(self) -> bool:
        return len(self.rating) > 0 and not bool(np.isnan(self.rating).all())

    def subset(self, mask_or_index: np.ndarray) -> Interactions:
        """The rows selected by a boolean mask or an index array, same vocabulary."""
        return Interactions(
            self.user_idx[mask_or_index],
            self.item_idx[mask_or_index],
            self.rating[mask_or_index],
            self.timestamp[mask_or_index],
            self.vocab,
            self.timed,
        )
