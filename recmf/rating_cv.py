"""Rating prediction under random k-fold cross-validation (the protocol rating libraries publish).

Each fold trains with the same fit/select/refit procedure as ``scripts/train.py``: a random
slice of the training folds is held out as validation for early stopping on RMSE, then the model
is refit on all training folds for the selected number of epochs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from recmf.interactions import Interactions
from recmf.split import Split


def kfold_rmse(
    data: Interactions,
    cfg: DictConfig,
    n_folds: int = 5,
    val_fraction: float = 0.05,
    seed: int = 0,
    max_folds: int | None = None,
) -> dict:
    """RMSE and MAE of ``cfg``'s model on each of ``n_folds`` random folds of the rated rows.

    Predictions are clipped to the observed rating range. ``max_folds`` runs only the first
    folds (for quick tuning on their validation RMSE).
    """
    import torch

    from recmf.fitting import fit_select_refit, quiet_lightning

    quiet_lightning()
    rated = data.subset(~np.isnan(data.rating))
    lo, hi = float(rated.rating.min()), float(rated.rating.max())
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(rated)) % n_folds
    folds = []
    for f in range(min(n_folds, max_folds or n_folds)):
        rest = rng.permutation(np.flatnonzero(fold_of != f))
        n_val = int(len(rest) * val_fraction)
        split = Split(
            rated.subset(np.sort(rest[n_val:])),
            rated.subset(np.sort(rest[:n_val])),
            rated.subset(np.flatnonzero(fold_of == f)),
            0,
            0,
        )
        with tempfile.TemporaryDirectory(prefix="recmf-cv-") as tmp:
            fitted = fit_select_refit(cfg, split, False, Path(tmp))
        test = split.test
        with torch.no_grad():
            pred = fitted.model(torch.from_numpy(test.user_idx), torch.from_numpy(test.item_idx))
        err = np.clip(pred.numpy(), lo, hi) - test.rating
        folds.append(
            {
                "fold": f,
                "rmse": float(np.sqrt(np.mean(err**2))),
                "mae": float(np.mean(np.abs(err))),
                "val_rmse": fitted.best_val,
                "best_epoch": fitted.best_epoch,
                "train_seconds": fitted.seconds,
            }
        )
    return {
        "rmse": float(np.mean([f["rmse"] for f in folds])),
        "mae": float(np.mean([f["mae"] for f in folds])),
        "folds": folds,
    }
