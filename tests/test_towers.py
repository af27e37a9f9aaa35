"""Two towers: feature encoding, the model, its export for serving, and training with features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recmf.data.encoding import SideEncoder, SideInputs
from recmf.data.features import FeatureColumn, RawFeatures
from recmf.model.towers import TwoTower


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def item_features() -> RawFeatures:
    return RawFeatures(
        "item",
        np.array(["a", "b", "c", "d"], dtype=object),
        [
            FeatureColumn("genres", "multi", _objects([("x",), ("x", "y"), (), ("z",)])),
            FeatureColumn("kind", "categorical", _objects(["film", None, "show", "film"])),
            FeatureColumn("year", "numeric", np.array([1990.0, 2000.0, np.nan, 2010.0])),
        ],
    )


def test_encoder_one_hot_multi_hot_and_standardised_numbers_with_bins():
    enc = SideEncoder.fit(item_features(), np.array(["a", "b", "c"]))  # d is not trained on
    assert enc.values == {"genres": ["x", "y"], "kind": ["film", "show"]}
    x = enc.encode(item_features(), np.array(["b", "d", "unknown"]))
    genres, kind, year = x[:, 0:2], x[:, 2:4], x[:, 4:]
    assert genres[0] == pytest.approx([1 / np.sqrt(2)] * 2)  # two genres, unit norm
    assert genres[1].tolist() == [0, 0]  # z was never seen in training: no input
    assert kind.tolist() == [[0, 0], [1, 0], [0, 0]]  # unknown kind; film; no features at all
    assert year[0, 0] == pytest.approx(1.0)  # (2000 - 1995) / 5, from a and b's years
    assert year[:, 1].tolist() == [0, 0, 1]  # the missing flag of the id without features
    assert year[0, 2:].sum() == 1 and year[2, 2:].sum() == 0  # one quantile bin when known
    again = SideEncoder.from_json(enc.to_json())
    assert np.array_equal(again.encode(item_features(), np.array(["b"])), x[:1])
    assert enc.has_features(item_features(), np.array(["a", "unknown"])).tolist() == [True, False]


def _tower(id_embeddings=True, layers=(8,)) -> TwoTower:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TwoTower(
        5,
        4,
        6,
        rng.normal(size=(5, 3)).astype(np.float32),
        rng.normal(size=(4, 2)).astype(np.float32),
        id_embeddings=id_embeddings,
        user_layers=list(layers),
        item_layers=[],
        id_dropout=0.5,
    )
    for p in model.parameters():  # away from the near-zero start, so every part matters
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def test_tower_scores_agree_and_export_reproduces_them_with_plain_mf():
    from recmf.model.mf import MatrixFactorization
    from recmf.serve.bundle import model_arrays

    model = _tower()
    users = torch.tensor([0, 3, 4])
    with torch.no_grad():
        all_scores = model.score_all(users)
        pairs = model(users.repeat_interleave(4), torch.arange(4).repeat(3)).view(3, 4)
    assert torch.allclose(all_scores, pairs, atol=1e-5)
    weights, towers = model_arrays(model)
    plain = MatrixFactorization(**model.hparams())
    plain.load_state_dict(
        {
            (k if k == "global_bias" else f"{k}.weight"): torch.from_numpy(v)
            for k, v in weights.items()
        }
    )
    with torch.no_grad():
        assert torch.allclose(plain.score_all(users), all_scores, atol=1e-5)
    assert {"user_w0", "user_b0", "user_w1", "user_b1", "item_w0", "item_fw"} <= set(towers)


def test_numpy_tower_embeds_a_new_entity_as_the_model_does_without_its_id():
    from types import SimpleNamespace

    from recmf.serve.cold import tower_vectors

    model = _tower()
    bundle = SimpleNamespace(towers=model.export()[1])
    x = model.item_x[:2].numpy()
    vectors, biases = tower_vectors(bundle, "item", x)
    with torch.no_grad():
        want = model.towers["item"](model.item_x[:2]).numpy()
        want_bias = model.feature_bias["item"](model.item_x[:2]).squeeze(-1).numpy()
    assert np.allclose(vectors, want, atol=1e-5) and np.allclose(biases, want_bias, atol=1e-5)
    u, bu = tower_vectors(bundle, "user", model.user_x.numpy())  # through the hidden layer
    with torch.no_grad():
        assert np.allclose(u, model.towers["user"](model.user_x).numpy(), atol=1e-5)


def test_id_dropout_only_in_training_and_features_only_model_has_no_id_part():
    model = _tower()
    with torch.no_grad():
        fixed = model.score_all(torch.arange(5))
        assert torch.equal(fixed, model.score_all(torch.arange(5)))  # eval: deterministic
        model.train()
        assert not torch.equal(fixed, model.score_all(torch.arange(5)))  # some ids dropped
    plain = _tower(id_embeddings=False).train()
    assert not plain.item_emb.weight.requires_grad and not plain.item_emb.weight.any()


def test_feature_reg_penalises_the_tower_outputs_of_the_rows_a_step_touches():
    from recmf.model.lit_module import MFLitModule

    model = _tower(id_embeddings=False)
    users, items = torch.tensor([0, 1]), torch.tensor([2, 2, 3])
    with torch.no_grad():
        want = model.towers["user"](model.user_x[users]).pow(2).sum()
        want = want + model.towers["item"](model.item_x[items]).pow(2).sum()
    assert model.tower_norms(users, items).item() == pytest.approx(want.item(), rel=1e-5)
    plain = MFLitModule(model, "bpr", lr=0.01, reg=0.0, k=5)
    reg = MFLitModule(model, "bpr", lr=0.01, reg=0.0, k=5, feature_reg=0.5)
    assert plain._l2(users, items, 4).item() == 0  # the id rows of a features-only model are 0
    assert reg._l2(users, items, 4).item() == pytest.approx(0.5 * want.item() / 4, rel=1e-5)
    reg._l2(users, items, 4).backward()  # and the penalty reaches the towers' weights
    assert model.towers["item"][0].weight.grad.abs().sum() > 0
    with torch.no_grad():  # bias_reg: the feature biases too (a features-only side has no id bias)
        fb = model.feature_bias["user"](model.user_x[users]).pow(2).sum()
        fb = fb + model.feature_bias["item"](model.item_x[items]).pow(2).sum()
    biased = MFLitModule(model, "bpr", lr=0.01, reg=0.0, k=5, bias_reg=0.2)
    assert fb.item() > 0
    assert biased._l2(users, items, 4).item() == pytest.approx(0.2 * fb.item() / 4, rel=1e-5)


FEATURES_ONLY = [  # a small features-only tower, quick to train
    "arch=tower",
    "model.id_embeddings=false",
    "latent_dim=4",
    "trainer.max_epochs=8",
    "trainer.accelerator=cpu",
    "progress=none",
    "refit=false",
    "model.lr=0.05",
]


def _planted(n_users=120, n_items=60, seed=0):
    """Users of two tastes; items of two genres; each user interacts with items of their
    taste's genre. Returns interactions, item features and the genre of each item."""
    from recmf.data.interactions import Interactions, Vocab

    rng = np.random.default_rng(seed)
    genre = np.arange(n_items) % 2
    taste = np.arange(n_users) % 2
    rows = []
    for u in range(n_users):
        mine = np.flatnonzero(genre == taste[u])
        for t, i in enumerate(rng.choice(mine, 12, replace=False)):
            rows.append((u, i, t))
    u, i, t = (np.array(c) for c in zip(*rows, strict=True))
    vocab = Vocab(
        np.array([f"U{k}" for k in range(n_users)]),
        np.array([f"I{k}" for k in range(n_items)]),
        np.full(n_items, ""),
    )
    data = Interactions(u, i, np.full(len(u), np.nan, np.float32), t, vocab)
    names = _objects([("g0",) if g == 0 else ("g1",) for g in genre])
    feats = RawFeatures("item", vocab.item_ids.astype(object), [FeatureColumn("g", "multi", names)])
    return data, feats, genre, taste


def test_trained_towers_put_a_new_item_of_a_users_taste_first(tmp_path):
    """Train features-only towers on a planted split, then embed two items the model never saw
    (one per genre) from their features: each user ranks the one of their taste higher."""
    from types import SimpleNamespace

    from recmf.config import compose_settings
    from recmf.data.split import temporal_split
    from recmf.serve.cold import tower_vectors
    from recmf.train.fitting import fit_select_refit, quiet_lightning

    data, feats, genre, taste = _planted()
    split = temporal_split(data, 0.2, 0.2)
    inputs = SideInputs.build(data.vocab, {"item": feats, "user": None})
    cfg = compose_settings("train", FEATURES_ONLY)
    quiet_lightning()
    fitted = fit_select_refit(cfg, split, False, tmp_path, inputs=inputs)
    weights, towers = fitted.model.export()
    new = RawFeatures("item", np.array(["N0", "N1"], dtype=object),
                      [FeatureColumn("g", "multi", _objects([("g0",), ("g1",)]))])  # fmt: skip
    x = inputs.encoders["item"].encode(new, new.ids)
    vectors, biases = tower_vectors(SimpleNamespace(towers=towers), "item", x)
    scores = weights["user_emb"] @ vectors.T + biases  # (users, 2)
    prefers = scores.argmax(1)
    assert (prefers == taste).mean() > 0.9


def test_report_shows_what_each_feature_value_adds_in_the_item_tower(tmp_path):
    """The value map embeds one entity per value through the trained tower: planted genres
    that users of opposite tastes like land on opposite sides of the first axis."""
    from types import SimpleNamespace

    from recmf.config import compose_settings
    from recmf.data.split import temporal_split
    from recmf.serve.explain import value_map
    from recmf.train.fitting import fit_select_refit, quiet_lightning

    data, feats, _, _ = _planted()
    extra = _objects([("g2",) if i % 5 == 0 else () for i in range(len(feats))])
    feats.columns.append(FeatureColumn("tag", "multi", extra))  # a third value, less telling
    split = temporal_split(data, 0.2, 0.2)
    inputs = SideInputs.build(data.vocab, {"item": feats})
    cfg = compose_settings("train", FEATURES_ONLY)
    quiet_lightning()
    model = fit_select_refit(cfg, split, False, tmp_path, inputs=inputs).model
    bundle = SimpleNamespace(
        towers=model.export()[1], meta={"encoders": {"item": inputs.encoders["item"].to_json()}}
    )
    view = value_map(bundle, "item")
    assert view["labels"] == ["g: g0", "g: g1", "tag: g2"] and view["points"].shape == (3, 2)
    g0, g1 = view["points"][0], view["points"][1]
    assert abs(g0[0] - g1[0]) > abs(g0[1] - g1[1])  # the tastes split along the main axis
    assert value_map(bundle, "user") is None  # no user tower
