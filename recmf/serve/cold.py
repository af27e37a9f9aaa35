"""Embeddings of users and items a two-tower model never trained on, from their features (numpy).

A new entity has no id embedding; its vector and bias are the tower's output on its encoded
features (the same encoder the model was trained with, saved in the bundle), which is what
training with id dropout taught the towers to produce alone (:mod:`recmf.model.towers`).

The serving paths read what they embed from the store at request time with the readers below
(:func:`read_new_items`, :func:`read_user_features`), which take the open store as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class NewItems:
    """Items of the store a model never trained on (added after training, or without
    interactions then), and the store's item features (of these and others; None: none)."""

    ids: np.ndarray  # (n,) external ids, none in the model's vocabulary
    titles: np.ndarray  # (n,) "" where none
    features: RawFeatures | None = None
    version: tuple[int, int] | None = None  # the items table's when read (FeatureStore.new_items)


@dataclass
class ColdItems:
    """The new items a model can rank, embedded from their features, and how many it cannot."""

    ids: np.ndarray  # (m,) the new items with features
    titles: np.ndarray  # (m,)
    vectors: np.ndarray  # (m, d)
    biases: np.ndarray  # (m,)
    n_skipped: int  # new items without features, or all of them without an item tower
    position: dict[str, int] = field(default_factory=dict)  # id -> score column after the known

    @classmethod
    def embed(cls, bundle, new_items: NewItems) -> ColdItems:
        """The new items with features, through the bundle's item tower (none without one)."""
        vocab = bundle.vocab
        ids = np.asarray(new_items.ids, dtype=object)
        titles = np.asarray(new_items.titles, dtype=object)
        keep = ~np.isin(ids.astype(str), vocab.item_ids)  # known items: the model's own rows
        ids, titles = ids[keep], titles[keep]
        embedded = embed(bundle, "item", new_items.features, ids.tolist())
        if embedded is None:  # no item tower: nothing new can be ranked
            d = bundle.weights["item_emb"].shape[1]
            vectors, biases = np.zeros((0, d), np.float32), np.zeros(0, np.float32)
            has = np.zeros(len(ids), dtype=bool)
        else:
            vectors, biases, has = embedded
            vectors, biases = vectors[has], biases[has]
        out = cls(ids[has], titles[has], vectors, biases, int((~has).sum()))
        out.position = {str(i): vocab.n_items + j for j, i in enumerate(out.ids.tolist())}
        return out


def read_new_items(store, bundle, since: NewItems | None = None) -> NewItems:
    """The new items of ``store`` for ``bundle`` (a :class:`~recmf.store.FeatureStore`), with
    the item features when the bundle has an item tower to embed them. With ``since`` (an
    earlier answer) the items table is only checked: ``since`` itself comes back while no
    item was added, so what was embedded from it is reused."""
    read = store.new_items(bundle.vocab.item_ids, since.version if since is not None else None)
    if read is None:
        return since
    ids, titles, version = read
    # one read of every item's features (only the new items' rows are used)
    features = store.read_features("item") if len(ids) and encoder(bundle, "item") else None
    return NewItems(ids, titles, features, version)


def cold_users(bundle, users: list[str], history: dict[str, list[str]]) -> list[str]:
    """Users a model can only score from their features: not in the model, in the store
    (``history`` names them) but without an item the model knows."""
    vocab = bundle.vocab
    return [
        u
        for u in users
        if not vocab.has_user(u)
        and u in history
        and not len(vocab.item_idx(history[u], drop_unknown=True))
    ]


def read_user_features(store, bundle, users: list[str], history) -> RawFeatures | None:
    """The store's user features when some of ``users`` can only be scored from them (and the
    bundle has a user tower); None otherwise, without a read."""
    if encoder(bundle, "user") is None or not cold_users(bundle, users, history):
        return None
    return store.read_features("user")
