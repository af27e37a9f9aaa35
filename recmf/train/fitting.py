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
from recmf.errors import ConfigError, TrainingInterrupted
from recmf.model.mf import MatrixFactorization
from recmf.settings import TowerConfig, TrainConfig, TrainerConfig
from recmf.train import progress


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


def quiet_lightning() -> None:
    import lightning  # noqa: F401  (it sets its loggers' levels on import: import it first)

    for name in ("lightning.pytorch", "lightning.fabric"):  # its per-fit banners and tips
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning-internal deprecation


def merge_train_val(split: Split) -> Split:
    """Train + validation as the training part, for the refit."""
    tr, va = split.train, split.val
    columns = ("user_idx", "item_idx", "rating", "timestamp")
    joined = Interactions(
        *(np.concatenate([getattr(tr, c), getattr(va, c)]) for c in columns), tr.vocab
    )
    return dataclasses.replace(split, train=joined)


def trainer_arguments(trainer: TrainerConfig) -> dict:
    """``trainer`` as keyword arguments of ``lightning.pytorch.Trainer``."""
    from dataclasses import asdict

    return asdict(trainer)


def build_model(cfg: TrainConfig, n_users: int, n_items: int, inputs: SideInputs | None):
    """A fresh model of ``cfg.model``'s architecture (seed the generators first)."""
    m = cfg.model
    if not isinstance(m, TowerConfig):
        return MatrixFactorization(
            n_users, n_items, cfg.latent_dim, use_bias=m.use_bias, init_std=m.init_std
        )
    from recmf.model.towers import TwoTower

    x = inputs.x if inputs is not None else {}
    if not m.id_embeddings and not x:
        raise ConfigError(
            "arch=tower with model.id_embeddings=false embeds users and items from their side "
            "features alone, but the store holds none. Ingest features (e.g. dataset="
            "movielens-100k reads genres and demographics), or keep model.id_embeddings=true."
        )
    return TwoTower(
        n_users,
        n_items,
        cfg.latent_dim,
        x.get("user"),
        x.get("item"),
        use_bias=m.use_bias,
        init_std=m.init_std,
        id_embeddings=m.id_embeddings,
        user_layers=m.user_layers,
        item_layers=m.item_layers,
        id_dropout=m.id_dropout,
    )


def _fit(
    cfg: TrainConfig,
    split: Split,
    logger,
    callbacks,
    max_epochs: int,
    prefix: str,
    validate: bool,
    ckpt_path: Path | None = None,
    inputs: SideInputs | None = None,
):
    """One Lightning fit from a fresh seeded model; returns (lit_module, trainer)."""
    import lightning as L

    from recmf.data.batches import InteractionsDataModule
    from recmf.model.lit_module import MFLitModule

    m = cfg.model
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = split.train
    model = build_model(cfg, data.n_users, data.n_items, inputs)
    lit = MFLitModule(
        model,
        cfg.loss,
        lr=m.lr,
        reg=m.reg,
        k=cfg.k,
        bias_reg=m.bias_reg,
        lr_decay=m.lr_decay,
        log_prefix=prefix,
        feature_reg=getattr(m, "feature_reg", 0.0),
    )
    batch = m.user_batch_size if cfg.loss == "softmax" else m.batch_size
    dm = InteractionsDataModule(
        split, cfg.loss, batch, m.n_negatives, seed=cfg.seed, recency=m.recency
    )
    _trim_heap()
    extra = {} if validate else {"limit_val_batches": 0}  # the refit phase does not validate
    shown, bar = progress.callbacks(cfg.progress, max_epochs)
    arguments = {**trainer_arguments(cfg.trainer), **extra}
    arguments.update(max_epochs=max_epochs, enable_progress_bar=bar)
    trainer = L.Trainer(
        **arguments,
        logger=logger,
        callbacks=[*callbacks, *shown],
    )
    try:
        trainer.fit(lit, dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl+C (and our SIGTERM) into exit(1)
            raise TrainingInterrupted(prefix, trainer.current_epoch) from None
        raise
    return lit, trainer


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


def _release(lit) -> None:
    """Drop the trainer <-> module cycle now, so its datamodule's tensors go before the next
    phase allocates (at 20M rows they are hundreds of MB)."""
    lit.trainer = None
    _trim_heap()


def _trim_heap() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise:
    building the data module at 20M rows left 70 MB of freed sort temporaries resident)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


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

    monitor, mode = MFLitModule.monitor_for(cfg.loss, cfg.k)
    phase = resume["phase"] if resume else "train"
    extra = list(extra_callbacks or [])
    t0 = time.perf_counter()
    if phase == "train":
        ckpt = ModelCheckpoint(dirpath=workdir, filename="best", monitor=monitor, mode=mode)
        stop = EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience)
        last = _existing(workdir / "last.ckpt") if resume else None
        callbacks = [ckpt, _every_epoch(workdir), stop, *extra]
        lit, _ = _fit(
            cfg, split, logger, callbacks, cfg.trainer.max_epochs, "train", True, last, inputs
        )
        best_path, best_val = Path(ckpt.best_model_path), float(ckpt.best_model_score)
    else:  # interrupted during the refit: the selection is done and saved
        lit = None
        best_path, best_val = workdir / "best.ckpt", float(resume["best_val"])
    seconds = time.perf_counter() - t0
    best = torch.load(best_path, weights_only=True, map_location="cpu")
    best_epoch = int(best["epoch"]) + 1
    checkpoints = [best_path]
    selected = None
    if lit is not None:
        lit.load_state_dict(best["state_dict"])
        _release(lit)
    if cfg.refit:
        selected = _arrays_of(cfg, split, inputs, best["state_dict"])
        t0 = time.perf_counter()
        refit_dir = workdir / "refit"
        last = _existing(refit_dir / "last.ckpt") if phase == "refit" else None
        try:
            lit, trainer = _fit(
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
            stop.best_val = best_val
            raise
        seconds += time.perf_counter() - t0
        checkpoints.append(workdir / "refit.ckpt")
        trainer.save_checkpoint(checkpoints[-1])
        del trainer
        _release(lit)
    elif lit is None:
        raise ValueError("a refit-phase resume needs cfg.refit")
    return Fitted(lit.model, monitor, best_val, best_epoch, seconds, checkpoints, selected, inputs)


def _arrays_of(cfg: TrainConfig, split: Split, inputs: SideInputs | None, state: dict) -> dict:
    """The dot-product arrays (user_emb, item_emb, biases) of a checkpoint's model."""
    from recmf.serve.bundle import model_arrays

    model = build_model(cfg, split.train.n_users, split.train.n_items, inputs)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return {k: v.copy() for k, v in model_arrays(model)[0].items()}
