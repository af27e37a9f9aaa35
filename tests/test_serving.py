"""Serving and lineage: the run's MLflow model over real HTTP, the three scoring paths (model,
fold-in, popularity), ``model=models:/...``, and the data digest a run records."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from recmf.config import compose, settings
from recmf.data.interactions import RawInteractions
from recmf.errors import ConfigError
from recmf.settings import DbConfig, LoggerConfig
from recmf.store import FeatureStore
from tests.scripts import TINY


def _compose(name: str, overrides: list[str], db_url: str | None = None, **values):
    """``name``'s settings; ``values``: keys set after composing (a URL's '=' and '?', a list
    of users, are not override grammar)."""
    cfg = compose(name, overrides)
    if db_url:
        OmegaConf.update(cfg, "db.url", db_url)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return settings(cfg, name)


@pytest.fixture(scope="module")
def served(pg_url, tmp_path_factory):
    """A tiny training run (in process) with its model registered, in its own store schema."""
    from recmf import pipeline

    cwd = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    schema = f"serve_{uuid.uuid4().hex[:8]}"
    common = [f"logger.tracking_uri={uri}", f"db.schema={schema}"]
    run = pipeline.train(_compose("train", [*common, *TINY], pg_url))
    return {"cwd": cwd, "uri": uri, "schema": schema, "pg_url": pg_url, "run": run}


def _recommend(served, users: list[str], extra: list[str] = (), k: int = 5) -> list[dict]:
    from recmf import pipeline

    if not any(e.startswith(("model=", "run_id=")) for e in extra):  # other tests train too
        extra = [*extra, f"run_id={served['run'].run_id}"]
    overrides = [f"logger.tracking_uri={served['uri']}", f"k={k}", *extra]
    cfg = _compose("recommend", overrides, served["pg_url"], user=users)
    return [
        {"user_id": r.user_id, "path": r.path, "items": [(i.item_id, i.score) for i in r.items]}
        for r in pipeline.recommend(cfg).users
    ]


def _add_user(served, user: str, items: list[str]) -> None:
    db = DbConfig(served["pg_url"], served["schema"], "x")
    with FeatureStore.open(db) as store:
        n = len(items)
        store.ingest(
            RawInteractions(
                user_id=np.array([user] * n),
                item_id=np.array(items),
                rating=None,
                timestamp=np.arange(n, dtype=np.int64) + 2_000_000_000,
            )
        )


def test_each_user_is_scored_by_the_model_by_fold_in_or_by_popularity(served):
    _add_user(served, "NEWCOMER", ["I1", "I2", "I3", "I4"])
    recs = {r["user_id"]: r for r in _recommend(served, ["U1", "NEWCOMER", "NOBODY"])}
    assert [recs[u]["path"] for u in ("U1", "NEWCOMER", "NOBODY")] == [
        "model",
        "fold-in",
        "popularity",
    ]
    assert not {"I1", "I2", "I3", "I4"} & {i for i, _ in recs["NEWCOMER"]["items"]}
    # popularity: the items with the most training interactions, in that order
    bundle = _bundle(served)
    _, items = _split(served).pairs("train", "val")
    counts = np.bincount(items, minlength=bundle.vocab.n_items)
    assert bundle.item_count.tolist() == counts.tolist()  # the bundle's counts, not its data
    position = {str(item): i for i, item in enumerate(bundle.vocab.item_ids)}
    got = recs["NOBODY"]["items"]
    assert [score for _, score in got] == sorted(counts.tolist(), reverse=True)[:5]
    assert all(counts[position[item]] == score for item, score in got)


def _bundle(served):
    from recmf.serve.bundle import Bundle
    from recmf.tracking import download_bundle

    logger_cfg = LoggerConfig(served["uri"])
    return Bundle.load(download_bundle(logger_cfg, served["run"].run_id))


def _split(served):
    from recmf.eval.split_file import SavedSplit
    from recmf.tracking import download_split

    logger_cfg = LoggerConfig(served["uri"])
    return SavedSplit.load(download_split(logger_cfg, served["run"].run_id))


def _model_dir(served) -> Path:
    """The run's MLflow model folder, as `mlflow models serve` fetches it from the registry."""
    import mlflow.artifacts

    from recmf.tracking import open_store

    open_store(served["uri"])
    uri = f"models:/{served['schema']}/latest"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=served["uri"]))


def test_served_model_holds_no_interactions(served):
    split = _split(served)
    lengths = {len(split.arrays[f"{p}_user"]) for p in ("train", "val", "test")}
    lengths |= {len(split.pairs("train", "val")[0]), len(split.pairs("train", "val", "test")[0])}
    model = _model_dir(served)
    files = [f for f in model.rglob("*") if f.is_file()]
    names = {f.relative_to(model).as_posix() for f in files}
    assert {
        "artifacts/bundle/weights.npz",
        "artifacts/bundle/vocab.npz",
        "artifacts/bundle/popularity.npz",
        "artifacts/bundle/meta.json",
    } <= names
    assert not any(f.name == "split.npz" or f.parent.name == "split" for f in files)
    arrays = {}
    for f in files:
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                arrays.update({f"{f.name}:{k}": z[k] for k in z.files})
    assert set(arrays) >= {"popularity.npz:item_count", "weights.npz:item_emb"}
    # no array as long as a part of the split (users and items are far fewer than interactions)
    assert {k: a.shape for k, a in arrays.items() if a.ndim and a.shape[0] in lengths} == {}
    meta = json.loads((model / "artifacts" / "bundle" / "meta.json").read_text())
    assert meta["split"]["n_train"] == len(split.arrays["train_user"])  # sizes only


def test_run_stores_each_weight_file_once(served):
    """No checkpoints and no second bundle beside the model: one weights.npz per run."""
    from mlflow.tracking import MlflowClient

    from recmf.tracking import bundle_in_model, run_model

    client = MlflowClient(served["uri"])
    run_id = served["run"].run_id

    def listed(path: str | None = None) -> list[str]:
        out = []
        for a in client.list_artifacts(run_id, path):
            out += listed(a.path) if a.is_dir else [a.path]
        return out

    run_files = listed()
    assert run_files == ["selection/selection.json", "split/split.npz"]  # no weights
    logger_cfg = LoggerConfig(served["uri"])
    model = run_model(logger_cfg, run_id)
    bundle = bundle_in_model(model.artifact_location)
    model_root = bundle.parent.parent
    weights = [f for f in model_root.rglob("*") if f.name == "weights.npz" or f.suffix == ".ckpt"]
    assert weights == [bundle / "weights.npz"]
    assert not Path(served["cwd"], ".recmf", "checkpoints", run_id).exists()


def test_pyfunc_answers_without_the_store_and_says_seen_items_are_not_excluded(served, monkeypatch):
    from recmf.serve.pyfunc import COLUMNS, RecmfModel
    from recmf.serve.recommender import Recommender
    from recmf.tracking import download_bundle

    with socket.socket() as s:  # a port nothing listens on: the store cannot be reached
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RECMF_DATABASE_URL", f"postgresql://recmf@127.0.0.1:{port}/recmf")
    model = RecmfModel()
    logger_cfg = LoggerConfig(served["uri"])
    bundle_dir = download_bundle(logger_cfg, served["run"].run_id)
    model.load(str(bundle_dir), {"db": {"schema": served["schema"], "data_dir": "unused"}})
    answer = model.predict(["U1", "NOBODY"], 5, True)
    assert list(answer.columns) == list(COLUMNS)
    paths = dict(zip(answer["user_id"], answer["path"], strict=True))
    assert paths == {"U1": "model", "NOBODY": "popularity"}
    assert all("could not be excluded" in note for note in answer["note"])
    # what the model ranks, nothing taken out: the same as asking with exclude_seen=false
    [u1] = Recommender(model.recommender.bundle).recommend(["U1"], 5, {}, exclude_seen=False)
    assert answer[answer["user_id"] == "U1"]["item_id"].tolist() == [i.item_id for i in u1.items]


def test_fold_in_is_one_newton_step_of_the_penalised_softmax_and_ranks_the_users_cluster():
    import torch

    from recmf.serve.fold_in import fold_in, fold_in_scores

    rng = np.random.default_rng(0)
    # two clusters of items along orthogonal directions, plus noise; biases favour cluster two
    v = np.concatenate([np.tile([1.0, 0, 0, 0], (20, 1)), np.tile([0, 1.0, 0, 0], (20, 1))])
    v = (v + 0.2 * rng.standard_normal(v.shape)).astype(np.float32)
    bias = np.concatenate([np.zeros(20), np.full(20, 0.5)]).astype(np.float32)[:, None]
    weights = {"item_emb": v, "item_bias": bias}
    own = np.array([0, 3, 5, 8])  # the user's items, earliest first: all in cluster one
    reg, recency = 2.0, 1.0
    (x,) = fold_in(weights, [own], reg, recency)
    # independently: gradient and Hessian at x = 0 of the weighted, penalised log-likelihood
    w = torch.exp(-recency * torch.tensor([3.0, 2.0, 1.0, 0.0]) / 3)  # age 1 .. 0

    def objective(z):
        logp = torch.log_softmax(
            torch.from_numpy(v).double() @ z + torch.from_numpy(bias[:, 0]).double(), 0
        )
        return (w.double() * logp[torch.from_numpy(own)]).sum() - 0.5 * reg * z @ z

    z0 = torch.zeros(4, dtype=torch.float64)
    grad = torch.autograd.functional.jacobian(objective, z0)
    hess = torch.autograd.functional.hessian(objective, z0)
    newton = -torch.linalg.solve(hess, grad)
    assert np.allclose(x, newton.numpy(), atol=1e-5)
    scores = fold_in_scores(weights, x[None, :])[0]
    scores[own] = -np.inf
    assert set(np.argsort(-scores)[:10]) <= set(range(20))  # despite the biases
    assert not fold_in(weights, [np.array([], dtype=np.int64)], reg).any()


@pytest.mark.slow  # three more training runs
def test_run_records_its_data_as_an_mlflow_dataset_input(served, pg_url):
    from mlflow.tracking import MlflowClient

    from recmf import pipeline
    from recmf.tracking import data_digest

    run = MlflowClient(served["uri"]).get_run(served["run"].run_id)
    (dataset_input,) = run.inputs.dataset_inputs
    ds = dataset_input.dataset
    source, profile = json.loads(ds.source), json.loads(ds.profile)
    assert source["schema"] == served["schema"] and "interactions" in source["query"]
    assert ds.digest == run.data.params["data.content_hash"][:32]
    assert profile["n_interactions"] == int(run.data.params["data.n_interactions"])
    assert profile["split"]["n_test"] > 0 and profile["split"]["train_time_max"] is not None
    # unchanged data: the same digest; one new interaction: a different one
    schema = f"lineage_{uuid.uuid4().hex[:8]}"
    common = [f"logger.tracking_uri={served['uri']}", f"db.schema={schema}"]
    cfg = _compose("train", [*common, *TINY, "registered_model=null"], pg_url)
    first, second = pipeline.train(cfg), pipeline.train(cfg)
    logger_cfg = LoggerConfig(served["uri"])
    assert data_digest(logger_cfg, first.run_id) == data_digest(logger_cfg, second.run_id)
    served_db = dict(served)
    served_db["schema"] = schema
    _add_user(served_db, "U1", ["I39"])
    third = pipeline.train(cfg)
    assert data_digest(logger_cfg, third.run_id) != data_digest(logger_cfg, first.run_id)
    # evaluate refuses to put runs on different data side by side, unless told to
    ecfg = _compose(
        "evaluate",
        [
            f"logger.tracking_uri={served['uri']}",
            f"compare=[{first.run_id},{third.run_id}]",
            f"report_dir={served['cwd'] / 'reports'}",
        ],
    )
    with pytest.raises(ConfigError, match="different data"):
        pipeline.compare(ecfg)
    table = pipeline.compare(replace(ecfg, allow_data_mismatch=True))
    assert "ndcg@10" in table and first.run_id[:8] in table
    same = pipeline.compare(replace(ecfg, compare=[first.run_id, second.run_id]))
    assert same.startswith("data digest ")


def test_recommend_by_registered_model_uri_matches_the_run(served):
    by_run = _recommend(served, ["U1", "U2"], [f"run_id={served['run'].run_id}"])
    # registered under the store schema's name: models of different data sets never mix
    by_model = _recommend(served, ["U1", "U2"], [f"model=models:/{served['schema']}/latest"])
    assert by_run == by_model
    from recmf.errors import RunNotFoundError

    with pytest.raises(RunNotFoundError, match="models:/nosuch/1"):
        _recommend(served, ["U1"], ["model=models:/nosuch/1"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, users: list[str], params: dict) -> list[dict]:
    body = {"dataframe_split": {"columns": ["user_id"], "data": [[u] for u in users]}}
    body["params"] = params
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"]


@contextlib.contextmanager
def _model_server(served) -> Iterator[int]:
    """``mlflow models serve`` of the latest model registered for ``served``'s schema, on a
    free loopback port (yielded) once it answers /ping; stopped, workers and all, after."""
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": served["uri"],
        "RECMF_DATABASE_URL": served["pg_url"],
    }
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log_path = served["cwd"] / f"serve-{port}.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "models",
            "serve",
            "-m",
            f"models:/{served['schema']}/latest",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=served["cwd"],
        env=env,
        stdout=log,  # a file: an unread pipe fills up with access-log lines and stalls it
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its workers go with it
    )
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "the model server did not answer /ping in 90 s"
            time.sleep(0.5)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_recommend(served):
    _add_user(served, "LATECOMER", ["I5", "I6", "I7"])
    with _model_server(served) as port:
        cases = [["U1"], ["U2", "U3", "LATECOMER"], ["NOBODY"]]
        for users in cases:
            _assert_answers_like_recommend(served, _post(port, users, {"k": 5}), users)
        paths = {
            row["user_id"]: row["path"] for row in _post(port, ["U1", "LATECOMER", "NOBODY"], {})
        }
        assert paths == {"U1": "model", "LATECOMER": "fold-in", "NOBODY": "popularity"}
        # exclude_seen=false may return what the user already has
        with_seen = _post(port, ["U1"], {"k": 40, "exclude_seen": False})
        assert len(with_seen) == 40
        # under load: 2,000 requests from 32 concurrent clients, every one answered in full
        from concurrent.futures import ThreadPoolExecutor

        users = [f"U{1 + i % 50}" for i in range(2000)]
        alone = {u: _post(port, [u], {"k": 3}) for u in set(users)}  # one at a time

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda u: _post(port, [u], {"k": 3}), users))
        assert answers == [alone[u] for u in users]


def _assert_answers_like_recommend(served, answer: list[dict], users: list[str], k: int = 5):
    """The REST answer for ``users`` is what ``recommend.py`` gives (items, scores, path)."""
    expected = _recommend(served, users, k=k)
    for want in expected:
        got = [row for row in answer if row["user_id"] == want["user_id"]]
        assert [row["rank"] for row in got] == list(range(1, len(want["items"]) + 1))
        assert [row["item_id"] for row in got] == [i for i, _ in want["items"]], (want, got)
        assert [row["score"] for row in got] == pytest.approx(
            [s for _, s in want["items"]], rel=1e-5
        )
        assert {row["path"] for row in got} == {want["path"]}


@pytest.fixture(scope="module")
def served_tower(pg_url, tmp_path_factory):
    """A two-tower run (features of both sides, from features alone) on the planted data of
    :mod:`tests.test_cold_serving`, ingested into its own store schema, its model registered."""
    from recmf import pipeline
    from tests.test_cold_serving import TOWER, planted

    cwd = tmp_path_factory.mktemp("serving-tower")
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    schema = f"cold_{uuid.uuid4().hex[:8]}"
    with FeatureStore.open(DbConfig(pg_url, schema, "x")) as store:
        store.ingest(planted())
    common = [f"logger.tracking_uri={uri}", f"db.schema={schema}", "patience=8"]
    run = pipeline.train(_compose("train", [*common, *TOWER], pg_url))
    return {"cwd": cwd, "uri": uri, "schema": schema, "pg_url": pg_url, "run": run}


@pytest.mark.slow
def test_served_tower_model_ranks_an_item_added_after_training_from_its_features(served_tower):
    """The issue's acceptance test: an item added to the store with features after training
    comes back from the REST model for a user whose taste matches it; an item with neither
    interactions the model trained on nor features never does, and the note counts it."""
    from tests.test_cold_serving import N_ITEMS, PER_USER, item_features, user_features

    served = served_tower
    with FeatureStore.open(DbConfig(served["pg_url"], served["schema"], "x")) as store:
        store.ingest(
            RawInteractions(
                user_id=np.array(["U1"]),
                item_id=np.array(["N2"]),  # an interaction after training, no features
                rating=None,
                timestamp=np.array([2_000_000_000]),
                item_titles={"N0": "New of genre 0", "N1": "New of genre 1"},
                item_features=item_features({"N0": 0, "N1": 1}),
                user_features=user_features({"NEWU": 0}),
            )
        )
    k = N_ITEMS // 2 - PER_USER + 1  # U0 (taste 0) has 12 of the 30 items of genre 0
    with _model_server(served) as port:
        answer = _post(port, ["U0", "NEWU"], {"k": k})
        u0 = [row for row in answer if row["user_id"] == "U0"]
        assert {"N0"} == {row["item_id"] for row in u0} - {f"I{i}" for i in range(0, N_ITEMS, 2)}
        (n0,) = [row for row in u0 if row["item_id"] == "N0"]
        assert n0["title"] == "New of genre 0" and n0["path"] == "model" and len(u0) == k
        skipped = "1 item in the store has neither interactions the model trained on nor features"
        assert skipped in n0["note"]
        assert {row["path"] for row in answer if row["user_id"] == "NEWU"} == {"features"}
        _assert_answers_like_recommend(served, answer, ["U0", "NEWU"], k)
        # read at request time: an item added while the server runs is ranked at once
        with FeatureStore.open(DbConfig(served["pg_url"], served["schema"], "x")) as store:
            store.ingest(
                RawInteractions(
                    np.array([], dtype=object), np.array([], dtype=object), None, np.array([]),
                    item_features=item_features({"N3": 0}),
                )
            )  # fmt: skip
        later = {row["item_id"] for row in _post(port, ["U0"], {"k": k + 1})}
        assert {"N0", "N3"} <= later and not {"N1", "N2"} & later
