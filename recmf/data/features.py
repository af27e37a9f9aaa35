"""Side features as a source delivers them: per user or per item, keyed by external id.

Three kinds, each a column of values aligned with ``ids``:

- ``categorical``: one text value per entity (``gender``: ``"F"``), ``None`` where unknown;
- ``multi``: several text values per entity (``genres``: ``("Comedy", "Drama")``), ``()`` where
  none;
- ``numeric``: a finite float (``year``: ``1995.0``), NaN where unknown.

The store keeps them in typed tables keyed by the surrogate keys (:mod:`recmf.store.sides`); a
model encodes them (:mod:`recmf.model.towers`). Sources validate values as they parse, so a bad
value is refused with its file and line before any database work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recmf.errors import ConfigError

KINDS = ("categorical", "multi", "numeric")
SIDES = ("user", "item")
MAX_VALUE_BYTES = 2048  # UTF-8, as for ids: PostgreSQL's B-tree refuses entries over 2704


@dataclass
class FeatureColumn:
    """One feature of one side, aligned with :attr:`RawFeatures.ids`."""

    name: str
    kind: str  # one of KINDS
    values: np.ndarray  # (n,) object: str | None (categorical), tuple[str, ...] (multi); float64

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"feature {self.name!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )
        if not isinstance(self.name, str) or not self.name or len(self.name) > 63:
            raise ConfigError(
                f"a feature name must be a text of 1-63 characters, got {self.name!r}"
            )
        if self.kind == "numeric":
            self.values = np.asarray(self.values, dtype=np.float64)
        else:
            self.values = np.asarray(self.values, dtype=object)


@dataclass
class RawFeatures:
    """The features of one side (``"user"`` or ``"item"``), one row per entity."""

    side: str
    ids: np.ndarray  # (n,) str, unique external ids
    columns: list[FeatureColumn] = field(default_factory=list)
    source: str = ""  # human description (a file), no secrets

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ConfigError(f"features are of users or items, got side {self.side!r}")
        self.ids = np.asarray(self.ids, dtype=object)
        n = len(self.ids)
        for column in self.columns:
            if len(column.values) != n:
                raise ConfigError(
                    f"{self.side} feature {column.name!r} has {len(column.values)} values for "
                    f"{n} {self.side}s; every feature needs one value per {self.side}"
                )
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.side} feature names repeat: {names}")

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> FeatureColumn:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def kinds(self) -> dict[str, str]:
        """Feature name -> kind."""
        return {c.name: c.kind for c in self.columns}


SPEC_KEYS = ("column", "kind", "sep", "pattern", "missing")


@dataclass(frozen=True)
class FeatureSpec:
    """How a source reads one feature from a column of a delimited file.

    The value of a line is its field with surrounding whitespace removed; a field in ``missing``
    is unknown; with a ``pattern``, the value is its group's match (no match: unknown); a multi
    value is split on ``sep``.
    """

    name: str
    column: str | int  # a column name (file with a header) or a 0-based position
    kind: str  # one of KINDS
    sep: str = "|"  # multi only
    pattern: re.Pattern[str] | None = None  # one capturing group
    missing: tuple[str, ...] = ()  # fields meaning unknown, e.g. "(no genres listed)"


def feature_specs(key: str, mapping: Any) -> list[FeatureSpec]:
    """Checked specs from a config mapping ``{name: {column, kind, sep, pattern, missing}}``.

    Args:
        key: the config key of ``mapping``, named in errors (``dataset.items_features``).
        mapping: feature name -> spec; ``None`` or ``{}`` for no features.

    Raises:
        ConfigError: a spec a source cannot read, naming its key
            (``dataset.items_features.genres.kind``).
    """
    if mapping is None:
        return []
    example = f"{key}.genres: {{column: genres, kind: multi, sep: '|'}}"
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"{key} must map feature names to {{column, kind}} settings, got {mapping!r}; "
            f"e.g. {example}"
        )
    return [_spec(f"{key}.{name}", name, spec, example) for name, spec in mapping.items()]


def _spec(key: str, name: Any, spec: Any, example: str) -> FeatureSpec:
    if not isinstance(name, str) or not 0 < len(name) <= 63:
        raise ConfigError(f"{key}: a feature name must be a text of 1-63 characters, got {name!r}")
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{key} must be a mapping with column and kind (and, optionally, sep, pattern, "
            f"missing), got {spec!r}; e.g. {example}"
        )
    unknown = sorted(map(str, set(spec) - set(SPEC_KEYS)))
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]} is not a feature setting; a feature has {', '.join(SPEC_KEYS)}. "
            f"Remove it or fix its spelling"
        )
    column = spec.get("column")
    if not (
        (isinstance(column, str) and column != "")
        or (isinstance(column, int) and not isinstance(column, bool) and column >= 0)
    ):
        raise ConfigError(
            f"{key}.column must be a column name (with dataset.header=true) or a 0-based "
            f"position (with dataset.header=false), got {column!r}; e.g. {key}.column={name}"
        )
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(
            f"{key}.kind must be one of {', '.join(KINDS)}, got {kind!r}: categorical for one "
            "text value per line, multi for several joined by sep, numeric for a number. "
            f"Pass e.g. {key}.kind=categorical"
        )
    sep = spec.get("sep")
    if sep is not None and kind != "multi":
        raise ConfigError(f"{key}.sep splits multi features only; {name!r} is {kind}. Remove it")
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1):
        raise ConfigError(f"{key}.sep must be one character, got {sep!r}; e.g. {key}.sep='|'")
    return FeatureSpec(
        name, column, kind, sep or "|", _pattern(key, spec.get("pattern")), _missing(key, spec)
    )


def _pattern(key: str, pattern: Any) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    hint = r"e.g. '\((\d{4})\)\s*$' for the year at the end of a title"
    if not isinstance(pattern, str):
        raise ConfigError(f"{key}.pattern must be a regular expression or null, got {pattern!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"{key}.pattern {pattern!r} is not a valid regular expression ({exc}); {hint}"
        ) from None
    if compiled.groups != 1:
        raise ConfigError(
            f"{key}.pattern {pattern!r} has {compiled.groups} capturing groups; it needs exactly "
            f"one, whose match is the value (use (?:...) for other groups); {hint}"
        )
    return compiled


def _missing(key: str, spec: Mapping) -> tuple[str, ...]:
    missing = spec.get("missing")
    if missing is None:
        return ()
    values = [missing] if isinstance(missing, str) else missing
    if not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
        raise ConfigError(
            f"{key}.missing must be a text or a list of texts that mean unknown, got "
            f"{missing!r}; e.g. {key}.missing='(no genres listed)'"
        )
    return tuple(v.strip() for v in values)
