"""One Lightning fit of one model from a fresh seeded start: what the selection phase, the
refit (:mod:`recmf.train.fitting`) and the candidates of a selection (:mod:`recmf.train.selection`)
each run."""

from __future__ import annotations

from pathlib import Path

from recmf.data.encoding import SideInputs
from recmf.data.split import Split
from recmf.errors import ConfigError, TrainingInterrupted
from recmf.model.mf import MatrixFactorization
from recmf.settings import TowerConfig, TrainConfig, TrainerConfig
from recmf.train import progress


def trainer_arguments(trainer: TrainerConfig) -> dict:
    """``trainer`` as keyword arguments of ``lightning.pytorch.Trainer``."""
    from dataclasses import asdict

    return asdict(trainer)


def build_model(cfg: TrainConfig, n_users: int, n_items: int, inputs: SideInputs | None):
    """A fresh model of ``cfg.model``'s architecture (seed the generators first)."""
    m = cfg.model
    if not isinstance(m, TowerConfig):
        return MatrixFactorization(
            n_users, n_items, cfg.latent_dim, use_bias=m.use_bias, init_std=m.init_std
        )
    from recmf.model.towers import TwoTower

    x = inputs.x if inputs is not None else {}
    if not m.id_embeddings and not x:
        raise ConfigError(
            "arch=tower with model.id_embeddings=false embeds users and items from their side "
            "features alone, but the store holds none. Ingest features (e.g. dataset="
            "movielens-100k reads genres and demographics), or keep model.id_embeddings=true."
        )
    return TwoTower(
        n_users,
        n_items,
        cfg.latent_dim,
        x.get("user"),
        x.get("item"),
        use_bias=m.use_bias,
        init_std=m.init_std,
        id_embeddings=m.id_embeddings,
        user_layers=m.user_layers,
        item_layers=m.item_layers,
        id_dropout=m.id_dropout,
    )


def fit_once(
    cfg: TrainConfig,
    split: Split,
    logger,
    callbacks,
    max_epochs: int,
    prefix: str,
    validate: bool,
    ckpt_path: Path | None = None,
    inputs: SideInputs | None = None,
    starts: dict | None = None,
):
    """One Lightning fit from a fresh seeded model; returns (lit_module, trainer). ``starts``:
    :func:`start_from`'s cache, for fits on the same training pairs (a selection's candidates)."""
    import lightning as L

    from recmf.data.batches import InteractionsDataModule
    from recmf.model.lit_module import MFLitModule

    m = cfg.model
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = split.train
    model = build_model(cfg, data.n_users, data.n_items, inputs)
    batch = m.user_batch_size if cfg.loss == "softmax" else m.batch_size
    dm = InteractionsDataModule(
        split, cfg.loss, batch, m.n_negatives, seed=cfg.seed, recency=m.recency,
        val_users=cfg.val_users, fade=m.recency_fade is True,
    )  # fmt: skip
    fresh_svd = m.init == "svd" and ckpt_path is None  # a resumed fit loads its checkpoint
    if fresh_svd:
        start_from(cfg, [model], dm.train_items, starts)
    lit = MFLitModule(
        model,
        cfg.loss,
        lr=m.lr,
        reg=m.reg,
        k=cfg.k,
        bias_reg=m.bias_reg,
        lr_decay=m.lr_decay,
        log_prefix=prefix,
        feature_reg=getattr(m, "feature_reg", 0.0),
        catalogue=catalogue(cfg, [model], dm.train_items),
    )
    trim_heap(len(data))
    reuse_freed_buffers()
    extra = {} if validate else {"limit_val_batches": 0}  # the refit phase does not validate
    shown, bar = progress.callbacks(cfg.progress, max_epochs)
    arguments = {**trainer_arguments(cfg.trainer), **extra}
    arguments.update(max_epochs=max_epochs, enable_progress_bar=bar)
    trainer = L.Trainer(
        **arguments,
        logger=logger,
        callbacks=[*callbacks, *shown],
    )
    try:
        if fresh_svd and validate:  # the start's validation figures, logged at step 0
            trainer.validate(lit, dm, verbose=False)
        trainer.fit(lit, dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl+C (and our SIGTERM) into exit(1)
            raise TrainingInterrupted(prefix, trainer.current_epoch) from None
        raise
    return lit, trainer


def catalogue(cfg: TrainConfig, models: list, train_items):
    """The :class:`~recmf.model.mf.Catalogue` of the items with a training pair, their others
    pinned in each of ``models``, for a full softmax over a matrix factorization with biases;
    None otherwise, or when every item has a pair (a two-tower model embeds an item without
    one from its features: it stays in its softmax)."""
    import torch

    from recmf.model.mf import Catalogue

    first = models[0]
    if cfg.loss != "softmax" or type(first) is not MatrixFactorization or not first.use_bias:
        return None
    found = Catalogue.of(torch.bincount(train_items.indices.long(), minlength=first.n_items))
    if found is not None:
        for model in models:
            found.pin(model)
    return found


def start_from(cfg: TrainConfig, models: list, train_items, cache: dict | None = None) -> None:
    """Give each of ``models`` (the same fresh matrix factorization) the start ``cfg.model.init``
    asks for beyond the random one: the SVD start, computed once (model.init=svd). ``cache``, a
    dict kept across calls on the same training pairs (a selection's races, or its candidates fitted
    one after the other), holds it after the first call, so the next copies it (the SVD and its
    scale: ~0.5 s on ml-latest-small)."""
    if cfg.model.init != "svd" or not models:
        return
    if cache is not None and "svd" in cache:
        models[0].load_state_dict(cache["svd"])
    else:
        from recmf.model.svd_start import start_from_svd

        start_from_svd(models[0], train_items, cfg.seed)
        if cache is not None:
            cache["svd"] = {k: v.detach().clone() for k, v in models[0].state_dict().items()}
    for other in models[1:]:
        other.load_state_dict(models[0].state_dict())


TRIM_ROWS = 1 << 20  # below this many training rows a fit's freed tensors are small


def trim_heap(rows: int) -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise:
    building the data module at 20M rows left 70 MB of freed sort temporaries resident), when
    the data has ``rows`` >= :data:`TRIM_ROWS`: a collection scans every object, ~0.4 s once
    Lightning and MLflow are imported (two a run: 7% of ML-100K's fit), for nothing at that size."""
    if rows < TRIM_ROWS:
        return
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def reuse_freed_buffers() -> None:
    """Have glibc serve large allocations from its heap and keep what is freed there, so that
    each step's (users x items) buffers reuse memory already mapped: by default a buffer over
    32 MB is mmapped fresh and unmapped when freed, and the kernel zeroes every page again on
    each first touch (a 20M-row softmax step of 1024 users x 27k items: 296 against 455 ms)."""
    import ctypes

    m_trim_threshold, m_mmap_max = -1, -4  # glibc's mallopt parameters (malloc.h)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GB free at the heap's top
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
