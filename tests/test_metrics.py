"""Metric definitions pinned on hand-computed cases."""

import math

import pytest
import torch

from recmf.eval.metrics import (
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

# user 0: hits at ranks 1 and 3 of 5, 4 relevant items; user 1: one relevant item, hit at rank 2
HITS = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
N_REL = torch.tensor([4, 1])


def test_precision_divides_by_k():
    assert precision_at_k(HITS, 5).tolist() == pytest.approx([2 / 5, 1 / 5])
    assert precision_at_k(HITS, 2).tolist() == pytest.approx([1 / 2, 1 / 2])


def test_recall_divides_by_number_of_relevant_items():
    assert recall_at_k(HITS, N_REL, 5).tolist() == pytest.approx([2 / 4, 1.0])
    assert recall_at_k(HITS, N_REL, 1).tolist() == pytest.approx([1 / 4, 0.0])


def test_ndcg_uses_ideal_over_min_k_and_relevant():
    dcg0 = 1 / math.log2(2) + 1 / math.log2(4)
    idcg0 = sum(1 / math.log2(i + 2) for i in range(4))  # min(5, 4) = 4 ideal hits
    dcg1, idcg1 = 1 / math.log2(3), 1.0  # user with fewer test items than K
    assert ndcg_at_k(HITS, N_REL, 5).tolist() == pytest.approx([dcg0 / idcg0, dcg1 / idcg1])
    idcg0_k2 = 1 + 1 / math.log2(3)
    assert ndcg_at_k(HITS, N_REL, 2).tolist() == pytest.approx([1 / idcg0_k2, dcg1])


def test_map_averages_precision_at_hits_over_min_k_and_relevant():
    map0 = (1 / 1 + 2 / 3) / 4
    map1 = (1 / 2) / 1
    assert map_at_k(HITS, N_REL, 5).tolist() == pytest.approx([map0, map1])
    assert map_at_k(HITS, N_REL, 2).tolist() == pytest.approx([(1 / 1) / 2, 1 / 2])


def test_hit_rate_is_any_hit():
    assert hit_rate_at_k(HITS, 1).tolist() == [1.0, 0.0]
    assert hit_rate_at_k(HITS, 2).tolist() == [1.0, 1.0]


def test_perfect_ranking_scores_one():
    hits = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    m = ranking_metrics(hits, torch.tensor([3]), 3)
    assert m["ndcg"].item() == pytest.approx(1.0)
    assert m["map"].item() == pytest.approx(1.0)
    assert m["recall"].item() == pytest.approx(1.0)
    assert m["precision"].item() == pytest.approx(1.0)
