"""``benchmark.py rmse``: rating prediction under random k-fold cross-validation (the protocol
rating libraries publish).

Each fold trains with the same fit/select/refit procedure as ``scripts/train.py``: a random
slice of the training folds is held out as validation for early stopping on RMSE, then the model
is refit on all training folds for the selected number of epochs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from bench_common import save

if TYPE_CHECKING:
    from recmf.data.interactions import Interactions
    from recmf.settings import TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("rmse", help="rating prediction under random k-fold cross-validation")
    r.add_argument("--data", required=True, help="a MovieLens-100K folder")
    r.add_argument("--experiment", default="ml100k_rmse")
    r.add_argument("--schema", default="bench_ml100k")
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--seed", type=int, default=0, help="seeds the folds and the models")
    r.add_argument("--workdir", default=".recmf/benchmark")
    r.add_argument("--out", default=None)
    r.add_argument("--max-rmse", type=float, default=None, help="fail above this mean RMSE")
    r.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")


def run(args: argparse.Namespace) -> int:
    """Ingest, cross-validate, print each fold and the mean; 1 above ``--max-rmse``."""
    from recmf import cli
    from recmf.config import compose_settings
    from recmf.data.sources import load_source
    from recmf.store import FeatureStore

    overrides = [
        f"experiment={args.experiment}",
        f"dataset.path={Path(args.data).resolve()}",
        f"db.schema={args.schema}",
        f"seed={args.seed}",
        *args.overrides,
    ]
    cfg = compose_settings("train", overrides)
    with FeatureStore.open(cfg.db) as store:
        cli.run(lambda: store.ingest(load_source(cfg.dataset)))
        data = store.read_interactions()
    t0 = time.perf_counter()
    result = kfold_rmse(data, cfg, n_folds=args.folds, seed=args.seed)
    seconds = time.perf_counter() - t0
    for f in result["folds"]:
        print(
            f"fold {f['fold']}: rmse {f['rmse']:.4f} mae {f['mae']:.4f} "
            f"(val rmse {f['val_rmse']:.4f}, epoch {f['best_epoch']}, "
            f"{f['train_seconds']:.1f} s)",
            flush=True,
        )
    spread = np.std([f["rmse"] for f in result["folds"]])
    print(
        f"\n{args.experiment}, random {args.folds}-fold CV of {len(data)} ratings: "
        f"RMSE {result['rmse']:.4f} (std over folds {spread:.4f}), MAE {result['mae']:.4f}, "
        f"{seconds:.0f} s"
    )
    about = {"experiment": args.experiment, "data": str(args.data), "seconds": seconds}
    save(args, f"rmse-{args.experiment}.json", {**about, **result})
    if args.max_rmse is not None and result["rmse"] > args.max_rmse:
        print(f"RMSE {result['rmse']:.4f} > {args.max_rmse}", file=sys.stderr)
        return 1
    return 0


def kfold_rmse(
    data: Interactions,
    cfg: TrainConfig,
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

    from recmf.data.split import Split
    from recmf.train.fitting import fit_select_refit, quiet_lightning

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
