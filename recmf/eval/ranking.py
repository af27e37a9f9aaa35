"""Chunked top-K evaluation: score a chunk of users against all items, mask, ``topk``, compare.

Memory is bounded by ``chunk_size * n_items``; a dense users x items matrix is never built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

from recmf.data.sparse import UserItems
from recmf.eval.metrics import METRICS, ranking_metrics

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
        top_scores, top_items = top_k(scores, min(k, scores.shape[1]))
        yield chunk, top_items, top_scores


BLOCK = 64  # items per block of :func:`top_k`


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k, dim=1)`` (values, indices), exact, in two levels on the CPU: the
    maximum of each block of 64 items, the k blocks with the largest, then the top k among those
    blocks' items and the last, partial block's. Exact because each of the top k items sits in a
    block whose maximum is at least the k-th largest score, and at most k blocks have such a
    maximum (ties aside, which ``torch.topk`` breaks arbitrarily too). 620 users x 27k items:
    28 -> 11 ms (torch's CPU top-k sorts each row partially; the block maxima are one pass)."""
    n_rows, n = scores.shape
    full = n // BLOCK
    if scores.device.type != "cpu" or full < 2 * k or k == 0:
        return torch.topk(scores, k, dim=1)
    maxima = scores[:, : full * BLOCK].view(n_rows, full, BLOCK).amax(2)
    blocks = maxima.topk(k, dim=1).indices  # (rows, k)
    offsets = torch.arange(BLOCK, device=scores.device)
    cols = (blocks.unsqueeze(2) * BLOCK + offsets).view(n_rows, -1)
    if full * BLOCK < n:  # the partial last block: always a candidate
        tail = torch.arange(full * BLOCK, n, device=scores.device).expand(n_rows, -1)
        cols = torch.cat([cols, tail], 1)
    top = scores.gather(1, cols).topk(k, dim=1)
    return top.values, cols.gather(1, top.indices)


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
        self.add_hits(top_items, self.relevance(users, truth, exclude))

    def relevance(self, users: torch.Tensor, truth: UserItems, exclude=None):
        """What :meth:`add_hits` compares a chunk's rankings with (the same for every model
        ranking these users): the relevant (row, item) pairs as sorted int64 codes, so that
        membership is an isin and no dense (B, n_items) mask is built, and each row's count."""
        rows, cols = truth.rows(users)
        relevant = rows * self.n_items + cols
        if exclude is not None:
            ex_rows, ex_cols = exclude.rows(users)
            unseen = ~torch.isin(relevant, ex_rows * self.n_items + ex_cols)
            relevant, rows = relevant[unseen], rows[unseen]
        return relevant, torch.bincount(rows, minlength=len(users))

    def add_hits(self, top_items: torch.Tensor, relevance) -> None:
        """:meth:`add` given the chunk's :meth:`relevance`."""
        relevant, n_relevant = relevance
        keep = n_relevant > 0
        if not bool(keep.any()):
            return
        rows = torch.arange(len(top_items), device=top_items.device)
        hits = torch.isin(rows.unsqueeze(1) * self.n_items + top_items, relevant)[keep]  # (B', K)
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


def beside_popularity(
    score_fn: ScoreFn, truth, seen, seen_items: torch.Tensor, ks, n_items: int, chunk_size: int
) -> tuple[dict[str, float], dict[str, float], int, ScoreFn]:
    """A model's metrics and the popularity ranking's (counts of ``seen_items``) under the same
    exclusions: ``(model, baseline, n_users_evaluated, popularity score function)``."""
    with torch.no_grad():
        model, n_eval = evaluate_ranking(score_fn, truth, seen, ks, n_items, chunk_size)
        pop = popularity_scores(seen_items, n_items)
        baseline, _ = evaluate_ranking(pop, truth, seen, ks, n_items, chunk_size)
    return model, baseline, n_eval, pop


BUCKETS = ("head", "torso", "tail")


def popularity_buckets(item_idx: torch.Tensor, n_items: int) -> torch.Tensor:
    """Bucket of every item, 0 head, 1 torso, 2 tail, by its share of the given interactions.

    Items are ranked by their interaction count in ``item_idx`` (the train + validation rows, as
    for :func:`popularity_scores`), ties broken by item index. Head is the most popular items that
    together hold the first third of the interactions, torso the next third, tail the rest: an
    item goes to the bucket in which its first interaction falls, so the item that crosses a
    third's line belongs to the bucket before it. Items with no interaction are in the tail.
    """
    counts = torch.bincount(item_idx.long(), minlength=n_items).cpu()
    order = torch.sort(-counts, stable=True).indices  # most popular first, ties by index
    before = torch.cumsum(counts[order], 0) - counts[order]  # interactions of the items ahead
    total = int(counts.sum())
    # integers throughout: 3 * before < total is "starts inside the first third", no rounding
    ranked = (3 * before >= total).long() + (3 * before >= 2 * total).long()
    buckets = torch.empty(n_items, dtype=torch.long)
    buckets[order] = ranked
    buckets[counts == 0] = len(BUCKETS) - 1
    return buckets.to(item_idx.device)


class BucketAccumulator:
    """Counts test pairs and their hits per item bucket over chunks; ``result()`` gives rates."""

    def __init__(self, buckets: torch.Tensor, k: int):
        self.buckets, self.k = buckets, k
        n = len(BUCKETS)
        self.pairs = torch.zeros(n, dtype=torch.long, device=buckets.device)
        self.hits = torch.zeros(n, dtype=torch.long, device=buckets.device)

    def add(self, users: torch.Tensor, top_items: torch.Tensor, truth: UserItems, exclude=None):
        """Count a chunk's (user, test item) pairs, and those ranked in the user's top k.

        Pairs whose item the user also has in ``exclude`` cannot be ranked and are not counted.
        """
        n_items = len(self.buckets)
        rows, cols = truth.rows(users)
        codes = rows * n_items + cols  # (pairs,) sorted int64 codes, as in MetricAccumulator
        if exclude is not None:
            ex_rows, ex_cols = exclude.rows(users)
            unseen = ~torch.isin(codes, ex_rows * n_items + ex_cols)
            codes, cols = codes[unseen], cols[unseen]
        row_codes = torch.arange(len(users), device=users.device).unsqueeze(1) * n_items
        hit = torch.isin(codes, (row_codes + top_items[:, : self.k]).reshape(-1))
        bucket = self.buckets[cols.long()]
        self.pairs += torch.bincount(bucket, minlength=len(BUCKETS))
        self.hits += torch.bincount(bucket[hit], minlength=len(BUCKETS))

    def result(self) -> dict[str, dict[str, float]]:
        n_items = torch.bincount(self.buckets, minlength=len(BUCKETS))
        return {
            name: {
                "hit_rate": int(self.hits[b]) / int(self.pairs[b]) if self.pairs[b] else math.nan,
                "n_pairs": int(self.pairs[b]),
                "n_hits": int(self.hits[b]),
                "n_items": int(n_items[b]),
            }
            for b, name in enumerate(BUCKETS)
        }


def bucket_hit_rates(
    score_fn: ScoreFn,
    truth: UserItems,
    exclude: UserItems | None,
    buckets: torch.Tensor,
    k: int,
    chunk_size: int = 2048,
) -> dict[str, dict[str, float]]:
    """Hit rate@k per item popularity bucket (see :func:`popularity_buckets`).

    For each bucket, the share of the test (user, item) pairs whose item is in that bucket that
    appear in that user's top k, the user's ``exclude`` items (train and validation) never ranked
    and pairs with such an item not counted. Memory is bounded by ``chunk_size * n_items``.

    Returns:
        ``{bucket: {"hit_rate", "n_pairs", "n_hits", "n_items"}}`` for head, torso and tail; a
        bucket with no test pair has hit rate NaN.
    """
    users = torch.nonzero(truth.counts() > 0).squeeze(1).to(truth.indptr.device)
    acc = BucketAccumulator(buckets, k)
    for chunk, top_items, _ in topk_chunks(score_fn, users, exclude, k, chunk_size):
        acc.add(chunk, top_items, truth, exclude)
    return acc.result()
