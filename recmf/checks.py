"""Validation of user-typed values, before any expensive work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recmf.errors import ConfigError

LOSSES = ("softmax", "bpr", "bce", "mse")  # kept here, torch-free, so checks import fast
USER_BATCHED = ("softmax",)  # losses trained on chunks of users against the whole catalogue


def positive_int(name: str, value: Any, hint: str = "") -> int:
    """``value`` as an int > 0, or a ConfigError naming the key, the value and what to type."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    if not ok:
        raise ConfigError(
            f"{name} must be a positive whole number, got {value!r}. "
            f"{hint or f'Pass e.g. {name}=10.'}".strip()
        )
    return value


def positive_ints(name: str, values: Any) -> list[int]:
    """A cut-off or list of cut-offs as a sorted list of distinct ints > 0."""
    values = (
        list(values) if isinstance(values, Sequence) and not isinstance(values, str) else [values]
    )
    if not values:
        raise ConfigError(f"{name} must not be empty; pass e.g. {name}=[5,10,20].")
    return sorted({positive_int(name, v, f"Pass e.g. {name}=[5,10,20].") for v in values})


def user_list(value: Any) -> list[str]:
    """``user=U1`` or ``user=[U1,U2]`` as a list of id strings."""
    if value is None or value == "" or value == []:
        raise ConfigError(
            "no user given. Pass user=U1 for one user or user=[U1,U2] for several; the ids are "
            "the ones in the store (`python scripts/recommend.py list_users=true` shows some)."
        )
    values = [value] if isinstance(value, str | int | float | bool) else list(value)
    for v in values:
        # Hydra reads user=1.0 as a float and user=true as a bool: neither is the id typed
        if isinstance(v, bool | float) or not isinstance(v, str | int) or str(v) == "":
            raise ConfigError(
                f"user ids are text, got {v!r} ({type(v).__name__}) in user={value!r}. Hydra "
                "reads 1.0, true or null as a number, a boolean or nothing: quote such an id, "
                "e.g. user=\"'1.0'\" or user=\"'true'\"; plain ids like U1 or 196 need no quotes."
            )
    return [str(v) for v in values]
