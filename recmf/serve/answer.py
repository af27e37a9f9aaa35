"""What :class:`~recmf.serve.recommender.Recommender` answers, and how an answer is printed
(``recommend.py``'s table and JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class Recommendation:
    item_id: str
    title: str
    score: float
    origin: str = "model"  # "model": a trained item; "features": a new item, from its features


@dataclass
class UserRecommendations:
    user_id: str
    items: list[Recommendation]
    n_excluded: int  # items the user already has in the store, never recommended
    notes: list[str] = field(default_factory=list)
    path: str = "model"  # "model" | "fold-in" | "features" | "popularity": how the user was scored


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
            new = "  (new: from its features)" if item.origin == "features" else ""
            lines.append(f"  {rank:>4}  {item.item_id:<12} {item.score:>8.3f}  {item.title}{new}")
        lines.extend(f"  note: {n}" for n in r.notes)
    return "\n".join(lines)


def to_json(answer: Answer) -> str:
    body = {**answer.source, "users": [asdict(r) for r in answer.users]}
    return json.dumps(body, indent=2, ensure_ascii=False)
