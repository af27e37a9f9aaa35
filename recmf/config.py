"""The type of every config key (Hydra structured configs) and the range of every value.

Hydra checks each key's type while it composes (``seed=abc`` never reaches the code);
:func:`validate` checks ranges and choices before anything is opened or written. Importing this
module registers the schemas in Hydra's ConfigStore; the scripts import it before
``@hydra.main``, and :func:`compose` does for tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from recmf.checks import LOSSES
from recmf.errors import ConfigError

CONFIG_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


DEFAULT_SCHEMA = "recmf"  # the store schema when none is given


@dataclass
class DbConfig:
    url: str | None = None
    schema: str | None = DEFAULT_SCHEMA  # None (evaluate, recommend): the run's own schema
    data_dir: str = ".recmf/pgdata"


@dataclass
class LoggerConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "recmf"
    run_name: str | None = None


@dataclass
class SplitConfig:
    test_fraction: float = 0.2
    val_fraction: float = 0.2


@dataclass
class MFConfig:  # configs/arch/mf.yaml
    use_bias: bool = MISSING
    init_std: float = MISSING
    lr: float = MISSING
    lr_decay: float = MISSING
    reg: float = MISSING
    bias_reg: float = MISSING
    recency: float = MISSING
    user_batch_size: int = MISSING
    batch_size: int = MISSING
    n_negatives: int = MISSING


@dataclass
class TrainerConfig:  # the keyword arguments of lightning.pytorch.Trainer that recmf sets
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = 1  # a count, "auto", or a list of device indices
    strategy: str = "auto"
    num_nodes: int = 1
    max_epochs: int = 200
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 1


@dataclass
class SyntheticConfig:  # configs/dataset/synthetic.yaml
    name: str = "synthetic"
    n_users: int = MISSING
    n_items: int = MISSING
    n_interactions: int = MISSING
    rank: int = MISSING
    popularity_exponent: float = MISSING
    seed: int = MISSING


@dataclass
class MovieLensConfig:  # configs/dataset/movielens-100k.yaml
    name: str = "movielens-100k"
    path: str | None = None
    url: str = MISSING
    md5: str = MISSING
    cache_dir: str = MISSING


@dataclass
class CsvColumns:
    user: Any = MISSING  # a column name (header=true) or a 0-based position
    item: Any = MISSING
    rating: Any = None
    time: Any = None


@dataclass
class CsvItemColumns:
    item: Any = MISSING
    title: Any = MISSING


@dataclass
class CsvConfig:  # configs/dataset/csv.yaml
    name: str = "csv"
    path: str = MISSING
    sep: str = ","
    header: bool = True
    columns: CsvColumns = field(default_factory=CsvColumns)
    time_unit: str = "s"
    items_path: str | None = None
    items_sep: str = ","
    items_columns: CsvItemColumns = field(default_factory=CsvItemColumns)


@dataclass
class TrainConfig:  # configs/train.yaml
    db: DbConfig = field(default_factory=DbConfig)
    dataset: Any = MISSING  # one of the dataset schemas above, chosen by dataset=
    model: Any = MISSING  # chosen by arch= (configs/arch/)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    latent_dim: int = 64
    k: int = 10
    loss: str = "softmax"
    seed: int = 42
    patience: int = 5
    refit: bool = True
    registered_model: str | None = None
    resume: str | None = None
    progress: str = "auto"
    verbose: bool = False


@dataclass
class IngestConfig:  # configs/ingest.yaml
    db: DbConfig = field(default_factory=DbConfig)
    dataset: Any = MISSING
    verbose: bool = False


@dataclass
class EvaluateConfig:  # configs/evaluate.yaml
    db: DbConfig = field(default_factory=DbConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run_id: str | None = None
    bundle: str | None = None
    split: str | None = None  # the split.npz to evaluate on; None: the bundle's run's artifact
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    k: int | None = None
    curve_k: int = 50
    chunk_size: int = 2048
    device: str = "auto"
    report_dir: str = ".recmf/reports"
    compare: list[str] = field(default_factory=list)
    allow_data_mismatch: bool = False
    verbose: bool = False


@dataclass
class RecommendConfig:  # configs/recommend.yaml
    db: DbConfig = field(default_factory=DbConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    user: Any = None  # an id or a list of ids; checked by recmf.checks.user_list
    k: int = 10
    exclude_seen: bool = True
    run_id: str | None = None
    bundle: str | None = None
    model: str | None = None
    format: str = "table"
    list_users: bool = False
    verbose: bool = False


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


register()


def compose(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """A script's config without running the script (tests, benchmarks, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides))


# --- ranges and choices: each check names the key, the value and what to type -----------------

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp")
PROGRESS = ("auto", "bar", "lines", "none")


def _bad(key: str, value: Any, expected: str, example: str) -> ConfigError:
    return ConfigError(f"{key} must be {expected}, got {value!r}. Pass e.g. {key}={example}.")


def _int(key: str, value: Any, low: int, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        words = "a positive whole number" if low == 1 else f"a whole number >= {low}"
        raise _bad(key, value, words, example)


def _float(
    key: str, value: Any, low: float, high: float, example: str, *, open_low=True, open_high=False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value > low if open_low else value >= low)
    ok = ok and (value < high if open_high else value <= high)
    if not ok:
        lower = f"> {low:g}" if open_low else f">= {low:g}"
        upper = "" if high == float("inf") else f" and {'<' if open_high else '<='} {high:g}"
        raise _bad(key, value, f"a number {lower}{upper}", example)


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

        if OmegaConf.is_missing(ds, "path"):
            raise ConfigError(
                "dataset=csv needs the file to read: pass dataset.path=ratings.csv (and the "
                "column names, e.g. dataset.columns.user=userId dataset.columns.item=movieId)."
            )
        _text("dataset.path", ds.get("path"), "ratings.csv")
        for key in ("sep", "items_sep"):
            if has(key) and (not isinstance(ds[key], str) or len(ds[key]) != 1):
                raise _bad(f"dataset.{key}", ds[key], "one character", "';'")
        if has("time_unit"):
            _choice("dataset.time_unit", ds.time_unit, ("s", "ms"))
        columns = ds.get("columns") or {}
        for key in ("user", "item", "rating", "time"):
            optional = key in ("rating", "time")
            if key in columns or not optional:
                _check_column(f"dataset.columns.{key}", columns.get(key), optional)
        _text("dataset.items_path", ds.get("items_path"), "movies.csv", optional=True)
        if has("items_columns"):
            for key in ("item", "title"):
                _check_column(f"dataset.items_columns.{key}", ds.items_columns.get(key), False)
        for key in ("path", "items_path"):
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
    _int("patience", cfg.patience, 0, "5")
    _text("registered_model", cfg.registered_model, "recmf", optional=True)
    _text("resume", cfg.resume, "last", optional=True)
    _choice("progress", cfg.progress, PROGRESS)
    for key in ("test_fraction", "val_fraction"):
        _float(f"split.{key}", cfg.split[key], 0, 1, "0.2", open_high=True)
    m = cfg.model
    _float("model.init_std", m.init_std, 0, float("inf"), "0.1")
    _float("model.lr", m.lr, 0, float("inf"), "0.01")
    _float("model.lr_decay", m.lr_decay, 0, 1, "1.0")
    for key in ("reg", "bias_reg", "recency"):
        _float(f"model.{key}", m[key], 0, float("inf"), "0.1", open_low=False)
    for key in ("user_batch_size", "batch_size", "n_negatives"):
        _int(f"model.{key}", m[key], 1, "64")
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
