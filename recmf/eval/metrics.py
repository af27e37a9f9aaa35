"""Top-K ranking metrics, with definitions pinned (see README, "Metric definitions").

All functions take ``hits``: a (n_users, K) boolean tensor, True where the item ranked at that
position is one of the user's relevant items, and ``n_relevant``: (n_users,) counts, > 0.
"""

from __future__ import annotations

import torch

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")


def precision_at_k(hits: torch.Tensor, k: int) -> torch.Tensor:
    """hits in the top k divided by k (not by min(k, |relevant|))."""
    return hits[:, :k].sum(1).double() / k


def recall_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """hits in the top k divided by the user's number of relevant items."""
    return hits[:, :k].sum(1).double() / n_relevant.double()


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(k, device=device, dtype=torch.float64) + 2.0)


def ndcg_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Binary-gain DCG over the ideal DCG of min(k, |relevant|) hits at the top."""
    disc = _discounts(k, hits.device)
    dcg = (hits[:, :k].double() * disc[: hits[:, :k].shape[1]]).sum(1)
    ideal_cum = torch.cumsum(disc, 0)
    idcg = ideal_cum[(torch.clamp(n_relevant, max=k) - 1).long()]
    return dcg / idcg


def map_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over hits of precision at each hit's position, divided by min(k, |relevant|)."""
    h = hits[:, :k].double()
    positions = torch.arange(1, h.shape[1] + 1, device=hits.device, dtype=torch.float64)
    precision_at_hit = torch.cumsum(h, 1) / positions * h
    return precision_at_hit.sum(1) / torch.clamp(n_relevant, max=k).double()


def hit_rate_at_k(hits: torch.Tensor, k: int) -> torch.Tensor:
    """1 where any of the top k is relevant."""
    return hits[:, :k].any(1).double()


def ranking_metrics(
    hits: torch.Tensor, n_relevant: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    """Per-user values of every metric in :data:`METRICS` at cut-off k."""
    return {
        "precision": precision_at_k(hits, k),
        "recall": recall_at_k(hits, n_relevant, k),
        "ndcg": ndcg_at_k(hits, n_relevant, k),
        "map": map_at_k(hits, n_relevant, k),
        "hit_rate": hit_rate_at_k(hits, k),
    }
