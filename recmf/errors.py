"""User-facing errors: a script prints their message and exits non-zero, never a traceback."""


class RecmfError(Exception):
    """A mistake the user can fix; the message says what, what was given, and what to do."""


class ConfigError(RecmfError, ValueError):
    """A configuration value out of range or of the wrong type."""


class RunNotFoundError(RecmfError, LookupError):
    """No MLflow run matches what was asked for."""


class TrainingInterrupted(RecmfError):
    """SIGINT or SIGTERM stopped a fit; its last completed epoch is saved for ``resume=``."""

    exit_code = 130  # the shell's code for an interrupted command

    def __init__(self, phase: str, epoch: int, message: str = ""):
        super().__init__(message or f"training interrupted in its {phase} phase at epoch {epoch}")
        self.phase, self.epoch = phase, epoch
