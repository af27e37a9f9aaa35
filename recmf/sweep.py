"""Hydra multirun as one MLflow parent run whose trials are nested child runs.

``mlflow ui`` then shows a sweep as one row that opens into its trials; the parent records the
best trial's run id and validation score. Wired in ``configs/train.yaml`` under
``hydra.callbacks``; single runs never call these hooks.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from recmf.tracking import KIND_TAG, PARENT_ENV


class MLflowSweepParent(Callback):
    """Opens the parent run before the first trial and closes it with the best trial's result."""

    def __init__(self) -> None:
        self.parent_id: str | None = None

    def _client(self, config: DictConfig):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=config.logger.tracking_uri)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from recmf.tracking import ensure_experiment

        client = self._client(config)
        exp_id = ensure_experiment(config.logger)  # under the store's lock: trials race for it
        sweep = config.hydra.sweeper
        run = client.create_run(
            exp_id, tags={KIND_TAG: "sweep"}, run_name=f"sweep {config.hydra.job.name}"
        )
        self.parent_id = run.info.run_id
        os.environ[PARENT_ENV] = self.parent_id
        params = {"overrides": " ".join(config.hydra.overrides.task)[:500]}
        if "params" in sweep and sweep.params:
            params.update({f"search.{k}": str(v) for k, v in sweep.params.items()})
        for key, value in params.items():
            client.log_param(self.parent_id, key, value)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        from recmf.lit_module import MFLitModule

        monitor, mode = MFLitModule.monitor_for(config.loss, config.k)
        metric = f"best_{monitor.replace('/', '_')}"
        client = self._client(config)
        parent = client.get_run(self.parent_id)
        trials = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
            max_results=10_000,
        )
        scored = [t for t in trials if metric in t.data.metrics]
        client.log_metric(self.parent_id, "n_trials", len(trials))
        if scored:
            pick = max if mode == "max" else min
            best = pick(scored, key=lambda t: t.data.metrics[metric])
            client.set_tag(self.parent_id, "best_trial_run_id", best.info.run_id)
            client.log_metric(self.parent_id, f"best_trial_{metric}", best.data.metrics[metric])
            client.log_param(self.parent_id, "best_trial_run_id", best.info.run_id)
        client.set_terminated(self.parent_id, "FINISHED" if scored else "FAILED")
        os.environ.pop(PARENT_ENV, None)
