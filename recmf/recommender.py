"""Top-K recommendation from a bundle with numpy alone: no torch, Lightning or MLflow import."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from recmf.bundle import Bundle


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


class Recommender:
    """Scores users against the catalogue and keeps the best unseen items."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.vocab = bundle.vocab

    def recommend(
        self, user_ids: list[str], k: int, history: dict[str, list[str]]
    ) -> list[UserRecommendations]:
        """Top-``k`` items for each known user, excluding the items in ``history``.

        Args:
            user_ids: External ids the model knows (``vocab.has_user``).
            k: How many items per user; fewer when the user has seen nearly everything.
            history: External item ids each user has now (items unknown to the model are
                ignored: the model cannot rank them anyway).
        """
        idx = self.vocab.user_idx(user_ids)
        scores = self.bundle.score_users(idx)  # (B, n_items)
        out = []
        for row, user in enumerate(user_ids):
            seen = self.vocab.item_idx(history.get(user, []), drop_unknown=True)
            s = scores[row]
            s[seen] = -np.inf
            available = self.vocab.n_items - len(np.unique(seen))
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
            if kk < k:
                notes.append(
                    f"asked for k={k} but only {available} of the {self.vocab.n_items} items are "
                    f"not already in {user}'s history; returning {kk}"
                )
            out.append(UserRecommendations(user, items, int(len(np.unique(seen))), notes))
        return out


def format_table(recs: list[UserRecommendations]) -> str:
    lines = []
    for r in recs:
        lines.append(f"user {r.user_id} ({r.n_excluded} items already seen, excluded):")
        lines.append(f"  {'rank':>4}  {'item':<12} {'score':>8}  title")
        for rank, item in enumerate(r.items, 1):
            lines.append(f"  {rank:>4}  {item.item_id:<12} {item.score:>8.3f}  {item.title}")
        lines.extend(f"  note: {n}" for n in r.notes)
    return "\n".join(lines)


def to_json(recs: list[UserRecommendations]) -> str:
    return json.dumps([asdict(r) for r in recs], indent=2, ensure_ascii=False)
