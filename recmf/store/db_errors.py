"""Database errors a user can act on, told in one paragraph with the server's own reason.

A SQLSTATE says what went wrong (connection lost, no privilege, disk full, ...) and so what to
do; anything else is a bug and keeps its traceback. When a COPY loses its connection, psycopg2
prints the server's reason through ``sys.excepthook`` and raises a bare "invalid socket", and
SQLAlchemy's rollback then fails too: :func:`server_error_kept` and :func:`store_error` get the
reason back.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from recmf.store.errors import StoreError, hide_secret, safe_url

_LOST = (
    "the connection to PostgreSQL failed or was lost: check that the server is up and "
    "reachable, then run again"
)
# SQLSTATE prefix -> what to do
_USER_SQLSTATES = {
    "08": _LOST,
    "57P": _LOST,  # the server shut down, or an administrator ended this connection
    "42501": "the user in db.url lacks a privilege: grant it, or use a user that may create "
    "and write tables in that schema",
    "3D000": "the database in db.url does not exist: create it, or fix db.url",
    "53": "the server is out of resources (disk full, memory or connections): free some, then "
    "run again",
    "3F000": "the store's schema or tables disappeared while in use: ingest again",
    "42P01": "the store's schema or tables disappeared while in use: ingest again",
    "42703": "a table of the store lacks a column this recmf version needs: ingest into a new "
    "schema (db.schema=...)",
    "40": "another transaction conflicted with this one (deadlock or serialization failure): "
    "run again",
    "55P03": "a lock was not granted within lock_timeout: run again when other writers are done",
    "57014": "the statement was cancelled (statement_timeout, or by an administrator)",
}


def store_error(exc: BaseException, failed: str, url: str, after: str = "") -> StoreError | None:
    """The :class:`StoreError` for a database error a user can act on, else ``None``.

    Args:
        exc: what SQLAlchemy or psycopg2 raised.
        failed: what failed, e.g. ``"ingest failed in schema 'recmf'"``.
        url: the connection URL; its password is hidden in the message.
        after: a sentence appended to the message, e.g. what became of the data.
    """
    import psycopg2

    orig = _first_database_error(exc)
    code = getattr(orig, "pgcode", None) or ""
    # Without a code, the client saw the socket close: psycopg2 gives the server's errors their
    # code, and its OperationalError also covers deadlocks and more.
    lost = not code and isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError)
    hint = next(
        (h for prefix, h in _USER_SQLSTATES.items() if code.startswith(prefix)),
        _LOST if lost else None,
    )
    if hint is None:
        return None
    reason = _one_line(hide_secret(str(orig), url))
    return StoreError(
        f"{failed} at {safe_url(url)!r}: {reason}. "
        f"{hint[0].upper()}{hint[1:]}.{' ' + after if after else ''}"
    )


def _first_database_error(exc: BaseException) -> BaseException:
    """The driver error that started ``exc``'s chain.

    After a COPY on the raw psycopg2 cursor loses its connection, SQLAlchemy's rollback fails
    too ("connection already closed"), hiding the error that says why.
    """
    import psycopg2
    import sqlalchemy as sa

    found, seen = exc, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, psycopg2.Error | sa.exc.DBAPIError):
            found = exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return getattr(found, "orig", None) or found


def _one_line(text: str) -> str:
    """A driver message as one line: lines joined by "; ", indented continuations by a space."""
    out = ""
    for line in text.splitlines():
        if line.strip():
            sep = " " if line[:1].isspace() else "; "
            out = f"{out}{sep}{line.strip()}" if out else line.strip()
    return out.rstrip(".")


@contextlib.contextmanager
def server_error_kept() -> Iterator[None]:
    """Around a COPY: raise the server's own error when it loses its connection, print nothing.

    psycopg2 then prints that error through ``sys.excepthook`` (wrapped in a SystemError) and
    raises a bare "invalid socket" instead; a user would see a traceback and not the reason.
    """
    import psycopg2

    printed: list[BaseException] = []
    _HookSwap.enter(printed)
    try:
        yield
    except psycopg2.Error:
        cause = next(
            (e.__cause__ for e in printed if isinstance(e.__cause__, psycopg2.Error)), None
        )
        if cause is None:
            raise
        raise cause.with_traceback(None) from None
    finally:
        previous = _HookSwap.leave()
    for value in printed:  # printed without a failure: let it through as psycopg2 meant
        previous(type(value), value, value.__traceback__)


class _HookSwap:
    """``sys.excepthook`` swapped for :func:`server_error_kept` while any thread is in a COPY.

    What psycopg2 prints goes to the printing thread's list; any other thread's uncaught
    exception still reaches the hook that was there before. A count, not a save and restore
    per call, so that overlapping COPYs in several threads put the original hook back.
    """

    lock = threading.Lock()
    active = 0
    previous: Any = None
    sinks = threading.local()

    @classmethod
    def hook(cls, kind: Any, value: BaseException, tb: Any) -> None:
        sink = getattr(cls.sinks, "printed", None)
        if sink is None:
            cls.previous(kind, value, tb)
        else:
            sink.append(value)

    @classmethod
    def enter(cls, printed: list[BaseException]) -> None:
        with cls.lock:
            if cls.active == 0:
                cls.previous, sys.excepthook = sys.excepthook, cls.hook
            cls.active += 1
        cls.sinks.printed = printed

    @classmethod
    def leave(cls) -> Any:
        cls.sinks.printed = None
        with cls.lock:
            previous = cls.previous
            cls.active -= 1
            if cls.active == 0 and sys.excepthook == cls.hook:
                sys.excepthook = cls.previous
        return previous
