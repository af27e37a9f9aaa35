"""The verbs: ingest, train, evaluate, recommend; each takes a DictConfig, returns a result.

This is the one place that instantiates config groups and injects what depends on the data
(``n_users``, ``n_items``). Lightning and MLflow are imported inside the verbs that need them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from recmf import checks, tracking
from recmf.bundle import Bundle
from recmf.errors import ConfigError, TrainingInterrupted
from recmf.interactions import Interactions
from recmf.split import temporal_split

log = logging.getLogger("recmf")


@dataclass
class TrainResult:
    run_id: str | None  # None on DDP ranks other than 0
    best_val: float  # validation NDCG@k (RMSE for loss=mse) of the selected epoch
    monitor: str  # which of the two
    best_epoch: int  # epochs trained before the best validation score (1-based)
    train_seconds: float  # fit time, selection and refit, without imports or data loading
    sizes: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"run {self.run_id}: {self.monitor} {self.best_val:.4f} at epoch {self.best_epoch}, "
            f"{self.train_seconds:.1f} s training"
        )


def ingest(cfg: DictConfig):
    """Add ``cfg.dataset`` to the store of ``cfg.db``; see :func:`recmf.ingest.run_ingest`."""
    from recmf.ingest import run_ingest

    return run_ingest(cfg)


def load_interactions(cfg: DictConfig) -> tuple[Interactions, dict]:
    """Read the store's interactions (ingesting the configured data set into an empty store)."""
    from recmf.datasets import load_source
    from recmf.store import FeatureStore

    with FeatureStore.open(cfg.db) as store:
        if store.n_interactions() == 0:
            log.info(
                "store %s (schema %s) is empty: ingesting dataset=%s first",
                store.url_safe,
                store.schema,
                cfg.dataset.name,
            )
            log.info(store.ingest(load_source(cfg.dataset)).summary())
        t0 = time.perf_counter()
        data = store.read_interactions()
        snapshot = store.snapshot(data)
        snapshot["query"] = store.interactions_query()
        log.info("read %d interactions in %.2f s", len(data), time.perf_counter() - t0)
    return data, snapshot


def _check_train_cfg(cfg: DictConfig) -> None:
    checks.positive_int("k", cfg.k)
    checks.positive_int("latent_dim", cfg.latent_dim, "Pass e.g. latent_dim=32.")
    checks.loss_name(cfg.loss)
    checks.positive_int("trainer.max_epochs", cfg.trainer.max_epochs)


CHECKPOINT_ROOT = Path(".recmf/checkpoints")  # per run, kept only while a run can resume


def train(cfg: DictConfig) -> TrainResult:
    """Train on the store's data, select the epoch on validation NDCG@k, log everything.

    With ``refit=true`` the model is then retrained on train + validation for the selected
    number of epochs: the held-out test period follows the validation period directly, so
    those interactions are the most informative ones a final model can see.

    SIGINT/SIGTERM stop it after logging the last completed epoch's checkpoint to the run;
    ``resume=<run_id>`` (or ``resume=last``) continues that run from there.
    """
    _check_train_cfg(cfg)
    resume_state, resume_run = None, None
    if cfg.get("resume"):
        cfg, resume_run, resume_state = _resume_point(cfg)
    data, snapshot = load_interactions(cfg)
    if resume_state and snapshot["content_hash"][:32] != resume_state["digest"]:
        raise ConfigError(
            f"run {resume_run} was trained on data with digest {resume_state['digest']}, but the "
            f"store (schema {snapshot['schema']}) now holds data with digest "
            f"{snapshot['content_hash'][:32]}: resuming would mix two data sets. Train a new run "
            "instead (python scripts/train.py without resume=)."
        )
    split = temporal_split(data, cfg.split.test_fraction, cfg.split.val_fraction)
    vocab, n_read = data.vocab, len(data)
    del data  # the split holds its own copies; at 20M rows this frees about 0.5 GiB
    if len(split.train) == 0 or len(split.val) == 0:
        raise ConfigError(
            f"the store holds {n_read} interactions of {vocab.n_users} users, too few to hold "
            "out a validation period (each user needs at least 6 interactions with the default "
            "split fractions). Ingest more data or lower split.val_fraction/split.test_fraction."
        )
    from recmf.fitting import StopOnSignal, fit_select_refit, quiet_lightning
    from recmf.fold_in import tune as tune_fold_in
    from recmf.serving import log_model, store_config

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
                logger.experiment,
                logger.run_id,
                lineage,
                tracking.split_profile(split),
                snapshot["query"],
            )
        else:
            digest = resume_state["digest"]
            logger.experiment.set_tag(logger.run_id, tracking.INTERRUPTED_TAG, "resumed")
        signals = StopOnSignal()
        restore = signals.install()
        try:
            fitted = fit_select_refit(
                cfg, split, logger, workdir, resume_state, [signals.callback()]
            )
        except TrainingInterrupted as stop:
            if main:
                _save_resume_point(cfg, logger, workdir, stop, digest)
            status = "KILLED"
            raise
        finally:
            restore()  # a signal after the last epoch lets the run finish logging its model
        monitor, best_epoch, best_val = fitted.monitor, fitted.best_epoch, fitted.best_val
        if not main:
            return TrainResult(None, best_val, monitor, best_epoch, fitted.seconds, split.sizes())
        with tempfile.TemporaryDirectory(prefix="recmf-") as tmp:
            for path in fitted.checkpoints:
                logger.experiment.log_artifact(logger.run_id, str(path), "checkpoints")
            logger.log_metrics(
                {
                    "best_epoch": best_epoch,
                    f"best_{monitor.replace('/', '_')}": best_val,
                    "train_seconds": fitted.seconds,
                }
            )
            meta = {
                "loss": cfg.loss,
                "k": cfg.k,
                "refit": bool(cfg.refit),
                "run_id": logger.run_id,
                "config": tracking.safe_config(cfg),
                "data": snapshot,
                "data_digest": digest,
                "split": split.sizes(),
                "best_epoch": best_epoch,
                "monitor": monitor,
                "best_val": best_val,
            }
            bundle = Bundle.from_model(fitted.model, vocab, split, meta)
            # fold-in constants for users who arrive after training, chosen on validation
            before_refit = fitted.selected_weights or bundle.weights
            bundle.meta["fold_in"] = tune_fold_in(before_refit, split, cfg.k, seed=cfg.seed)
            logger.log_metrics(
                {f"fold_in_val_ndcg_at_{cfg.k}": bundle.meta["fold_in"][f"val_ndcg_at_{cfg.k}"]}
            )
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            logger.experiment.log_artifacts(logger.run_id, str(bundle_dir), "bundle")
            in_sweep = bool(os.environ.get(tracking.PARENT_ENV))  # trials are not registered
            log_model(
                logger.run_id,
                cfg.logger.tracking_uri,
                bundle_dir,
                store_config(OmegaConf.merge(cfg.db, {"schema": snapshot["schema"]})),
                None if in_sweep else cfg.get("registered_model"),
            )
        logger.experiment.set_tag(logger.run_id, tracking.BUNDLE_TAG, "1")
        shutil.rmtree(workdir, ignore_errors=True)  # logged above; only a resume needs them here
        status = "FINISHED"
    finally:
        if main:
            tracking.finish_run(logger, status)
    return TrainResult(logger.run_id, best_val, monitor, best_epoch, fitted.seconds, split.sizes())


def _save_resume_point(cfg, logger, workdir: Path, stop, digest: str) -> None:
    """Log what ``resume=`` needs: the last completed epoch's checkpoint, the best one so far,
    and the phase, config and data digest."""
    state = {
        "phase": stop.phase,
        "epoch": stop.epoch,
        "best_val": getattr(stop, "best_val", None),
        "digest": digest,
        "config": tracking.safe_config(cfg),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state.json").write_text(json.dumps(state, indent=2, default=str))
    logger.experiment.log_artifacts(logger.run_id, str(workdir), "resume")
    logger.experiment.set_tag(logger.run_id, tracking.INTERRUPTED_TAG, stop.phase)
    stop.args = (
        f"training was interrupted during its {stop.phase} phase at epoch {stop.epoch + 1}; the "
        f"last completed epoch is saved to run {logger.run_id}. Continue it with: python "
        f"scripts/train.py resume={logger.run_id} (or resume=last).",
    )


def _resume_point(cfg: DictConfig) -> tuple[DictConfig, str, dict]:
    """The interrupted run's config (with this call's store and tracking settings), id and
    saved state; its checkpoints are fetched from MLflow when not on this machine."""
    run = tracking.find_interrupted_run(cfg.logger, None if cfg.resume == "last" else cfg.resume)
    run_id = run.info.run_id
    workdir = CHECKPOINT_ROOT / run_id
    if not (workdir / "state.json").is_file():
        tracking.download_artifacts_to(cfg.logger, run_id, "resume", workdir)
    state = json.loads((workdir / "state.json").read_text())
    saved = OmegaConf.create(state["config"])
    OmegaConf.set_struct(saved, False)
    saved.db, saved.logger, saved.resume = cfg.db, cfg.logger, None
    return saved, run_id, state


def resolve_bundle(cfg: DictConfig) -> tuple[Bundle, str | None]:
    """The bundle named by ``bundle=`` (a folder), ``model=`` (an MLflow model URI such as
    ``models:/recmf/3``), or ``run_id=``, or the latest run's."""
    if cfg.get("bundle"):
        return Bundle.load(cfg.bundle), None
    if cfg.get("model"):
        bundle = Bundle.load(tracking.model_bundle(cfg.logger, cfg.model))
        return bundle, bundle.meta.get("run_id")
    fast = tracking.local_bundle_fast(cfg.logger, cfg.get("run_id"))
    if fast is not None:  # the common local case, without importing MLflow
        bundle = Bundle.load(fast)
        return bundle, bundle.meta.get("run_id")
    run = tracking.find_training_run(cfg.logger, cfg.get("run_id"))
    path = tracking.download_bundle(cfg.logger, run.info.run_id, run.info.artifact_uri)
    return Bundle.load(path), run.info.run_id


@dataclass
class EvalResult:
    run_id: str | None
    metrics: dict[str, float]  # test metrics of the model, "{metric}_at_{k}"
    baseline: dict[str, float]  # the popularity baseline under the same split
    ks: list[int]
    n_users: int  # users with at least one test item
    val_metrics: dict[str, float] = field(default_factory=dict)  # recomputed when not refit
    extra: dict = field(default_factory=dict)  # rmse/mae, dropped counts
    report_path: Path | None = None

    def table(self) -> str:
        from recmf.report import metrics_table

        lines = [metrics_table(self.metrics, self.baseline, self.ks)]
        for key in ("rmse", "mae"):
            if key in self.extra:
                lines.append(f"{key.upper():<14}{self.extra[key]:>9.4f}")
        return "\n".join(lines)


def evaluate(cfg: DictConfig) -> EvalResult:
    """Rank all items for every test user with a training run's bundle; log metrics and report.

    Metrics are on the saved test split with the user's train and validation items excluded,
    beside the popularity ranking (counts over train + validation) under the same split.
    """
    import torch

    from recmf.evaluation import (
        bucket_hit_rates,
        evaluate_ranking,
        popularity_buckets,
        popularity_scores,
    )
    from recmf.metrics import METRICS
    from recmf.report import write_report
    from recmf.sparse import UserItems

    ks = checks.positive_ints("ks", [cfg.k] if cfg.get("k") is not None else cfg.ks)
    bundle, run_id = resolve_bundle(cfg)
    device = torch.device(
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    model = bundle.to_model().to(device)
    n_users, n_items = bundle.vocab.n_users, bundle.vocab.n_items
    seen_u, seen_i = bundle.pairs("train", "val")
    seen = UserItems.from_pairs(seen_u, seen_i, n_users).to(device)
    truth = UserItems.from_pairs(*bundle.pairs("test"), n_users).to(device)
    curve_k = max(max(ks), cfg.curve_k)
    with torch.no_grad():
        curve, n_eval = evaluate_ranking(
            model.score_all, truth, seen, range(1, curve_k + 1), n_items, cfg.chunk_size
        )
        pop = popularity_scores(torch.from_numpy(seen_i).to(device), n_items)
        curve_base, _ = evaluate_ranking(
            pop, truth, seen, range(1, curve_k + 1), n_items, cfg.chunk_size
        )
        val_metrics = {}
        if not bundle.meta.get("refit"):  # a refit model has trained on validation
            train = UserItems.from_pairs(*bundle.pairs("train"), n_users).to(device)
            val = UserItems.from_pairs(*bundle.pairs("val"), n_users).to(device)
            val_metrics, _ = evaluate_ranking(
                model.score_all, val, train, ks, n_items, cfg.chunk_size
            )
    wanted = {f"{m}_at_{k}" for m in (*METRICS, "coverage") for k in ks}
    metrics = {k: v for k, v in curve.items() if k in wanted}
    baseline = {k: v for k, v in curve_base.items() if k in wanted}
    extra = {
        "n_eval_users": n_eval,
        "dropped_test": bundle.meta.get("split", {}).get("dropped_test", 0),
    }
    ratings = bundle.split["test_rating"]
    if bundle.meta.get("loss") == "mse" and len(ratings) and not np.isnan(ratings).all():
        tu, ti = bundle.pairs("test")
        with torch.no_grad():
            pred = model(torch.from_numpy(tu).to(device), torch.from_numpy(ti).to(device))
        err = pred.cpu().numpy() - ratings
        err = err[~np.isnan(ratings)]
        extra["rmse"], extra["mae"] = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
    result = EvalResult(run_id, metrics, baseline, ks, n_eval, val_metrics, extra)
    k_top = max(ks)
    by_bucket = {"k": k_top}
    with torch.no_grad():  # hit rate by item popularity (same counts as the baseline's)
        buckets = popularity_buckets(torch.from_numpy(seen_i).to(device), n_items)
        for who, score_fn in (("model", model.score_all), ("popularity", pop)):
            by_bucket[who] = bucket_hit_rates(score_fn, truth, seen, buckets, k_top, cfg.chunk_size)
    histories = None  # a bundle folder has no run to read learning curves from
    if run_id:
        monitor = bundle.meta.get("monitor") or f"val/ndcg_at_{bundle.meta.get('k', 10)}"
        histories = tracking.metric_histories(
            cfg.logger, run_id, ["train/loss", monitor, "refit/loss"]
        )
    with tempfile.TemporaryDirectory(prefix="recmf-report-") as tmp:
        report = write_report(
            Path(tmp),
            run_id=run_id,
            meta=bundle.meta,
            model=metrics,
            baseline=baseline,
            ks=ks,
            curve_model=curve,
            curve_base=curve_base,
            curve_k=curve_k,
            extra=extra,
            buckets=by_bucket,
            histories=histories,
        )
        keep = Path(cfg.report_dir) / (run_id or "bundle")
        keep.mkdir(parents=True, exist_ok=True)
        for f in Path(tmp).iterdir():
            (keep / f.name).write_bytes(f.read_bytes())
        result.report_path = keep / report.name
        if run_id:
            logged = {f"test/{k}": v for k, v in metrics.items()}
            logged.update({f"baseline/{k}": v for k, v in baseline.items()})
            logged.update({f"test/{k}": extra[k] for k in ("rmse", "mae") if k in extra})
            tracking.log_metrics(cfg.logger, run_id, logged)
            tracking.log_artifacts(cfg.logger, run_id, Path(tmp), "report")
    return result


def compare(cfg: DictConfig) -> str:
    """Evaluate several runs and put their test metrics side by side.

    Refuses runs whose training data digests differ (their test splits differ too, so the
    numbers would not be comparable) unless ``allow_data_mismatch=true``.
    """
    runs = [str(r) for r in cfg.compare]
    if len(runs) < 2:
        raise ConfigError(
            f"compare needs at least two run ids, got {runs}. Pass compare=[<id1>,<id2>]."
        )
    digests = {}
    for run_id in runs:
        tracking.find_training_run(cfg.logger, run_id)  # a clear message for an unknown id
        digests[run_id] = tracking.data_digest(cfg.logger, run_id)
    if len(set(digests.values())) > 1 and not cfg.allow_data_mismatch:
        listed = "; ".join(f"{r}: {d or 'none recorded'}" for r, d in digests.items())
        raise ConfigError(
            f"the runs were trained on different data (data digests {listed}), so their test "
            "splits differ and their metrics are not comparable. Retrain them on the same store "
            "contents, or pass allow_data_mismatch=true to compare anyway."
        )
    results = []
    for run_id in runs:
        run_cfg = OmegaConf.merge(cfg, {"run_id": run_id, "compare": []})
        results.append(evaluate(run_cfg))
    ks = results[0].ks
    from recmf.metrics import METRICS

    header = f"{'metric':<14}" + "".join(f"{r[:8]:>12}" for r in runs) + f"{'popularity':>12}"
    lines = [
        f"data digest {digests[runs[0]]}"
        if len(set(digests.values())) == 1
        else "data digests differ (allow_data_mismatch=true)",
        header,
    ]
    for k in ks:
        for name in (*METRICS, "coverage"):
            key = f"{name}_at_{k}"
            row = "".join(f"{res.metrics[key]:>12.4f}" for res in results)
            lines.append(f"{name + '@' + str(k):<14}{row}{results[0].baseline[key]:>12.4f}")
    return "\n".join(lines)


def recommend(cfg: DictConfig):
    """Top-K items for one or several users, excluding what each has in the store now.

    The store is the one the model was trained from (its schema is in the bundle) unless
    ``db.schema`` is given. Users the model never saw are folded in from their items in the
    store, or get the popularity ranking when they have none (each answer names its path).
    """
    from recmf.recommender import Recommender
    from recmf.store import FeatureStore

    users = checks.user_list(cfg.user)
    k = checks.positive_int("k", cfg.k)
    checks.one_of("format", cfg.format, ("table", "json"))
    bundle, _ = resolve_bundle(cfg)
    db = OmegaConf.merge(cfg.db, {"schema": cfg.db.schema or bundle.meta["data"]["schema"]})
    with FeatureStore.open(db, create=False) as store:
        history = store.user_history(users)
    return Recommender(bundle).recommend(users, k, history, exclude_seen=cfg.exclude_seen)


def list_users(cfg: DictConfig, limit: int = 20) -> list[str]:
    """Some user ids of the store the model was trained from (or of ``db.schema``)."""
    from recmf.store import FeatureStore

    schema = cfg.db.schema or resolve_bundle(cfg)[0].meta["data"]["schema"]
    with FeatureStore.open(OmegaConf.merge(cfg.db, {"schema": schema}), create=False) as store:
        return store.list_users(limit)
