"""``model.recency=auto`` and ``model.reg=auto``: choose them on the validation split.

Two stages, each a race of candidates stopped one by one on their own validation NDCG@k:
first the recency strength over :data:`RECENCY_GRID` (temporal splits only: a random holdout
has no recent past to favour), at the middle of :data:`REG_GRID` when ``reg`` is auto too; then
the L2 over :data:`REG_GRID` at the chosen strength (the middle value is the first stage's
winner, not trained twice), and with ``model.recency_fade=auto`` (the softmax only) that
strength and the next one up faded for long histories (:func:`recmf.data.split.recency_weights`)
in the same race. The softmax loss with ``arch=mf`` trains a stage's candidates side by side in
one fit (:mod:`recmf.model.race`); other losses and ``arch=tower`` train them one after the
other. The winner's best epoch and weights then stand for the selection phase of
:func:`recmf.train.fitting.fit_select_refit`, whose refit follows as usual; its time counts as
training time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from recmf.checks import USER_BATCHED
from recmf.data.encoding import SideInputs
from recmf.data.split import Split
from recmf.settings import AUTO, TowerConfig, TrainConfig

# A race stops a stalled candidate whose best is below this share of the leader's (after
# 2 x patience epochs): from the random start curves cross late (ml-latest-small: recency 4 15%
# behind at epoch 7, ahead at 26); from the SVD start they begin near their level, and 0.95 kept
# the winner of every race recorded (19 runs, 12 distinct) with 23-28% fewer candidate-epochs on
# ml-latest-small (0.97 changed two).
PRUNE = {"random": 0.85, "svd": 0.95}
RECENCY_GRID = (0.0, 1.0, 2.0, 4.0, 8.0)  # exp(-r * age): r = 4 favours the latest rows 55x
REG_GRID = (0.04, 0.08, 0.16)  # x2 steps around the default; measured optima 0.08-0.11
SELECTED = ("recency", "reg", "recency_fade")

log = logging.getLogger("recmf")


def auto_keys(cfg: TrainConfig) -> list[str]:
    """The model keys set to ``auto``, in the order they are chosen."""
    return [key for key in SELECTED if getattr(cfg.model, key) == AUTO]


def with_values(cfg: TrainConfig, values: dict[str, float]) -> TrainConfig:
    """``cfg`` with the chosen values in place of ``auto``."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **values))


@dataclass
class Trial:
    recency: float
    reg: float
    val: float  # its best validation NDCG@k
    epoch: int  # at this epoch (1-based)
    state: dict | None = field(default=None, repr=False)  # MatrixFactorization-style weights
    path: Path | None = field(default=None, repr=False)  # or its best checkpoint
    curve: list[float] = field(default_factory=list, repr=False)  # NDCG@k per epoch (raced)
    recency_fade: bool = False  # recency_weights' fade

    @property
    def label(self) -> str:
        return f"recency_{self.recency:g}{'_fade' if self.recency_fade else ''}_reg_{self.reg:g}"

    def row(self) -> dict:
        return {"recency": self.recency, "reg": self.reg, "recency_fade": self.recency_fade,
                "val": self.val, "epoch": self.epoch}  # fmt: skip


@dataclass
class Selection:
    values: dict[str, float]  # the chosen value of each auto key
    best: Trial
    trials: list[Trial]
    best_path: Path  # the winner's weights as a checkpoint the refit and `_arrays_of` read


def select(
    cfg: TrainConfig,
    split: Split,
    logger,
    workdir: Path,
    extra_callbacks: list,
    inputs: SideInputs | None = None,
) -> Selection:
    """Run the stages for ``cfg``'s auto keys; raises TrainingInterrupted as phase ``select``."""
    keys = auto_keys(cfg)
    m = cfg.model
    reg = REG_GRID[len(REG_GRID) // 2] if "reg" in keys else float(m.reg)
    recency = 0.0 if "recency" in keys else float(m.recency)
    fade = False if "recency_fade" in keys else m.recency_fade is True  # auto: off until chosen
    trials: list[Trial] = []
    starts: dict = {}  # the SVD start, computed by the first fit and copied by the others
    if "recency" in keys and cfg.split.kind == "temporal":
        stage = _run(cfg, split, logger, workdir, extra_callbacks, inputs,
                     [(r, reg, fade) for r in RECENCY_GRID], starts=starts)  # fmt: skip
        trials += stage
        recency = _best(stage, _mode(cfg)).recency
    # the L2 values at the chosen strength, and that strength faded for long histories, raced
    todo = [(recency, g, fade) for g in REG_GRID] if "reg" in keys else []
    if "recency_fade" in keys and recency > 0:
        stronger = [r for r in RECENCY_GRID if r > recency][:1]  # fading weakens it: one up too
        todo += [(r, reg, True) for r in (recency, *stronger)]
    done = {(t.recency, t.reg, t.recency_fade): t for t in trials}
    todo = [c for c in todo if c not in done]
    if todo:
        winner = done.get((recency, reg, fade))
        trials += _run(cfg, split, logger, workdir, extra_callbacks, inputs, todo,
                       winner.curve if winner else None, starts)  # fmt: skip
    if not trials:  # recency alone, on a random split: nothing to choose (no recency)
        trials = _run(cfg, split, logger, workdir, extra_callbacks, inputs, [(0.0, reg, fade)],
                      starts=starts)  # fmt: skip
    best = _best(trials, _mode(cfg))
    best_path = workdir / "best.ckpt"
    _save_best(best, best_path)
    values = {key: getattr(best, key) for key in keys}
    return Selection(values, best, trials, best_path)


def _mode(cfg: TrainConfig) -> str:
    from recmf.model.lit_module import MFLitModule

    return MFLitModule.monitor_for(cfg.loss, cfg.k)[1]


def _best(trials: list[Trial], mode: str) -> Trial:
    sign = 1.0 if mode == "max" else -1.0  # NDCG@k up, RMSE (loss=mse) down
    return max(trials, key=lambda t: sign * t.val)  # the first of equals: the grids' order


def _save_best(best: Trial, path: Path) -> None:
    """The winner as the checkpoint a plain selection phase leaves (epoch 0-based, the Lightning
    module's ``model.`` prefix), so the refit and a refit-phase resume read it the same way."""
    import shutil

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if best.state is None:
        if best.path != path:
            shutil.copyfile(best.path, path)
        return
    state = {f"model.{k}": v for k, v in best.state.items()}
    torch.save({"epoch": best.epoch - 1, "state_dict": state}, path)


def _run(
    cfg, split, logger, workdir, extra, inputs, pairs, reference=None, starts=None
) -> list[Trial]:
    t0 = time.perf_counter()
    if cfg.loss in USER_BATCHED and not isinstance(cfg.model, TowerConfig):
        trials = _race(cfg, split, logger, extra, pairs, reference, starts)
    else:
        trials = [_one(cfg, split, workdir, extra, inputs, r, g, f, starts) for r, g, f in pairs]
    log.info(
        "selection on validation (%.1f s): %s",
        time.perf_counter() - t0,
        ", ".join(f"recency {t.recency:g}{' faded' if t.recency_fade else ''} reg {t.reg:g}: "
                  f"{t.val:.4f} at epoch {t.epoch}" for t in trials),
    )  # fmt: skip
    return trials


def _race(
    cfg: TrainConfig, split: Split, logger, extra: list, pairs, reference, starts=None
) -> list[Trial]:
    """One fit of every candidate side by side (:class:`recmf.model.race.RaceLitModule`)."""
    import lightning as L

    from recmf.data.batches import InteractionsDataModule
    from recmf.errors import TrainingInterrupted
    from recmf.model.race import RaceLitModule, StackedMF
    from recmf.train import progress
    from recmf.train.one_fit import (
        build_model,
        catalogue,
        reuse_freed_buffers,
        start_from,
        trainer_arguments,
    )

    m = cfg.model
    data = split.train
    models = []
    for _ in pairs:  # each from the initialisation a plain run with this seed starts from
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        models.append(build_model(cfg, data.n_users, data.n_items, None))
    dm = InteractionsDataModule(
        split, cfg.loss, m.user_batch_size, m.n_negatives, seed=cfg.seed,
        recency=tuple(r for r, _, _ in pairs), val_users=cfg.val_users,
        fade=tuple(f for _, _, f in pairs),
    )  # fmt: skip
    start_from(cfg, models, dm.train_items, starts)  # what fit_once would start each from
    trained = catalogue(cfg, models, dm.train_items)  # as fit_once pins them
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    labels = [Trial(r, g, 0.0, 0, recency_fade=f).label for r, g, f in pairs]
    lit = RaceLitModule(
        StackedMF(models, trained),
        labels,
        [g for _, g, _ in pairs],
        k=cfg.k,
        lr=m.lr,
        patience=cfg.patience,
        min_delta=cfg.min_delta,
        bias_reg=m.bias_reg,
        lr_decay=m.lr_decay,
        prune=PRUNE["svd" if m.init == "svd" else "random"],  # as start_from reads it
        reference=reference,
    )

    # as fit_once: validation's (candidates x users x items) scores, 85 MB on ml-latest-small,
    # were mmapped fresh every epoch (its validation epoch 141 -> 103 ms, a median of 15)
    reuse_freed_buffers()
    shown, bar = progress.callbacks(cfg.progress, cfg.trainer.max_epochs)
    arguments = trainer_arguments(cfg.trainer)
    arguments.update(enable_progress_bar=bar, enable_checkpointing=False)
    trainer = L.Trainer(**arguments, logger=logger, callbacks=[*extra, *shown])
    try:
        trainer.fit(lit, dm)
    except SystemExit:
        if trainer.interrupted:
            raise TrainingInterrupted("select", trainer.current_epoch) from None
        raise
    trials = [
        Trial(
            r,
            g,
            float(b["val"]),
            int(b["epoch"]),
            state=b["state"],
            curve=b.get("curve", []),
            recency_fade=f,
        )
        for (r, g, f), b in zip(pairs, lit.best, strict=True)
    ]
    lit.trainer = None
    return trials


def _one(
    cfg,
    split,
    workdir: Path,
    extra: list,
    inputs,
    recency: float,
    reg: float,
    fade: bool,
    starts=None,
) -> Trial:
    """One candidate's plain selection phase (early stopping on validation), not logged;
    ``starts``: the SVD start's cache (:func:`recmf.train.one_fit.start_from`)."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from recmf.errors import TrainingInterrupted
    from recmf.model.lit_module import MFLitModule
    from recmf.train.one_fit import fit_once

    trial = Trial(recency, reg, 0.0, 0, recency_fade=fade)
    directory = workdir / "select" / trial.label
    monitor, mode = MFLitModule.monitor_for(cfg.loss, cfg.k)
    ckpt = ModelCheckpoint(dirpath=directory, filename="best", monitor=monitor, mode=mode)
    stop = EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience, min_delta=cfg.min_delta)
    try:
        values = {"recency": recency, "reg": reg, "recency_fade": fade}
        fit_once(with_values(cfg, values), split, False,
             [ckpt, stop, *extra], cfg.trainer.max_epochs, "train", True, None, inputs,
             starts)  # fmt: skip
    except TrainingInterrupted as stopped:
        raise TrainingInterrupted("select", stopped.epoch) from None
    import torch

    best = torch.load(ckpt.best_model_path, weights_only=True, map_location="cpu")
    trial.val, trial.epoch = float(ckpt.best_model_score), int(best["epoch"]) + 1
    trial.path = Path(ckpt.best_model_path)
    return trial
