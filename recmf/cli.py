"""What every script does around its one call: user mistakes become a message and exit code 2.

Two kinds of mistake reach a script: a config Hydra cannot compose (an unknown key, a value of
the wrong type, a group option that does not exist), caught by :func:`main`; and a value out of
range or a store/run problem found by recmf, caught by :func:`run`. Both print one paragraph on
stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.experimental.callback import Callback

from recmf.data.interactions import UnknownUserError
from recmf.errors import DataFormatError, RecmfError


def _user_errors() -> tuple[type[BaseException], ...]:
    from recmf.store import StoreError

    return (RecmfError, UnknownUserError, StoreError, DataFormatError)


def _quiet_third_parties(verbose: bool) -> None:
    """recmf speaks at INFO; MLflow, Lightning and friends only at WARNING unless ``verbose``."""
    logging.getLogger("recmf").setLevel(logging.INFO)
    if verbose:
        logging.getLogger().setLevel(logging.INFO)
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # when already imported
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # e.g. Lightning's colour-coded tips
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def run(fn: Callable[[], Any], verbose: bool = False) -> Any:
    """Call ``fn``; a user mistake prints one paragraph on stderr and exits 2, no traceback."""
    _quiet_third_parties(verbose)
    try:
        return fn()
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))  # 130 for an interrupted training run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def call(verb: Callable[[Any], Any], cfg: Any, script: str) -> Any:
    """``verb`` on ``cfg`` turned into ``script``'s typed settings, as :func:`run` calls it: a
    script's one line of work."""
    from recmf.config import settings

    return run(lambda: verb(settings(cfg, script)), cfg.verbose)


def main(hydra_main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function; a config Hydra refuses becomes one paragraph and exit 2.

    Hydra prints composition errors itself and exits 1; with ``HYDRA_FULL_ERROR`` it raises
    them instead, which lets this wrapper word them. A user who sets ``HYDRA_FULL_ERROR``
    gets Hydra's own output.
    """
    if os.environ.get("HYDRA_FULL_ERROR"):
        hydra_main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    script = os.path.basename(sys.argv[0])
    try:
        hydra_main()
    except Exception as exc:
        from recmf.config import config_error_message

        message = config_error_message(exc, script)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


class MLflowSweepParent(Callback):
    """A Hydra multirun as one MLflow parent run whose trials are nested child runs.

    ``mlflow ui`` then shows a sweep as one row that opens into its trials; the parent records
    the best trial's run id and validation score. Wired in ``configs/train.yaml`` under
    ``hydra.callbacks``; single runs never call these hooks.
    """

    def __init__(self) -> None:
        self.parent_id: str | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        from recmf.tracking import PARENT_ENV
        from recmf.tracking.sweeps import open_parent

        sweep = config.hydra.sweeper
        params = {"overrides": " ".join(config.hydra.overrides.task)[:500]}
        if "params" in sweep and sweep.params:
            params.update({f"search.{k}": str(v) for k, v in sweep.params.items()})
        name = f"sweep {config.hydra.job.name}"
        self.parent_id = open_parent(OmegaConf.to_object(config.logger), name, params)
        os.environ[PARENT_ENV] = self.parent_id  # each trial's run nests under it

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        from omegaconf import OmegaConf

        from recmf.model.lit_module import MFLitModule
        from recmf.tracking import PARENT_ENV
        from recmf.tracking.sweeps import close_parent

        monitor, mode = MFLitModule.monitor_for(config.loss, config.k)
        metric = f"best_{monitor.replace('/', '_')}"
        close_parent(OmegaConf.to_object(config.logger), self.parent_id, metric, mode)
        os.environ.pop(PARENT_ENV, None)
