"""The type of every config key (Hydra structured configs) and the range of every value.

Hydra checks each key's type while it composes (``seed=abc`` never reaches the code);
:func:`validate` checks ranges and choices before anything is opened or written. Importing this
module registers the schemas in Hydra's ConfigStore; the scripts import it before
``@hydra.main``, and :func:`compose` does for tests and benchmarks.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from hydra.core.config_store import ConfigStore

from recmf.checks import LOSSES, USER_BATCHED
from recmf.errors import ConfigError
from recmf.settings import (
    ARCHS,
    AUTO,
    DATASETS,
    CsvConfig,
    EvaluateConfig,
    IngestConfig,
    MFConfig,
    MovieLensConfig,
    RecommendConfig,
    SplitConfig,
    SyntheticConfig,
    TowerConfig,
    TrainConfig,
)

CONFIG_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


log = logging.getLogger("recmf")


def register() -> None:
    """Put the schemas where the YAML files' defaults lists find them."""
    cs = ConfigStore.instance()
    for name, node in (
        ("train_schema", TrainConfig),
        ("ingest_schema", IngestConfig),
        ("evaluate_schema", EvaluateConfig),
        ("recommend_schema", RecommendConfig),
    ):
        cs.store(name=name, node=node)
    cs.store(group="dataset", name="synthetic_schema", node=SyntheticConfig)
    cs.store(group="dataset", name="movielens_schema", node=MovieLensConfig)
    cs.store(group="dataset", name="csv_schema", node=CsvConfig)
    cs.store(group="arch", name="mf_schema", node=MFConfig)
    cs.store(group="arch", name="tower_schema", node=TowerConfig)
    cs.store(group="split", name="split_schema", node=SplitConfig)


register()


def compose(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """A script's config without running the script (tests, benchmarks, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides))


def compose_settings(
    name: str, overrides: list[str] | tuple[str, ...] = (), who: str | None = None
) -> Any:
    """A script's checked, typed settings without running the script (benchmarks, tests, the
    Python API); a config Hydra refuses raises :class:`ConfigError` worded for ``who``."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(name, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(config_error_message(exc, who or f"{name}.py")) from None
    return settings(cfg, name)


def settings(cfg: Any, script: str) -> Any:
    """``cfg`` checked (:func:`validate`) and turned into the script's typed settings
    (:class:`~recmf.settings.TrainConfig` and friends): the one place a config becomes the
    dataclasses every function below the wiring takes."""
    from omegaconf import OmegaConf

    validate(cfg, script)
    out = OmegaConf.to_object(cfg)
    if isinstance(out, TrainConfig) and out.split.kind == "random" and out.model.recency:
        log.info("split=random: no recency weighting (model.recency %s -> 0)", out.model.recency)
        out.split_at_random()
    if isinstance(out, TrainConfig) and out.model.recency_fade == AUTO:
        # chosen beside the L2 once the strength is chosen, for the softmax's weighted pairs only
        if out.model.recency != AUTO or out.loss not in USER_BATCHED:
            out.model.recency_fade = False
    if isinstance(out, TrainConfig) and out.model.init == AUTO:
        out.model.init = default_init(out.model, out.loss)
    if isinstance(out, TrainConfig):  # numbers as floats, auto as it is (an int from the CLI)
        for key in ("reg", "recency"):
            value = getattr(out.model, key)
            setattr(out.model, key, value if value == AUTO else float(value))
    return out


def default_init(model: Any, loss: str) -> str:
    """What ``model.init=auto`` starts from: the SVD start for a matrix factorization with a
    ranking loss (on the four quality comparisons the default trained in 0.54-0.76x the time,
    NDCG@10 -0.8% to +2.1%: README, Results), the random one for towers and ``loss=mse``."""
    return "random" if isinstance(model, TowerConfig) or loss == "mse" else "svd"


def resumed(
    cfg: TrainConfig, saved: dict, run_id: str, overrides: list[str] | None = None
) -> TrainConfig:
    """The train config of interrupted run ``run_id`` (``saved``, as it logged it) with this call's
    tracking settings, ``resume`` cleared, and each key in ``overrides`` (``key=value`` as
    typed; default: Hydra's record of this job's command line) taken from ``cfg``; the run's
    store URL gets its password back from this call's when it names the same server."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(cfg)
    saved = {**saved, "trainer": dict(saved.get("trainer") or {})}
    saved["trainer"].pop("_target_", None)  # runs before it was dropped from the schema
    typed = _typed_node(saved, TrainConfig)
    keys = _typed_keys(_command_line() if overrides is None else overrides)
    for key in keys:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        # logger: always this call's; absent: a group of @package _global_ (experiment=...)
        if key != "resume" and key.split(".")[0] != "logger" and value is not _ABSENT:
            OmegaConf.update(typed, key, value, merge=False)
    typed.logger, typed.resume = cfg.logger, None
    if "db.url" not in keys:
        typed.db.url = _with_password(typed.db.url, cfg.db.url, run_id)
    return OmegaConf.to_object(typed)


def from_dict(data: dict, schema: type = TrainConfig) -> Any:
    """Plain data (a saved config, a test's dict) checked against ``schema`` and turned into it,
    with defaults for what it leaves out; the dataset's type is chosen by its ``name``."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(_typed_node(data, schema))


def _typed_node(data: dict, schema: type) -> Any:
    from omegaconf import OmegaConf

    base = OmegaConf.structured(schema)
    name = (data.get("dataset") or {}).get("name")
    if name in DATASETS:
        base.dataset = OmegaConf.structured(DATASETS[name])
    if schema is TrainConfig:
        arch = (data.get("model") or {}).get("name", "mf")
        base.model = OmegaConf.structured(ARCHS.get(arch, MFConfig))
    return OmegaConf.merge(base, data)


_ABSENT = object()


def _command_line() -> list[str]:
    """This job's command-line overrides as Hydra recorded them ([] outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _typed_keys(overrides: list[str]) -> list[str]:
    """``db.schema=x`` -> ``db.schema``; ``+key=v`` and ``~key`` name ``key`` too."""
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides if not o.startswith("hydra.")]


def _with_password(saved_url: str | None, given_url: str | None, run_id: str) -> str | None:
    """The run's store URL, saved without its password: the given URL when it is the same
    server (it carries the password), else a message saying how to give it."""
    from recmf.store.errors import safe_url

    if not saved_url or "***" not in saved_url:
        return saved_url
    if given_url and safe_url(str(given_url)) == saved_url:
        return str(given_url)
    raise ConfigError(
        f"run {run_id} read its data from {saved_url}, whose password is not saved with the run. "
        "Give it to the resume: set RECMF_DATABASE_URL to that URL with the password, or pass "
        "db.url='postgresql://user:password@host:5432/db' with resume=."
    )


# --- Hydra's refusals in a user's words ----------------------------------------------------

# Keys that moved: the one place each value is read now.
_MOVED = {"model.latent_dim": "latent_dim", "model.loss": "loss"}

# OmegaConf's names for the node types, in a user's words
_TYPE_WORDS = {
    "Integer": "a whole number, e.g. 10",
    "Float": "a number, e.g. 0.01",
    "Boolean": "true or false",
    "String": "a text value",
}


def _typed(key: str) -> str | None:
    """What the user typed for ``key`` on the command line (``key=value``), if anything."""
    for arg in sys.argv[1:]:
        name = arg.split("=", 1)[0].lstrip("+~")
        if name == key or name.startswith(f"{key}."):
            return arg
    return None


def config_error_message(exc: BaseException, script: str) -> str | None:
    """One paragraph for a config mistake Hydra or OmegaConf raised; None for anything else."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, HydraException | OmegaConfBaseException):
        return None
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
    help_line = (
        f"`python scripts/{script} --cfg job` prints every key and its current value."
        if script.endswith(".py")
        else "configs/train.yaml lists every key."
    )
    where = f"scripts/{script}" if script.endswith(".py") else script
    named = re.search(r"override '?([^'\s=]+)", str(exc))
    key = getattr(cause, "full_key", None) or (named.group(1).rstrip(".") if named else None)
    typed = _typed(str(key)) if key else None
    if isinstance(exc, OverrideParseException):
        bad = re.search(r"Exception: (\S+)", str(exc))
        return (
            f"Hydra cannot read the command-line item {bad.group(1) if bad else str(exc)!r}: "
            "outside quotes, a value may not hold ; = , [ ] { } ( ) or spaces, and "
            "true/false/null/numbers are read as such. Quote the value inside the item, and the "
            "item for the shell: 'user=\"a;b\"', 'dataset.sep=\";\"', \"user='U=1'\" "
            "(README, Configuration, has more)."
        )
    if isinstance(exc, MissingConfigException):
        group = (exc.missing_cfg_file or "").rsplit("/", 1)[0]
        options = [o for o in exc.options or [] if not o.endswith("_schema")]
        given = _typed(group) or exc.missing_cfg_file
        return (
            f"{given} names no config of {where}"
            + (f"; the options of {group} are {', '.join(options)}" if options else "")
            + f". Pass one of them, e.g. {group}={options[0] if options else '...'}."
        )
    if cause is not None and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        moved = _MOVED.get(str(key))
        if moved:
            return (
                f"{key} is not a config key of {where} (given {typed or key}): that "
                f"value is set once, at the top level. Pass {moved}=... instead. {help_line}"
            )
        return (
            f"unknown config key {key!r} (given {typed or key}) for {where}. Check its "
            f"spelling and group. {help_line}"
        )
    if cause is not None and type(cause).__name__ == "ValidationError":
        msg = str(getattr(cause, "msg", cause)).split("\n")[0]
        wanted = re.search(r"converted to (\w+)", msg)
        expected = _TYPE_WORDS.get(wanted.group(1), wanted.group(1)) if wanted else None
        if expected is None and "not a ListConfig" in msg:
            expected = "a list in brackets, e.g. [5,10,20]"
        if expected is None and "valid bool" in msg:
            expected = _TYPE_WORDS["Boolean"]
        if expected is None and "to string" in msg:
            expected = _TYPE_WORDS["String"] + " (quote it: key=\"'[a,b]'\")"
        given = typed or f"{key}={getattr(cause, 'object_type_str', '?')}"
        return (
            f"{given}: {key} must be {expected or 'of another type'}. Fix the value on the "
            f"command line (Hydra's words: {msg.rstrip('.')}). {help_line}"
        )
    text = " ".join(str(exc).split())
    return f"the configuration of {where} could not be built: {text}. {help_line}"


# --- ranges and choices: each check names the key, the value and what to type -----------------

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")
PROGRESS = ("auto", "bar", "lines", "none")
INITS = ("auto", "random", "svd")
SPLITS = ("temporal", "random")


def _bad(key: str, value: Any, expected: str, example: str) -> ConfigError:
    return ConfigError(f"{key} must be {expected}, got {value!r}. Pass e.g. {key}={example}.")


def _int(key: str, value: Any, low: int, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        words = "a positive whole number" if low == 1 else f"a whole number >= {low}"
        raise _bad(key, value, words, example)


def _float(
    key: str,
    value: Any,
    low: float,
    high: float,
    example: str,
    *,
    open_low=True,
    open_high=False,
    auto=False,
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value > low if open_low else value >= low)
    ok = ok and (value < high if open_high else value <= high)
    if not ok:
        lower = f"> {low:g}" if open_low else f">= {low:g}"
        upper = "" if high == float("inf") else f" and {'<' if open_high else '<='} {high:g}"
        chosen = " or auto (chosen on the validation split)" if auto else ""
        raise _bad(key, value, f"a number {lower}{upper}{chosen}", example)


def _choice(key: str, value: Any, allowed: tuple[str, ...], why: str = "") -> None:
    if value not in allowed:
        raise ConfigError(
            f"{key} must be one of {', '.join(allowed)}, got {value!r}.{why} "
            f"Pass e.g. {key}={allowed[0]}."
        )


def _text(key: str, value: Any, example: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, value, "a non-empty text", example)


def _check_db(db: Any, schema_required: bool) -> None:
    from recmf.store.schema import validate_schema_name

    _text("db.url", db.url, "postgresql://user:password@host:5432/db", optional=True)
    if db.schema is not None or schema_required:
        validate_schema_name(db.schema)
    _text("db.data_dir", db.data_dir, ".recmf/pgdata")


def _check_logger(logger: Any) -> None:
    _text("logger.tracking_uri", logger.tracking_uri, "sqlite:///mlflow.db")
    _text("logger.experiment_name", logger.experiment_name, "recmf")


def _check_column(key: str, value: Any, optional: bool) -> None:
    if value is None and optional:
        return
    ok = (isinstance(value, str) and value != "") or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    )
    if not ok:
        raise ConfigError(
            f"{key} must be a column name (with dataset.header=true) or a 0-based position "
            f"(with dataset.header=false){' or null' if optional else ''}, got {value!r}. "
            f"Pass e.g. {key}=userId."
        )


def _check_dataset(ds: Any) -> None:
    # a config built by hand (a notebook, a test) may leave out keys the loader defaults
    name = ds.get("name")
    has = ds.__contains__
    if name == "synthetic":
        for key in ("n_users", "n_items", "n_interactions", "rank"):
            if has(key):
                _int(f"dataset.{key}", ds[key], 1, "100")
        if has("popularity_exponent"):
            _float(
                "dataset.popularity_exponent", ds.popularity_exponent, 0, 10, "1.0", open_low=False
            )
        if has("seed"):
            _int("dataset.seed", ds.seed, 0, "0")
    elif name == "csv":
        from omegaconf import OmegaConf

        from recmf.data.features import feature_specs

        if OmegaConf.is_missing(ds, "path"):
            raise ConfigError(
                "dataset=csv needs the file to read: pass dataset.path=ratings.csv (and the "
                "column names, e.g. dataset.columns.user=userId dataset.columns.item=movieId)."
            )
        _text("dataset.path", ds.get("path"), "ratings.csv")
        for key in ("sep", "items_sep", "users_sep"):
            if has(key) and (not isinstance(ds[key], str) or len(ds[key]) != 1):
                raise _bad(f"dataset.{key}", ds[key], "one character", "';'")
        if has("time_unit"):
            _choice("dataset.time_unit", ds.time_unit, ("s", "ms"))
        columns = ds.get("columns") or {}
        for key in ("user", "item", "rating", "time"):
            optional = key in ("rating", "time")
            if key in columns or not optional:
                _check_column(f"dataset.columns.{key}", columns.get(key), optional)
        features = {}
        for side in ("items", "users"):
            key = f"dataset.{side}_features"
            given = ds.get(f"{side}_features")
            if OmegaConf.is_config(given):
                given = OmegaConf.to_container(given, resolve=True)
            features[side] = feature_specs(key, given)
            example = "movies.csv" if side == "items" else "users.csv"
            _text(f"dataset.{side}_path", ds.get(f"{side}_path"), example, optional=True)
            if features[side] and ds.get(f"{side}_path") is None:
                raise ConfigError(
                    f"{key} needs dataset.{side}_path, the file to read them from; pass "
                    f"dataset.{side}_path={example}."
                )
        if has("items_columns"):
            for key in ("item", "title"):
                optional = key == "title" and bool(features["items"])  # an items file for features
                _check_column(f"dataset.items_columns.{key}", ds.items_columns.get(key), optional)
        users_columns = ds.get("users_columns") or {}
        if not OmegaConf.is_dict(users_columns) and not isinstance(users_columns, dict):
            raise _bad("dataset.users_columns", users_columns, "a mapping", "{user: userId}")
        _check_column(
            "dataset.users_columns.user",
            users_columns.get("user"),
            optional=ds.get("users_path") is None,
        )
        if ds.get("users_path") is not None and not features["users"]:
            raise ConfigError(
                "dataset.users_path is set but dataset.users_features names no feature to read "
                "from it; add one (e.g. dataset.users_features: {age: {column: age, kind: "
                "numeric}} in a config file), or drop dataset.users_path."
            )
        for key in ("path", "items_path", "users_path"):
            _exists(f"dataset.{key}", ds.get(key))
    elif name == "movielens-100k":
        _text("dataset.path", ds.get("path"), "../shared/data/ml-100k", optional=True)
        _exists("dataset.path", ds.get("path"))


def _exists(key: str, path: str | None) -> None:
    """A data path that is given must exist: found now, before a server starts for nothing."""
    from pathlib import Path

    if path is not None and not Path(path).expanduser().exists():
        raise ConfigError(
            f"{key} {path!r} does not exist (relative paths are read from the working directory "
            f"{str(Path.cwd())!r}). Pass the path of the file or folder to read, e.g. "
            f"{key}=../shared/data/ml-100k."
        )


def _check_train(cfg: Any) -> None:
    _int("k", cfg.k, 1, "10")
    _int("latent_dim", cfg.latent_dim, 1, "32")
    _choice(
        "loss",
        cfg.loss,
        LOSSES,
        " Ranking losses (softmax, bpr, bce) are for top-K recommendation; mse predicts ratings.",
    )
    _int("seed", cfg.seed, 0, "42")
    _int("patience", cfg.patience, 0, "3")
    _float("min_delta", cfg.min_delta, 0, float("inf"), "0.0005", open_low=False)
    _int("val_users", cfg.val_users, 0, "20000 (0: all)")
    _text("registered_model", cfg.registered_model, "recmf", optional=True)
    _text("resume", cfg.resume, "last", optional=True)
    _choice("progress", cfg.progress, PROGRESS)
    _choice("split.kind", cfg.split.kind, SPLITS)
    for key in ("test_fraction", "val_fraction"):
        _float(f"split.{key}", cfg.split[key], 0, 1, "0.2", open_high=True)
    m = cfg.model
    _float("model.init_std", m.init_std, 0, float("inf"), "0.1")
    _choice("model.init", m.init, INITS)
    if m.init == "svd" and (m.get("name") == "tower" or cfg.loss == "mse"):
        given = "arch=tower" if m.get("name") == "tower" else "loss=mse"
        raise ConfigError(
            f"model.init=svd starts a matrix factorization from the SVD of the training "
            f"interactions, scaled for ranking; it does not apply with {given} (towers embed "
            f"features; mse predicts ratings). Pass model.init=random, or arch=mf with a ranking "
            f"loss (softmax, bpr, bce)."
        )
    _float("model.lr", m.lr, 0, float("inf"), "0.01")
    _float("model.lr_decay", m.lr_decay, 0, 1, "1.0")
    for key in ("reg", "recency"):
        if m[key] != AUTO:  # chosen on validation (recmf.train.selection)
            _float(f"model.{key}", m[key], 0, float("inf"), "auto", open_low=False, auto=True)
    fade = m.get("recency_fade", False)
    if not (isinstance(fade, bool) or fade == AUTO):  # not 1 or "yes": what is logged is exact
        raise _bad("model.recency_fade", m.recency_fade, "true, false or auto", "auto")
    _float("model.bias_reg", m.bias_reg, 0, float("inf"), "0.1", open_low=False)
    for key in ("user_batch_size", "batch_size", "n_negatives"):
        _int(f"model.{key}", m[key], 1, "64")
    if m.get("name") == "tower":
        _float("model.id_dropout", m.id_dropout, 0, 1, "0.5", open_low=False, open_high=True)
        _float("model.feature_reg", m.feature_reg, 0, float("inf"), "0.1", open_low=False)
        for side in ("user", "item"):
            for width in m[f"{side}_layers"]:
                _int(f"model.{side}_layers", width, 1, "[64]")
    t = cfg.trainer
    _choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    _choice("trainer.strategy", t.strategy, STRATEGIES)
    devices = t.devices
    ok = (
        devices == "auto"
        or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= -1)
        or (
            not isinstance(devices, str | int | float)
            and devices is not None
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
        )
    )
    if not ok or devices == 0:
        raise _bad("trainer.devices", devices, "a device count, auto, or a list like [0,1]", "1")
    _int("trainer.num_nodes", t.num_nodes, 1, "1")
    _int("trainer.max_epochs", t.max_epochs, 1, "50")
    _int("trainer.log_every_n_steps", t.log_every_n_steps, 1, "1")
    _int("trainer.num_sanity_val_steps", t.num_sanity_val_steps, 0, "0")


def validate(cfg: Any, script: str) -> None:
    """Check every value of ``script``'s composed config; raise ConfigError on the first bad one.

    Runs before anything is opened or written (no database, no MLflow run, no file).
    """
    if script in ("train", "ingest"):
        _check_db(cfg.db, schema_required=True)
        _check_dataset(cfg.dataset)
    if script == "train":
        _check_logger(cfg.logger)
        _check_train(cfg)
    if script in ("evaluate", "recommend"):
        _check_db(cfg.db, schema_required=False)
        _check_logger(cfg.logger)
        for key in ("run_id", "bundle"):
            _text(key, cfg[key], "<id>", optional=True)
    if script == "evaluate":
        from recmf.checks import positive_ints

        positive_ints("ks", [cfg.k] if cfg.k is not None else cfg.ks)
        _int("curve_k", cfg.curve_k, 1, "50")
        _int("chunk_size", cfg.chunk_size, 1, "2048")
        _choice("device", cfg.device, ("auto", "cpu", "cuda"))
        _text("report_dir", cfg.report_dir, ".recmf/reports")
        _text("split", cfg.split, "<run artifacts>/split/split.npz", optional=True)
    if script == "recommend":
        from recmf.checks import user_list

        _text("model", cfg.model, "models:/recmf/latest", optional=True)
        _int("k", cfg.k, 1, "10")
        _choice("format", cfg.format, ("table", "json"))
        if not cfg.list_users:
            user_list(cfg.user)
