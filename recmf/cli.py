"""What every script does around its one call: user mistakes become a message and exit code 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from recmf.errors import RecmfError
from recmf.interactions import UnknownUserError


def _user_errors() -> tuple[type[BaseException], ...]:
    from recmf.store import DataFormatError, StoreError

    return (RecmfError, UnknownUserError, StoreError, DataFormatError)


def run(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a user mistake prints one paragraph on stderr and exits 2, no traceback."""
    logging.getLogger("recmf").setLevel(logging.INFO)
    try:
        return fn()
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))  # 130 for an interrupted training run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
