"""``benchmark.py coldstart`` on tiny ml-100k-shaped folders: one where a genre is the popular one,
one where a user's gender decides the genre they watch (for recmf's two towers)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark modes import each other by name

import bench_coldstart as bc  # noqa: E402
import benchmark  # noqa: E402

N_USERS, N_ITEMS, POPULAR_GENRE = 60, 80, 1  # genre flag 1 ("Action") marks the popular items


def _write_ml100k(folder: Path, taste: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every user rates every item of the popular genre and ~10% of the rest; ids start at 1.

    With ``taste``: no genre is popular; women (odd ids) rate the items of genre 1 and men those
    of genre 2 (each item has one of the two), ~70% of them, and ~5% of the others."""
    rng = np.random.default_rng(7)
    popular = np.arange(1, N_ITEMS + 1) % 3 == 0
    genre = 1 + np.arange(1, N_ITEMS + 1) % 2
    rows = []
    for u in range(1, N_USERS + 1):
        for i in range(1, N_ITEMS + 1):
            if taste:
                rated = rng.random() < (0.7 if genre[i - 1] == 2 - u % 2 else 0.05)
            else:
                rated = popular[i - 1] or rng.random() < 0.1
            if rated:
                rows.append(f"{u}\t{i}\t{rng.integers(1, 6)}\t{880000000 + u * 100 + i}")
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    items = []
    for i in range(1, N_ITEMS + 1):
        flags = ["0"] * 19
        if taste:
            flags[genre[i - 1]] = "1"
        else:
            flags[POPULAR_GENRE if popular[i - 1] else 2 + i % 17] = "1"
        date = "" if i == 5 else f"01-Jan-{1950 + (i * 7) % 50}"
        items.append(f"{i}|Film {i} (x)|{date}||http://x/{i}|" + "|".join(flags))
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    jobs = ["writer", "student", "other", "engineer"]
    users = [
        f"{u}|{12 + (u * 5) % 60}|{'MF'[u % 2]}|{jobs[u % 4]}|{10000 + u:05d}"
        for u in range(1, N_USERS + 1)
    ]
    (folder / "u.user").write_text("\n".join(users) + "\n")
    lines = [r.split("\t") for r in rows]
    return np.array([int(r[0]) for r in lines]), np.array([int(r[1]) for r in lines])


def _rule(ids: np.ndarray, seed: int) -> np.ndarray:
    """The issue's draw, written out independently: sorted distinct ids, first ceil(0.2 n)."""
    distinct = np.array(sorted(set(ids.tolist())))
    n = len(distinct)
    return np.sort(distinct[np.random.default_rng(seed).permutation(n)[: math.ceil(n / 5)]])


@pytest.fixture
def ml100k(tmp_path: Path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    users, items = _write_ml100k(folder)
    return folder, users, items


def test_bench_coldstart_metrics_match_hand_computed_list():
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])  # ranked 0 1 2 3; items 0 and 2 are relevant
    relevant = np.array([[True, False, True, False]])
    got = bc.evaluate(scores, relevant)
    assert got["precision_at_10"] == pytest.approx(2 / 10)
    assert got["recall_at_10"] == pytest.approx(1.0)
    assert got["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_bench_coldstart_withholds_by_the_rng0_rule_and_ranks_only_what_it_should(
    ml100k, tmp_path, monkeypatch
):
    folder, users, items = ml100k
    seen = []

    def spy(task: bc.Task, params: dict, seed: int) -> np.ndarray:
        seen.append(task)
        return np.zeros(task.relevant.shape)

    # Two grid points, so the spy is also handed the validation carve-out.
    monkeypatch.setitem(bc.METHODS, "spy", bc.Method(spy, tuple(bc.PROTOCOLS), ({}, {"a": 1})))
    out = tmp_path / "coldstart.json"
    argv = ["coldstart", "--data", str(folder), "--out", str(out), "--seeds", "0", "1"]
    assert benchmark.main([*argv, "--methods", "spy"]) == 0

    held_items, held_users = _rule(items, 0), _rule(users, 0)
    # Per protocol and seed: the carve-out once per grid point, then the test task.
    assert [t.protocol for t in seen] == ["cold_items"] * 6 + ["cold_users"] * 6
    val, test = seen[0], seen[2]
    assert seen[1] is val and seen[3] is val
    assert np.array_equal(test.withheld, held_items)
    assert np.array_equal(test.candidate_id, held_items)  # only the withheld items are ranked
    assert not np.isin(test.train.item_id, held_items).any()
    with_held_rows = np.unique(users[np.isin(items, held_items)])
    assert np.array_equal(test.user_id, with_held_rows)
    assert test.relevant.sum() == np.isin(items, held_items).sum()  # every withheld row counts
    # Tuning: the same draw with rng(1) over the training part's items.
    assert np.array_equal(val.withheld, _rule(test.train.item_id, 1))
    assert len(val.train.item_id) < len(test.train.item_id)

    cold_users = seen[8]
    assert np.array_equal(cold_users.withheld, held_users)
    assert not np.isin(cold_users.train.user_id, held_users).any()
    assert np.array_equal(cold_users.candidate_id, np.unique(items[~np.isin(users, held_users)]))
    assert set(cold_users.user_id) <= set(held_users)

    result = json.loads(out.read_text())
    assert result["withheld"] == {"items": len(held_items), "users": len(held_users)}


def test_bench_coldstart_feature_popularity_finds_the_planted_genre_and_saves_the_shape(
    ml100k, tmp_path
):
    folder, _, _ = ml100k
    out = tmp_path / "coldstart.json"
    argv = ["coldstart", "--data", str(folder), "--out", str(out), "--seeds", "0", "1", "2"]
    references = ["random", "feature popularity", "popularity"]
    assert benchmark.main([*argv, "--methods", *references]) == 0
    result = json.loads(out.read_text())

    assert set(result) == {"cold_items", "cold_users", "seeds", "withheld"}
    assert set(result["cold_items"]) == {"random", "feature popularity"}
    assert set(result["cold_users"]) == {"random", "popularity"}
    metrics = {"precision_at_10", "recall_at_10", "ndcg_at_10"}
    for protocol in ("cold_items", "cold_users"):
        for values in result[protocol].values():
            assert set(values) == metrics
            assert all(0.0 <= v <= 1.0 for v in values.values())
    assert result["seeds"] == [0, 1, 2]
    assert result["withheld"] == {"items": math.ceil(N_ITEMS / 5), "users": N_USERS // 5}
    items = result["cold_items"]
    assert items["feature popularity"]["ndcg_at_10"] > items["random"]["ndcg_at_10"] + 0.2
    users = result["cold_users"]
    assert users["popularity"]["ndcg_at_10"] > users["random"]["ndcg_at_10"] + 0.2


# Two epochs of a small tower: enough for the planted taste, seconds on a CPU.
TINY = [
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "latent_dim=8",
    "model.user_batch_size=4",
    "model.lr=0.05",
]


@pytest.mark.slow  # trains towers twice per protocol
def test_bench_coldstart_recmf_towers_rank_new_items_and_users_by_the_planted_taste(
    tmp_path, monkeypatch
):
    """On the taste folder every genre is as popular as the other, so only a model that reads
    the withheld items' genre (cold items) or the withheld users' gender (cold users) through
    its towers beats the references; and no withheld id reaches training."""
    from recmf.train import fitting

    folder = tmp_path / "ml-100k"
    folder.mkdir()
    users, items = _write_ml100k(folder, taste=True)
    trained = []

    def spy(cfg, split, *args, **kwargs):
        trained.append((cfg, split.train.vocab, kwargs["inputs"]))
        return fit_select_refit(cfg, split, *args, **kwargs)

    shapes = []

    def evaluate(scores, relevant, k=10):
        shapes.append((scores.shape, relevant.shape, bool(np.isfinite(scores).all())))
        return bc_evaluate(scores, relevant, k)

    fit_select_refit, bc_evaluate = fitting.fit_select_refit, bc.evaluate
    monkeypatch.setattr(fitting, "fit_select_refit", spy)
    monkeypatch.setattr(bc, "evaluate", evaluate)
    out = tmp_path / "coldstart.json"
    argv = ["coldstart", "--data", str(folder), "--out", str(out), "--seeds", "0"]
    methods = ["--methods", "recmf (arch=tower)", "random", "feature popularity", "popularity"]
    assert benchmark.main([*argv, *methods, "--tower-overrides", *TINY]) == 0
    result = json.loads(out.read_text())

    assert all(got == want and finite for got, want, finite in shapes)
    (items_cfg, items_vocab, items_x), (users_cfg, users_vocab, users_x) = trained
    assert items_cfg.trainer.max_epochs == 2 and items_cfg.model.name == "tower"
    held_items, held_users = _rule(items, 0), _rule(users, 0)
    assert not set(held_items.astype(str)) & set(items_vocab.item_ids)
    assert not set(held_users.astype(str)) & set(users_vocab.user_ids)
    assert set(items_x.encoders) == {"item"} and set(users_x.encoders) == {"user"}
    assert items_x.encoders["item"].values["genres"] == ["1", "2"]
    assert items_x.x["item"].shape[0] == items_vocab.n_items  # one row per training item

    cold_items, cold_users = result["cold_items"], result["cold_users"]
    tower = "recmf (arch=tower)"
    assert set(cold_items) == {tower, "random", "feature popularity"}
    assert set(cold_users) == {tower, "random", "popularity"}
    for values in (cold_items[tower], cold_users[tower]):
        assert set(values) == {"precision_at_10", "recall_at_10", "ndcg_at_10"}
    assert cold_items[tower]["ndcg_at_10"] > cold_items["feature popularity"]["ndcg_at_10"] + 0.2
    assert cold_items[tower]["ndcg_at_10"] > cold_items["random"]["ndcg_at_10"] + 0.2
    assert cold_users[tower]["ndcg_at_10"] > cold_users["popularity"]["ndcg_at_10"] + 0.2
    assert cold_users[tower]["ndcg_at_10"] > cold_users["random"]["ndcg_at_10"] + 0.2
