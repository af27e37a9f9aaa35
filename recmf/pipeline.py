"""The verbs: ingest, train, evaluate, recommend; each takes its typed settings, returns a result.

The scripts turn their Hydra config into settings with :func:`recmf.config.settings` (checked,
then dataclasses) and call one verb. Lightning and MLflow are imported inside the verbs that
need them.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recmf import checks, tracking
from recmf.errors import ConfigError, RunNotFoundError
from recmf.eval.split_file import SavedSplit
from recmf.serve.bundle import Bundle
from recmf.settings import (
    DEFAULT_SCHEMA,
    EvaluateConfig,
    IngestConfig,
    RecommendConfig,
    TrainConfig,
)
from recmf.train import run as training
from recmf.train.run import TrainResult

log = logging.getLogger("recmf")


def ingest(cfg: IngestConfig):
    """Add ``cfg.dataset`` to the store of ``cfg.db``; see :func:`recmf.ingest.run_ingest`."""
    from recmf.ingest import run_ingest

    return run_ingest(cfg)


def train(cfg: TrainConfig, overrides: list[str] | None = None) -> TrainResult:
    """Train; see :func:`recmf.train.run.train`.

    ``resume=<run_id>`` (or ``last``) continues an interrupted run with the run's own settings,
    except for the keys in ``overrides`` (the command line's ``key=value`` items; by default
    those Hydra recorded for this job), taken from ``cfg``.
    """
    if not cfg.resume:
        return training.train(cfg)
    from recmf.config import resumed
    from recmf.train import resume

    run_id, state = resume.load_point(cfg.logger, cfg.resume, training.CHECKPOINT_ROOT)
    return training.train(resumed(cfg, state["config"], run_id, overrides), (run_id, state))


def resolve_bundle(cfg: EvaluateConfig | RecommendConfig) -> tuple[Bundle, str | None]:
    """The bundle named by ``bundle=`` (a folder), ``model=`` (an MLflow model URI such as
    ``models:/recmf/3``), or ``run_id=``, or that of the latest run trained on ``db.schema``."""
    if cfg.bundle:
        return Bundle.load(cfg.bundle), None
    if getattr(cfg, "model", None):  # recommend only
        bundle = Bundle.load(tracking.model_bundle(cfg.logger, cfg.model))
        return bundle, bundle.meta.get("run_id")
    run_id = cfg.run_id
    # "latest" means the latest run trained on the schema asked for (default recmf), so a run on
    # another data set never answers for this one; a named run answers for its own schema
    schema = None if run_id else (cfg.db.schema or DEFAULT_SCHEMA)
    fast = tracking.local_bundle_fast(cfg.logger, run_id, schema)
    if fast is not None:  # the common local case, without importing MLflow
        bundle = Bundle.load(fast)
        return bundle, bundle.meta.get("run_id")
    run = tracking.find_training_run(cfg.logger, run_id, schema)
    path = tracking.download_bundle(cfg.logger, run.info.run_id)
    return Bundle.load(path), run.info.run_id


def resolve_split(cfg: EvaluateConfig, bundle: Bundle) -> SavedSplit:
    """The split to evaluate ``bundle`` on: ``split=`` (a split.npz or a folder holding one), or
    the ``split`` artifact of the run that trained it (named in its meta), from the tracking
    store; refused when it is not that run's split."""
    if cfg.split:
        where = repr(str(cfg.split))
        saved = SavedSplit.load(cfg.split)
    else:
        run_id = bundle.meta.get("run_id")
        if not run_id:
            raise ConfigError(
                "the bundle names no training run to find its split in; pass split=<the "
                "split.npz of the run that trained it>."
            )
        where = f"of run {run_id}"
        try:
            tracking.find_training_run(cfg.logger, run_id)  # a clear message for an unknown run
            saved = SavedSplit.load(tracking.download_split(cfg.logger, run_id))
        except RunNotFoundError as exc:
            if not cfg.bundle:
                raise
            raise RunNotFoundError(
                f"the split of the bundle's run {run_id} was not found ({exc}) Pass split=<the "
                "split.npz of that run> to evaluate a bundle folder away from its tracking store."
            ) from None
    saved.check_matches(bundle.meta, bundle.vocab.n_users, bundle.vocab.n_items, where)
    return saved


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
    source: dict = field(default_factory=dict)  # run id, store schema, data digest

    def header(self) -> str:
        from recmf.serve.answer import source_line

        return (
            f"{source_line(self.source)}: test metrics over {self.n_users} users "
            f"(report: {self.report_path})"
        )

    def table(self) -> str:
        from recmf.eval.report import metrics_table

        lines = [metrics_table(self.metrics, self.baseline, self.ks)]
        for key in ("rmse", "mae"):
            if key in self.extra:
                lines.append(f"{key.upper():<14}{self.extra[key]:>9.4f}")
        return "\n".join(lines)


def evaluate(cfg: EvaluateConfig) -> EvalResult:
    """Rank all items for every test user with a training run's bundle; log metrics and report.

    Metrics are on the run's saved split (its ``split`` artifact, or ``split=``): its test part,
    with the user's train and validation items excluded, beside the popularity ranking (counts
    over train + validation) under the same split.
    """
    import torch

    from recmf.data.sparse import UserItems
    from recmf.eval.metrics import METRICS
    from recmf.eval.ranking import (
        beside_popularity,
        bucket_hit_rates,
        evaluate_ranking,
        popularity_buckets,
    )
    from recmf.eval.report import write_report
    from recmf.serve.answer import Answer
    from recmf.serve.explain import value_map

    ks = checks.positive_ints("ks", [cfg.k] if cfg.k is not None else cfg.ks)
    bundle, run_id = resolve_bundle(cfg)
    split = resolve_split(cfg, bundle)
    device = torch.device(
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    model = bundle.to_model().to(device)
    n_users, n_items = bundle.vocab.n_users, bundle.vocab.n_items
    seen_u, seen_i = split.pairs("train", "val")
    seen = UserItems.from_pairs(seen_u, seen_i, n_users).to(device)
    truth = UserItems.from_pairs(*split.pairs("test"), n_users).to(device)
    curve_k = max(max(ks), cfg.curve_k)
    curve, curve_base, n_eval, pop = beside_popularity(
        model.score_all,
        truth,
        seen,
        torch.from_numpy(seen_i).to(device),
        range(1, curve_k + 1),
        n_items,
        cfg.chunk_size,
    )
    with torch.no_grad():
        val_metrics = {}
        if not bundle.meta.get("refit"):  # a refit model has trained on validation
            train = UserItems.from_pairs(*split.pairs("train"), n_users).to(device)
            val = UserItems.from_pairs(*split.pairs("val"), n_users).to(device)
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
    ratings = split.arrays["test_rating"]
    if bundle.meta.get("loss") == "mse" and len(ratings) and not np.isnan(ratings).all():
        tu, ti = split.pairs("test")
        with torch.no_grad():
            pred = model(torch.from_numpy(tu).to(device), torch.from_numpy(ti).to(device))
        err = pred.cpu().numpy() - ratings
        err = err[~np.isnan(ratings)]
        extra["rmse"], extra["mae"] = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
    result = EvalResult(run_id, metrics, baseline, ks, n_eval, val_metrics, extra)
    result.source = Answer.source_of(bundle.meta)
    k_top = max(ks)
    by_bucket = {"k": k_top}
    with torch.no_grad():  # hit rate by item popularity (same counts as the baseline's)
        buckets = popularity_buckets(torch.from_numpy(seen_i).to(device), n_items)
        for who, score_fn in (("model", model.score_all), ("popularity", pop)):
            by_bucket[who] = bucket_hit_rates(score_fn, truth, seen, buckets, k_top, cfg.chunk_size)
    histories = None  # a bundle folder has no run to read learning curves from
    if run_id:
        monitor = bundle.meta.get("monitor") or f"val/ndcg_at_{bundle.meta.get('k', 10)}"
        keys = ["train/loss", monitor, "refit/loss"]
        if bundle.meta.get("selected"):  # chosen by a race: the winner's validation curve
            keys = [winner_curve(bundle.meta, monitor), "refit/loss"]
        histories = tracking.metric_histories(cfg.logger, run_id, keys)
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
            towers=[v for v in (value_map(bundle, "item"), value_map(bundle, "user")) if v],
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


def compare(cfg: EvaluateConfig) -> str:
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
        results.append(evaluate(replace(cfg, run_id=run_id, compare=[])))
    ks = results[0].ks
    from recmf.eval.metrics import METRICS

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


def recommend(cfg: RecommendConfig):
    """Top-K items for one or several users, excluding what each has in the store now.

    The store is the one the model was trained from (its schema is in the bundle) unless
    ``db.schema`` is given. Users the model never saw are folded in from their items in the
    store, scored from their features by a two-tower model when they have none, or get the
    popularity ranking (each answer names its path). Items added to the store after training
    are ranked with the rest when a two-tower model can embed them from their features; the
    answers count those it cannot.
    """
    from recmf.serve.cold import read_new_items, read_user_features
    from recmf.serve.recommender import Answer, Recommender
    from recmf.store import FeatureStore

    users = checks.user_list(cfg.user)
    k = cfg.k
    bundle, _ = resolve_bundle(cfg)
    db = replace(cfg.db, schema=cfg.db.schema or bundle.meta["data"]["schema"])
    with FeatureStore.open(db, create=False) as store:
        history = store.user_history(users)
        new_items = read_new_items(store, bundle)
        user_features = read_user_features(store, bundle, users, history)
    recs = Recommender(bundle).recommend(
        users,
        k,
        history,
        exclude_seen=cfg.exclude_seen,
        new_items=new_items,
        user_features=user_features,
    )
    return Answer(Answer.source_of(bundle.meta, db.schema), recs)


def list_users(cfg: RecommendConfig, limit: int = 20) -> list[str]:
    """Some user ids of the store the model was trained from (or of ``db.schema``)."""
    from recmf.store import FeatureStore

    schema = cfg.db.schema or resolve_bundle(cfg)[0].meta["data"]["schema"]
    with FeatureStore.open(replace(cfg.db, schema=schema), create=False) as store:
        return store.list_users(limit)


def winner_curve(meta: dict, monitor: str) -> str:
    """The metric holding the validation curve of the candidate a selection chose
    (``select/recency_2_reg_0.08/ndcg_at_10``): the chosen values over the run's fixed ones."""
    from recmf.train.selection import Trial

    model = meta.get("config", {}).get("model", {})
    values = {**{k: model.get(k) for k in ("recency", "reg")}, **meta["selected"]}
    label = Trial(float(values["recency"]), float(values["reg"]), 0.0, 0).label
    return f"select/{label}/{monitor.split('/', 1)[1]}"
