"""The verbs: ingest, train, evaluate, recommend; each takes a DictConfig, returns a result.

This is the one place that instantiates config groups and injects what depends on the data
(``n_users``, ``n_items``). Lightning and MLflow are imported inside the verbs that need them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from recmf import checks, tracking
from recmf.bundle import Bundle
from recmf.errors import ConfigError
from recmf.interactions import Interactions
from recmf.split import temporal_split

log = logging.getLogger("recmf")


@dataclass
class TrainResult:
    run_id: str
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
        log.info("read %d interactions in %.2f s", len(data), time.perf_counter() - t0)
    return data, snapshot


def _check_train_cfg(cfg: DictConfig) -> None:
    checks.positive_int("k", cfg.k)
    checks.positive_int("latent_dim", cfg.latent_dim, "Pass e.g. latent_dim=32.")
    checks.loss_name(cfg.loss)
    checks.positive_int("trainer.max_epochs", cfg.trainer.max_epochs)


def train(cfg: DictConfig) -> TrainResult:
    """Train on the store's data, select the epoch on validation NDCG@k, log everything.

    With ``refit=true`` the model is then retrained on train + validation for the selected
    number of epochs: the held-out test period follows the validation period directly, so
    those interactions are the most informative ones a final model can see.
    """
    _check_train_cfg(cfg)
    data, snapshot = load_interactions(cfg)
    split = temporal_split(data, cfg.split.test_fraction, cfg.split.val_fraction)
    vocab, n_read = data.vocab, len(data)
    del data  # the split holds its own copies; at 20M rows this frees about 0.5 GiB
    if len(split.train) == 0 or len(split.val) == 0:
        raise ConfigError(
            f"the store holds {n_read} interactions of {vocab.n_users} users, too few to hold "
            "out a validation period (each user needs at least 6 interactions with the default "
            "split fractions). Ingest more data or lower split.val_fraction/split.test_fraction."
        )
    from recmf.fitting import fit_select_refit, quiet_lightning

    quiet_lightning()
    logger = tracking.make_logger(cfg.logger, {tracking.KIND_TAG: "train"})
    ok = False
    try:
        params = tracking.flatten(tracking.safe_config(cfg))
        params.update({f"data.{k}": v for k, v in snapshot.items()})
        params.update({f"split.{k}": v for k, v in split.sizes().items()})
        logger.log_hyperparams(params)
        with tempfile.TemporaryDirectory(prefix="recmf-") as tmp:
            fitted = fit_select_refit(cfg, split, logger, Path(tmp))
            for path in fitted.checkpoints:
                logger.experiment.log_artifact(logger.run_id, str(path), "checkpoints")
            monitor, best_epoch, best_val = fitted.monitor, fitted.best_epoch, fitted.best_val
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
                "split": split.sizes(),
                "best_epoch": best_epoch,
                "monitor": monitor,
                "best_val": best_val,
            }
            bundle = Bundle.from_model(fitted.model, vocab, split, meta)
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            logger.experiment.log_artifacts(logger.run_id, str(bundle_dir), "bundle")
        logger.experiment.set_tag(logger.run_id, tracking.BUNDLE_TAG, "1")
        ok = True
    finally:
        tracking.finish_run(logger, ok)
    return TrainResult(logger.run_id, best_val, monitor, best_epoch, fitted.seconds, split.sizes())


def resolve_bundle(cfg: DictConfig) -> tuple[Bundle, str | None]:
    """The bundle named by ``bundle=`` (a folder), or by ``run_id=``, or the latest run's."""
    if cfg.get("bundle"):
        return Bundle.load(cfg.bundle), None
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


def recommend(cfg: DictConfig):
    """Top-K items for one or several users, excluding what each has in the store now.

    The store is the one the model was trained from (its schema is in the bundle) unless
    ``db.schema`` is given.
    """
    from recmf.interactions import UnknownUserError
    from recmf.recommender import Recommender
    from recmf.store import FeatureStore

    users = checks.user_list(cfg.user)
    k = checks.positive_int("k", cfg.k)
    checks.one_of("format", cfg.format, ("table", "json"))
    bundle, _ = resolve_bundle(cfg)
    db = OmegaConf.merge(cfg.db, {"schema": cfg.db.schema or bundle.meta["data"]["schema"]})
    with FeatureStore.open(db) as store:
        history = store.user_history(users)
        not_in_store = [u for u in users if u not in history]
        not_in_model = [u for u in users if not bundle.vocab.has_user(u)]
        if not_in_store or not_in_model:
            unknown = not_in_store or not_in_model
            examples = ", ".join(store.list_users(5))
            where = "in the store" if not_in_store else "in the model (they arrived after training)"
            raise UnknownUserError(
                unknown,
                f"They are not {where}. Known users include {examples}; "
                "`python scripts/recommend.py list_users=true` lists more"
                + ("" if not_in_store else ", and retraining includes new users")
                + ".",
            )
    return Recommender(bundle).recommend(users, k, history)


def list_users(cfg: DictConfig, limit: int = 20) -> list[str]:
    """Some user ids of the store the model was trained from (or of ``db.schema``)."""
    from recmf.store import FeatureStore

    schema = cfg.db.schema or resolve_bundle(cfg)[0].meta["data"]["schema"]
    with FeatureStore.open(OmegaConf.merge(cfg.db, {"schema": schema})) as store:
        return store.list_users(limit)
