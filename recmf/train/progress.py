"""What training shows while it runs: Lightning's progress bar on a terminal, one line per epoch
otherwise (a log file, CI, a pipe), both on stderr so that stdout holds results only."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

log = logging.getLogger("recmf")


def resolve(mode: str) -> str:
    """``auto`` -> ``bar`` when stderr is a terminal, else ``lines``."""
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode


def callbacks(mode: str, max_epochs: int) -> tuple[list, bool]:
    """The Lightning callbacks for ``mode`` and whether the Trainer's progress bar is enabled."""
    mode = resolve(mode)
    if mode == "bar":
        return [_stderr_bar()], True
    if mode == "lines":
        return [_epoch_lines(max_epochs)], False
    return [], False


def _stderr_bar():
    from lightning.pytorch.callbacks import TQDMProgressBar

    class StderrBar(TQDMProgressBar):
        """Lightning's bar, drawn on stderr (it writes to stdout by default)."""

        # Lightning creates each bar with file=sys.stdout, read at that moment
        def init_train_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_train_tqdm()

        def init_validation_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_validation_tqdm()

        def init_sanity_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_sanity_tqdm()

        def get_metrics(self, trainer, pl_module):
            metrics = super().get_metrics(trainer, pl_module)
            metrics.pop("v_num", None)  # MLflow's run id fragment, not a number users track
            return metrics

    return StderrBar()


def format_epoch(
    phase: str, epoch: int, max_epochs: int, metrics: dict, seconds: float, when: str = ""
) -> str:
    """``train epoch 3/200: loss 5.8123, val/ndcg_at_10 0.2431 (1.2 s)``; ``when`` in place of
    ``epoch 3/200`` (``start (before epoch 1)``)."""
    shown = [
        f"{'loss' if name.endswith('/loss') else name} {float(value):.4f}"
        for name, value in sorted(metrics.items(), key=lambda kv: not kv[0].endswith("/loss"))
        if name.endswith("/loss") or name.startswith(("val/ndcg", "val/rmse"))  # what selects
    ]
    return f"{phase} {when or f'epoch {epoch}/{max_epochs}'}: {', '.join(shown)} ({seconds:.1f} s)"


def _epoch_lines(max_epochs: int):
    from lightning.pytorch.callbacks import Callback

    class EpochLines(Callback):
        """One concise log line per epoch, after its validation."""

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.global_rank != 0:
                return
            metrics = {
                k: v
                for k, v in trainer.callback_metrics.items()
                if k.startswith(f"{pl_module.log_prefix}/") or k.startswith("val/")
            }
            log.info(
                format_epoch(
                    pl_module.log_prefix,
                    trainer.current_epoch + 1,
                    trainer.max_epochs or max_epochs,
                    metrics,
                    time.perf_counter() - self._t0,
                )
            )

        def on_validation_start(self, trainer, pl_module) -> None:
            self._v0 = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.global_rank != 0 or trainer.state.fn != "validate":
                return  # during a fit the epoch's line shows its validation
            metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            seconds = time.perf_counter() - self._v0
            when = "start (before epoch 1)"  # model.init=svd validates its start (one_fit)
            log.info(format_epoch(pl_module.log_prefix, 0, 0, metrics, seconds, when))

    return EpochLines()
