"""A Hydra multirun as one MLflow parent run whose trials are nested child runs."""

from __future__ import annotations

from recmf.settings import LoggerConfig
from recmf.tracking.names import KIND_TAG
from recmf.tracking.store import _client, ensure_experiment


def open_parent(logger_cfg: LoggerConfig, name: str, params: dict[str, str]) -> str:
    """Create the sweep's parent run (tagged as a sweep) with ``params``; its id."""
    client = _client(logger_cfg.tracking_uri)
    exp_id = ensure_experiment(logger_cfg)  # under the store's lock: trials race for it
    run = client.create_run(exp_id, tags={KIND_TAG: "sweep"}, run_name=name)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def close_parent(logger_cfg: LoggerConfig, parent_id: str, metric: str, mode: str) -> None:
    """Record the number of trials and the best one by ``metric`` (``mode`` max or min), and end
    the parent run: FINISHED, or FAILED when no trial logged the metric."""
    client = _client(logger_cfg.tracking_uri)
    parent = client.get_run(parent_id)
    trials = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=10_000,
    )
    scored = [t for t in trials if metric in t.data.metrics]
    client.log_metric(parent_id, "n_trials", len(trials))
    if scored:
        pick = max if mode == "max" else min
        best = pick(scored, key=lambda t: t.data.metrics[metric])
        client.set_tag(parent_id, "best_trial_run_id", best.info.run_id)
        client.log_metric(parent_id, f"best_trial_{metric}", best.data.metrics[metric])
        client.log_param(parent_id, "best_trial_run_id", best.info.run_id)
    client.set_terminated(parent_id, "FINISHED" if scored else "FAILED")
