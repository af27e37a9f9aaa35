"""User-facing errors: a script prints their message and exits non-zero, never a traceback."""


class RecmfError(Exception):
    """A mistake the user can fix; the message says what, what was given, and what to do."""


class ConfigError(RecmfError, ValueError):
    """A configuration value out of range or of the wrong type."""


class RunNotFoundError(RecmfError, LookupError):
    """No MLflow run matches what was asked for."""
