"""Fit, select the epoch on validation, refit: the training procedure behind every verb.

Kept apart from :mod:`recmf.pipeline` so benchmarks (e.g. rating cross-validation) run the very
same procedure without a store or an MLflow run.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from recmf.interactions import Interactions
from recmf.model import MatrixFactorization
from recmf.split import Split


@dataclass
class Fitted:
    model: MatrixFactorization
    monitor: str  # the validation metric that selected the epoch
    best_val: float
    best_epoch: int  # 1-based
    seconds: float  # fit time of selection and refit
    checkpoints: list[Path] = field(default_factory=list)


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
    return Split(joined, va, split.test, split.dropped_val, split.dropped_test)


def _fit(
    cfg: DictConfig, split: Split, logger, callbacks, max_epochs: int, prefix: str, validate: bool
):
    """One Lightning fit from a fresh seeded model; returns (lit_module, trainer)."""
    import hydra
    import lightning as L

    from recmf.datamodule import InteractionsDataModule
    from recmf.lit_module import MFLitModule

    m = cfg.model
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = split.train
    model = MatrixFactorization(
        data.n_users, data.n_items, m.latent_dim, use_bias=m.use_bias, init_std=m.init_std
    )
    lit = MFLitModule(
        model,
        m.loss,
        lr=m.lr,
        reg=m.reg,
        k=cfg.k,
        bias_reg=m.bias_reg,
        lr_decay=m.lr_decay,
        log_prefix=prefix,
    )
    batch = m.user_batch_size if m.loss == "softmax" else m.batch_size
    dm = InteractionsDataModule(
        split, m.loss, batch, m.n_negatives, seed=cfg.seed, recency=m.recency
    )
    _trim_heap()
    # the refit phase neither validates nor needs Lightning's default checkpoint in the cwd
    extra = {} if validate else {"limit_val_batches": 0, "enable_checkpointing": False}
    trainer = hydra.utils.instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, max_epochs=max_epochs, **extra
    )
    trainer.fit(lit, dm)
    return lit, trainer


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


def fit_select_refit(cfg: DictConfig, split: Split, logger, workdir: Path) -> Fitted:
    """Train with early stopping on the validation metric, then (``cfg.refit``) retrain on
    train + validation for the selected number of epochs.

    Args:
        cfg: The train config (model, trainer, k, seed, patience, refit).
        split: Train/validation(/test) interactions.
        logger: A Lightning logger, or False.
        workdir: Where checkpoints are written.
    """
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from recmf.lit_module import MFLitModule

    monitor, mode = MFLitModule.monitor_for(cfg.loss, cfg.k)
    ckpt = ModelCheckpoint(dirpath=workdir, filename="best", monitor=monitor, mode=mode)
    stop = EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience)
    t0 = time.perf_counter()
    lit, _ = _fit(cfg, split, logger, [ckpt, stop], cfg.trainer.max_epochs, "train", True)
    seconds = time.perf_counter() - t0
    best = torch.load(ckpt.best_model_path, weights_only=True, map_location="cpu")
    lit.load_state_dict(best["state_dict"])
    best_epoch, best_val = int(best["epoch"]) + 1, float(ckpt.best_model_score)
    checkpoints = [Path(ckpt.best_model_path)]
    _release(lit)
    if cfg.refit:
        t0 = time.perf_counter()
        lit, trainer = _fit(cfg, merge_train_val(split), logger, [], best_epoch, "refit", False)
        seconds += time.perf_counter() - t0
        checkpoints.append(workdir / "refit.ckpt")
        trainer.save_checkpoint(checkpoints[-1])
        del trainer
        _release(lit)
    return Fitted(lit.model, monitor, best_val, best_epoch, seconds, checkpoints)
