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

from recmf.tracking import PARENT_ENV


class MLflowSweepParent(Callback):
    """Opens the parent run before the first trial and closes it with the best trial's result."""

    def __init__(self) -> None:
        self.parent_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from recmf.tracking.sweeps import open_parent

        sweep = config.hydra.sweeper
        params = {"overrides": " ".join(config.hydra.overrides.task)[:500]}
        if "params" in sweep and sweep.params:
            params.update({f"search.{k}": str(v) for k, v in sweep.params.items()})
        name = f"sweep {config.hydra.job.name}"
        self.parent_id = open_parent(config.logger, name, params)
        os.environ[PARENT_ENV] = self.parent_id  # each trial's run nests under it

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        from recmf.model.lit_module import MFLitModule
        from recmf.tracking.sweeps import close_parent

        monitor, mode = MFLitModule.monitor_for(config.loss, config.k)
        close_parent(config.logger, self.parent_id, f"best_{monitor.replace('/', '_')}", mode)
        os.environ.pop(PARENT_ENV, None)
