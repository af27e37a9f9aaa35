"""What an interrupted run leaves for ``resume=``, and finding it again.

A resume continues *the run*: the store (URL without its password, schema, data directory), the
data set, the model and trainer settings are the run's, saved here with its last completed
epoch; :func:`recmf.config.resumed` rebuilds the settings from them.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from recmf import tracking
from recmf.settings import LoggerConfig, TrainConfig

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def command(run_id: str, logger: LoggerConfig) -> str:
    """The command that resumes ``run_id``, runnable as printed from the same directory: it
    names the tracking store and experiment unless they are what a bare command would use."""
    args = [f"resume={run_id}"]
    uri = str(logger.tracking_uri)
    if uri != DEFAULT_TRACKING_URI:  # named even when it came from MLFLOW_TRACKING_URI
        args.append(f"logger.tracking_uri={uri}")
    if logger.experiment_name != "recmf":
        args.append(f"logger.experiment_name={logger.experiment_name}")
    return "python scripts/train.py " + " ".join(shlex.quote(a) for a in args)


def save_point(cfg: TrainConfig, logger, workdir: Path, stop, digest: str) -> None:
    """Log what ``resume=`` needs: the last completed epoch's checkpoint (if an epoch completed),
    the best one so far, and the phase, config and data digest; word the stop's message."""
    last = workdir / ("refit/last.ckpt" if stop.phase == "refit" else "last.ckpt")
    state = {
        "phase": stop.phase,
        "epoch": stop.epoch,
        "best_val": getattr(stop, "best_val", None),
        "chosen": getattr(stop, "chosen", None),  # model.recency / model.reg chosen (auto)
        "digest": digest,
        "config": tracking.safe_config(cfg),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state.json").write_text(json.dumps(state, indent=2, default=str))
    tracking.log_dir(logger, workdir, "resume")
    tracking.tag_run(logger, tracking.INTERRUPTED_TAG, stop.phase)
    again = f"Continue it with: {command(logger.run_id, cfg.logger)} (or resume=last)."
    if stop.phase == "select":
        saved = (
            f"choosing model.recency / model.reg keeps no per-epoch state, so run {logger.run_id} "
            "keeps its settings and a resume starts the selection again from its first epoch"
        )
    elif last.is_file():
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


def load_point(logger: LoggerConfig, which: str, checkpoints: Path) -> tuple[str, dict]:
    """The interrupted run ``which`` (an id, or ``last``) and its saved state (phase, epoch,
    digest, config); its checkpoints are fetched from MLflow when they are not on this
    machine."""
    run = tracking.find_interrupted_run(logger, None if which == "last" else which)
    run_id = run.info.run_id
    workdir = checkpoints / run_id
    if not (workdir / "state.json").is_file():
        tracking.download_artifacts_to(logger, run_id, "resume", workdir)
    return run_id, json.loads((workdir / "state.json").read_text())
