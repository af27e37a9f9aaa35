"""The Python API: the README's example runs as written; fit, recommend, evaluate, save, load."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recmf.errors import ConfigError
from tests.scripts import ROOT


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_api_readme_example_runs_and_is_short(tmp_path, monkeypatch):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 15
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # its own assert: loaded == trained
    assert (tmp_path / "my-model" / "bundle" / "weights.npz").is_file()
    recs = scope["model"].recommend(["U1", "NOBODY"], k=5)
    assert list(recs.columns) == ["user_id", "rank", "item_id", "title", "score", "path"]
    assert set(recs.loc[recs.user_id == "NOBODY", "path"]) == {"popularity"}
    metrics = scope["model"].evaluate(ks=[10])
    assert metrics["ndcg_at_10"] > metrics["baseline/ndcg_at_10"]  # planted taste is learned


def _parity_frame(n: int = 40, unseen: int = 4) -> pd.DataFrame:
    """Users like the items of their parity: each has all but ``unseen`` of them, in a seeded
    random time order; the right recommendation for a user is one of their unseen ones."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n):
        liked = [i for i in range(n) if i % 2 == u % 2]
        rng.shuffle(liked)
        rows += [(f"U{u}", f"I{i}", t) for t, i in enumerate(liked[: len(liked) - unseen])]
    return pd.DataFrame(rows, columns=["user", "item", "time"])


@pytest.mark.slow  # ~5 s: the default pytest stays under 2 minutes (the README example is quick)
def test_api_recommends_unseen_items_of_the_users_taste():
    from recmf import api

    df = _parity_frame()
    model = api.fit(df, latent_dim=8, max_epochs=40, loss="bpr", lr=0.05, patience=40)
    for user in ("U0", "U1"):
        recs = model.recommend(user, k=3)
        seen = set(df.loc[df.user == user, "item"])
        assert not seen & set(recs.item_id)
        parity = int(user[1:]) % 2
        assert all(int(item[1:]) % 2 == parity for item in recs.item_id), recs
        assert np.all(np.diff(recs.score.to_numpy()) <= 0)
    assert set(model.recommend("U0", k=3, exclude_seen=False).item_id) <= set(
        f"I{i}" for i in range(0, 40, 2)
    )


@pytest.mark.slow  # ~4 s of training; the quick suite keeps the README example's fit
def test_api_splits_a_frame_without_a_time_column_at_random():
    from recmf import api

    timed = _parity_frame()
    untimed = timed.drop(columns="time")  # its row order is the time order of `timed`
    fits = {
        name: api.fit(df, latent_dim=4, max_epochs=2, loss="bpr", reg=0.01, recency="auto")
        for name, df in (("timed", timed), ("untimed", untimed))
    }
    assert fits["timed"].bundle.meta["split_kind"] == "temporal"
    assert fits["untimed"].bundle.meta["split_kind"] == "random"
    assert "recency" in fits["timed"].bundle.meta["selected"]  # raced on validation
    assert "recency" not in (fits["untimed"].bundle.meta["selected"] or {})  # 0: no time

    def test_rows(model):  # (user, item) held out for test
        test = model.split.test
        return set(zip(test.user_idx.tolist(), test.item_idx.tolist(), strict=True))

    # the same counts held out, but not each user's last rows in file order
    assert len(fits["timed"].split.test) == len(fits["untimed"].split.test)
    assert test_rows(fits["timed"]) != test_rows(fits["untimed"])


@pytest.mark.slow  # trains 40 epochs; the towers' quick tests are in test_towers.py
def test_api_trains_towers_on_item_features_and_ranks_a_new_item_of_the_users_taste():
    """Items' parity is their genre; a features-only item tower learns it, and an item added
    after training (features only) reaches the users of its genre."""
    from recmf import api

    df = _parity_frame()
    genre = lambda i: ("odd",) if int(i[1:]) % 2 else ("even",)  # noqa: E731
    items = pd.DataFrame({"item": sorted(set(df.item))})
    items["genres"] = items.item.map(genre)
    model = api.fit(
        df, arch="tower", id_embeddings=False, item_features=items, latent_dim=8,
        max_epochs=40, loss="bpr", lr=0.05, patience=40,
    )  # fmt: skip
    new = pd.DataFrame({"item": ["NEW_EVEN", "NEW_ODD"], "genres": [("even",), ("odd",)]})
    for user, wanted in (("U0", "NEW_EVEN"), ("U1", "NEW_ODD")):
        recs = model.recommend(user, k=40, item_features=new)
        ranks = dict(zip(recs.item_id, recs["rank"], strict=True))
        assert ranks[wanted] < ranks.get(({"NEW_EVEN", "NEW_ODD"} - {wanted}).pop(), 99)
    with pytest.raises(ConfigError, match="item_features needs a pandas DataFrame with a 'item'"):
        api.fit(df, arch="tower", item_features=pd.DataFrame({"id": ["I1"]}))


def test_api_refuses_a_frame_without_columns_and_bad_values():
    from recmf import api
    from recmf.errors import ConfigError

    with pytest.raises(ConfigError, match="columns user and item"):
        api.fit(pd.DataFrame({"userId": ["a"], "movieId": ["b"]}))
    df = pd.DataFrame({"user": ["a"] * 10, "item": [f"i{j}" for j in range(10)]})
    with pytest.raises(ConfigError, match="model.lr must be a number > 0"):
        api.fit(df, lr=-1)
    with pytest.raises(ConfigError, match="unknown config key 'model.nosuch'"):
        api.fit(df, nosuch=1)
