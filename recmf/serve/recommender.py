"""Top-K recommendation from a bundle with numpy alone: no torch, Lightning or MLflow import."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from recmf.serve.bundle import Bundle
from recmf.serve.fold_in import FOLD_IN_DEFAULTS, fold_in, fold_in_scores


@dataclass
class Recommendation:
    item_id: str
    title: str
    score: float


@dataclass
class UserRecommendations:
    user_id: str
    items: list[Recommendation]
    n_excluded: int  # items the user already has in the store, never recommended
    notes: list[str] = field(default_factory=list)
    path: str = "model"  # "model" | "fold-in" | "popularity": how the user was scored


class Recommender:
    """Scores users against the catalogue and keeps the best unseen items.

    Three paths, named in each answer: a user the model trained on is scored with their own
    embedding ("model"); a user it never saw who has items in the store gets an embedding folded
    in from those items (:func:`fold_in`); a user with neither gets the popularity ranking of the
    training data ("popularity").
    """

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.vocab = bundle.vocab
        self.fold_in_params = {
            **FOLD_IN_DEFAULTS,
            **bundle.meta.get("fold_in", {}).get("params", {}),
        }
        self._popularity: np.ndarray | None = None

    def popularity(self) -> np.ndarray:
        """Training interaction counts per item (train + validation, as the baseline ranks)."""
        if self._popularity is None:
            self._popularity = self.bundle.item_count.astype(np.float32)
        return self._popularity

    def _scores(self, user_ids: list[str], history: dict[str, list[str]]) -> tuple:
        """(B, n_items) scores and the path of each user."""
        w = self.bundle.weights
        paths = []
        for user in user_ids:
            if self.vocab.has_user(user):
                paths.append("model")
            elif len(self.vocab.item_idx(history.get(user, []), drop_unknown=True)):
                paths.append("fold-in")
            else:
                paths.append("popularity")
        scores = np.empty((len(user_ids), self.vocab.n_items), dtype=np.float32)
        known = [r for r, p in enumerate(paths) if p == "model"]
        if known:
            scores[known] = self.bundle.score_users(
                self.vocab.user_idx([user_ids[r] for r in known])
            )
        folded = [r for r, p in enumerate(paths) if p == "fold-in"]
        if folded:
            hist = [self.vocab.item_idx(history[user_ids[r]], drop_unknown=True) for r in folded]
            x = fold_in(w, hist, **self.fold_in_params)
            scores[folded] = fold_in_scores(w, x)
        for r, p in enumerate(paths):
            if p == "popularity":
                scores[r] = self.popularity()
        return scores, paths

    def recommend(
        self,
        user_ids: list[str],
        k: int,
        history: dict[str, list[str]] | None,
        exclude_seen: bool = True,
    ) -> list[UserRecommendations]:
        """Top-``k`` items for each user, excluding the items in ``history``.

        Args:
            user_ids: External ids; users the model does not know are folded in or get the
                popularity ranking.
            k: How many items per user; fewer when the user has seen nearly everything.
            history: External item ids each user has now (items unknown to the model are
                ignored: the model cannot rank them anyway). None when it could not be read
                (the store unreachable): known users are scored by the model, others by
                popularity, nothing is excluded, and each answer says so in a note.
            exclude_seen: Leave out what each user already has (the usual case).
        """
        unknown_history = history is None
        history = history or {}
        scores, paths = self._scores(user_ids, history)
        out = []
        for row, user in enumerate(user_ids):
            seen = self.vocab.item_idx(history.get(user, []), drop_unknown=True)
            s = scores[row]
            n_seen = len(np.unique(seen)) if exclude_seen else 0
            if exclude_seen:
                s[seen] = -np.inf
            available = self.vocab.n_items - n_seen
            kk = min(k, available)
            top = np.argpartition(-s, kk - 1)[:kk] if kk > 0 else np.array([], dtype=np.int64)
            top = top[np.argsort(-s[top], kind="stable")]
            items = [
                Recommendation(
                    str(self.vocab.item_ids[i]), str(self.vocab.item_titles[i]), float(s[i])
                )
                for i in top
            ]
            notes = []
            if paths[row] == "fold-in":
                notes.append(
                    f"{user} is not in the model (they arrived after training): scored with an "
                    f"embedding folded in from their {len(np.unique(seen))} items in the store"
                )
            elif paths[row] == "popularity" and unknown_history:
                notes.append(
                    f"{user} is not in the model and their interactions could not be read: the "
                    "popularity ranking of the training data"
                )
            elif paths[row] == "popularity":
                notes.append(
                    f"{user} has no interactions the model knows: the popularity ranking of the "
                    "training data (ingest their interactions for personal recommendations)"
                )
            if unknown_history and exclude_seen:
                notes.append(
                    f"the store could not be reached: {user}'s items already seen could not be "
                    "excluded"
                )
            if kk < k:
                notes.append(
                    f"asked for k={k} but only {available} of the {self.vocab.n_items} items are "
                    f"not already in {user}'s history; returning {kk}"
                )
            out.append(UserRecommendations(user, items, n_seen, notes, paths[row]))
        return out


@dataclass
class Answer:
    """Recommendations for some users, and what answered: run, store schema and data digest."""

    source: dict  # {"run_id", "schema", "data_digest"}
    users: list[UserRecommendations]

    @staticmethod
    def source_of(meta: dict, schema: str | None = None) -> dict:
        """The ``source`` of a bundle's answers; ``schema`` is the store read at request time."""
        return {
            "run_id": meta.get("run_id"),
            "schema": schema or meta.get("data", {}).get("schema"),
            "data_digest": meta.get("data_digest"),
        }


def source_line(source: dict) -> str:
    """``run 433e…, store schema recmf, data digest 1a2b…``: what an answer came from."""
    return (
        f"run {source.get('run_id') or '(a bundle folder)'}, store schema {source.get('schema')}, "
        f"data digest {source.get('data_digest') or 'not recorded'}"
    )


def format_table(answer: Answer) -> str:
    lines = [f"from {source_line(answer.source)}"]
    for r in answer.users:
        lines.append(f"user {r.user_id} ({r.path}; {r.n_excluded} items already seen, excluded):")
        lines.append(f"  {'rank':>4}  {'item':<12} {'score':>8}  title")
        for rank, item in enumerate(r.items, 1):
            lines.append(f"  {rank:>4}  {item.item_id:<12} {item.score:>8.3f}  {item.title}")
        lines.extend(f"  note: {n}" for n in r.notes)
    return "\n".join(lines)


def to_json(answer: Answer) -> str:
    body = {**answer.source, "users": [asdict(r) for r in answer.users]}
    return json.dumps(body, indent=2, ensure_ascii=False)
