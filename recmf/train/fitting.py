"""Fit, select the epoch on validation, refit: the training procedure behind every verb.

Kept apart from :mod:`recmf.pipeline` so benchmarks (e.g. rating cross-validation) run the very
same procedure without a store or an MLflow run.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recmf.data.encoding import SideInputs
from recmf.data.interactions import Interactions
from recmf.data.split import Split
from recmf.errors import TrainingInterrupted
from recmf.model.mf import MatrixFactorization
from recmf.settings import TrainConfig
from recmf.train.one_fit import build_model, fit_once, trim_heap


@dataclass
class Fitted:
    model: MatrixFactorization
    monitor: str  # the validation metric that selected the epoch
    best_val: float
    best_epoch: int  # 1-based
    seconds: float  # fit time of selection and refit
    checkpoints: list[Path] = field(default_factory=list)
    # the selected model's arrays before the refit saw validation (None without refit): what
    # validation-based choices made after training (fold-in constants) must be measured on
    selected_weights: dict | None = None
    inputs: SideInputs | None = None  # the encoded side features (two towers)
    # model.recency / model.reg chosen on validation (``auto``) and every candidate tried
    chosen: dict = field(default_factory=dict)
    trials: list[dict] = field(default_factory=list)


def quiet_lightning() -> None:
    import lightning  # noqa: F401  (it sets its loggers' levels on import: import it first)

    for name in ("lightning.pytorch", "lightning.fabric"):  # its per-fit banners and tips
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning-internal deprecation


def untimed_split(cfg: TrainConfig, data, where: str) -> None:
    """Data without a time column (row numbers stand for time) are split at random: their row
    order is not a time order to hold the latest rows out by, nor to weigh recent rows by."""
    if not data.timed and cfg.split.kind == "temporal":
        logging.getLogger(__name__).info(
            "%s holds data without a time column (row order stands for time): split=random, "
            "no recency weighting (a temporal split needs times)",
            where,
        )
        cfg.split_at_random()


def merge_train_val(split: Split) -> Split:
    """Train + validation as the training part, for the refit."""
    tr, va = split.train, split.val
    columns = ("user_idx", "item_idx", "rating", "timestamp")
    joined = Interactions(
        *(np.concatenate([getattr(tr, c), getattr(va, c)]) for c in columns), tr.vocab
    )
    return dataclasses.replace(split, train=joined)


def _every_epoch(directory: Path):
    """``last.ckpt``, rewritten at the end of every epoch (``save_last`` alone only writes it
    when the monitored checkpoint improved)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint(
        dirpath=directory, filename="last", save_top_k=1, enable_version_counter=False
    )


def _existing(path: Path) -> Path | None:
    """``path`` if it exists (an interruption before the first epoch ended saved none)."""
    return path if path.is_file() else None


def _release(lit, rows: int) -> None:
    """Drop the trainer <-> module cycle now, so its datamodule's tensors go before the next
    phase allocates (at 20M rows they are hundreds of MB; ``rows``: the training rows)."""
    lit.trainer = None
    trim_heap(rows)


class StopOnSignal:
    """Turns SIGINT/SIGTERM into a stop between two batches (never inside a checkpoint write or
    a finaliser): the handler only records the signal; :meth:`callback` raises at the next
    batch boundary, which Lightning handles as a graceful interrupt. A second Ctrl+C stops at
    once."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def install(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]

    def callback(self):
        from lightning.pytorch.callbacks import Callback

        owner = self

        class _Check(Callback):
            def _check(self, *args) -> None:
                if owner.received is not None:
                    raise KeyboardInterrupt

            on_train_batch_start = on_train_batch_end = on_validation_batch_end = _check

        return _Check()


def fit_select_refit(
    cfg: TrainConfig,
    split: Split,
    logger,
    workdir: Path,
    resume: dict | None = None,
    extra_callbacks: list | None = None,
    inputs: SideInputs | None = None,
) -> Fitted:
    """Train with early stopping on the validation metric, then (``cfg.refit``) retrain on
    train + validation for the selected number of epochs.

    Every completed epoch leaves ``last.ckpt`` in ``workdir`` (``refit/last.ckpt`` in the refit
    phase): SIGINT/SIGTERM raise :class:`~recmf.errors.TrainingInterrupted`, and ``resume``
    continues from that epoch. The batches of an epoch depend only on the seed and the epoch
    number, so a resumed fit ends where an uninterrupted one would.

    Args:
        cfg: The settings it reads: model, trainer, latent_dim, loss, k, seed, patience,
            refit, progress (the store, logger and data set are not its business).
        split: Train/validation(/test) interactions.
        logger: A Lightning logger, or False.
        workdir: Where checkpoints are written.
        resume: ``{"phase": "train" | "refit", ...}`` of an interrupted fit in ``workdir``.
        extra_callbacks: Lightning callbacks for both phases (e.g. :class:`StopOnSignal`'s).
        inputs: The encoded side features, for ``arch=tower``.
    """
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from recmf.model.lit_module import MFLitModule
    from recmf.train import selection

    monitor, mode = MFLitModule.monitor_for(cfg.loss, cfg.k)
    phase = resume["phase"] if resume else "train"
    if phase == "select":  # a selection keeps no per-epoch state: it runs again
        phase, resume = "train", None
    extra = list(extra_callbacks or [])
    chosen, trials = dict(resume.get("chosen") or {}) if resume else {}, []
    t0 = time.perf_counter()
    lit = None
    if phase == "train" and selection.auto_keys(cfg):
        picked = selection.select(cfg, split, logger, workdir, extra, inputs)
        chosen, trials = picked.values, [t.row() for t in picked.trials]
        best_path, best_val = picked.best_path, picked.best.val
    elif phase == "train":
        ckpt = ModelCheckpoint(dirpath=workdir, filename="best", monitor=monitor, mode=mode)
        stop = EarlyStopping(
            monitor=monitor, mode=mode, patience=cfg.patience, min_delta=cfg.min_delta
        )
        last = _existing(workdir / "last.ckpt") if resume else None
        callbacks = [ckpt, _every_epoch(workdir), stop, *extra]
        lit, _ = fit_once(
            cfg, split, logger, callbacks, cfg.trainer.max_epochs, "train", True, last, inputs
        )
        best_path, best_val = Path(ckpt.best_model_path), float(ckpt.best_model_score)
    else:  # interrupted during the refit: the selection is done and saved
        best_path, best_val = workdir / "best.ckpt", float(resume["best_val"])
    cfg = selection.with_values(cfg, chosen)  # what the refit and the arrays are built with
    seconds = time.perf_counter() - t0
    best = torch.load(best_path, weights_only=True, map_location="cpu")
    best_epoch = int(best["epoch"]) + 1
    checkpoints = [best_path]
    selected, model = None, None
    if lit is not None:
        lit.load_state_dict(best["state_dict"])
        model = lit.model
        _release(lit, len(split.train))
    if cfg.refit:
        selected = _arrays_of(cfg, split, inputs, best["state_dict"])
        t0 = time.perf_counter()
        refit_dir = workdir / "refit"
        last = _existing(refit_dir / "last.ckpt") if phase == "refit" else None
        try:
            lit, trainer = fit_once(
                cfg,
                merge_train_val(split),
                logger,
                [_every_epoch(refit_dir), *extra],
                best_epoch,
                "refit",
                False,
                last,
                inputs,
            )
        except TrainingInterrupted as stop:
            stop.best_val, stop.chosen = best_val, chosen
            raise
        seconds += time.perf_counter() - t0
        checkpoints.append(workdir / "refit.ckpt")
        trainer.save_checkpoint(checkpoints[-1])
        del trainer
        model = lit.model
        _release(lit, len(split.train))
    elif phase == "refit":
        raise ValueError("a refit-phase resume needs cfg.refit")
    elif model is None:  # chosen by a selection, without a refit: the winner is the model
        model = build_model(cfg, split.train.n_users, split.train.n_items, inputs)
        model.load_state_dict(_model_state(best["state_dict"]))
    return Fitted(
        model, monitor, best_val, best_epoch, seconds, checkpoints, selected, inputs,
        chosen, trials,
    )  # fmt: skip


def _arrays_of(cfg: TrainConfig, split: Split, inputs: SideInputs | None, state: dict) -> dict:
    """The dot-product arrays (user_emb, item_emb, biases) of a checkpoint's model."""
    from recmf.serve.bundle import model_arrays

    model = build_model(cfg, split.train.n_users, split.train.n_items, inputs)
    model.load_state_dict(_model_state(state))
    return {k: v.copy() for k, v in model_arrays(model)[0].items()}


def _model_state(state: dict) -> dict:
    """A Lightning checkpoint's state dict as its torch model's."""
    return {k.removeprefix("model."): v for k, v in state.items()}
