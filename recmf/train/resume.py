"""What an interrupted run leaves for ``resume=``, and how a resume gets the run's own settings.

A resume continues *the run*: the store (URL without its password, schema, data directory), the
data set, the model and trainer settings are the run's, saved with its last completed epoch.
Only the keys the user types on the resuming command line override them, and the tracking store
is always this call's (that is where the run was found).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recmf import tracking
from recmf.errors import ConfigError
from recmf.store.errors import safe_url

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_ABSENT = object()


def command(run_id: str, logger_cfg: Any) -> str:
    """The command that resumes ``run_id``, runnable as printed from the same directory: it
    names the tracking store and experiment unless they are what a bare command would use."""
    args = [f"resume={run_id}"]
    uri = str(logger_cfg.tracking_uri)
    if uri != DEFAULT_TRACKING_URI:  # named even when it came from MLFLOW_TRACKING_URI
        args.append(f"logger.tracking_uri={uri}")
    if logger_cfg.experiment_name != "recmf":
        args.append(f"logger.experiment_name={logger_cfg.experiment_name}")
    return "python scripts/train.py " + " ".join(shlex.quote(a) for a in args)


def save_point(cfg: DictConfig, logger, workdir: Path, stop, digest: str) -> None:
    """Log what ``resume=`` needs: the last completed epoch's checkpoint (if an epoch completed),
    the best one so far, and the phase, config and data digest; word the stop's message."""
    last = workdir / ("refit/last.ckpt" if stop.phase == "refit" else "last.ckpt")
    state = {
        "phase": stop.phase,
        "epoch": stop.epoch,
        "best_val": getattr(stop, "best_val", None),
        "digest": digest,
        "config": tracking.safe_config(cfg),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state.json").write_text(json.dumps(state, indent=2, default=str))
    tracking.log_dir(logger, workdir, "resume")
    tracking.tag_run(logger, tracking.INTERRUPTED_TAG, stop.phase)
    again = f"Continue it with: {command(logger.run_id, cfg.logger)} (or resume=last)."
    if last.is_file():
        saved = f"the last completed epoch is saved to run {logger.run_id}"
    elif stop.phase == "refit":
        saved = (
            f"no refit epoch had completed; the epoch selection is saved to run {logger.run_id} "
            "and a resume starts the refit from its first epoch"
        )
    else:
        saved = (
            f"no epoch had completed, so no model is saved; run {logger.run_id} keeps its "
            "settings and a resume starts training from the first epoch"
        )
    stop.args = (
        f"training was interrupted during its {stop.phase} phase at epoch {stop.epoch + 1}; "
        f"{saved}. {again}",
    )


def load_point(
    cfg: DictConfig, checkpoints: Path, overrides: list[str] | None = None
) -> tuple[DictConfig, str, dict]:
    """The interrupted run's config, id and saved state; its checkpoints are fetched from
    MLflow when they are not on this machine.

    The config is the run's, with this call's tracking settings, ``resume`` cleared, and each
    key in ``overrides`` (``key=value`` as typed; default: Hydra's record of this job's
    command line) taken from ``cfg``.
    """
    run = tracking.find_interrupted_run(cfg.logger, None if cfg.resume == "last" else cfg.resume)
    run_id = run.info.run_id
    workdir = checkpoints / run_id
    if not (workdir / "state.json").is_file():
        tracking.download_artifacts_to(cfg.logger, run_id, "resume", workdir)
    state = json.loads((workdir / "state.json").read_text())
    saved = OmegaConf.create(state["config"])
    OmegaConf.set_struct(saved, False)
    typed = _typed_keys(_command_line() if overrides is None else overrides)
    for key in typed:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        # logger: always this call's; absent: a group of @package _global_ (experiment=...)
        if key != "resume" and key.split(".")[0] != "logger" and value is not _ABSENT:
            OmegaConf.update(saved, key, value, merge=False)
    saved.logger, saved.resume = cfg.logger, None
    if "db.url" not in typed:
        saved.db.url = _with_password(saved.db.get("url"), cfg.db.get("url"), run_id)
    return saved, run_id, state


def _command_line() -> list[str]:
    """This job's command-line overrides as Hydra recorded them ([] outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _typed_keys(overrides: list[str]) -> list[str]:
    """``db.schema=x`` -> ``db.schema``; ``+key=v`` and ``~key`` name ``key`` too."""
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides if not o.startswith("hydra.")]


def _with_password(saved_url: str | None, given_url: str | None, run_id: str) -> str | None:
    """The run's store URL, saved without its password: the given URL when it is the same
    server (it carries the password), else a message saying how to give it."""
    if not saved_url or "***" not in saved_url:
        return saved_url
    if given_url and safe_url(str(given_url)) == saved_url:
        return str(given_url)
    raise ConfigError(
        f"run {run_id} read its data from {saved_url}, whose password is not saved with the run. "
        "Give it to the resume: set RECMF_DATABASE_URL to that URL with the password, or pass "
        "db.url='postgresql://user:password@host:5432/db' with resume=."
    )
