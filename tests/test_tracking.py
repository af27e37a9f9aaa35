from dataclasses import dataclass, field

from recmf.settings import DbConfig
from recmf.tracking import flatten, safe_config


@dataclass
class _Model:
    lr: float = 0.01


@dataclass
class _Settings:
    db: DbConfig = field(
        default_factory=lambda: DbConfig("postgresql://bob:s3cret@db.example:5432/recs", "recmf")
    )
    k: int = 10
    model: _Model = field(default_factory=_Model)


def test_safe_config_hides_the_database_password_and_keeps_the_rest():
    cfg = _Settings()
    safe = safe_config(cfg)
    assert "s3cret" not in str(safe)
    assert safe["db"]["url"] == "postgresql://bob:***@db.example:5432/recs"
    assert flatten(safe) == {
        "db.url": safe["db"]["url"],
        "db.schema": "recmf",
        "db.data_dir": ".recmf/pgdata",
        "k": 10,
        "model.lr": 0.01,
    }


def test_the_run_logger_writes_metrics_in_batches_and_all_of_them_by_the_end(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from recmf import tracking
    from recmf.settings import LoggerConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = tracking.make_logger(LoggerConfig(uri), {tracking.KIND_TAG: "train"})
    client, writes = MlflowClient(uri), []
    real = logger.experiment.log_batch  # each write the logger makes, counted
    logger.experiment.log_batch = lambda *a, **kw: (
        writes.append(len(kw["metrics"])),
        real(*a, **kw),
    )

    def history(key):
        return [(m.step, m.value) for m in client.get_metric_history(logger.run_id, key)]

    for step in range(12):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "val/ndcg_at_10": step / 100}, step)
    assert history("train/loss") == [] and writes == []  # held: within FLUSH_SECONDS
    logger.finalize("success")  # the end of a fit (Lightning calls it, on errors too)
    assert history("train/loss") == [(s, 1.0 / (s + 1)) for s in range(12)]
    assert history("val/ndcg_at_10") == [(s, s / 100) for s in range(12)]
    assert writes == [24]  # one write for the 24 values
    monkeypatch.setattr(tracking.runs, "FLUSH_SECONDS", 0.0)  # due at once: written as logged
    logger.log_metrics({"refit/loss": 0.5}, 0)
    assert history("refit/loss") == [(0, 0.5)]
    monkeypatch.setattr(tracking.runs, "FLUSH_SECONDS", 3600.0)
    logger.log_metrics({"best_epoch": 7}, 0)  # after the last fit: written when the run ends
    tracking.finish_run(logger, "FINISHED")
    assert history("best_epoch") == [(0, 7.0)]
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_a_local_store_named_from_another_folder_keeps_its_artifacts_beside_it(
    tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from recmf import tracking
    from recmf.settings import LoggerConfig

    elsewhere, store = tmp_path / "cwd", tmp_path / "store"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    logger = tracking.make_logger(LoggerConfig(uri, "my runs/1"), {tracking.KIND_TAG: "train"})
    logger.experiment.log_text(logger.run_id, "hello", "notes/a.txt")
    tracking.finish_run(logger, "FINISHED")
    run = MlflowClient(uri).get_run(logger.run_id)
    expected = store / "mlruns" / "my_runs_1" / run.info.run_id / "artifacts" / "notes" / "a.txt"
    assert expected.read_text() == "hello"
    assert not (elsewhere / "mlruns").exists()
    # other stores keep MLflow's default (None: its own choice)
    assert tracking.artifacts_beside("postgresql://db/mlflow", "recmf") is None
