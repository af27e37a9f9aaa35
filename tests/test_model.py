import lightning as L
import numpy as np
import pytest
import torch

from recmf.data.batches import InteractionsDataModule
from recmf.data.sparse import UserItems
from recmf.eval.ranking import evaluate_ranking, popularity_scores, topk_chunks
from recmf.model.lit_module import MFLitModule
from recmf.model.mf import MatrixFactorization
from recmf.serve.bundle import Bundle
from recmf.serve.recommender import Recommender
from tests.checkerboard import checkerboard


def tiny_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kwargs,
    )


def test_forward_equals_score_all_column():
    torch.manual_seed(0)
    m = MatrixFactorization(7, 11, 4)
    torch.nn.init.normal_(m.item_bias.weight)
    torch.nn.init.normal_(m.user_bias.weight)
    users = torch.tensor([0, 3, 6])
    all_scores = m.score_all(users)
    for row, u in enumerate(users):
        pair = m(u.repeat(11), torch.arange(11))
        assert torch.allclose(pair, all_scores[row], atol=1e-6)


def test_user_items_rows_match_python_loop():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 9, 60), rng.integers(0, 13, 60)
    ui = UserItems.from_pairs(u, i, 9)
    users = torch.tensor([4, 0, 8, 4])
    rows, cols = ui.rows(users)
    got = sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    want = sorted((r, c) for r, user in enumerate(users.tolist()) for c in set(i[u == user]))
    assert got == want


def test_evaluation_chunked_equals_one_chunk_and_excludes_items():
    rng = np.random.default_rng(1)
    n_users, n_items = 30, 25
    emb = torch.randn(n_users, n_items)
    score = lambda users: emb[users]  # noqa: E731
    seen = UserItems.from_pairs(
        rng.integers(0, n_users, 200), rng.integers(0, n_items, 200), n_users
    )
    truth = UserItems.from_pairs(
        rng.integers(0, n_users, 80), rng.integers(0, n_items, 80), n_users
    )
    a, na = evaluate_ranking(score, truth, seen, [5, 10], n_items, chunk_size=4)
    b, nb = evaluate_ranking(score, truth, seen, [5, 10], n_items, chunk_size=1000)
    assert na == nb > 0
    assert a == pytest.approx(b)
    for users, top, _ in topk_chunks(score, torch.arange(n_users), seen, 10, chunk_size=7):
        for row, u in enumerate(users.tolist()):
            excluded = set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
            assert not excluded & set(top[row].tolist())


def test_popularity_ranks_by_count():
    score = popularity_scores(torch.tensor([2, 2, 2, 0, 0, 1]), 4)
    assert score(torch.tensor([0])).argsort(descending=True)[0].tolist()[:3] == [2, 0, 1]


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_checkerboard_top1_is_the_withheld_item(loss, tmp_path):
    split = checkerboard(20)
    L.seed_everything(0, verbose=False)
    model = MatrixFactorization(20, 20, latent_dim=8, init_std=0.1)
    lit = MFLitModule(model, loss, lr=0.1, reg=0.0, k=1)
    batch = 4 if loss == "softmax" else 32
    dm = InteractionsDataModule(split, loss, batch, n_negatives=4, seed=0)
    tiny_trainer(max_epochs=100).fit(lit, dm)
    bundle = Bundle.from_model(model, split.train.vocab, split, {"loss": loss})
    history = {
        f"U{u}": [f"I{i}" for i in split.train.item_idx[split.train.user_idx == u]]
        for u in range(20)
    }
    recs = Recommender(bundle).recommend([f"U{u}" for u in range(20)], 1, history)
    assert [r.items[0].item_id for r in recs] == [f"I{u}" for u in range(20)]


def test_batches_are_the_same_on_every_pass_for_a_seed():
    split = checkerboard(10)
    a = InteractionsDataModule(split, "bpr", 8, 2, seed=3).train_dataloader()
    b = InteractionsDataModule(split, "bpr", 8, 2, seed=3).train_dataloader()
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["users"], y["users"]) and torch.equal(x["negatives"], y["negatives"])
    covered = torch.cat([batch["items"] for batch in a])  # second pass: a new permutation
    assert len(covered) == len(split.train)


def test_mse_learns_additive_ratings(tmp_path):
    # rating = 3 + user effect + item effect: a biased model must fit it far better than the mean
    rng = np.random.default_rng(0)
    split = checkerboard(20)
    train = split.train
    user_fx, item_fx = rng.normal(0, 0.7, 20), rng.normal(0, 0.7, 20)
    rating = (3 + user_fx[train.user_idx] + item_fx[train.item_idx]).astype(np.float32)
    train = type(train)(train.user_idx, train.item_idx, rating, train.timestamp, train.vocab)
    split = type(split)(train, split.val, split.test, 0, 0)
    L.seed_everything(0, verbose=False)
    model = MatrixFactorization(20, 20, latent_dim=4, init_std=0.01)
    lit = MFLitModule(model, "mse", lr=0.05, reg=0.0, k=1)
    dm = InteractionsDataModule(split, "mse", 64, seed=0)
    tiny_trainer(max_epochs=60, limit_val_batches=0).fit(lit, dm)
    with torch.no_grad():
        pred = model(torch.from_numpy(train.user_idx), torch.from_numpy(train.item_idx)).numpy()
    rmse = float(np.sqrt(np.mean((pred - rating) ** 2)))
    assert rmse < 0.25 * float(rating.std())


def test_recommend_returns_what_exists_when_k_exceeds_the_catalogue():
    split = checkerboard(6)
    model = MatrixFactorization(6, 6, 2)
    bundle = Bundle.from_model(model, split.train.vocab, split, {"loss": "bpr"})
    [rec] = Recommender(bundle).recommend(["U0"], 50, {"U0": ["I0", "I2", "NOT-AN-ITEM"]})
    assert len(rec.items) == 4 and {i.item_id for i in rec.items} == {"I1", "I3", "I4", "I5"}
    assert "only 4 of the 6 items" in rec.notes[0]


def test_bundle_round_trip_and_refuses_pickled_arrays(tmp_path):
    split = checkerboard(6)
    torch.manual_seed(0)
    model = MatrixFactorization(6, 6, 3)
    bundle = Bundle.from_model(model, split.train.vocab, split, {"loss": "bpr"})
    loaded = Bundle.load(bundle.save(tmp_path / "b"))
    users = torch.arange(6)
    with torch.no_grad():
        assert torch.allclose(loaded.to_model().score_all(users), model.score_all(users))
    assert loaded.vocab.item_titles.tolist() == bundle.vocab.item_titles.tolist()
    np.savez(tmp_path / "b" / "weights.npz", user_emb=np.array([{"evil": 1}], dtype=object))
    from recmf.serve.bundle import BundleError

    with pytest.raises(BundleError, match="could not be read safely"):
        Bundle.load(tmp_path / "b")


def test_weighted_softmax_loss_ignores_zero_weight_pairs():
    from recmf.model.losses import softmax_loss

    logits = torch.randn(2, 5)
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 4])
    unweighted = softmax_loss(logits, rows, cols)
    assert softmax_loss(logits, rows, cols, torch.ones(3)) == pytest.approx(unweighted.item())
    only_first_two = softmax_loss(logits[:1], rows[:2], cols[:2])
    weighted = softmax_loss(logits, rows, cols, torch.tensor([1.0, 1.0, 0.0]))
    assert weighted.item() == pytest.approx(only_first_two.item())


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("items_major", [True, False])
def test_full_softmax_loss_matches_the_autograd_softmax_in_value_and_gradients(
    use_bias, weighted, items_major, monkeypatch
):
    from recmf.model import losses
    from recmf.model.losses import full_softmax_loss, softmax_loss

    monkeypatch.setattr(losses, "ITEMS_MAJOR", 128 if items_major else 0)  # the scores' layout
    torch.manual_seed(0)
    model = MatrixFactorization(30, 25, 6, use_bias=use_bias).double()
    if use_bias:  # non-zero biases, so that a bias left out of the scores would show
        torch.nn.init.normal_(model.item_bias.weight)
        torch.nn.init.normal_(model.user_bias.weight)
        torch.nn.init.normal_(model.global_bias)
    users = torch.tensor([4, 0, 29, 7])
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 3, 3])
    cols = torch.tensor([3, 24, 3, 0, 1, 2, 9, 3])
    weights = torch.rand(8, dtype=torch.float64) if weighted else None
    params = [p for p in model.parameters()]
    reference = softmax_loss(model.score_all(users), rows, cols, weights)
    ref_grads = torch.autograd.grad(reference, params, allow_unused=True)
    fused = full_softmax_loss(*model.score_parts(users), rows, cols, weights)
    grads = torch.autograd.grad(fused, params, allow_unused=True)
    assert fused.item() == pytest.approx(reference.item(), rel=1e-12)
    for want, got in zip(ref_grads, grads, strict=True):
        want = torch.zeros_like(params[0]) if want is None else want
        got = torch.zeros_like(want) if got is None else got
        assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("items_major", [True, False])
def test_stacked_full_softmax_losses_are_each_models_own_in_value_and_gradients(
    use_bias, weighted, items_major, monkeypatch
):
    from recmf.model import losses
    from recmf.model.losses import full_softmax_loss

    monkeypatch.setattr(losses, "ITEMS_MAJOR", 128 if items_major else 0)  # the scores' layout
    torch.manual_seed(1)
    n_models, users = 3, torch.tensor([4, 0, 29, 7])
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 3, 3])
    cols = torch.tensor([3, 24, 3, 0, 1, 2, 9, 3])
    weights = torch.rand(n_models, 8, dtype=torch.float64) if weighted else None
    models = [MatrixFactorization(30, 25, 6, use_bias=use_bias).double() for _ in range(n_models)]
    parts = [m.score_parts(users) for m in models]  # (u, bu, v, bi) of each
    stacked = [None if parts[0][i] is None else torch.stack([p[i] for p in parts]).detach()
               for i in range(4)]  # fmt: skip
    for x in stacked:
        if x is not None:
            x.requires_grad_(True)
    regs = torch.tensor([0.0, 0.3, 1.1], dtype=torch.float64)  # each model its own L2
    losses = full_softmax_loss(*stacked, rows, cols, weights, regs)
    assert losses.shape == (n_models,)
    # a different weight per model, so that a loss mixing the models' terms would show
    mixing = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    grads = torch.autograd.grad((losses * mixing).sum(), [x for x in stacked if x is not None])
    for j in range(n_models):
        own = [x[j].detach().requires_grad_(True) if x is not None else None for x in stacked]
        w = None if weights is None else weights[j]
        loss = full_softmax_loss(*own, rows, cols, w, regs[j])
        assert losses[j].item() == pytest.approx(loss.item(), rel=1e-12)
        want = torch.autograd.grad(loss * mixing[j], [x for x in own if x is not None])
        for got, expected in zip(grads, want, strict=True):
            assert torch.allclose(got[j], expected, atol=1e-12)


def test_a_race_over_the_catalogue_is_the_full_softmax_race_of_pinned_models():
    """Pinned untrained items (zero vector, UNTRAINED_BIAS) take no probability in a full
    softmax: the race over the catalogue's items alone has its loss, its gradients on the
    trained rows and its validation rankings, and gives back the pinned rows."""
    from recmf.data.sparse import UserItems
    from recmf.model.mf import UNTRAINED_BIAS, Catalogue
    from recmf.model.race import RaceLitModule, StackedMF

    torch.manual_seed(2)
    n_users, n_items = 12, 20
    untrained = torch.tensor([3, 11, 19])
    counts = torch.ones(n_items)
    counts[untrained] = 0
    catalogue = Catalogue.of(counts)
    assert catalogue.items.tolist() == [i for i in range(n_items) if i not in (3, 11, 19)]
    assert Catalogue.of(torch.ones(n_items)) is None  # every item trained: nothing to leave out
    models = [MatrixFactorization(n_users, n_items, 4).double() for _ in range(2)]
    for model in models:
        torch.nn.init.normal_(model.item_bias.weight)
        catalogue.pin(model)
        assert model.item_bias.weight[untrained].eq(UNTRAINED_BIAS).all()
    users = torch.tensor([0, 5, 7, 9])
    rows = torch.tensor([0, 0, 1, 2, 2, 3])
    cols = torch.tensor([0, 4, 18, 2, 12, 4])  # trained items only, as a training part's
    batch = {"users": users, "rows": rows, "cols": cols, "weights": None}
    lits = []
    for cat in (None, catalogue):
        stacked = StackedMF(models, cat)
        lit = RaceLitModule(stacked, ["a", "b"], [0.1, 0.3], k=3, lr=0.01, patience=2)
        lit.log = lambda *args, **kwargs: None
        lit._trainer = type("T", (), {"num_training_batches": 1})()
        lits.append(lit)
    full, restricted = (lit.training_step(batch, 0) for lit in lits)
    assert restricted.item() == pytest.approx(full.item(), rel=1e-12)
    full.backward()
    restricted.backward()
    trained = catalogue.items
    dense, compact = lits[0].model, lits[1].model
    assert torch.allclose(compact.item_emb.grad, dense.item_emb.grad[:, trained], atol=1e-12)
    assert torch.allclose(compact.item_bias.grad, dense.item_bias.grad[:, trained], atol=1e-12)
    assert not dense.item_emb.grad[:, untrained].any()  # no probability, no gradient
    assert torch.allclose(compact.user_emb.grad, dense.user_emb.grad, atol=1e-12)
    # validation ranks the same top items, mapped back to the model's items
    seen = UserItems.from_pairs(users[rows].numpy(), cols.numpy(), n_users)
    truth = UserItems.from_pairs(np.array([0, 5, 7, 9]), np.array([1, 2, 3, 5]), n_users)
    val = {"users": users, "exclude": seen, "truth": truth}
    results = []
    for lit in lits:
        lit.on_validation_epoch_start()
        lit.validation_step(val, 0)
        results.append([acc.result() for acc in lit._accs.values()])
    assert results[0] == results[1]
    for j, model in enumerate(models):  # the pinned rows come back from the compact tables
        state = compact.state_of(j)
        for name, value in model.state_dict().items():
            assert torch.equal(state[name], value), name
    # one model's softmax step (a refit's) over the catalogue: the same loss and gradients
    steps = []
    for cat in (None, catalogue):
        lit = MFLitModule(models[0], "softmax", lr=0.01, reg=0.2, k=3, catalogue=cat)
        lit.log = lambda *args, **kwargs: None
        lit._trainer = type("T", (), {"num_training_batches": 1})()
        loss = lit.training_step(batch, 0)
        steps.append((loss, torch.autograd.grad(loss, list(models[0].parameters()))))
    assert steps[1][0].item() == pytest.approx(steps[0][0].item(), rel=1e-12)
    for a, b in zip(steps[0][1], steps[1][1], strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_a_races_validation_ranks_as_evaluate_each_epoch_with_its_fixed_parts_kept():
    """A race computes each validation chunk's exclusions and relevant items once: as the
    weights move epoch after epoch, and a chunk's users change, every candidate's metrics are
    still those :func:`evaluate_ranking` gives its model (its items in the catalogue's places)."""
    from recmf.model.mf import Catalogue
    from recmf.model.race import RaceLitModule, StackedMF

    torch.manual_seed(4)
    n_users, n_items = 9, 16
    gen = np.random.default_rng(4)
    pairs = gen.choice(n_users * 12, 40, replace=False)  # items 12-15 never trained
    seen = UserItems.from_pairs(pairs // 12, pairs % 12, n_users)
    truth_users, truth_items = gen.integers(0, n_users, 30), gen.integers(0, 12, 30)
    truth = UserItems.from_pairs(truth_users, truth_items, n_users)
    catalogue = Catalogue.of(torch.bincount(torch.from_numpy(pairs % 12), minlength=n_items))
    models = [MatrixFactorization(n_users, n_items, 3).double() for _ in range(2)]
    for model in models:
        torch.nn.init.normal_(model.item_bias.weight)
        catalogue.pin(model)
    lit = RaceLitModule(StackedMF(models, catalogue), ["a", "b"], [0.1, 0.1], k=4, lr=0.01,
                        patience=2)  # fmt: skip
    first, other = torch.tensor([0, 2, 3, 5, 8]), torch.tensor([1, 4, 6, 7])
    for users in (first, first, other, first):
        with torch.no_grad():  # an epoch's training moved the weights
            lit.model.item_emb.add_(torch.randn_like(lit.model.item_emb))
            lit.model.user_emb.add_(torch.randn_like(lit.model.user_emb))
        lit.on_validation_epoch_start()
        lit.validation_step({"users": users, "exclude": seen, "truth": truth}, 0)
        for j, acc in lit._accs.items():
            model = MatrixFactorization(n_users, n_items, 3).double()
            model.load_state_dict(lit.model.state_of(j))
            keep = np.isin(truth_users, users.numpy())  # the validation of this chunk's users
            mine = UserItems.from_pairs(truth_users[keep], truth_items[keep], n_users)
            with torch.no_grad():
                want, n = evaluate_ranking(model.rank_scores, mine, seen, [4], n_items)
            assert acc.n_users == n > 0
            for key in ("ndcg_at_4", "precision_at_4", "recall_at_4"):
                assert acc.result()[key] == pytest.approx(want[key], rel=1e-12), (j, key)


@pytest.mark.parametrize("bias_reg", [0.0, 0.7])
def test_softmax_step_l2_equals_the_per_pair_l2_in_value_and_gradients(bias_reg):
    """The L2 inside the fused softmax (and the counted bias L2) is :meth:`_l2` of the pairs."""
    from recmf.model.losses import full_softmax_loss

    torch.manual_seed(1)
    model = MatrixFactorization(20, 15, 4).double()
    torch.nn.init.normal_(model.user_bias.weight)
    torch.nn.init.normal_(model.item_bias.weight)
    lit = MFLitModule(model, "softmax", lr=0.01, reg=0.3, k=5, bias_reg=bias_reg)
    users = torch.tensor([3, 7, 9, 1])
    rows, cols = torch.tensor([0, 0, 1, 2, 2, 2, 3]), torch.tensor([5, 6, 5, 1, 2, 14, 5])
    batch = {"users": users, "rows": rows, "cols": cols, "weights": None}
    lit.log = lambda *args, **kwargs: None
    lit._trainer = type("T", (), {"num_training_batches": 1})()
    step = lit.training_step(batch, 0)
    want = full_softmax_loss(*model.score_parts(users), rows, cols) + lit._l2(
        users[rows], cols, len(rows)
    )
    params = [p for p in model.parameters()]
    expected = torch.autograd.grad(want, params, allow_unused=True)
    got = torch.autograd.grad(step, params, allow_unused=True)
    assert step.item() == pytest.approx(want.item(), rel=1e-12)
    assert step.item() > full_softmax_loss(*model.score_parts(users), rows, cols).item()
    for w, g in zip(expected, got, strict=True):
        w = torch.zeros_like(g) if w is None else w
        g = torch.zeros_like(w) if g is None else g
        assert torch.allclose(g, w, atol=1e-12)


def test_evaluation_matches_a_python_loop_reference():
    import math

    rng = np.random.default_rng(3)
    n_users, n_items, k = 12, 15, 5
    scores = torch.from_numpy(rng.normal(size=(n_users, n_items)))
    seen_u, seen_i = rng.integers(0, n_users, 40), rng.integers(0, n_items, 40)
    test_u, test_i = rng.integers(0, n_users, 30), rng.integers(0, n_items, 30)
    seen = UserItems.from_pairs(seen_u, seen_i, n_users)
    truth = UserItems.from_pairs(test_u, test_i, n_users)
    got, n = evaluate_ranking(lambda u: scores[u].clone(), truth, seen, [k], n_items, 5)
    precision, ndcg = [], []
    for u in range(n_users):
        excluded = set(seen_i[seen_u == u].tolist())
        relevant = set(test_i[test_u == u].tolist()) - excluded
        if not relevant:
            continue
        ranked = [i for i in np.argsort(-scores[u].numpy()) if i not in excluded][:k]
        hits = [i in relevant for i in ranked]
        precision.append(sum(hits) / k)
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        ndcg.append(dcg / sum(1 / math.log2(p + 2) for p in range(min(k, len(relevant)))))
    assert n == len(precision)
    assert got[f"precision_at_{k}"] == pytest.approx(np.mean(precision))
    assert got[f"ndcg_at_{k}"] == pytest.approx(np.mean(ndcg))


def test_ddp_ranks_take_disjoint_slices_that_cover_each_epoch():
    split = checkerboard(20)  # 180 training interactions: batches of 64, 64 and 52
    loaders = []
    for rank in (0, 1):
        dm = InteractionsDataModule(split, "bpr", 64, 1, seed=5)
        dm.to("cpu", rank=rank, world_size=2)
        loaders.append(dm.train_dataloader())
    batches = [[b["items"] * 100 + b["users"] for b in loader] for loader in loaders]
    assert len(batches[0]) == len(batches[1]) == len(loaders[0]) == 3  # same steps on each rank
    seen = [torch.cat(b).tolist() for b in batches]
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) == len(split.train)


class _TrainerWithoutData:
    """The trainer as a module sealed off from the data module sees it."""

    def __init__(self, trainer: L.Trainer):
        self._trainer = trainer

    def __getattr__(self, name: str):
        if name == "datamodule":
            raise AssertionError("the LightningModule reached into trainer.datamodule")
        return getattr(self._trainer, name)


class _SealedModule(MFLitModule):
    @property
    def trainer(self):
        return _TrainerWithoutData(MFLitModule.trainer.fget(self))

    @trainer.setter
    def trainer(self, trainer):
        MFLitModule.trainer.fset(self, trainer)


@pytest.mark.parametrize("loss", ["bpr", "mse"])
def test_module_reads_only_its_batches_and_validates_like_evaluate(loss):
    split = checkerboard(140)  # 140 validation users: chunks of 64, 64 and 12
    L.seed_everything(0, verbose=False)
    model = MatrixFactorization(140, 140, latent_dim=4, init_std=0.1)
    lit = _SealedModule(model, loss, lr=0.05, reg=0.0, k=5)  # as recmf.train.fitting builds it
    dm = InteractionsDataModule(split, loss, 2048, n_negatives=1, eval_chunk_size=64, seed=0)
    trainer = tiny_trainer(max_epochs=2)
    trainer.fit(lit, dm)
    assert len(dm.val_dataloader()) == 3
    logged = trainer.callback_metrics
    val = split.val
    truth = UserItems.from_pairs(val.user_idx, val.item_idx, 140)
    seen = UserItems.from_pairs(split.train.user_idx, split.train.item_idx, 140)
    with torch.no_grad():
        want, n = evaluate_ranking(model.score_all, truth, seen, [5], 140)
        pred = model(torch.from_numpy(val.user_idx), torch.from_numpy(val.item_idx))
    assert n == 140
    assert logged["val/ndcg_at_5"].item() == pytest.approx(want["ndcg_at_5"])
    if loss == "mse":  # the ratings ride on the first batch only, and cover all of validation
        rmse = float(np.sqrt(np.mean((pred.numpy() - val.rating) ** 2)))
        assert logged["val/rmse"].item() == pytest.approx(rmse, rel=1e-5)
    else:
        assert "val/rmse" not in logged


def test_validation_with_candidates_ranks_only_those_items():
    """``Split.val_candidates``: held-out new items are ranked among themselves."""
    from dataclasses import replace

    split = checkerboard(40)
    rng = np.random.default_rng(0)
    candidates = np.sort(rng.choice(40, 12, replace=False))
    keep = np.isin(split.val.item_idx, candidates)  # validation rows on candidate items only
    split = replace(split, val=split.val.subset(keep), val_candidates=candidates)
    L.seed_everything(0, verbose=False)
    model = MatrixFactorization(40, 40, latent_dim=4, init_std=0.5)
    lit = MFLitModule(model, "bpr", lr=0.05, reg=0.0, k=5)
    dm = InteractionsDataModule(split, "bpr", 2048, eval_chunk_size=16, seed=0)
    logged = tiny_trainer().validate(lit, dm, verbose=False)[0]
    val = split.val
    truth = UserItems.from_pairs(val.user_idx, val.item_idx, 40)
    seen = UserItems.from_pairs(split.train.user_idx, split.train.item_idx, 40)
    mask = torch.zeros(40, dtype=torch.bool)
    mask[torch.from_numpy(candidates)] = True
    with torch.no_grad():
        among, _ = evaluate_ranking(
            lambda u: model.score_all(u).masked_fill(~mask, -torch.inf), truth, seen, [5], 40
        )
        among_all, _ = evaluate_ranking(model.score_all, truth, seen, [5], 40)
    assert logged["val/ndcg_at_5"] == pytest.approx(among["ndcg_at_5"])
    assert among["ndcg_at_5"] != pytest.approx(among_all["ndcg_at_5"])  # the mask mattered


def test_val_users_validates_on_a_seeded_sample_of_the_users_and_only_those():
    """``val_users``: validation ranks that many of its users, the same ones for the same seed
    (the scale benchmark draws ALS's the same way), and its figures are over them alone."""
    split = checkerboard(60)
    val = split.val
    all_users = np.unique(val.user_idx)
    L.seed_everything(0, verbose=False)
    model = MatrixFactorization(60, 60, latent_dim=4, init_std=0.5)
    lit = MFLitModule(model, "bpr", lr=0.05, reg=0.0, k=5)
    drawn = {}
    for seed in (3, 3, 4):
        dm = InteractionsDataModule(split, "bpr", 2048, eval_chunk_size=16, seed=seed, val_users=20)
        drawn.setdefault(seed, []).append(dm.val_dataloader().users.numpy())
    sample = drawn[3][0]
    assert len(sample) == 20 and np.isin(sample, all_users).all()
    assert np.array_equal(sample, np.sort(sample)) and len(np.unique(sample)) == 20
    assert np.array_equal(drawn[3][1], sample) and not np.array_equal(drawn[4][0], sample)
    full = InteractionsDataModule(split, "bpr", 2048, seed=3, val_users=0).val_dataloader()
    assert np.array_equal(full.users.numpy(), all_users)
    assert (
        len(
            InteractionsDataModule(split, "bpr", 2048, seed=3, val_users=999).val_dataloader().users
        )
        == 60
    )

    dm = InteractionsDataModule(split, "bpr", 2048, eval_chunk_size=16, seed=3, val_users=20)
    logged = tiny_trainer().validate(lit, dm, verbose=False)[0]
    keep = np.isin(val.user_idx, sample)
    truth = UserItems.from_pairs(val.user_idx[keep], val.item_idx[keep], 60)
    everyone = UserItems.from_pairs(val.user_idx, val.item_idx, 60)
    seen = UserItems.from_pairs(split.train.user_idx, split.train.item_idx, 60)
    with torch.no_grad():
        want, n = evaluate_ranking(model.score_all, truth, seen, [5], 60)
        over_all, _ = evaluate_ranking(model.score_all, everyone, seen, [5], 60)
    assert n == 20
    assert logged["val/ndcg_at_5"] == pytest.approx(want["ndcg_at_5"])
    assert want["ndcg_at_5"] != pytest.approx(over_all["ndcg_at_5"])  # the sample mattered


def test_rank_scores_are_the_scores_less_each_users_own_bias():
    """Validation ranks by rank_scores: a per-user constant apart from score_all, so each
    user's order of items is the same."""
    torch.manual_seed(0)
    model = MatrixFactorization(30, 50, latent_dim=4)
    with torch.no_grad():
        for table in (model.user_bias.weight, model.item_bias.weight):
            table.normal_()
        model.global_bias.fill_(0.7)
    users = torch.arange(30)
    full, ranked = model.score_all(users), model.rank_scores(users)
    user_part = model.user_bias.weight.view(-1) + model.global_bias
    assert torch.allclose(full - ranked, user_part.view(-1, 1).expand_as(full), atol=1e-5)
    assert not torch.allclose(full, ranked)  # the biases are not zero here
    assert torch.equal(full.argsort(1), ranked.argsort(1))


@pytest.mark.parametrize(
    ("n_items", "k", "masked"),
    [(27027, 10, 0.0), (1000, 10, 0.5), (2000, 10, 0.997), (130, 5, 0.0)],
)
def test_top_k_is_torchs_topk_values_and_items(n_items, k, masked):
    """The two-level top-k returns what torch.topk returns: the same scores and items in the
    same order, with a partial last block, excluded (-inf) items, and too few blocks."""
    from recmf.eval.ranking import top_k

    generator = torch.Generator().manual_seed(n_items)
    scores = torch.randn(300, n_items, generator=generator)
    scores[torch.rand(300, n_items, generator=generator) < masked] = float("-inf")
    values, items = top_k(scores, k)
    expected = torch.topk(scores, k, dim=1)
    assert torch.equal(values, expected.values)
    finite = values > float("-inf")  # which -inf items fill a short row is arbitrary in both
    assert torch.equal(items[finite], expected.indices[finite])
    assert all(len(set(row.tolist())) == k for row in items)  # no item twice


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_the_logged_epoch_loss_is_the_pair_weighted_mean_of_its_steps_logged_once(loss):
    from lightning.pytorch.loggers.logger import Logger

    class Recorder(Logger):
        name, version = "recorder", 0
        rows: list = []

        def log_metrics(self, metrics, step=None):
            self.rows.append(dict(metrics))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    class Steps(MFLitModule):
        seen: list = []

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            n = len(batch["rows"]) if "rows" in batch else len(batch["users"])
            self.seen.append((self.current_epoch, float(loss), n))
            return loss

    split = checkerboard(30)
    L.seed_everything(0, verbose=False)
    lit = Steps(MatrixFactorization(30, 30, latent_dim=4), loss, lr=0.05, reg=0.01, k=5)
    dm = InteractionsDataModule(split, loss, 7 if loss == "softmax" else 64, 1, seed=0)
    recorder = Recorder()
    trainer = L.Trainer(logger=recorder, max_epochs=3, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu", log_every_n_steps=1)  # fmt: skip
    trainer.fit(lit, dm)
    steps = len(dm.train_dataloader())
    assert steps > 2 and len(lit.seen) == 3 * steps  # several unequal batches an epoch
    logged = [row["train/loss"] for row in recorder.rows if "train/loss" in row]
    want = []
    for epoch in range(3):
        losses, ns = zip(*[(v, n) for e, v, n in lit.seen if e == epoch], strict=True)
        assert len(set(ns)) > 1 or loss == "bpr"
        want.append(float(np.dot(losses, ns) / np.sum(ns)))
    assert logged == pytest.approx(want, rel=1e-5)  # one value an epoch: the weighted mean
    keys = {key for row in recorder.rows for key in row}
    assert not any(key.startswith("train/loss_") for key in keys)  # no per-step series
