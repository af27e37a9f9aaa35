"""Embeddings of users and items a two-tower model never trained on, from their features (numpy).

A new entity has no id embedding; its vector and bias are the tower's output on its encoded
features (the same encoder the model was trained with, saved in the bundle), which is what
training with id dropout taught the towers to produce alone (:mod:`recmf.model.towers`).
"""

from __future__ import annotations

import numpy as np

from recmf.data.encoding import SideEncoder
from recmf.data.features import RawFeatures


def encoder(bundle, side: str) -> SideEncoder | None:
    """The bundle's encoder of ``side``'s features; None when that side has no tower."""
    data = bundle.meta.get("encoders", {}).get(side)
    if data is None or f"{side}_w0" not in bundle.towers:
        return None
    return SideEncoder.from_json(data)


def tower_vectors(bundle, side: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, d), biases (n,)) of encoded features ``x`` through ``side``'s tower."""
    t = bundle.towers
    h, k = np.asarray(x, dtype=np.float32), 0
    while f"{side}_w{k}" in t:
        h = h @ t[f"{side}_w{k}"].T + t[f"{side}_b{k}"]
        k += 1
        if f"{side}_w{k}" in t:
            h = np.maximum(h, 0.0)
    bias = np.zeros(len(x), dtype=np.float32)
    if f"{side}_fw" in t:
        bias = np.asarray(x, np.float32) @ t[f"{side}_fw"] + t[f"{side}_fb"][0]
    return h, bias


def embed(bundle, side: str, features: RawFeatures | None, ids: list[str]):
    """(vectors, biases, has_features) of ``ids`` from their stored features; None when the
    bundle has no tower for ``side``. Rows of ids without features are meaningless: use
    ``has_features`` to leave them out."""
    enc = encoder(bundle, side)
    if enc is None:
        return None
    ids_array = np.asarray(ids, dtype=object)
    vectors, biases = tower_vectors(bundle, side, enc.encode(features, ids_array))
    return vectors, biases, enc.has_features(features, ids_array)
