"""Training: read the store, split, fit (select and refit), log the run; resume an interrupted one.

``recmf.pipeline`` re-exports :func:`train`; the scripts and tests call it from there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from recmf import tracking
from recmf.data.encoding import SideInputs
from recmf.data.interactions import Interactions
from recmf.data.split import make_split
from recmf.errors import ConfigError, TrainingInterrupted
from recmf.eval.split_file import SavedSplit
from recmf.serve.bundle import Bundle
from recmf.settings import TowerConfig, TrainConfig
from recmf.train import resume

log = logging.getLogger("recmf")


@dataclass
class TrainResult:
    run_id: str | None  # None on DDP ranks other than 0
    best_val: float  # validation NDCG@k (RMSE for loss=mse) of the selected epoch
    monitor: str  # which of the two
    best_epoch: int  # epochs trained before the best validation score (1-based)
    train_seconds: float  # fit time, selection and refit, without imports or data loading
    sizes: dict = field(default_factory=dict)
    schema: str | None = None  # the store schema it read
    data_digest: str | None = None  # of the data it read (the run's dataset input)
    selected: dict = field(default_factory=dict)  # model keys chosen on validation (auto)

    def summary(self) -> str:
        chosen = "".join(f", model.{k}={v:g}" for k, v in self.selected.items())
        return (
            f"run {self.run_id}: {self.monitor} {self.best_val:.4f} at epoch {self.best_epoch}"
            f"{chosen}, {self.train_seconds:.1f} s training (store schema {self.schema}, data "
            f"digest {self.data_digest})"
        )


def load_interactions(cfg: TrainConfig) -> tuple[Interactions, dict, dict]:
    """Read the store's interactions (ingesting the configured data set into an empty store),
    its snapshot, and (for ``arch=tower``) the side features of each side."""
    from recmf.data.sources import stream_source
    from recmf.store import FeatureStore

    with FeatureStore.open(cfg.db) as store:
        if store.n_interactions() == 0:
            log.info(
                "store %s (schema %s) is empty: ingesting dataset=%s first",
                store.url_safe,
                store.schema,
                cfg.dataset.name,
            )
            log.info(store.ingest(stream_source(cfg.dataset)).summary())
        t0 = time.perf_counter()
        data = store.read_interactions()
        snapshot = store.snapshot(data)
        snapshot["query"] = store.interactions_query()
        features = {}
        if isinstance(cfg.model, TowerConfig):
            features = {side: store.read_features(side) for side in ("user", "item")}
        log.info("read %d interactions in %.2f s", len(data), time.perf_counter() - t0)
    return data, snapshot, features


CHECKPOINT_ROOT = Path(".recmf/checkpoints")  # per run, kept only while a run can resume


def train(cfg: TrainConfig, resume_point: tuple[str, dict] | None = None) -> TrainResult:
    """Train on the store's data, select the epoch on validation NDCG@k, log everything.

    With ``refit=true`` the model is then retrained on train + validation for the selected
    number of epochs: the held-out test period follows the validation period directly, so
    those interactions are the most informative ones a final model can see.

    SIGINT/SIGTERM stop it after logging the last completed epoch's checkpoint to the run;
    ``resume_point`` (the run id and state :func:`recmf.train.resume.load_point` found, with
    ``cfg`` the run's own settings) continues that run from there.
    """
    resume_run, resume_state = resume_point or (None, None)
    data, snapshot, features = load_interactions(cfg)
    if resume_state and snapshot["content_hash"][:32] != resume_state["digest"]:
        raise ConfigError(
            f"run {resume_run} was trained on data with digest {resume_state['digest']}, but the "
            f"store (schema {snapshot['schema']}) now holds data with digest "
            f"{snapshot['content_hash'][:32]}: resuming would mix two data sets. Train a new run "
            "instead (python scripts/train.py without resume=)."
        )
    from recmf.train.fitting import untimed_split  # torch: imported once the data are read

    untimed_split(cfg, data, f"the store (schema {snapshot['schema']})")
    s = cfg.split
    split = make_split(data, s.kind, s.test_fraction, s.val_fraction, cfg.seed)
    vocab, n_read = data.vocab, len(data)
    inputs = SideInputs.build(vocab, features) if features else None
    del data  # the split holds its own copies; at 20M rows this frees about 0.5 GiB
    if len(split.train) == 0 or len(split.val) == 0:
        raise ConfigError(
            f"the store holds {n_read} interactions of {vocab.n_users} users, too few to hold "
            "out a validation period (each user needs at least 6 interactions with the default "
            "split fractions). Ingest more data or lower split.val_fraction/split.test_fraction."
        )
    from recmf.serve import pyfunc
    from recmf.tracking.models import ServedModel, log_model
    from recmf.train.fitting import StopOnSignal, fit_select_refit, quiet_lightning
    from recmf.train.fold_in_tuning import tune as tune_fold_in

    quiet_lightning()
    logger = tracking.make_logger(cfg.logger, {tracking.KIND_TAG: "train"}, run_id=resume_run)
    main = logger.run_id is not None  # DDP ranks other than 0 log nothing and have no run
    workdir = CHECKPOINT_ROOT / (logger.run_id or f"rank-{os.getpid()}")
    status = "FAILED"
    try:
        if resume_state is None:
            params = tracking.flatten(tracking.safe_config(cfg))
            params.update({f"data.{k}": v for k, v in snapshot.items()})
            params.update({f"split.{k}": v for k, v in split.sizes().items()})
            logger.log_hyperparams(params)
            lineage = {k: v for k, v in snapshot.items() if k != "query"}
            digest = tracking.log_data_input(
                logger,
                lineage,
                tracking.split_profile(split),
                snapshot["query"],
            )
        else:
            digest = resume_state["digest"]
            tracking.tag_run(logger, tracking.INTERRUPTED_TAG, "resumed")
        signals = StopOnSignal()
        restore = signals.install()
        try:
            fitted = fit_select_refit(
                cfg, split, logger, workdir, resume_state, [signals.callback()], inputs
            )
        except TrainingInterrupted as stop:
            if main:
                resume.save_point(cfg, logger, workdir, stop, digest)
            status = "KILLED"
            raise
        finally:
            restore()  # a signal after the last epoch lets the run finish logging its model
        monitor, best_epoch, best_val = fitted.monitor, fitted.best_epoch, fitted.best_val
        if not main:
            return TrainResult(None, best_val, monitor, best_epoch, fitted.seconds, split.sizes())
        # the weights are stored once: in the MLflow model below, not as checkpoints (only an
        # interrupted run keeps its checkpoints, as `resume/` artifacts) nor as a `bundle/`
        with tempfile.TemporaryDirectory(prefix="recmf-") as tmp:
            logger.log_metrics(
                {
                    "best_epoch": best_epoch,
                    f"best_{monitor.replace('/', '_')}": best_val,
                    "train_seconds": fitted.seconds,
                }
            )
            if fitted.chosen:  # model.recency / model.reg = auto: what validation chose, and why
                logger.log_hyperparams({f"selected.model.{k}": v for k, v in fitted.chosen.items()})
                table = Path(tmp) / "selection"
                table.mkdir()
                rows = {"chosen": fitted.chosen, "monitor": monitor, "trials": fitted.trials}
                (table / "selection.json").write_text(json.dumps(rows, indent=2))
                tracking.log_dir(logger, table, "selection")
            meta = {
                "loss": cfg.loss,
                "k": cfg.k,
                "refit": cfg.refit,
                "run_id": logger.run_id,
                "config": tracking.safe_config(cfg),
                "data": snapshot,
                "data_digest": digest,
                "split": split.sizes(),
                "best_epoch": best_epoch,
                "monitor": monitor,
                "best_val": best_val,
                "selected": fitted.chosen,
            }
            encoders = inputs.encoders if inputs is not None else None
            bundle = Bundle.from_model(fitted.model, vocab, split, meta, encoders)
            # fold-in constants for users who arrive after training, chosen on validation
            before_refit = fitted.selected_weights or bundle.weights
            bundle.meta["fold_in"] = tune_fold_in(before_refit, split, cfg.k, seed=cfg.seed)
            logger.log_metrics(
                {f"fold_in_val_ndcg_at_{cfg.k}": bundle.meta["fold_in"][f"val_ndcg_at_{cfg.k}"]}
            )
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            # the interactions stay with the run, for evaluation, and out of the served model
            split_dir = SavedSplit.from_split(split, digest).save(Path(tmp) / "split")
            tracking.log_dir(logger, split_dir, "split")
            in_sweep = bool(os.environ.get(tracking.PARENT_ENV))  # trials are not registered
            model_info = log_model(
                logger.run_id,
                cfg.logger.tracking_uri,
                bundle_dir,
                pyfunc.store_config(replace(cfg.db, schema=snapshot["schema"])),
                None if in_sweep else cfg.registered_model,
                ServedModel(pyfunc.ENTRY, pyfunc.COLUMNS, pyfunc.TYPES, pyfunc.REQUIREMENTS),
            )
        tracking.tag_run(logger, tracking.BUNDLE_TAG, "1")
        shutil.rmtree(workdir, ignore_errors=True)  # only a resume needs them
        status = "FINISHED"
    finally:
        if main:
            tracking.finish_run(logger, status)
    location = tracking.logged_model_location(logger, model_info.model_id)
    tracking.record_finished_run(
        cfg.logger, logger.run_id, snapshot["schema"], tracking.bundle_in_model(location)
    )
    return TrainResult(
        logger.run_id,
        best_val,
        monitor,
        best_epoch,
        fitted.seconds,
        split.sizes(),
        snapshot["schema"],
        digest,
        fitted.chosen,
    )
