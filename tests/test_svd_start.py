"""model.init=svd: the truncated SVD start of a matrix factorization, and its validated epoch 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recmf.data.sparse import UserItems
from recmf.model.svd_start import softmax_scale, start_from_svd, truncated_svd


def _planted(n_users=300, n_items=60, rank=3, seed=0) -> UserItems:
    """0/1 interactions drawn from a planted rank-``rank`` taste: a clear spectral gap."""
    rng = np.random.default_rng(seed)
    taste = rng.standard_normal((n_users, rank)) @ rng.standard_normal((rank, n_items))
    chosen = rng.random((n_users, n_items)) < 1 / (1 + np.exp(-(2 * taste - 2)))
    chosen[:, 0] = True  # every user has a row; item 0 is the popular one
    users, items = np.nonzero(chosen)
    return UserItems.from_pairs(users, items, n_users)


def _dense(items: UserItems, n_items: int) -> torch.Tensor:
    x = torch.zeros(items.n_users, n_items)
    rows, cols = items.rows(torch.arange(items.n_users))
    x[rows, cols] = 1.0
    return x


def test_truncated_svd_spans_the_top_singular_vectors_of_the_item_normalised_matrix():
    items, n_items, rank = _planted(), 60, 3
    p, v = truncated_svd(items, n_items, rank, seed=0)
    x = _dense(items, n_items)
    d = x.sum(0).clamp(min=1).pow(-0.5)  # each column scaled by popularity ** -0.5
    exact = torch.linalg.svd(x * d, full_matrices=False).Vh[:rank].T
    # the cosines of the principal angles between the two subspaces
    cosines = torch.linalg.svdvals(exact.T @ v)
    assert cosines.min() > 0.999
    assert torch.allclose(v.T @ v, torch.eye(rank), atol=1e-4)  # orthonormal columns
    assert torch.allclose(p, x @ v, atol=1e-4)  # each user's history projected, unweighted


def _softmax_loss(c: float, p, v, items: UserItems) -> float:
    rows, cols = items.rows(torch.arange(items.n_users))
    logits = c * (p @ v.T)
    return float(-(logits[rows, cols] - torch.logsumexp(logits, 1)[rows]).mean())


def test_softmax_scale_minimises_the_softmax_loss_of_the_training_pairs():
    items, n_items = _planted(), 60
    p, v = truncated_svd(items, n_items, 3, seed=0)
    c = softmax_scale(p, v, items, seed=0)  # 300 users: the sample is all of them
    assert c > 0
    best = _softmax_loss(c, p, v, items)
    for other in (0.5 * c, 0.9 * c, 1.1 * c, 2 * c):
        assert best < _softmax_loss(other, p, v, items)


def test_softmax_scale_leaves_out_items_without_a_pair_as_the_training_softmax_does():
    """Items no training pair holds are out of a full softmax (recmf.model.mf.Catalogue): the
    scale fitted with them in the table is the one fitted without them."""
    items, n_items = _planted(), 60
    p, v = truncated_svd(items, n_items, 3, seed=0)
    alone = softmax_scale(p, v, items, seed=0)
    wider = torch.cat([v, torch.randn(5, 3)])  # five more items, none with a pair
    assert softmax_scale(p, wider, items, seed=0) == pytest.approx(alone, rel=1e-6)


def test_svd_start_gives_scaled_pure_svd_scores_balanced_sides_and_zero_biases():
    from recmf.model.mf import MatrixFactorization

    items, n_items = _planted(n_items=6, rank=2), 6
    torch.manual_seed(0)
    model = MatrixFactorization(items.n_users, n_items, latent_dim=8)  # wider than the matrix
    with torch.no_grad():
        model.item_bias.weight.fill_(1.0)
    random_tail = model.item_emb.weight[:, 6:].detach().clone()
    done = start_from_svd(model, items, seed=0)
    assert done["rank"] == 6  # at most the matrix's rank; the other columns keep their start
    assert torch.equal(model.item_emb.weight[:, 6:], random_tail)
    p, v = truncated_svd(items, n_items, 6, seed=0)
    u, w = model.user_emb.weight[:, :6].detach(), model.item_emb.weight[:, :6].detach()
    assert torch.allclose(u @ w.T, done["scale"] * (p @ v.T), atol=1e-4)
    # the L2 term counts each row once per pair: both sides carry the same count-weighted mass
    per_user, per_item = items.counts().float(), torch.bincount(items.indices.long()).float()
    user_mass, item_mass = per_user @ u.pow(2).sum(1), per_item @ w.pow(2).sum(1)
    assert float(user_mass) == pytest.approx(float(item_mass), rel=1e-4)
    for bias in (model.user_bias.weight, model.item_bias.weight, model.global_bias):
        assert float(bias.abs().max()) == 0.0


def _synthetic_split():
    from recmf.api import _interactions
    from recmf.data.split import make_split
    from recmf.data.synthetic import synthetic

    return make_split(_interactions(synthetic(300, 120, 9000, seed=1)), "temporal", 0.2, 0.2, 0)


def test_a_run_started_from_the_svd_validates_that_start_before_its_first_epoch(tmp_path, caplog):
    """The first validation figure a run logs is the SVD start's own, before any step; the
    epochs follow it and the epoch selection is among the trained epochs."""
    import lightning as L

    from recmf.config import compose_settings
    from recmf.eval.ranking import evaluate_ranking
    from recmf.train.fitting import fit_select_refit, quiet_lightning
    from recmf.train.one_fit import build_model
    from tests.loggers import Capture

    quiet_lightning()
    split = _synthetic_split()
    cfg = compose_settings(
        "train",
        ["latent_dim=8", "model.init=svd", "model.recency=0", "model.reg=0.08", "refit=false",
         "trainer.max_epochs=2", "patience=5", "progress=lines", "model.user_batch_size=32"],
    )  # fmt: skip
    logger = Capture()
    with caplog.at_level("INFO", logger="recmf"):
        fitted = fit_select_refit(cfg, split, logger, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "recmf"]
    assert lines[0].startswith("train start (before epoch 1): val/ndcg_at_10 ")
    assert lines[1].startswith("train epoch 1/2: loss ")
    curve = [(s, m["val/ndcg_at_10"]) for s, m in logger.rows if "val/ndcg_at_10" in m]
    assert len(curve) == 3 and curve[0][0] == 0  # the start, then epochs 1 and 2
    assert "time/validation_seconds" in logger.rows[0][1]
    # the start, rebuilt on its own: the seeded model, then the SVD of the training part
    L.seed_everything(cfg.seed, verbose=False)
    n_users, n_items = split.train.n_users, split.train.n_items
    model = build_model(cfg, n_users, n_items, None)
    train = UserItems.from_pairs(split.train.user_idx, split.train.item_idx, n_users)
    start_from_svd(model, train, cfg.seed)
    val = UserItems.from_pairs(split.val.user_idx, split.val.item_idx, n_users)
    with torch.no_grad():
        expected = evaluate_ranking(model.score_all, val, train, [10], n_items)[0]["ndcg_at_10"]
    assert curve[0][1] == pytest.approx(expected, abs=1e-6)
    assert f"val/ndcg_at_10 {curve[0][1]:.4f}" in lines[0]
    assert fitted.best_val == pytest.approx(max(v for _, v in curve[1:]))
    assert fitted.best_epoch in (1, 2)


def test_a_cached_svd_start_is_computed_once_and_copied_as_it_was(monkeypatch):
    """A selection's second race copies the first race's SVD start (the same training pairs)
    rather than computing it again: the same weights, one SVD."""
    import recmf.model.svd_start as svd_start
    from recmf.config import compose_settings
    from recmf.model.mf import MatrixFactorization
    from recmf.train.one_fit import start_from

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return start_from_svd(*args, **kwargs)

    monkeypatch.setattr(svd_start, "start_from_svd", counted)
    items, n_items = _planted(), 60
    cfg = compose_settings("train", ["latent_dim=4", "model.init=svd"])

    def fresh() -> list[MatrixFactorization]:
        torch.manual_seed(0)
        return [MatrixFactorization(items.n_users, n_items, latent_dim=4) for _ in range(2)]

    cache: dict = {}
    first, second, plain = fresh(), fresh(), fresh()
    start_from(cfg, first, items, cache)
    start_from(cfg, second, items, cache)
    assert len(calls) == 1
    start_from(cfg, plain, items)  # no cache: computed again
    assert len(calls) == 2
    for model in (*first, *second):
        for key, value in plain[0].state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    # the cache holds copies: training a started model does not move the next start
    with torch.no_grad():
        second[0].user_emb.weight.add_(1.0)
    third = fresh()
    start_from(cfg, third, items, cache)
    assert torch.equal(third[0].user_emb.weight, plain[0].user_emb.weight)
