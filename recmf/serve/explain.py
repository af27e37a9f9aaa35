"""What a two-tower model learned about each feature value, for the evaluation report.

For every value of a categorical or multi feature of a side (each genre, each occupation), the
tower's embedding of an entity that has that value and nothing else is compared with the
embedding of an entity with no known feature: the difference is what the value adds. Projected
on its two principal axes, values the model treats alike lie close together; the feature bias
says which values the model favours before any user taste.
"""

from __future__ import annotations

import numpy as np

from recmf.data.features import FeatureColumn, RawFeatures
from recmf.serve.cold import encoder, tower_vectors


def value_map(bundle, side: str = "item") -> dict | None:
    """``{"side", "labels", "points" (n, 2), "bias" (n,), "explained"}`` for every value of
    ``side``'s categorical and multi features; None when the bundle has no such tower."""
    enc = encoder(bundle, side)
    if enc is None:
        return None
    names = [n for n, kind in enc.kinds.items() if kind != "numeric" and enc.values.get(n)]
    labels = [(n, v) for n in names for v in enc.values[n]]
    if len(labels) < 3:  # nothing to project
        return None
    ids = np.array([f"{n}={v}" for n, v in labels] + ["<none>"], dtype=object)
    columns = []
    for name in names:
        kind = enc.kinds[name]
        values = np.empty(len(ids), dtype=object)
        values[:] = [
            ((v,) if kind == "multi" else v) if n == name else (() if kind == "multi" else None)
            for n, v in labels
        ] + [() if kind == "multi" else None]
        columns.append(FeatureColumn(name, kind, values))
    raw = RawFeatures(side, ids, columns)
    vectors, biases = tower_vectors(bundle, side, enc.encode(raw, ids))
    offsets = vectors[:-1] - vectors[-1]
    centred = offsets - offsets.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    points = centred @ vt[:2].T
    explained = float((s[:2] ** 2).sum() / max((s**2).sum(), 1e-12))
    return {
        "side": side,
        "labels": [f"{v}" if len(names) == 1 else f"{n}: {v}" for n, v in labels],
        "points": points,
        "bias": biases[:-1] - biases[-1],
        "explained": explained,
    }
