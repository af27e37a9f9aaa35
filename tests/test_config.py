"""Every key of every script is checked before anything is opened or written.

The scripts run in this process (``runpy``, as ``python scripts/<name>.py``), each in an empty
working directory with no database URL: a value that got past the checks would start the
embedded server there, create ``mlflow.db`` or write a log, and the directory would not stay
empty.
"""

from __future__ import annotations

import contextlib
import io
import runpy
import sys

import pytest
from omegaconf import OmegaConf
from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

from recmf.config import compose
from tests.scripts import ROOT

CSV = ["dataset=csv", "dataset.path=ratings.csv"]
# (script, what selects the variant, keys to walk: None = all but the dataset's)
VARIANTS = [
    ("train", [], None),
    ("train", ["dataset=movielens-100k"], "dataset"),
    ("train", CSV, "dataset"),
    ("ingest", [], None),
    ("ingest", ["dataset=movielens-100k"], "dataset"),
    ("ingest", CSV, "dataset"),
    ("evaluate", [], None),
    ("recommend", [], None),
]
# hydra_* and the sweep callback are Hydra's own; they take any text
SKIP = {"dataset.name"}


def _leaves(node, prefix=""):
    for key in node.keys() if OmegaConf.is_dict(node) else ():
        full = f"{prefix}{key}"
        child = node._get_node(key)
        if OmegaConf.is_dict(child):
            yield from _leaves(child, f"{full}.")
        else:
            yield full, child


def _wrong(node) -> str:
    """A value of the wrong type for ``node``'s declared type."""
    if isinstance(node, IntegerNode | FloatNode):
        return "abc"
    if isinstance(node, BooleanNode):
        return "maybe"
    if isinstance(node, StringNode):
        return "[1,2]"
    if OmegaConf.is_list(node):
        return "abc"
    assert isinstance(node, AnyNode), type(node)
    return "[[]]"  # an untyped key (an id, a column, devices): refused by recmf's own check


def _cases():
    """Every leaf of every variant; the first leaf of each node type per variant runs in the
    quick suite, the rest with ``-m slow`` (each case is a whole script run, ~0.4 s)."""
    for script, select, only in VARIANTS:
        cfg = compose(script, [*select, "dataset.path=ratings.csv"] if select == CSV else select)
        seen = set()
        for key, node in _leaves(cfg):
            if key in SKIP or (only and not key.startswith(f"{only}.")):
                continue
            if only is None and key.startswith("dataset.") and script in ("train", "ingest"):
                continue  # walked with each dataset variant below
            marks = [pytest.mark.slow] if type(node) in seen else []
            seen.add(type(node))
            yield pytest.param(
                script, [*select, f"{key}={_wrong(node)}"], id=f"{script}:{key}", marks=marks
            )


def run_script(script: str, args: list[str], cwd, monkeypatch) -> tuple[int, str, str]:
    """``python scripts/<script>.py args`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    if any(a.startswith("dataset.path=ratings.csv") for a in args):
        (cwd / "ratings.csv").write_text("userId,movieId\n")
    monkeypatch.delenv("RECMF_DATABASE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / f"{script}.py"), *args])
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _assert_refused(code, out, err, cwd):
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == ""
    written = [p.name for p in cwd.iterdir() if p.name != "ratings.csv"]  # the test's own file
    assert written == []  # nothing written: no server, no mlflow.db, no log


@pytest.mark.parametrize(("script", "args"), list(_cases()))
def test_config_every_leaf_with_a_wrong_type_is_refused_before_anything(
    script, args, tmp_path, monkeypatch
):
    _assert_refused(*run_script(script, args, tmp_path, monkeypatch), tmp_path)


OUT_OF_RANGE = [
    ("train", "model.lr=-1", "model.lr must be a number > 0"),
    ("train", "model.lr=0", "model.lr must be a number > 0"),
    ("train", "model.user_batch_size=0", "model.user_batch_size must be a positive whole"),
    ("train", "model.batch_size=-5", "model.batch_size must be a positive whole"),
    ("train", "model.reg=-0.1", "model.reg must be a number >= 0"),
    ("train", "model.lr_decay=1.5", "model.lr_decay must be a number > 0 and <= 1"),
    ("train", "split.test_fraction=0", "split.test_fraction must be a number > 0"),
    ("train", "split.val_fraction=1", "split.val_fraction must be a number > 0 and < 1"),
    ("train", "split.test_fraction=1.5", "split.test_fraction must be"),
    ("train", "seed=-1", "seed must be a whole number >= 0"),
    ("train", "k=0", "k must be a positive whole number"),
    ("train", "latent_dim=0", "latent_dim must be a positive whole number"),
    ("train", "loss=foo", "loss must be one of softmax, bpr, bce, mse, got 'foo'"),
    ("train", "model.loss=mse", "model.loss is not a config key of scripts/train.py"),
    ("train", "model.latent_dim=8", "Pass latent_dim=... instead"),
    ("train", "trainer.max_epochs=0", "trainer.max_epochs must be a positive whole number"),
    ("train", "trainer.accelerator=tpu9", "trainer.accelerator must be one of"),
    ("train", "trainer.devices=0", "trainer.devices must be a device count"),
    ("train", "progress=loud", "progress must be one of auto, bar, lines, none"),
    ("train", "split=kfold", "split=kfold names no config of scripts/train.py"),
    ("train", "split.kind=kfold", "split.kind must be one of temporal, random"),
    ("train", "min_delta=-0.1", "min_delta must be a number >= 0"),
    ("train", "val_users=-5", "val_users must be a whole number >= 0"),
    ("train", "model.init=pca", "model.init must be one of auto, random, svd, got 'pca'"),
    ("train", "model.recency_fade=1", "model.recency_fade must be true, false or auto, got 1"),
    ("train", "arch=tower model.init=svd", "model.init=svd starts a matrix factorization"),
    ("train", "loss=mse model.init=svd", "it does not apply with loss=mse"),
    ("train", "arch=tower model.id_dropout=1", "model.id_dropout must be a number >= 0 and < 1"),
    ("train", "arch=tower model.feature_reg=-1", "model.feature_reg must be a number >= 0"),
    ("train", "arch=tower model.item_layers=[0]", "model.item_layers must be a positive whole"),
    ("train", "db.schema=Bad-Name", "schema"),
    ("train", "dataset.n_users=0", "dataset.n_users must be a positive whole number"),
    ("train", "dataset=csv", "dataset=csv needs the file to read"),
    ("train", "dataset=nope", "dataset=nope names no config of scripts/train.py"),
    ("train", "nosuchkey=1", "unknown config key 'nosuchkey'"),
    ("ingest", "dataset=csv dataset.path=ratings.csv dataset.sep=ab", "dataset.sep must be one"),
    ("ingest", "dataset=csv dataset.path=ratings.csv dataset.sep=;", "Quote the value"),
    ("ingest", "dataset=csv dataset.path=ratings.csv dataset.time_unit=h", "dataset.time_unit"),
    ("ingest", "dataset=csv dataset.path=missing.csv", "dataset.path 'missing.csv' does not exist"),
    ("train", "dataset=movielens-100k dataset.path=nowhere", "dataset.path 'nowhere' does not"),
    ("evaluate", "k=0", "ks must be a positive whole number"),
    ("evaluate", "ks=[5,-1]", "ks must be a positive whole number"),
    ("evaluate", "device=tpu", "device must be one of auto, cpu, cuda"),
    ("evaluate", "chunk_size=0", "chunk_size must be a positive whole number"),
    ("recommend", "user=1.0", "user ids are text, got 1.0 (float)"),
    ("recommend", "user=true", "user ids are text, got True (bool)"),
    ("recommend", "user=[U1,false]", "user ids are text, got False (bool)"),
    ("recommend", "user=U1 k=0", "k must be a positive whole number"),
    ("recommend", "user=U1 format=xml", "format must be one of table, json"),
    ("recommend", "", "no user given"),
]


@pytest.mark.parametrize(("script", "args", "expected"), OUT_OF_RANGE)
def test_config_values_out_of_range_are_refused_before_anything(
    script, args, expected, tmp_path, monkeypatch
):
    code, out, err = run_script(script, args.split(), tmp_path, monkeypatch)
    _assert_refused(code, out, err, tmp_path)
    assert expected in err


def test_config_top_level_values_have_one_source_of_truth():
    cfg = compose("train", ["loss=mse", "latent_dim=8", "k=5"])
    assert "loss" not in cfg.model and "latent_dim" not in cfg.model
    assert (cfg.loss, cfg.latent_dim, cfg.k) == ("mse", 8, 5)
    # the registered model follows the store schema, so data sets never share a name
    assert compose("train", ["db.schema=ml100k"]).registered_model == "ml100k"


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "svd"),  # the default: mf with the softmax loss
        (["loss=bpr"], "svd"),
        (["loss=mse"], "random"),  # ratings: the SVD start is scaled for ranking
        (["arch=tower"], "random"),  # towers embed features (their file says random)
        (["arch=tower", "model.init=auto"], "random"),
        (["model.init=random"], "random"),
        (["experiment=ml100k"], "random"),  # its values were chosen from the random start
        (["experiment=large"], "svd"),
    ],
)
def test_config_init_auto_is_the_svd_start_where_it_applies(args, expected):
    """model.init=auto becomes what the run logs and starts from: svd for a matrix
    factorization with a ranking loss, random otherwise."""
    from recmf.config import compose_settings

    cfg = compose_settings("train", args)
    assert cfg.model.init == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "auto"),  # chosen beside the L2 once the strength is chosen
        (["model.recency_fade=true"], True),
        (["model.recency=2"], False),  # a fixed strength: nothing chooses it
        (["loss=bpr"], False),  # only the softmax reads the weights
        (["split=random"], False),  # no recency at random
        (["arch=tower"], False),
        (["experiment=ml100k"], False),
    ],
)
def test_config_recency_fade_is_auto_only_where_a_selection_chooses_it(args, expected):
    from recmf.config import compose_settings

    assert compose_settings("train", args).model.recency_fade == expected


def test_config_resumed_is_the_runs_own_settings_with_what_was_typed_now():
    """A resume rebuilds the run's typed settings from what it logged: its data set and model,
    the keys typed on the resuming command line, and this call's tracking store."""
    from dataclasses import asdict

    from recmf.config import compose_settings, resumed
    from recmf.settings import MFConfig, MovieLensConfig

    run = compose_settings(
        "train", ["experiment=ml100k", "latent_dim=16", "trainer.max_epochs=7", "seed=3"]
    )
    saved = asdict(run)
    now = compose_settings(
        "train", ["resume=abc", "trainer.max_epochs=9", "logger.experiment_name=elsewhere"]
    )
    got = resumed(now, saved, "abc", ["resume=abc", "trainer.max_epochs=9"])
    assert isinstance(got.dataset, MovieLensConfig) and isinstance(got.model, MFConfig)
    assert got.model == run.model and got.db == run.db and got.latent_dim == 16
    assert got.seed == 3  # the run's, not this call's default
    assert got.trainer.max_epochs == 9  # typed now
    assert got.logger.experiment_name == "elsewhere" and got.resume is None


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
)
def test_config_every_experiment_file_composes_into_checked_settings(name, tmp_path):
    """A shipped experiment is a valid train config (its data path given, as its header says)."""
    from recmf.config import compose_settings
    from recmf.settings import TrainConfig

    if name == "large":  # no data set of its own: it changes the batches and the step only
        cfg = compose_settings("train", ["experiment=large", "model.lr=0.05"])
        assert cfg.model.user_batch_size == 1024 and cfg.model.lr_decay == 0.8
        assert cfg.model.init == "svd" and cfg.min_delta == 0.0005 and cfg.val_users == 20000
        assert cfg.model.lr == 0.05  # the command line wins over the file's 0.03
        assert cfg.dataset.name == "synthetic"
        assert cfg.db.schema == "recmf" and cfg.model.reg == "auto"
        return
    (tmp_path / "u.data").write_text("")
    cfg = compose_settings("train", [f"experiment={name}", f"dataset.path={tmp_path}"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.db.schema == "ml100k" and cfg.dataset.name == "movielens-100k"
    assert cfg.model.name == (
        "tower" if name in ("ml100k_tower", "ml100k_cold_items", "ml100k_cold_users") else "mf"
    )


def test_config_split_random_turns_recency_weighting_off_and_temporal_keeps_it():
    from recmf.config import compose_settings

    cfg = compose_settings("train", ["split=random", "model.recency=3"])
    assert cfg.split.kind == "random" and cfg.split.test_fraction == 0.2
    assert cfg.model.recency == 0.0  # a random holdout has no "latest" rows
    cfg = compose_settings("train", ["model.recency=3", "split.test_fraction=0.3"])
    assert cfg.split.kind == "temporal" and cfg.model.recency == 3.0
    assert cfg.split.test_fraction == 0.3


def test_data_without_a_time_column_are_split_at_random_without_recency_weighting():
    import numpy as np

    from recmf.config import compose_settings
    from recmf.data.interactions import Interactions, Vocab
    from recmf.train.fitting import untimed_split

    vocab = Vocab(np.array(["u"], object), np.array(["a", "b"], object), np.array(["", ""], object))
    cols = (np.zeros(2, np.int64), np.arange(2), np.full(2, np.nan, np.float32), np.arange(2))
    for timed, kind, recency in ((True, "temporal", 3.0), (False, "random", 0.0)):
        cfg = compose_settings("train", ["model.recency=3", "split.test_fraction=0.3"])
        untimed_split(cfg, Interactions(*cols, vocab, timed=timed), "test data")
        assert (cfg.split.kind, cfg.model.recency, cfg.split.test_fraction) == (kind, recency, 0.3)
