"""Chunked top-K evaluation: score a chunk of users against all items, mask, ``topk``, compare.

Memory is bounded by ``chunk_size * n_items``; a dense users x items matrix is never built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from recmf.metrics import METRICS, ranking_metrics
from recmf.sparse import UserItems

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # users (B,) -> scores (B, n_items)


def topk_chunks(
    score_fn: ScoreFn,
    users: torch.Tensor,
    exclude: UserItems | None,
    k: int,
    chunk_size: int = 2048,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (users, top-k items, their scores) chunk by chunk, excluded items never ranked."""
    for start in range(0, len(users), chunk_size):
        chunk = users[start : start + chunk_size]
        scores = score_fn(chunk).float()  # (B, n_items)
        if exclude is not None:
            rows, cols = exclude.rows(chunk)
            scores[rows, cols] = -torch.inf
        top_scores, top_items = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        yield chunk, top_items, top_scores


class MetricAccumulator:
    """Sums per-user metric values over chunks; ``result()`` gives averages and coverage."""

    def __init__(self, ks: Sequence[int], n_items: int, device: torch.device | str = "cpu"):
        self.ks = sorted({int(k) for k in ks})
        self.n_items = n_items
        self.sums = {f"{m}_at_{k}": 0.0 for k in self.ks for m in METRICS}
        self.seen = {k: torch.zeros(n_items, dtype=torch.bool, device=device) for k in self.ks}
        self.n_users = 0

    def add(self, users: torch.Tensor, top_items: torch.Tensor, truth: UserItems, exclude=None):
        """Compare a chunk's rankings with the users' relevant items in ``truth``.

        Relevant items the user also has in ``exclude`` cannot be ranked and are not counted; users
        left with no relevant item are skipped, so averages are over users with at least one.
        """
        # (row, item) pairs as sorted int64 codes: membership by isin, no dense (B, n_items) mask
        rows, cols = truth.rows(users)
        relevant = rows * self.n_items + cols
        if exclude is not None:
            ex_rows, ex_cols = exclude.rows(users)
            unseen = ~torch.isin(relevant, ex_rows * self.n_items + ex_cols)
            relevant, rows = relevant[unseen], rows[unseen]
        n_relevant = torch.bincount(rows, minlength=len(users))
        keep = n_relevant > 0
        if not bool(keep.any()):
            return
        row_codes = torch.arange(len(users), device=users.device).unsqueeze(1) * self.n_items
        hits = torch.isin(row_codes + top_items, relevant)[keep]  # (B', K)
        n_relevant = n_relevant[keep]
        for k in self.ks:
            for name, values in ranking_metrics(hits, n_relevant, k).items():
                self.sums[f"{name}_at_{k}"] += float(values.sum())
            self.seen[k][top_items[keep, :k].reshape(-1)] = True
        self.n_users += int(keep.sum())

    def result(self) -> dict[str, float]:
        out = {name: total / max(self.n_users, 1) for name, total in self.sums.items()}
        for k in self.ks:
            out[f"coverage_at_{k}"] = float(self.seen[k].sum()) / self.n_items
        return out


def evaluate_ranking(
    score_fn: ScoreFn,
    truth: UserItems,
    exclude: UserItems | None,
    ks: Sequence[int],
    n_items: int,
    chunk_size: int = 2048,
) -> tuple[dict[str, float], int]:
    """Average ranking metrics over users with relevant items; returns (metrics, n_users)."""
    device = truth.indptr.device
    users = torch.nonzero(truth.counts() > 0).squeeze(1).to(device)
    acc = MetricAccumulator(ks, n_items, device)
    for chunk, top_items, _ in topk_chunks(score_fn, users, exclude, max(ks), chunk_size):
        acc.add(chunk, top_items, truth, exclude)
    return acc.result(), acc.n_users


def popularity_scores(item_idx: torch.Tensor, n_items: int) -> ScoreFn:
    """Score every item by its interaction count in the given (training) rows."""
    counts = torch.bincount(item_idx, minlength=n_items).double()
    return lambda users: counts.expand(len(users), -1)
