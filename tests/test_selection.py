"""model.recency=auto and model.reg=auto: candidates raced on validation, the winner refit."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from recmf.data.interactions import Interactions, Vocab
from recmf.data.split import make_split
from recmf.errors import ConfigError
from tests.loggers import Capture

SMALL = ["latent_dim=8", "trainer.max_epochs=12", "patience=3", "progress=none"]


def _drifting(n_users=80, n_items=40, seed=0, late: int = 0) -> Interactions:
    """Each user's first 12 interactions are items of group A (the first half of the catalogue),
    the last 10 of group B: validation and test hold B items only, so weighing the latest
    training rows up (recency) is what ranks them first. ``late``: so many more items, each the
    latest row of a few users (a test row: never in training)."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    users, items, times = [], [], []
    n_items += late
    for u in range(n_users):
        chosen = [*rng.choice(half, 12, replace=False), *(half + rng.choice(half, 10, False))]
        chosen += [n_items - late + u % late] if late and u % 4 == 0 else []
        users += [u] * len(chosen)
        items += chosen
        times += list(range(len(chosen)))
    vocab = Vocab(
        np.array([f"U{u}" for u in range(n_users)], dtype=object),
        np.array([f"I{i}" for i in range(n_items)], dtype=object),
        np.array([""] * n_items, dtype=object),
    )
    n = len(users)
    return Interactions(
        np.array(users, np.int32),
        np.array(items, np.int32),
        np.full(n, np.nan, np.float32),
        np.array(times, np.int64),
        vocab,
    )


def _settings(*overrides: str):
    from recmf.config import compose_settings

    return compose_settings("train", [*SMALL, *overrides])


def test_auto_is_the_default_and_other_words_are_refused_with_a_message():
    cfg = _settings()
    assert (cfg.model.recency, cfg.model.reg) == ("auto", "auto")
    assert _settings("model.recency=3").model.recency == 3.0
    assert _settings("split=random").model.recency == 0.0  # no recency stage at random
    for override, key in [("model.recency=fast", "model.recency"), ("model.reg=-1", "model.reg")]:
        with pytest.raises(ConfigError) as err:
            _settings(override)
        message = str(err.value)
        assert message.startswith(f"{key} must be a number >= 0 or auto") and "Pass e.g." in message


@pytest.mark.slow  # two plain runs and two races: ~4.5 s of the quick suite
@pytest.mark.parametrize("init", ["random", "svd"])
def test_a_raced_candidate_follows_the_plain_run_it_stands_for(init, tmp_path):
    """A candidate of the race starts from the plain run's initialisation (model.init's) and
    sees its batches: its validation curve is the plain run's (up to the rounding of batched
    products)."""
    from recmf.train.fitting import fit_select_refit, quiet_lightning
    from recmf.train.selection import _race

    quiet_lightning()
    split = make_split(_drifting(), "temporal", 0.2, 0.2, seed=0)
    cfg = _settings("model.recency=auto", "model.reg=0.08", "refit=false", f"model.init={init}")
    trials = _race(cfg, split, False, [], [(0.0, 0.08, False), (4.0, 0.08, False)], None)
    plain = fit_select_refit(
        _settings("model.recency=4", "model.reg=0.08", "refit=false", f"model.init={init}"),
        split, False, tmp_path,
    )  # fmt: skip
    raced = trials[1]
    assert raced.epoch == plain.best_epoch
    assert raced.val == pytest.approx(plain.best_val, abs=2e-3)
    assert trials[0].val < raced.val  # the data is built so that recency matters


@pytest.mark.parametrize("init, prune", [("random", 0.85), ("svd", 0.95)])
def test_a_race_from_the_svd_start_stops_trailing_candidates_sooner(init, prune, monkeypatch):
    """From the SVD start curves begin near their level, so a stalled candidate below 95% of the
    leader stops; from the random start they cross late, so only one below 85% does."""
    import recmf.model.race as race
    from recmf.train.fitting import quiet_lightning
    from recmf.train.selection import _race

    used = []

    class Built(Exception):  # the race as built is all this needs: no fit
        pass

    class Recorded(race.RaceLitModule):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            used.append(self.prune)
            raise Built

    monkeypatch.setattr(race, "RaceLitModule", Recorded)
    quiet_lightning()
    split = make_split(_drifting(), "temporal", 0.2, 0.2, seed=0)
    with pytest.raises(Built):
        _race(
            _settings(f"model.init={init}"),
            split,
            False,
            [],
            [(0.0, 0.08, False), (4.0, 0.08, False)],
            None,
        )
    assert used == [prune]


def test_auto_chooses_on_validation_and_the_model_is_the_winner_refit(tmp_path):
    from recmf.train.fitting import fit_select_refit, quiet_lightning
    from recmf.train.selection import RECENCY_GRID, REG_GRID

    quiet_lightning()
    split = make_split(_drifting(), "temporal", 0.2, 0.2, seed=0)
    logger = Capture()
    fitted = fit_select_refit(_settings(), split, logger, tmp_path)
    trials = fitted.trials
    # first every recency strength at the middle L2, then the other L2 values at the winner
    assert [(t["recency"], t["reg"]) for t in trials[:5]] == [(r, 0.08) for r in RECENCY_GRID]
    first = max(trials[:5], key=lambda t: t["val"])
    # (and, beside them, the winning strength and the next one faded for long histories)
    faded = [r for r in RECENCY_GRID if r >= first["recency"]][:2]
    assert [(t["recency"], t["reg"], t["recency_fade"]) for t in trials[5:]] == [
        *[(first["recency"], g, False) for g in REG_GRID if g != 0.08],
        *[(r, 0.08, True) for r in faded],
    ]
    best = max(trials, key=lambda t: t["val"])
    chosen = {"recency": best["recency"], "reg": best["reg"], "recency_fade": best["recency_fade"]}
    assert fitted.chosen == chosen
    assert fitted.best_val == best["val"] and fitted.best_epoch == best["epoch"]
    assert fitted.chosen["recency"] > 0  # the latest rows are what validation holds
    assert trials[0]["val"] < best["val"] - 0.05  # recency 0: the old group A ranks first
    # the refit trained the winner's settings on train + validation for its selected epochs
    assert fitted.selected_weights is not None and len(fitted.checkpoints) == 2
    # each race epoch logs its validation's time beside its figure, as a plain run does
    epochs = [m for _, m in logger.rows if "val/ndcg_at_10" in m]
    assert epochs and all(m["time/validation_seconds"] > 0 for m in epochs)


def test_items_no_training_row_holds_are_pinned_below_the_rest_and_left_out_of_the_race():
    """An item rated only in users' latest rows (test) is never trained: the race's tables leave
    it out, and the winner, the refit and the model pin it (zero vector, UNTRAINED_BIAS), so
    no user ranks it above an item the model learnt."""
    import torch

    from recmf.model.mf import UNTRAINED_BIAS
    from recmf.train.fitting import fit_select_refit, quiet_lightning
    from recmf.train.selection import _race

    quiet_lightning()
    split = make_split(_drifting(late=2), "temporal", 0.2, 0.2, seed=0)
    late = [40, 41]
    assert not np.isin(late, split.train.item_idx).any() and split.dropped_test == 20
    cfg = _settings("model.reg=0.08")
    trials = _race(cfg, split, False, [], [(0.0, 0.08, False), (4.0, 0.08, False)], None)
    for trial in trials:
        assert torch.equal(trial.state["item_emb.weight"][late], torch.zeros(2, 8))
        assert trial.state["item_bias.weight"][late].eq(UNTRAINED_BIAS).all()
        assert trial.state["item_bias.weight"][:40].gt(-100).all()
    fitted = fit_select_refit(cfg, split, False, Path(tempfile.mkdtemp()))
    state = fitted.model.state_dict()
    for vectors, biases in [
        (fitted.selected_weights["item_emb"], fitted.selected_weights["item_bias"]),  # the winner
        (state["item_emb.weight"].numpy(), state["item_bias.weight"].numpy()),  # refit on it
    ]:
        assert not vectors[late].any()
        assert (biases.ravel()[late] == UNTRAINED_BIAS).all() and (biases.ravel()[:40] > -100).all()
    scores = fitted.model.score_all(torch.arange(80))
    assert (scores[:, late].max() < scores[:, :40].min()).item()


@pytest.mark.slow  # six candidates trained in turn: ~3.8 s of the quick suite
def test_a_random_split_chooses_only_the_l2_and_other_losses_train_candidates_in_turn(
    tmp_path, monkeypatch
):
    import recmf.model.svd_start as svd_start
    from recmf.train.fitting import fit_select_refit, quiet_lightning

    svds = []  # the candidates trained in turn copy one SVD start (the same training pairs)
    original = svd_start.start_from_svd
    monkeypatch.setattr(
        svd_start, "start_from_svd", lambda *a, **k: svds.append(1) or original(*a, **k)
    )

    quiet_lightning()
    split = make_split(_drifting(), "random", 0.2, 0.2, seed=0)
    fitted = fit_select_refit(_settings("split=random", "refit=false"), split, False, tmp_path)
    assert set(fitted.chosen) == {"reg"}  # recency is 0 at random: nothing to choose
    assert [t["recency"] for t in fitted.trials] == [0.0, 0.0, 0.0]
    assert fitted.chosen["reg"] == max(fitted.trials, key=lambda t: t["val"])["reg"]
    split = make_split(_drifting(), "temporal", 0.2, 0.2, seed=0)
    cfg = _settings("loss=bpr", "model.reg=0.08", "trainer.max_epochs=3", "refit=false")
    assert cfg.model.init == "svd"  # auto, with a ranking loss
    svds.clear()
    fitted = fit_select_refit(cfg, split, False, tmp_path / "bpr")
    assert len(svds) == 1
    assert [t["recency"] for t in fitted.trials] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert set(fitted.chosen) == {"recency"}
    best = max(fitted.trials, key=lambda t: t["val"])
    assert fitted.chosen["recency"] == best["recency"] and fitted.best_val == best["val"]


@pytest.mark.slow  # a plain run and a race: ~3 s of the quick suite's 2 minutes
def test_min_delta_stops_a_run_and_a_race_whose_epochs_improve_by_less(tmp_path):
    """An epoch is better only by more than min_delta: with an unreachable one, the plain run and
    each raced candidate stop after patience epochs past their first, and the best epoch is
    still the best one seen."""
    from recmf.train.fitting import fit_select_refit, quiet_lightning
    from recmf.train.selection import _race

    quiet_lightning()
    split = make_split(_drifting(), "temporal", 0.2, 0.2, seed=0)
    keys = ["model.recency=4", "model.reg=0.08", "refit=false", "patience=2"]
    creeping = fit_select_refit(_settings(*keys), split, False, tmp_path / "plain")
    assert creeping.best_epoch > 3  # without min_delta it runs on (12 epochs at most)
    stopped = fit_select_refit(_settings(*keys, "min_delta=1"), split, False, tmp_path / "md")
    assert stopped.best_epoch in (1, 2, 3)
    cfg = _settings("model.recency=auto", "model.reg=0.08", "patience=2", "min_delta=1")
    trials = _race(cfg, split, False, [], [(0.0, 0.08, False), (4.0, 0.08, False)], None)
    for trial in trials:
        assert len(trial.curve) == 3  # epoch 1 sets the bar, 2 and 3 do not clear it by 1
        assert trial.val == max(trial.curve)
