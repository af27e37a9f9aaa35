"""Top-K recommendation from a bundle with numpy alone: no torch, Lightning or MLflow import.

What it answers (:class:`~recmf.serve.answer.Answer`) and how an answer is printed live in
:mod:`recmf.serve.answer`; the names are re-exported here.
"""

from __future__ import annotations

import numpy as np

from recmf.data.features import RawFeatures
from recmf.serve import cold
from recmf.serve.answer import Answer, Recommendation, UserRecommendations
from recmf.serve.bundle import Bundle
from recmf.serve.cold import ColdItems, NewItems
from recmf.serve.fold_in import FOLD_IN_DEFAULTS, fold_in, fold_in_scores

PATHS = ("model", "fold-in", "features", "popularity")  # how a user is scored, first that applies


class Recommender:
    """Scores users against the catalogue and keeps the best unseen items.

    Four paths, named in each answer: a user the model trained on is scored with their own
    embedding ("model"); a user it never saw who has items in the store gets an embedding folded
    in from those items (:func:`fold_in`); one without such items but with features, by a
    two-tower model, gets the user tower's embedding of them ("features"); anyone else gets the
    popularity ranking of the training data ("popularity").

    Items the model never trained on (``new_items``) are ranked with the rest when a two-tower
    model can embed them from their features (:mod:`recmf.serve.cold`); the others are skipped
    and each answer counts them.
    """

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.vocab = bundle.vocab
        self.fold_in_params = {
            **FOLD_IN_DEFAULTS,
            **bundle.meta.get("fold_in", {}).get("params", {}),
        }
        self._popularity: np.ndarray | None = None
        self._user_encoder = cold.encoder(bundle, "user")
        self.user_tower = self._user_encoder is not None
        self.item_tower = cold.encoder(bundle, "item") is not None
        self._embedded: tuple[NewItems, ColdItems] | None = None  # the last catalogue embedded

    def popularity(self) -> np.ndarray:
        """Training interaction counts per item (train + validation, as the baseline ranks)."""
        if self._popularity is None:
            self._popularity = self.bundle.item_count.astype(np.float32)
        return self._popularity

    def _cold(self, new_items: NewItems | None) -> ColdItems | None:
        """The new items embedded, once per catalogue read (a server reuses one
        :class:`NewItems` until the store's items change)."""
        if new_items is None:
            return None
        last = self._embedded
        if last is not None and last[0] is new_items:
            return last[1]
        out = ColdItems.embed(self.bundle, new_items)
        self._embedded = (new_items, out)
        return out

    def _paths(self, user_ids, history, user_features) -> list[str]:
        paths = []
        for user in user_ids:
            if self.vocab.has_user(user):
                paths.append("model")
            elif len(self.vocab.item_idx(history.get(user, []), drop_unknown=True)):
                paths.append("fold-in")
            else:
                paths.append("popularity")  # unless their features can place them, below
        if self.user_tower and user_features is not None:
            rows = [r for r, p in enumerate(paths) if p == "popularity"]
            ids = np.asarray([user_ids[r] for r in rows], dtype=object)
            has = self._user_encoder.has_features(user_features, ids)
            for r in np.asarray(rows)[has].tolist():
                paths[r] = "features"
        return paths

    def _scores(self, user_ids, paths, history, user_features) -> tuple[np.ndarray, ...]:
        """(B, n_items) scores of the known items; each user's vector (B, d) and offset (B,)
        (their bias and the global bias), which score new items the same way."""
        w = self.bundle.weights
        d = w["item_emb"].shape[1]
        scores = np.empty((len(user_ids), self.vocab.n_items), dtype=np.float32)
        vectors = np.zeros((len(user_ids), d), dtype=np.float32)
        offsets = np.zeros(len(user_ids), dtype=np.float32)
        global_bias = float(np.ravel(w["global_bias"])[0]) if "global_bias" in w else 0.0
        rows = {p: [r for r, q in enumerate(paths) if q == p] for p in PATHS}
        if rows["model"]:
            idx = self.vocab.user_idx([user_ids[r] for r in rows["model"]])
            scores[rows["model"]] = self.bundle.score_users(idx)
            vectors[rows["model"]] = w["user_emb"][idx]
            if "user_bias" in w:
                offsets[rows["model"]] = w["user_bias"][idx, 0] + global_bias
        if rows["fold-in"]:  # fold-in scores carry no user or global bias
            hist = [self.vocab.item_idx(history[user_ids[r]], drop_unknown=True)
                    for r in rows["fold-in"]]  # fmt: skip
            x = fold_in(w, hist, **self.fold_in_params)
            scores[rows["fold-in"]] = fold_in_scores(w, x)
            vectors[rows["fold-in"]] = x
        if rows["features"]:
            ids = [user_ids[r] for r in rows["features"]]
            x, bias, _ = cold.embed(self.bundle, "user", user_features, ids)
            offset = bias + global_bias  # the tower's feature bias (zeros without biases)
            scores[rows["features"]] = fold_in_scores(w, x) + offset[:, None]
            vectors[rows["features"]], offsets[rows["features"]] = x, offset
        for r in rows["popularity"]:
            scores[r] = self.popularity()
        return scores, vectors, offsets

    def recommend(
        self,
        user_ids: list[str],
        k: int,
        history: dict[str, list[str]] | None,
        exclude_seen: bool = True,
        *,
        new_items: NewItems | None = None,
        user_features: RawFeatures | None = None,
    ) -> list[UserRecommendations]:
        """Top-``k`` items for each user, excluding the items in ``history``.

        Args:
            user_ids: External ids; users the model does not know are folded in, scored from
                their features, or get the popularity ranking.
            k: How many items per user; fewer when the user has seen nearly everything.
            history: External item ids each user has now; a user absent from it is not in the
                store. None when it could not be read (the store unreachable): known users are
                scored by the model, others by popularity, nothing is excluded, and each answer
                says so in a note.
            exclude_seen: Leave out what each user already has (the usual case).
            new_items: The store's items the model never trained on, with the item features
                (:func:`recmf.serve.cold.read_new_items`); with an item tower, those with
                features are ranked with the rest. None: only the model's items are ranked.
            user_features: The store's user features (None: none), for users with neither a
                place in the model nor items it knows.
        """
        unknown_history = history is None
        history = history or {}
        paths = self._paths(user_ids, history, user_features)
        scores, vectors, offsets = self._scores(user_ids, paths, history, user_features)
        new = self._cold(new_items)
        n_new = 0 if new is None else len(new.ids)
        if n_new:
            new_scores = vectors @ new.vectors.T + new.biases + offsets[:, None]  # (B, n_new)
            popular = [r for r, p in enumerate(paths) if p == "popularity"]
            new_scores[popular] = -np.inf  # new items have no popularity to rank them by
            scores = np.concatenate([scores, new_scores.astype(np.float32)], axis=1)
        out = []
        for row, user in enumerate(user_ids):
            path = paths[row]
            mine = history.get(user, [])
            seen = self.vocab.item_idx(mine, drop_unknown=True)
            seen_new = (
                [new.position[i] for i in map(str, mine) if i in new.position] if n_new else []
            )
            s = scores[row]
            n_seen = len(np.unique(seen)) + len(set(seen_new)) if exclude_seen else 0
            if exclude_seen:
                s[seen] = -np.inf
                s[seen_new] = -np.inf
            rankable = self.vocab.n_items + (n_new if path != "popularity" else 0)
            available = int(np.isfinite(s).sum())  # what is neither seen nor unrankable
            kk = min(k, available)
            top = np.argpartition(-s, kk - 1)[:kk] if kk > 0 else np.array([], dtype=np.int64)
            top = top[np.argsort(-s[top], kind="stable")]
            items = [self._item(int(i), float(s[i]), new) for i in top]
            notes = self._notes(user, path, len(np.unique(seen)), unknown_history, exclude_seen)
            if new is not None and new.n_skipped:
                notes.append(_skipped_note(new.n_skipped, self.item_tower))
            if n_new and path == "popularity":
                notes.append(
                    f"{_count(n_new, 'item')} the model never trained on (embedded from their "
                    "features) cannot be in the popularity ranking"
                )
            if kk < k:
                notes.append(
                    f"asked for k={k} but only {available} of the {rankable} items are "
                    f"not already in {user}'s history; returning {kk}"
                )
            out.append(UserRecommendations(user, items, n_seen, notes, path))
        return out

    def _item(self, i: int, score: float, new: ColdItems | None) -> Recommendation:
        if i < self.vocab.n_items:
            return Recommendation(
                str(self.vocab.item_ids[i]), str(self.vocab.item_titles[i]), score
            )
        j = i - self.vocab.n_items
        return Recommendation(str(new.ids[j]), str(new.titles[j]), score, "features")

    def _notes(self, user, path, n_known, unknown_history, exclude_seen) -> list[str]:
        notes = []
        if path == "fold-in":
            notes.append(
                f"{user} is not in the model (they arrived after training): scored with an "
                f"embedding folded in from their {n_known} items in the store"
            )
        elif path == "features":
            notes.append(
                f"{user} is not in the model and has no items it knows: scored with the user "
                "tower's embedding of their features"
            )
        elif path == "popularity" and unknown_history:
            notes.append(
                f"{user} is not in the model and their interactions could not be read: the "
                "popularity ranking of the training data"
            )
        elif path == "popularity":
            more = " or features" if self.user_tower else ""
            notes.append(
                f"{user} has no interactions the model knows: the popularity ranking of the "
                f"training data (ingest their interactions{more} for personal recommendations)"
            )
        if unknown_history and exclude_seen:
            notes.append(
                f"the store could not be reached: {user}'s items already seen could not be excluded"
            )
        return notes


def _count(n: int, noun: str) -> str:
    return f"1 {noun}" if n == 1 else f"{n} {noun}s"


def _skipped_note(n: int, item_tower: bool) -> str:
    verb = "has" if n == 1 else "have"
    if item_tower:
        return (
            f"{_count(n, 'item')} in the store {verb} neither interactions the model trained on "
            "nor features; not ranked"
        )
    return (
        f"{_count(n, 'item')} in the store {verb} no interactions the model trained on, and "
        "this model has no item tower to embed them from features (train with arch=tower); "
        "not ranked"
    )


__all__ = ["PATHS", "Answer", "Recommendation", "Recommender", "UserRecommendations"]
