"""End to end through the real scripts: train -> evaluate -> recommend, and user mistakes."""

import json
import os
import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from recmf.settings import DbConfig, LoggerConfig
from tests.scripts import ROOT, TINY, run_script

_run = run_script


@pytest.fixture(scope="module")
def trained(pg_url, tmp_path_factory):
    """One tiny training run through scripts/train.py, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("e2e")
    schema = f"e2e_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "RECMF_DATABASE_URL": pg_url,
    }
    proc = _run("train.py", [f"db.schema={schema}", *TINY], cwd, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = proc.stdout.strip().splitlines()[-1].split()[1].rstrip(":")
    log = proc.stdout + proc.stderr
    return {
        "cwd": cwd,
        "env": env,
        "schema": schema,
        "run_id": run_id,
        "log": log,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
    }


LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\]\[recmf[.\w]*\]\[(INFO|WARNING)\] - ")


def test_train_prints_its_result_on_stdout_and_only_recmf_logs_on_stderr(trained):
    """No MLflow, Lightning or registry chatter, no warnings: `> out.txt` holds the result."""
    [line] = trained["stdout"].splitlines()
    assert line.startswith(f"run {trained['run_id']}: val/ndcg_at_10 ")
    assert f"(store schema {trained['schema']}, data digest " in line
    noise = [x for x in trained["stderr"].splitlines() if not LOG_LINE.match(x)]
    assert noise == []
    # not a terminal: one concise line per epoch, with the loss and the validation metric; the
    # default config chooses model.recency, then model.reg, each in a race of its own
    line = r"select epoch (\d+)/4: loss [\d.]+, val/ndcg_at_10 [\d.]+"
    epochs = [int(e) for e in re.findall(line, trained["stderr"])]
    starts = [i for i, e in enumerate(epochs) if e == 1]
    assert len(starts) == 2 and starts[0] == 0
    for a, b in zip(starts, [*starts[1:], len(epochs)], strict=True):
        assert epochs[a:b] == list(range(1, b - a + 1))
    assert len(re.findall(r"selection on validation \([\d.]+ s\): recency", trained["stderr"])) == 2
    assert list(trained["cwd"].glob("**/*.log")) == []  # no log files anywhere


def test_train_ingests_an_empty_store_first_and_logs_the_run(trained):
    assert "is empty: ingesting dataset=synthetic" in trained["log"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained["env"]["MLFLOW_TRACKING_URI"])
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.schema"] == trained["schema"]
    assert int(run.data.params["data.n_interactions"]) > 1000
    assert "val/ndcg_at_10" in run.data.metrics and "select/loss" in run.data.metrics
    # model.recency and model.reg are auto by default: the values chosen, and every candidate
    assert run.data.params["model.recency"] == "auto"
    chosen = {k: float(run.data.params[f"selected.model.{k}"]) for k in ("recency", "reg")}
    assert chosen["recency"] in (0, 1, 2, 4, 8) and chosen["reg"] in (0.04, 0.08, 0.16)
    local = client.download_artifacts(trained["run_id"], "selection/selection.json")
    table = json.loads(Path(local).read_text())
    fade = {"True": True, "False": False}[run.data.params["selected.model.recency_fade"]]
    assert table["chosen"] == {**chosen, "recency_fade": fade}
    # 5 strengths, 2 more L2 values, and when the chosen strength is not 0, it and the next
    # one up (if any) faded
    assert len(table["trials"]) == 7 + (chosen["recency"] > 0) + (0 < chosen["recency"] < 8)
    best = max(table["trials"], key=lambda t: t["val"])
    assert (best["recency"], best["reg"], best["recency_fade"]) == (*chosen.values(), fade)
    assert run.data.metrics["best_val_ndcg_at_10"] == pytest.approx(best["val"])
    history = client.get_metric_history(trained["run_id"], "val/ndcg_at_10")
    assert len(history) >= 2  # one value per epoch
    # the run keeps its split (for evaluation); the weights live once, in the MLflow model
    artifacts = {a.path for a in client.list_artifacts(trained["run_id"])}
    assert "split" in artifacts and not {"bundle", "checkpoints"} & artifacts
    assert {a.path for a in client.list_artifacts(trained["run_id"], "split")} == {
        "split/split.npz"
    }
    from recmf import tracking

    logger = LoggerConfig(trained["env"]["MLFLOW_TRACKING_URI"])
    bundle = tracking.download_bundle(logger, trained["run_id"])
    assert bundle.parts[-2:] == ("artifacts", "bundle") and (bundle / "weights.npz").is_file()


@pytest.mark.slow  # a script process importing MLflow and torch: ~9.5 s of the quick suite
def test_evaluate_logs_metrics_matching_training(trained):
    proc = _run("evaluate.py", [f"db.schema={trained['schema']}"], trained["cwd"], trained["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "P@10" in proc.stdout and trained["run_id"] in proc.stdout
    assert f"store schema {trained['schema']}, data digest " in proc.stdout.splitlines()[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained["env"]["MLFLOW_TRACKING_URI"])
    metrics = client.get_run(trained["run_id"]).data.metrics
    for key in (
        "test/precision_at_5",
        "test/recall_at_20",
        "test/ndcg_at_10",
        "baseline/precision_at_10",
        "test/coverage_at_10",
    ):
        assert 0.0 <= metrics[key] <= 1.0
    assert "report" in {a.path for a in client.list_artifacts(trained["run_id"])}


@pytest.mark.slow  # a second whole evaluation, in this process: ~4 s of the quick suite
def test_the_bundle_reproduces_the_validation_score_that_selected_the_epoch(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained["env"]["MLFLOW_TRACKING_URI"])
    metrics = client.get_run(trained["run_id"]).data.metrics
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "evaluate",
            [
                f"logger.tracking_uri={trained['env']['MLFLOW_TRACKING_URI']}",
                f"run_id={trained['run_id']}",
                "ks=[10]",
                f"report_dir={trained['cwd'] / 'reports'}",
            ],
        )
    from recmf.config import settings
    from recmf.pipeline import evaluate

    result = evaluate(settings(cfg, "evaluate"))
    assert result.val_metrics["ndcg_at_10"] == pytest.approx(
        metrics["best_val_ndcg_at_10"], abs=1e-6
    )


def test_recommend_json_excludes_what_the_user_has(trained):
    proc = _run(
        "recommend.py",
        ["user=[U1,U2]", "k=5", "format=json", f"db.schema={trained['schema']}"],
        trained["cwd"],
        trained["env"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout)  # stdout holds the answer only: logs are on stderr
    assert answer["run_id"] == trained["run_id"] and answer["schema"] == trained["schema"]
    assert len(answer["data_digest"]) == 32
    recs = answer["users"]
    assert [r["user_id"] for r in recs] == ["U1", "U2"]
    from recmf.store import FeatureStore

    db = DbConfig(trained["env"]["RECMF_DATABASE_URL"], trained["schema"])
    with FeatureStore.open(db) as store:
        history = store.user_history(["U1", "U2"])
    for r in recs:
        items = [i["item_id"] for i in r["items"]]
        assert len(items) == 5 and len(set(items)) == 5
        assert not set(items) & set(history[r["user_id"]])
        scores = [i["score"] for i in r["items"]]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.slow  # a script process per case
@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("recommend.py", ["user=U1", "k=0"], "k must be a positive whole number"),
        ("recommend.py", ["user=U1", "db.schema=nosuchschema"], "on store schema 'nosuchschema'"),
        ("recommend.py", ["user=U1", "k=abc"], "'abc'"),
        ("recommend.py", ["user=U1", "k=-3"], "k must be a positive whole number"),
        ("evaluate.py", ["run_id=0123456789abcdef"], "no MLflow run with id"),
    ],
)
def test_user_mistakes_get_a_message_and_exit_code_2(trained, script, args, expected):
    proc = _run(script, args, trained["cwd"], trained["env"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # a script process that imports MLflow
def test_evaluate_without_any_training_run_says_so(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = _run("evaluate.py", [], tmp_path, env)
    assert proc.returncode == 2
    assert "no training run" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # looking did not create a tracking store


@pytest.mark.slow  # a multirun of two trainings per case
@pytest.mark.parametrize(
    ("name", "sweep"),
    [
        ("basic", ["latent_dim=4,8"]),
        ("optuna", ["hparams_search=optuna", "hydra.sweeper.n_trials=2"]),
    ],
)
def test_sweep_is_one_parent_run_with_nested_trials(trained, name, sweep):
    experiment = f"sweep_{name}"
    proc = _run(
        "train.py",
        [
            "-m",
            f"db.schema={trained['schema']}",
            *TINY,
            *sweep,
            f"logger.experiment_name={experiment}",
        ],
        trained["cwd"],
        trained["env"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained["env"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    [parent] = client.search_runs([exp.experiment_id], "tags.recmf_kind = 'sweep'")
    trials = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(trials) == 2
    if name == "basic":
        assert sorted(t.data.params["latent_dim"] for t in trials) == ["4", "8"]
    best = max(trials, key=lambda t: t.data.metrics["best_val_ndcg_at_10"])
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    assert parent.data.metrics["best_trial_best_val_ndcg_at_10"] == pytest.approx(
        best.data.metrics["best_val_ndcg_at_10"]
    )
    assert parent.info.status == "FINISHED"


@pytest.mark.slow  # a real process (or two): ~2-5 s of start-up
def test_recommend_from_a_bundle_folder_matches_the_run(trained):
    from recmf import tracking

    logger = LoggerConfig(trained["env"]["MLFLOW_TRACKING_URI"])
    folder = tracking.download_bundle(logger, trained["run_id"])  # the model's artifacts/bundle
    args = ["user=U3", "k=4", "format=json"]
    by_run = _run(
        "recommend.py", [*args, f"run_id={trained['run_id']}"], trained["cwd"], trained["env"]
    )
    by_folder = _run(
        "recommend.py",
        [*args, f"bundle={folder}", f"db.schema={trained['schema']}"],
        trained["cwd"],
        trained["env"],
    )
    assert by_run.returncode == 0 and by_folder.returncode == 0, by_folder.stderr[-2000:]
    assert json.loads(by_run.stdout) == json.loads(by_folder.stdout)


def test_fast_local_lookup_finds_the_run_mlflow_finds(trained):
    from recmf import tracking

    logger = LoggerConfig(trained["env"]["MLFLOW_TRACKING_URI"], "recmf")
    index = trained["cwd"] / "mlflow.db.recmf-runs.json"  # recmf's own, not MLflow's tables
    assert index.is_file()
    for run_id, schema in ((None, None), (trained["run_id"], None), (None, trained["schema"])):
        run = tracking.find_training_run(logger, run_id, schema)
        slow = tracking.download_bundle(logger, run.info.run_id)
        assert tracking.local_bundle_fast(logger, run_id, schema) == slow
    assert tracking.local_bundle_fast(logger, None, "nosuchschema") is None
    assert tracking.local_bundle_fast(logger, "0123456789abcdef") is None
    other = replace(logger, experiment_name="nosuchexperiment")
    assert tracking.local_bundle_fast(other, None, trained["schema"]) is None


@pytest.mark.slow  # two more training runs
def test_latest_run_is_the_latest_on_the_schema_asked_for(trained):
    """A newer run on another data set never answers for this one (nor for the default)."""
    from mlflow.tracking import MlflowClient

    other = f"{trained['schema']}_other"
    args = [f"db.schema={other}", *TINY, "progress=bar"]
    proc = _run("train.py", args, trained["cwd"], trained["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # progress=bar draws Lightning's bar even in a pipe, on stderr: stdout stays the result
    assert len(proc.stdout.splitlines()) == 1 and "Epoch 0:" in proc.stderr
    other_run = proc.stdout.strip().splitlines()[-1].split()[1].rstrip(":")
    for schema, run_id in ((trained["schema"], trained["run_id"]), (other, other_run)):
        args = ["user=U1", "k=3", f"db.schema={schema}"]
        proc = _run("recommend.py", args, trained["cwd"], trained["env"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines()[0].startswith(f"from run {run_id}, store schema {schema},")
    # the quick start's command on the default schema: no run trained there, and it says so
    proc = _run("recommend.py", ["user=U1"], trained["cwd"], trained["env"])
    assert proc.returncode == 2 and "on store schema 'recmf'" in proc.stderr
    assert other in proc.stderr and trained["schema"] in proc.stderr  # where runs do exist
    # one registered model per schema: the latest version of each is that schema's run
    client = MlflowClient(tracking_uri=trained["env"]["MLFLOW_TRACKING_URI"])
    for schema, run_id in ((trained["schema"], trained["run_id"]), (other, other_run)):
        versions = client.search_model_versions(f"name='{schema}'")
        assert max(versions, key=lambda v: int(v.version)).run_id == run_id


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(trained):
    """Lightning DDP with gloo: every rank takes its share of each global batch."""
    from mlflow.tracking import MlflowClient

    args = [
        f"db.schema={trained['schema']}_ddp",
        "dataset.n_users=300",
        "dataset.n_items=200",
        "dataset.n_interactions=15000",
        "latent_dim=16",
        "trainer.max_epochs=8",
        "refit=false",
        "trainer.accelerator=cpu",
    ]
    client = MlflowClient(tracking_uri=trained["env"]["MLFLOW_TRACKING_URI"])
    exp_id = client.get_experiment_by_name("recmf").experiment_id
    scores = []
    for extra in ([], ["trainer=ddp", "trainer.devices=2"]):
        before = len(client.search_runs([exp_id]))
        proc = _run("train.py", [*args, *extra], trained["cwd"], trained["env"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(client.search_runs([exp_id])) == before + 1  # rank 1 logs no run of its own
        run_id = proc.stdout.strip().splitlines()[-1].split()[1].rstrip(":")
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["recmf_bundle"] == "1"
        scores.append(run.data.metrics["best_val_ndcg_at_10"])
    # stated tolerance: per-rank loss means and per-rank negatives differ from one process's
    assert scores[1] == pytest.approx(scores[0], abs=0.01)


def test_recommend_for_a_user_with_no_interactions_falls_back_to_popularity(trained):
    args = ["user=NOBODY", "k=3", f"db.schema={trained['schema']}"]
    proc = _run("recommend.py", args, trained["cwd"], trained["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "user NOBODY (popularity;" in proc.stdout
    assert "has no interactions the model knows" in proc.stdout


@pytest.mark.slow  # script processes
def test_huge_k_returns_what_exists_and_unknown_config_keys_are_refused(trained):
    args = ["user=U1", "k=1000000000000", f"db.schema={trained['schema']}"]
    proc = _run("recommend.py", args, trained["cwd"], trained["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "asked for k=1000000000000 but only" in proc.stdout
    for script in ("train.py", "evaluate.py", "recommend.py"):
        proc = _run(script, ["nosuchkey=1"], trained["cwd"], trained["env"])
        assert proc.returncode != 0 and "nosuchkey" in proc.stderr
        assert "Traceback" not in proc.stderr
