"""User-facing errors: a script prints their message and exits non-zero, never a traceback."""

from __future__ import annotations

from pathlib import Path


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


class DataFormatError(ValueError):
    """A malformed input file: names the file, the 1-based line, the value and what was expected."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")
