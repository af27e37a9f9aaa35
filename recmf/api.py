"""The Python API: train on a pandas DataFrame or on the store, then recommend, evaluate, save.

    import recmf
    model = recmf.fit(df, latent_dim=32)          # columns user, item, and optionally rating, time
    model.recommend("U1", k=10)                   # a DataFrame: user_id, rank, item_id, title, ...
    model.evaluate()                              # test metrics on its own held-out split
    model.save("my-model"); recmf.load("my-model")

No Hydra, no MLflow run: the same split, training procedure and bundle as ``scripts/train.py``,
with the configuration's defaults (``configs/``) for every value not given here.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recmf.data.features import FeatureColumn, RawFeatures
from recmf.data.interactions import Interactions, RawInteractions, Vocab
from recmf.data.split import Split, make_split
from recmf.errors import ConfigError
from recmf.serve.bundle import Bundle
from recmf.settings import DbConfig

_COLUMNS = ("user", "item", "rating", "time")
_TOP_LEVEL = ("latent_dim", "k", "loss", "seed", "patience", "refit", "progress", "arch", "split")
_TRAINER = ("max_epochs", "accelerator", "devices")


def fit(
    data: Any,
    *,
    latent_dim: int = 64,
    k: int = 10,
    loss: str = "softmax",
    max_epochs: int = 200,
    progress: str = "none",
    item_features: Any = None,
    user_features: Any = None,
    **params: Any,
) -> Model:
    """Train a model on ``data``: a pandas DataFrame with columns ``user``, ``item`` and, when
    known, ``rating`` and ``time`` (unix seconds; without it the data are split per user at
    random, as with ``split="random"``).
    With ``arch="tower"`` the side features are inputs of the towers.

    Args:
        data: The interactions.
        latent_dim: Embedding width.
        k: Cut-off of the validation NDCG@k that selects the epoch.
        loss: ``softmax``, ``bpr``, ``bce`` or ``mse``.
        max_epochs: Upper bound; early stopping on validation usually ends sooner.
        progress: ``none`` (default here), ``lines`` (log lines) or ``bar``.
        item_features: A DataFrame with an ``item`` column and one column per feature (numbers:
            numeric; tuples or lists: multi; other values: categorical; missing: unknown), or
            :class:`~recmf.data.features.RawFeatures`; used by ``arch="tower"``.
        user_features: The same, keyed by a ``user`` column.
        **params: Any other key of ``configs/train.yaml``: top-level (``seed``, ``patience``,
            ``refit``, ``split="random"`` for a per-user random holdout), a trainer key
            (``accelerator``, ``devices``), or a model key (``lr``, ``reg``, ``recency``,
            ``recency_fade``, ``batch_size``, ...). ``reg``, ``recency`` and ``recency_fade``
            default to ``"auto"``: chosen on the validation split (the fitted model's
            ``bundle.meta["selected"]``).

    Raises:
        ConfigError: a value out of range or of the wrong type, or a frame without the columns.
    """
    raw = _raw_from_frame(data)
    features = {"user": side_features(user_features, "user"),
                "item": side_features(item_features, "item")}  # fmt: skip
    return _fit(
        _interactions(raw),
        dict(params, latent_dim=latent_dim, k=k, loss=loss, max_epochs=max_epochs),
        progress,
        features,
    )


def fit_store(
    schema: str = "recmf",
    *,
    url: str | None = None,
    data_dir: str = ".recmf/pgdata",
    **params: Any,
) -> Model:
    """Train on the interactions a store schema holds (``url``: any PostgreSQL; default: the
    embedded server under ``data_dir``); other arguments as :func:`fit`."""
    from recmf.store import FeatureStore

    with FeatureStore.open(DbConfig(url, schema, data_dir), create=False) as store:
        data = store.read_interactions()
        features = {side: store.read_features(side) for side in ("user", "item")}
    progress = params.pop("progress", "none")
    return _fit(data, params, progress, features)


def load(directory: str | Path) -> Model:
    """A model saved with :meth:`Model.save`."""
    directory = Path(directory)
    bundle = Bundle.load(directory / "bundle")
    with np.load(directory / "history.npz", allow_pickle=False) as z:
        history = (z["user_idx"], z["item_idx"])
    return Model(bundle, history, None)


@dataclass
class Model:
    """A trained model with what it needs to answer: the bundle, each user's known items, and
    (after :func:`fit`) the split it was selected and tested on."""

    bundle: Bundle
    history: tuple[np.ndarray, np.ndarray]  # (user_idx, item_idx) of every known interaction
    split: Split | None

    def recommend(
        self,
        users: str | list[str],
        k: int = 10,
        exclude_seen: bool = True,
        *,
        item_features: Any = None,
        user_features: Any = None,
    ):
        """Top-``k`` items for each user as a DataFrame (``user_id, rank, item_id, title, score,
        path``); a user the model never saw gets the popularity ranking (``path``).

        A two-tower bundle (``scripts/train.py arch=tower``) also ranks the items of
        ``item_features`` it never trained on, embedded from their features, and scores a user
        it never saw who is in ``user_features`` from them (``path`` ``features``); other
        bundles ignore both. Each is a DataFrame as for :func:`fit` or
        :class:`~recmf.data.features.RawFeatures` (the store's: ``store.read_features("item")``).
        """
        import pandas as pd

        from recmf.checks import positive_int, user_list
        from recmf.serve.cold import NewItems
        from recmf.serve.recommender import Recommender

        users = user_list(users)
        positive_int("k", k)
        item_features = side_features(item_features, "item")
        user_features = side_features(user_features, "user")
        vocab = self.bundle.vocab
        known = [u for u in users if vocab.has_user(u)]
        rows = np.isin(self.history[0], vocab.user_idx(known)) if known else []
        seen: dict[str, list[str]] = {u: [] for u in users}
        for u, i in zip(self.history[0][rows], self.history[1][rows], strict=True):
            seen[str(vocab.user_ids[u])].append(str(vocab.item_ids[i]))
        new_items = None
        if item_features is not None:
            ids = item_features.ids[~np.isin(item_features.ids.astype(str), vocab.item_ids)]
            new_items = NewItems(ids, np.full(len(ids), "", dtype=object), item_features)
        recs = Recommender(self.bundle).recommend(
            users,
            k,
            seen,
            exclude_seen=exclude_seen,
            new_items=new_items,
            user_features=user_features,
        )
        return pd.DataFrame(
            [
                (r.user_id, rank, item.item_id, item.title, item.score, r.path)
                for r in recs
                for rank, item in enumerate(r.items, 1)
            ],
            columns=["user_id", "rank", "item_id", "title", "score", "path"],
        )

    def evaluate(self, ks: tuple[int, ...] | list[int] = (5, 10, 20)) -> dict[str, float]:
        """Test metrics (``ndcg_at_10``, ...) on the held-out split, with the popularity
        baseline's under ``baseline/``; train and validation items are excluded."""
        import torch

        from recmf.checks import positive_ints
        from recmf.data.sparse import UserItems
        from recmf.eval.ranking import beside_popularity

        if self.split is None:
            raise ConfigError(
                "this model was loaded from disk without its split, so it has no held-out test "
                "set to evaluate on; evaluate the model returned by recmf.fit instead"
            )
        ks = positive_ints("ks", ks)
        s, n_users, n_items = self.split, self.bundle.vocab.n_users, self.bundle.vocab.n_items
        seen_u = np.concatenate([s.train.user_idx, s.val.user_idx])
        seen_i = np.concatenate([s.train.item_idx, s.val.item_idx])
        seen = UserItems.from_pairs(seen_u, seen_i, n_users)
        truth = UserItems.from_pairs(s.test.user_idx, s.test.item_idx, n_users)
        model = self.bundle.to_model()
        metrics, baseline, _, _ = beside_popularity(
            model.score_all, truth, seen, torch.from_numpy(seen_i), ks, n_items, 2048
        )
        return {**metrics, **{f"baseline/{key}": v for key, v in baseline.items()}}

    def save(self, directory: str | Path) -> Path:
        """Write the bundle and the known interactions (npz + JSON, no pickle)."""
        directory = Path(directory)
        self.bundle.save(directory / "bundle")
        np.savez(directory / "history.npz", user_idx=self.history[0], item_idx=self.history[1])
        return directory


def _raw_from_frame(df: Any) -> RawInteractions:
    missing = [c for c in ("user", "item") if c not in getattr(df, "columns", ())]
    if missing:
        raise ConfigError(
            f"recmf.fit needs a pandas DataFrame with columns user and item (and optionally "
            f"rating, time); got {type(df).__name__} with columns "
            f"{list(getattr(df, 'columns', []))}. Rename the columns, e.g. "
            "df.rename(columns={'userId': 'user', 'movieId': 'item'})."
        )
    n = len(df)
    time = df["time"].to_numpy(np.int64) if "time" in df else np.arange(n, dtype=np.int64)
    rating = df["rating"].to_numpy(np.float64) if "rating" in df else None
    return RawInteractions(
        df["user"].astype(str).to_numpy(object),
        df["item"].astype(str).to_numpy(object),
        rating,
        time,
        source="a DataFrame",
        timed="time" in df,
    )


def _interactions(raw: RawInteractions) -> Interactions:
    """Ids to positions (first appearance order); repeated (user, item, time): the first kept."""
    import pandas as pd

    users, user_ids = pd.factorize(raw.user_id)
    items, item_ids = pd.factorize(raw.item_id)
    rating = raw.rating if raw.rating is not None else np.full(len(raw), np.nan)
    frame = pd.DataFrame({"u": users, "i": items, "t": raw.timestamp, "r": rating})
    frame = frame.drop_duplicates(["u", "i", "t"], keep="first")
    vocab = Vocab(np.asarray(user_ids), np.asarray(item_ids), np.full(len(item_ids), ""))
    return Interactions(
        frame["u"].to_numpy(np.int64),
        frame["i"].to_numpy(np.int64),
        frame["r"].to_numpy(np.float32),
        frame["t"].to_numpy(np.int64),
        vocab,
        raw.timed,
    )


def _overrides(params: dict[str, Any]) -> list[str]:
    """Keyword arguments as Hydra overrides of ``configs/train.yaml`` (values quoted as text
    where Hydra would read them otherwise)."""
    out = []
    for key, value in params.items():
        path = key if key in _TOP_LEVEL else f"trainer.{key}" if key in _TRAINER else f"model.{key}"
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
        out.append(f"{path}={text}")
    return out


def side_features(given: Any, side: str) -> RawFeatures | None:
    """``given`` (None, :class:`RawFeatures`, or a DataFrame keyed by a ``user``/``item``
    column, see :func:`fit`) as RawFeatures of ``side``."""
    if given is None or isinstance(given, RawFeatures):
        return given
    columns = list(getattr(given, "columns", ()))
    if side not in columns:
        raise ConfigError(
            f"{side}_features needs a pandas DataFrame with a {side!r} column and one column per "
            f"feature; got {type(given).__name__} with columns {columns}. E.g. "
            f"pd.DataFrame({{'{side}': ids, 'genres': [('Comedy',), ...], 'year': years}})."
        )
    out = []
    for name in columns:
        if name == side:
            continue
        values = given[name]
        if values.dtype.kind in "iufb":
            out.append(FeatureColumn(name, "numeric", values.to_numpy(np.float64)))
        elif values.map(lambda v: isinstance(v, list | tuple)).any():
            multi = np.empty(len(values), dtype=object)
            multi[:] = [tuple(str(x) for x in v) if isinstance(v, list | tuple) else ()
                        for v in values]  # fmt: skip
            out.append(FeatureColumn(name, "multi", multi))
        else:
            text = np.array([None if v is None or v != v else str(v) for v in values], object)
            out.append(FeatureColumn(name, "categorical", text))
    ids = given[side].astype(str).to_numpy(object)
    return RawFeatures(side, ids, out, source="a DataFrame")


def _fit(
    data: Interactions,
    params: dict[str, Any],
    progress: str,
    features: dict[str, RawFeatures | None] | None = None,
) -> Model:
    from recmf.config import compose_settings
    from recmf.data.encoding import SideInputs
    from recmf.settings import TowerConfig
    from recmf.train.fitting import fit_select_refit, quiet_lightning, untimed_split
    from recmf.train.fold_in_tuning import tune

    overrides = [*_overrides(params), f"progress={progress}"]
    cfg = compose_settings("train", overrides, who="recmf.fit")
    untimed_split(cfg, data, "the data")
    s = cfg.split
    split = make_split(data, s.kind, s.test_fraction, s.val_fraction, cfg.seed)
    if len(split.train) == 0 or len(split.val) == 0:
        raise ConfigError(
            f"{len(data)} interactions of {data.n_users} users are too few to hold out a "
            "validation period (each user needs at least 6 with the default split fractions)"
        )
    quiet_lightning()  # its banners and tips; the API reports through its return value
    with tempfile.TemporaryDirectory(prefix="recmf-fit-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = None
        if isinstance(cfg.model, TowerConfig) and features:
            inputs = SideInputs.build(data.vocab, features)
        fitted = fit_select_refit(cfg, split, False, Path(tmp), inputs=inputs)
    meta = {
        "loss": cfg.loss,
        "k": cfg.k,
        "refit": cfg.refit,
        "run_id": None,
        "best_epoch": fitted.best_epoch,
        "monitor": fitted.monitor,
        "best_val": fitted.best_val,
        "split": split.sizes(),
        "split_kind": cfg.split.kind,  # random when the frame had no time column
        "selected": fitted.chosen,  # model.recency / model.reg chosen on validation (auto)
    }
    encoders = inputs.encoders if inputs is not None else None
    bundle = Bundle.from_model(fitted.model, data.vocab, split, meta, encoders)
    bundle.meta["fold_in"] = tune(fitted.selected_weights or bundle.weights, split, cfg.k)
    return Model(bundle, (data.user_idx, data.item_idx), split)
