"""Serving what training never saw: new items ranked from their features, new users scored from
theirs (path "features"), items with neither skipped and counted, plain mf unchanged.

The planted data: users of two tastes (user feature ``taste``), items of two genres (item feature
``g``), each user interacting only with items of their taste's genre. The towers are trained
from features alone (``model.id_embeddings=false``), so a new item with an old item's features
must score as that item does, and a new user as an old user of the same taste.
"""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from recmf.data.features import FeatureColumn, RawFeatures
from recmf.data.interactions import Interactions, RawInteractions, Vocab
from recmf.serve.bundle import Bundle
from recmf.serve.cold import NewItems, read_new_items, read_user_features
from recmf.serve.recommender import Recommender
from tests.test_towers import FEATURES_ONLY

N_USERS, N_ITEMS, PER_USER = 120, 60, 12
EVEN = {f"I{i}" for i in range(0, N_ITEMS, 2)}  # genre g0, the taste of even users
ODD = {f"I{i}" for i in range(1, N_ITEMS, 2)}
TOWER = FEATURES_ONLY  # a few seconds on two cores


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def item_features(genres: dict[str, int]) -> RawFeatures:
    values = _objects([(f"g{g}",) for g in genres.values()])
    return RawFeatures("item", _objects(list(genres)), [FeatureColumn("g", "multi", values)])


def user_features(tastes: dict[str, int]) -> RawFeatures:
    values = _objects([f"t{t}" for t in tastes.values()])
    return RawFeatures(
        "user", _objects(list(tastes)), [FeatureColumn("taste", "categorical", values)]
    )


ITEM_GENRES = {f"I{i}": i % 2 for i in range(N_ITEMS)}
USER_TASTES = {f"U{u}": u % 2 for u in range(N_USERS)}


def planted() -> RawInteractions:
    """Each user U<u> has 12 items I<i> with i % 2 == u % 2; both sides' features."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        mine = np.arange(u % 2, N_ITEMS, 2)
        rows += [(f"U{u}", f"I{i}", t) for t, i in enumerate(rng.choice(mine, PER_USER, False))]
    users, items, times = zip(*rows, strict=True)
    return RawInteractions(
        _objects(list(users)),
        _objects(list(items)),
        None,
        np.array(times, dtype=np.int64) + 1_000_000_000,
        item_titles={i: f"Item {i}" for i in ITEM_GENRES},
        item_features=item_features(ITEM_GENRES),
        user_features=user_features(USER_TASTES),
    )


def new_items(features: bool = True) -> NewItems:
    """N0 of genre 0, N1 of genre 1, N2 without features; the features as the store gives
    them: of every item that has some."""
    feats = item_features({**ITEM_GENRES, "N0": 0, "N1": 1}) if features else None
    ids = _objects(["N0", "N1", "N2"])
    return NewItems(ids, _objects(["New 0", "New 1", "New 2"]), feats)


@pytest.fixture(scope="module")
def tower(tmp_path_factory) -> Bundle:
    """A two-tower bundle trained on the planted data (features of both sides)."""
    from recmf.config import compose_settings
    from recmf.data.encoding import SideInputs
    from recmf.data.split import temporal_split
    from recmf.train.fitting import fit_select_refit, quiet_lightning

    raw = planted()
    vocab = Vocab(
        np.array(list(USER_TASTES)), np.array(list(ITEM_GENRES)), np.array(list(ITEM_GENRES))
    )
    data = Interactions(
        vocab.user_idx(raw.user_id.tolist()),
        vocab.item_idx(raw.item_id.tolist()),
        np.full(len(raw), np.nan, np.float32),
        raw.timestamp,
        vocab,
    )
    split = temporal_split(data, 0.2, 0.2)
    inputs = SideInputs.build(vocab, {"item": raw.item_features, "user": raw.user_features})
    cfg = compose_settings("train", TOWER)
    quiet_lightning()
    fitted = fit_select_refit(cfg, split, False, tmp_path_factory.mktemp("tower"), inputs=inputs)
    meta = {"loss": cfg.loss, "k": cfg.k}
    return Bundle.from_model(fitted.model, vocab, split, meta, inputs.encoders)


def _ids(answer) -> list[str]:
    return [item.item_id for item in answer.items]


def test_recommend_ranks_a_new_item_with_features_with_the_known_ones(tower):
    rec = Recommender(tower)
    u0, u1 = rec.recommend(
        ["U0", "U1"], N_ITEMS // 2 + 1, {}, exclude_seen=False, new_items=new_items()
    )
    # the 31 best: every item of the user's genre, and the new item of that genre
    assert set(_ids(u0)) == EVEN | {"N0"} and set(_ids(u1)) == ODD | {"N1"}
    assert (u0.path, u1.path) == ("model", "model")
    (n0,) = [item for item in u0.items if item.item_id == "N0"]
    assert (n0.origin, n0.title) == ("features", "New 0")
    # features alone made I0's embedding too: the new item with I0's features scores as I0
    (i0,) = [item for item in u0.items if item.item_id == "I0"]
    assert n0.score == pytest.approx(i0.score, abs=1e-4)
    skipped = "1 item in the store has neither interactions the model trained on nor features"
    assert any(note.startswith(skipped) for note in u0.notes)


def test_recommend_excludes_a_new_item_the_user_already_has(tower):
    (u0,) = Recommender(tower).recommend(["U0"], 30, {"U0": ["N0"]}, new_items=new_items())
    assert set(_ids(u0)) == EVEN and u0.n_excluded == 1


def test_recommend_scores_a_new_user_with_features_by_the_user_tower(tower):
    people = user_features({**USER_TASTES, "NEW0": 0, "NEW1": 1})
    history = {"NEW0": [], "NEW1": []}  # in the store (their features), no interactions
    new0, new1, u0 = Recommender(tower).recommend(
        ["NEW0", "NEW1", "U0"], N_ITEMS // 2 + 1, history, False, new_items=new_items(),
        user_features=people,
    )  # fmt: skip
    assert [new0.path, new1.path, u0.path] == ["features", "features", "model"]
    assert "user tower" in new0.notes[0]
    # shaped by their features: each newcomer gets their taste's genre, and the taste-0 one
    # scores every item as U0, a taste-0 user the model trained on (from features alone too)
    assert set(_ids(new0)) == EVEN | {"N0"} and set(_ids(new1)) == ODD | {"N1"}
    mine = {item.item_id: item.score for item in new0.items}
    assert mine == pytest.approx({item.item_id: item.score for item in u0.items}, abs=1e-4)


def test_recommend_gives_popularity_to_a_user_with_nothing_and_leaves_new_items_out(tower):
    people = user_features(USER_TASTES)
    nobody, bare = Recommender(tower).recommend(
        ["NOBODY", "BARE"], 5, {"BARE": []}, new_items=new_items(), user_features=people
    )
    assert (nobody.path, bare.path) == ("popularity", "popularity")
    want = sorted(tower.item_count.tolist(), reverse=True)[:5]
    assert [item.score for item in nobody.items] == want
    assert not {"N0", "N1", "N2"} & set(_ids(nobody))
    assert any("cannot be in the popularity ranking" in note for note in nobody.notes)
    assert any("interactions or features" in note for note in bare.notes)


def test_recommend_with_a_plain_bundle_is_unchanged_and_counts_what_it_cannot_rank(tower):
    meta = {k: v for k, v in tower.meta.items() if k != "encoders"}
    plain = Bundle(meta, tower.weights, tower.vocab, tower.item_count)  # mf: no towers
    users, history = ["U0", "U1", "NEW0", "NOBODY"], {"U0": ["I0"], "NEW0": ["I2", "I4"]}
    people = user_features({"NEW0": 0})
    before = Recommender(plain).recommend(users, 10, history)
    after = Recommender(plain).recommend(
        users, 10, history, new_items=new_items(), user_features=people
    )
    assert [(r.path, r.items, r.n_excluded) for r in after] == [
        (r.path, r.items, r.n_excluded) for r in before
    ]
    assert [r.path for r in after] == ["model", "model", "fold-in", "popularity"]
    for b, a in zip(before, after, strict=True):
        (extra,) = [n for n in a.notes if n not in b.notes]
        assert extra.startswith("3 items in the store have no interactions the model trained on")
        assert "no item tower" in extra


def test_recommend_verb_reads_new_items_and_user_features_from_the_store(
    tower, store, db_cfg, tmp_path
):
    """After training, the store gains N0 (features, genre 0), N2 (one interaction, no
    features) and a user NEWU with features only; ``recommend`` ranks N0 for U0, scores NEWU
    through the user tower and counts N2. The store is read again only when items change."""
    from recmf import pipeline
    from recmf.config import compose, settings

    store.ingest(planted())
    first = store.new_items(tower.vocab.item_ids)
    assert first[0].tolist() == [] and store.new_items(tower.vocab.item_ids, first[2]) is None
    store.ingest(
        RawInteractions(
            _objects(["U0"]),
            _objects(["N2"]),
            None,
            np.array([2_000_000_000]),
            item_titles={"N0": "New 0"},
            item_features=item_features({"N0": 0}),
            user_features=user_features({"NEWU": 0}),
        )
    )
    ids, titles, version = store.new_items(tower.vocab.item_ids)
    assert sorted(zip(ids.tolist(), titles.tolist(), strict=True)) == [("N0", "New 0"), ("N2", "")]
    catalogue = read_new_items(store, tower)
    assert read_new_items(store, tower, catalogue) is catalogue  # unchanged: nothing re-read
    history = store.user_history(["U0", "NEWU"])
    assert read_user_features(store, tower, ["U0"], history) is None  # nobody needs them
    assert "NEWU" in read_user_features(store, tower, ["U0", "NEWU"], history).ids.tolist()

    bundle_dir = tower.save(tmp_path / "bundle")
    k = N_ITEMS // 2 - PER_USER + 1  # U0's unseen items of genre 0, and N0
    cfg = compose("recommend", [f"bundle={bundle_dir}", f"db.schema={db_cfg.schema}", f"k={k}"])
    OmegaConf.update(cfg, "db.url", db_cfg.url)
    OmegaConf.update(cfg, "user", ["U0", "NEWU"], merge=False)
    u0, newu = pipeline.recommend(settings(cfg, "recommend")).users
    assert (u0.path, newu.path) == ("model", "features")
    assert set(_ids(u0)) == EVEN - set(history["U0"]) | {"N0"}
    assert u0.n_excluded == PER_USER  # N2, unrankable, is not counted among them
    assert set(_ids(newu)) <= EVEN | {"N0"}
    skipped = "1 item in the store has neither interactions the model trained on nor features"
    assert any(note.startswith(skipped) for note in u0.notes + newu.notes)


def test_api_model_ranks_new_items_and_users_from_the_features_it_is_given(tower):
    from recmf.api import Model

    empty = np.array([], dtype=np.int64)
    model = Model(tower, (empty, empty), None)  # a training run's bundle, no store
    frame = model.recommend(
        ["U0", "NEW1"],
        k=N_ITEMS // 2 + 1,
        exclude_seen=False,
        item_features=item_features({**ITEM_GENRES, "N0": 0, "N1": 1}),
        user_features=user_features({"NEW1": 1}),
    )
    by_user = {u: set(rows["item_id"]) for u, rows in frame.groupby("user_id")}
    assert by_user == {"U0": EVEN | {"N0"}, "NEW1": ODD | {"N1"}}
    assert dict(zip(frame["user_id"], frame["path"], strict=True)) == {
        "U0": "model",
        "NEW1": "features",
    }


def test_served_model_reads_new_items_again_when_items_change_or_at_refresh(
    tower, store, db_cfg, tmp_path, monkeypatch
):
    """The pyfunc keeps the new items per process: an added item is ranked at the next
    request; features given later to an item already stored, after REFRESH_S."""
    from recmf.serve import pyfunc

    monkeypatch.delenv("RECMF_DATABASE_URL", raising=False)
    store.ingest(planted())
    model = pyfunc.RecmfModel()
    config = {"url": db_cfg.url, "schema": db_cfg.schema, "data_dir": db_cfg.data_dir}
    model.load(str(tower.save(tmp_path / "bundle")), {"db": config})
    unseen = EVEN - set(store.user_history(["U0"])["U0"])  # 18 items of U0's genre
    k = len(unseen) + 1
    try:
        assert len(set(model.predict(["U0"], k, True)["item_id"]) - unseen) == 1  # a genre-1 item
        late = _objects(["U1"]), _objects(["N2"]), None, np.array([2_000_000_000])
        store.ingest(RawInteractions(*late, item_features=item_features({"N0": 0})))
        answer = model.predict(["U0"], k, True)
        assert set(answer["item_id"]) == unseen | {"N0"}
        assert answer["note"].str.contains("1 item in the store has neither").all()
        none = _objects([]), _objects([]), None, np.array([], dtype=np.int64)
        store.ingest(RawInteractions(*none, item_features=item_features({"N2": 0})))
        assert "N2" not in set(model.predict(["U0"], k + 1, True)["item_id"])  # kept
        monkeypatch.setattr(pyfunc, "REFRESH_S", -1.0)
        assert set(model.predict(["U0"], k + 1, True)["item_id"]) == unseen | {"N0", "N2"}
    finally:
        model._store.close()
