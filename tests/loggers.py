"""A Lightning logger that keeps what it is given, for tests that read a fit's logged metrics."""

from __future__ import annotations

from lightning.pytorch.loggers import Logger


class Capture(Logger):
    """``rows``: (step, metrics) in the order they were logged; hyperparameters are dropped."""

    name, version = "capture", 0

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int | None, dict]] = []

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))
