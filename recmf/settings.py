"""The typed settings every layer below the wiring receives: plain dataclasses, no Hydra.

``recmf.config`` registers these as Hydra's structured configs (so every key of
``configs/*.yaml`` has a type) and turns a composed config into them; below it, functions take
the one they need (``FeatureStore.open(DbConfig)``, ``load_source(CsvConfig)``,
``fit_select_refit(TrainConfig, ...)``), so what a function may read is on its signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MISSING: Any = "???"  # OmegaConf's mark for a value the user must give (e.g. dataset.path)

DEFAULT_SCHEMA = "recmf"  # the store schema when none is given
AUTO = "auto"  # model.reg / model.recency: chosen on the validation split (recmf.train.selection)


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
class SplitConfig:  # configs/split/{temporal,random}.yaml
    kind: str = "temporal"  # temporal | random (per user; recmf.data.split.make_split)
    test_fraction: float = 0.2
    val_fraction: float = 0.2


@dataclass
class MFConfig:  # configs/arch/mf.yaml
    name: str = "mf"  # the architecture (arch=): mf | tower
    use_bias: bool = MISSING
    init_std: float = MISSING
    init: str = MISSING  # random | svd: the embeddings' start (recmf.model.svd_start)
    lr: float = MISSING
    lr_decay: float = MISSING
    reg: Any = MISSING  # a number, or auto: chosen on validation (recmf.train.selection)
    bias_reg: float = MISSING
    recency: Any = MISSING  # a number, or auto (as reg)
    recency_fade: Any = False  # true | false | auto: weaker recency for long histories (as reg)
    user_batch_size: int = MISSING
    batch_size: int = MISSING
    n_negatives: int = MISSING


@dataclass
class TowerConfig(MFConfig):  # configs/arch/tower.yaml: MF's keys and the towers'
    name: str = "tower"
    id_embeddings: bool = MISSING  # false: every embedding from features alone
    id_dropout: float = MISSING  # drop a row's id part with this probability per step
    feature_reg: float = 0.0  # L2 on the tower outputs of the rows a step touches
    user_layers: list[int] = field(default_factory=list)  # hidden widths ([]: linear)
    item_layers: list[int] = field(default_factory=list)


@dataclass
class TrainerConfig:  # keyword arguments of lightning.pytorch.Trainer (recmf.train.fitting)
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
class CsvItemColumns:  # read only with items_path
    item: Any = None
    title: Any = None  # may be null when dataset.items_features are given


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
    # side features (recmf.data.features.feature_specs): name -> {column, kind, sep, pattern,
    # missing}; Any, as their names are the user's
    items_features: Any = field(default_factory=dict)  # read from items_path
    users_path: str | None = None
    users_sep: str = ","
    users_columns: Any = field(default_factory=lambda: {"user": None})
    users_features: Any = field(default_factory=dict)  # read from users_path


@dataclass
class TrainConfig:  # configs/train.yaml
    db: DbConfig = field(default_factory=DbConfig)
    dataset: Any = MISSING  # a DatasetConfig, chosen by dataset= (configs/dataset/)
    model: Any = MISSING  # an MFConfig, chosen by arch= (configs/arch/)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    latent_dim: int = 64
    k: int = 10
    loss: str = "softmax"
    seed: int = 42
    patience: int = 3
    min_delta: float = 0.0  # what counts as better for early stopping (NDCG@k, RMSE)
    val_users: int = 0  # validation ranks at most this many users, a seeded sample; 0 = all
    refit: bool = True
    registered_model: str | None = None
    resume: str | None = None
    progress: str = "auto"
    verbose: bool = False

    def split_at_random(self) -> None:
        """``split.kind`` random, and no recency weighting: a random holdout has no "latest"
        rows to favour (``split=random``, or data without a time column)."""
        self.split.kind = "random"
        self.model.recency = 0.0
        self.model.recency_fade = False


@dataclass
class IngestConfig:  # configs/ingest.yaml
    db: DbConfig = field(default_factory=DbConfig)
    dataset: Any = MISSING  # a DatasetConfig
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


DatasetConfig = SyntheticConfig | MovieLensConfig | CsvConfig
ARCHS: dict[str, type] = {"mf": MFConfig, "tower": TowerConfig}
DATASETS: dict[str, type] = {
    "synthetic": SyntheticConfig,
    "movielens-100k": MovieLensConfig,
    "csv": CsvConfig,
}
