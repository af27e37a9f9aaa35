"""Side features as model inputs: one numeric row per entity, numpy only (serving encodes too).

A :class:`SideEncoder` is fitted on the entities a model trains on and saved with the model (as
JSON), so a new item or user is encoded exactly as the trained ones were:

- ``categorical``: one-hot over the values seen in training (an unseen or unknown value: zeros);
- ``multi``: multi-hot over the values seen, divided by the square root of the entity's count
  of known values (so an item with many genres does not outweigh one with few);
- ``numeric``: the standardised value, a missing flag, and a one-hot of its quantile bin (up to
  :data:`BINS` bins from the training values), so even a linear tower can use a non-monotone
  effect of, say, age.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recmf.data.features import RawFeatures

BINS = 8  # quantile bins per numeric feature


@dataclass
class SideEncoder:
    """How one side's features become a (n, width) float32 matrix."""

    side: str
    kinds: dict[str, str]  # feature -> kind, in encoding order
    values: dict[str, list[str]] = field(default_factory=dict)  # categorical/multi vocabularies
    center: dict[str, float] = field(default_factory=dict)  # numeric: mean
    scale: dict[str, float] = field(default_factory=dict)  # numeric: std (1 when constant)
    edges: dict[str, list[float]] = field(default_factory=dict)  # numeric: inner bin edges

    @classmethod
    def fit(cls, features: RawFeatures, ids: np.ndarray) -> SideEncoder:
        """Fit on the rows of ``features`` whose id is in ``ids`` (the training entities)."""
        rows = _rows_of(features, ids)
        rows = rows[rows >= 0]
        enc = cls(features.side, features.kinds())
        for column in features.columns:
            values = column.values[rows]
            if column.kind == "numeric":
                known = values[~np.isnan(values)]
                mean = float(known.mean()) if len(known) else 0.0
                std = float(known.std()) if len(known) else 0.0
                enc.center[column.name], enc.scale[column.name] = mean, std if std > 0 else 1.0
                qs = np.quantile(known, np.linspace(0, 1, BINS + 1)[1:-1]) if len(known) else []
                enc.edges[column.name] = sorted({float(q) for q in qs})
            else:
                seen: set[str] = set()
                for v in values.tolist():
                    if column.kind == "categorical":
                        seen.update([v] if v is not None else [])
                    else:
                        seen.update(v)
                enc.values[column.name] = sorted(seen)
        return enc

    @property
    def width(self) -> int:
        return sum(self._width(name) for name in self.kinds)

    def _width(self, name: str) -> int:
        if self.kinds[name] == "numeric":
            return 2 + len(self.edges[name]) + 1
        return len(self.values[name])

    def encode(self, features: RawFeatures | None, ids: np.ndarray) -> np.ndarray:
        """(len(ids), width) float32: the rows of ``ids``; an id without features is zeros
        except for the missing flags of numeric features."""
        out = np.zeros((len(ids), self.width), dtype=np.float32)
        rows = _rows_of(features, ids) if features is not None else np.full(len(ids), -1)
        have = rows >= 0
        given = features.kinds() if features is not None else {}
        start = 0
        for name, kind in self.kinds.items():
            width = self._width(name)
            block = out[:, start : start + width]
            column = features.column(name) if name in given and given[name] == kind else None
            if kind == "numeric":
                x = np.full(len(ids), np.nan)
                if column is not None:
                    x[have] = column.values[rows[have]]
                missing = np.isnan(x)
                z = (np.where(missing, self.center[name], x) - self.center[name]) / self.scale[name]
                block[:, 0] = z
                block[:, 1] = missing
                bins = np.searchsorted(self.edges[name], np.where(missing, 0.0, x), side="right")
                block[~missing, 2 + bins[~missing]] = 1.0
            elif column is not None:
                index = {v: k for k, v in enumerate(self.values[name])}
                for r, p in zip(np.flatnonzero(have).tolist(), rows[have].tolist(), strict=True):
                    value = column.values[p]
                    hits = [index[v] for v in ((value,) if kind == "categorical" else value)
                            if v is not None and v in index]  # fmt: skip
                    if hits:
                        block[r, hits] = 1.0 if kind == "categorical" else 1.0 / np.sqrt(len(hits))
            start += width
        return out

    def has_features(self, features: RawFeatures | None, ids: np.ndarray) -> np.ndarray:
        """(len(ids),) bool: whether each id has at least one stored feature value."""
        if features is None:
            return np.zeros(len(ids), dtype=bool)
        return _rows_of(features, ids) >= 0

    def to_json(self) -> dict:
        return {
            "side": self.side,
            "kinds": self.kinds,
            "values": self.values,
            "center": self.center,
            "scale": self.scale,
            "edges": self.edges,
        }

    @classmethod
    def from_json(cls, data: dict) -> SideEncoder:
        return cls(
            data["side"],
            dict(data["kinds"]),
            {k: list(v) for k, v in data["values"].items()},
            {k: float(v) for k, v in data["center"].items()},
            {k: float(v) for k, v in data["scale"].items()},
            {k: [float(e) for e in v] for k, v in data["edges"].items()},
        )


def _rows_of(features: RawFeatures, ids: np.ndarray) -> np.ndarray:
    """Row of each id in ``features`` (-1 where it has none)."""
    position = {str(i): p for p, i in enumerate(features.ids.tolist())}
    return np.array([position.get(str(i), -1) for i in np.asarray(ids).tolist()], dtype=np.int64)


@dataclass
class SideInputs:
    """Encoded features of the entities a model trains on: per side, the encoder and the
    (n_side, width) matrix aligned with the vocabulary."""

    encoders: dict[str, SideEncoder]
    x: dict[str, np.ndarray]

    @classmethod
    def build(cls, vocab, features: dict[str, RawFeatures | None]) -> SideInputs:
        """Fit an encoder per side that has features, on the vocabulary's entities."""
        encoders, x = {}, {}
        for side, raw in features.items():
            if raw is None or not raw.columns:
                continue
            ids = vocab.user_ids if side == "user" else vocab.item_ids
            encoders[side] = SideEncoder.fit(raw, ids)
            x[side] = encoders[side].encode(raw, ids)
        return cls(encoders, x)
