"""What every script does around its one call: user mistakes become a message and exit code 2.

Two kinds of mistake reach a script: a config Hydra cannot compose (an unknown key, a value of
the wrong type, a group option that does not exist), caught by :func:`main`; and a value out of
range or a store/run problem found by recmf, caught by :func:`run`. Both print one paragraph on
stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from recmf.data.interactions import UnknownUserError
from recmf.errors import DataFormatError, RecmfError

# Keys that moved: the one place each value is read now.
_MOVED = {"model.latent_dim": "latent_dim", "model.loss": "loss"}
# OmegaConf's names for the node types, in a user's words
_TYPE_WORDS = {
    "Integer": "a whole number, e.g. 10",
    "Float": "a number, e.g. 0.01",
    "Boolean": "true or false",
    "String": "a text value",
}


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
        message = config_error_message(exc, script)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def _typed(key: str) -> str | None:
    """What the user typed for ``key`` on the command line (``key=value``), if anything."""
    for arg in sys.argv[1:]:
        name = arg.split("=", 1)[0].lstrip("+~")
        if name == key or name.startswith(f"{key}."):
            return arg
    return None


def config_error_message(exc: BaseException, script: str) -> str | None:
    """One paragraph for a config mistake Hydra or OmegaConf raised; None for anything else."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, HydraException | OmegaConfBaseException):
        return None
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
    help_line = (
        f"`python scripts/{script} --cfg job` prints every key and its current value."
        if script.endswith(".py")
        else "configs/train.yaml lists every key."
    )
    where = f"scripts/{script}" if script.endswith(".py") else script
    named = re.search(r"override '?([^'\s=]+)", str(exc))
    key = getattr(cause, "full_key", None) or (named.group(1).rstrip(".") if named else None)
    typed = _typed(str(key)) if key else None
    if isinstance(exc, OverrideParseException):
        bad = re.search(r"Exception: (\S+)", str(exc))
        return (
            f"Hydra cannot read the command-line item {bad.group(1) if bad else str(exc)!r}: "
            "outside quotes, a value may not hold ; = , [ ] { } ( ) or spaces, and "
            "true/false/null/numbers are read as such. Quote the value inside the item, and the "
            "item for the shell: 'user=\"a;b\"', 'dataset.sep=\";\"', \"user='U=1'\" "
            "(README, Configuration, has more)."
        )
    if isinstance(exc, MissingConfigException):
        group = (exc.missing_cfg_file or "").rsplit("/", 1)[0]
        options = [o for o in exc.options or [] if not o.endswith("_schema")]
        given = _typed(group) or exc.missing_cfg_file
        return (
            f"{given} names no config of {where}"
            + (f"; the options of {group} are {', '.join(options)}" if options else "")
            + f". Pass one of them, e.g. {group}={options[0] if options else '...'}."
        )
    if cause is not None and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        moved = _MOVED.get(str(key))
        if moved:
            return (
                f"{key} is not a config key of {where} (given {typed or key}): that "
                f"value is set once, at the top level. Pass {moved}=... instead. {help_line}"
            )
        return (
            f"unknown config key {key!r} (given {typed or key}) for {where}. Check its "
            f"spelling and group. {help_line}"
        )
    if cause is not None and type(cause).__name__ == "ValidationError":
        msg = str(getattr(cause, "msg", cause)).split("\n")[0]
        wanted = re.search(r"converted to (\w+)", msg)
        expected = _TYPE_WORDS.get(wanted.group(1), wanted.group(1)) if wanted else None
        if expected is None and "not a ListConfig" in msg:
            expected = "a list in brackets, e.g. [5,10,20]"
        if expected is None and "valid bool" in msg:
            expected = _TYPE_WORDS["Boolean"]
        if expected is None and "to string" in msg:
            expected = _TYPE_WORDS["String"] + " (quote it: key=\"'[a,b]'\")"
        given = typed or f"{key}={getattr(cause, 'object_type_str', '?')}"
        return (
            f"{given}: {key} must be {expected or 'of another type'}. Fix the value on the "
            f"command line (Hydra's words: {msg.rstrip('.')}). {help_line}"
        )
    text = " ".join(str(exc).split())
    return f"the configuration of {where} could not be built: {text}. {help_line}"
