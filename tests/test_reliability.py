"""Failures provoked for real: killed ingests, terminated backends, concurrent writers,
snapshot reads, missing or foreign schemas, refused passwords, malformed CSV, leaked secrets.

Every test runs a real PostgreSQL (conftest's ``pg_url``) and, where a script is the unit, the
real script in a subprocess. Sizes are chosen so that an ingest is still inside its COPY when
the test acts (observed in ``pg_stat_activity``, never guessed from a delay).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from recmf.config import from_dict
from recmf.data.interactions import RawInteractions
from recmf.errors import DataFormatError
from recmf.ingest import run_ingest
from recmf.settings import DbConfig, IngestConfig
from recmf.store import FeatureStore, StoreError
from recmf.store.schema import make_tables
from recmf.store.server import EmbeddedServer, normalise_url
from recmf.store.writer import write_interactions
from tests.scripts import ROOT, TINY, run_script, start_script

pytestmark = pytest.mark.slow  # real processes, kill -9, a second server: minutes

TABLES = ("users", "items", "interactions", "user_features", "item_features")
BIG_ROWS = 600_000  # COPY of the rows lasts ~0.3 s on 2 cores: long enough to be seen in it
CSV_COLUMNS = {"user": "user", "item": "item", "rating": "rating", "time": "time"}


# ---------------------------------------------------------------------------- helpers


def url_with(url: str, *, app: str | None = None, user: str | None = None, password=None) -> str:
    """``url`` (psycopg2 form) with an application_name, to find its backend, or credentials."""
    parsed = make_url(normalise_url(url))
    if app:
        parsed = parsed.update_query_dict({"application_name": app})
    if user:
        parsed = parsed.set(username=user)
    if password:
        parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


def with_made_up_password(url: str) -> tuple[str, str | None]:
    """``url`` with a made-up password, and that password; unchanged (and ``None``) when it has
    one of its own. The embedded server trusts local connections, so any password passes."""
    if make_url(normalise_url(url)).password:
        return url, None
    password = f"pw-{uuid.uuid4().hex[:12]}"
    return url_with(url, password=password), password


def script_env(cwd: Path, db_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd / 'mlflow.db'}"
    env.pop("RECMF_DATABASE_URL", None)
    if db_url:
        env["RECMF_DATABASE_URL"] = db_url
    return env


def csv_args(path: Path, schema: str) -> list[str]:
    columns = [f"dataset.columns.{role}={name}" for role, name in CSV_COLUMNS.items()]
    return ["dataset=csv", f"dataset.path={path}", *columns, f"db.schema={schema}"]


def ingest_config(db: DbConfig, dataset: dict) -> IngestConfig:
    return from_dict({"db": asdict(db), "dataset": dataset}, IngestConfig)


def csv_dataset(path: Path) -> dict:
    return {"name": "csv", "path": str(path), "sep": ",", "header": True, "columns": CSV_COLUMNS}


LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\]\[recmf[.\w]*\]\[(INFO|WARNING)\] - ")


def the_error(stderr: str) -> str:
    """The one-paragraph message a script printed; fails if anything but it and recmf's own log
    lines (``[12:00:00][recmf...][INFO] - ...``) is on stderr."""
    assert "Traceback" not in stderr and "SystemError" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def find_backend(
    admin: sa.Engine,
    app: str,
    query_like: str,
    proc: subprocess.Popen,
    waiting: bool = False,
    timeout: float = 120.0,
) -> int:
    """pid of the backend of ``app`` running a query like ``query_like`` (waiting on a lock if
    ``waiting``); fails if ``proc`` exits first."""
    sql = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = %(app)s "
        "AND state = 'active' AND query LIKE %(q)s"
    ) + (" AND wait_event_type = 'Lock'" if waiting else "")
    deadline = time.monotonic() + timeout
    # autocommit: pg_stat_activity is read once per transaction
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while time.monotonic() < deadline:
            pid = conn.exec_driver_sql(sql, {"app": app, "q": query_like}).scalar()
            if pid is not None:
                return int(pid)
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"{app} exited ({proc.returncode}) before {query_like!r}:\n{err}")
            time.sleep(0.002)
    pytest.fail(f"{app} never ran {query_like!r} within {timeout} s")


def wait_until_gone(admin: sa.Engine, pid: int, timeout: float = 60.0) -> None:
    """Until the server has finished with backend ``pid`` (its transaction is rolled back)."""
    deadline = time.monotonic() + timeout
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while time.monotonic() < deadline:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = %(pid)s"
            if conn.exec_driver_sql(sql, {"pid": pid}).scalar() == 0:
                return
            time.sleep(0.02)
    pytest.fail(f"backend {pid} still there after {timeout} s")


def terminate(admin: sa.Engine, pid: int) -> None:
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar()


def store_state(db_cfg, admin: sa.Engine) -> dict:
    """Everything an ingest could change: snapshot (counts, content hash), every table's row
    count, and the primary key of interactions (a first load drops and re-adds it)."""
    with FeatureStore.open(db_cfg, create=False) as store:
        state = store.snapshot()
    schema = f'"{db_cfg.schema}"'
    with admin.connect() as conn:
        for table in TABLES:
            state[table] = conn.exec_driver_sql(f"SELECT count(*) FROM {schema}.{table}").scalar()
        state["primary_key"] = conn.exec_driver_sql(
            "SELECT conname FROM pg_constraint WHERE contype = 'p' AND conrelid = %(t)s::regclass",
            {"t": f"{schema}.interactions"},
        ).scalar()
    return state


def schema_exists(admin: sa.Engine, schema: str) -> bool:
    with admin.connect() as conn:
        sql = "SELECT count(*) FROM pg_namespace WHERE nspname = %(s)s"
        return bool(conn.exec_driver_sql(sql, {"s": schema}).scalar())


def write_rows_csv(path: Path, lo: int, hi: int) -> Path:
    """Rows ``lo..hi-1`` of one seeded data set: 20,000 users, 5,000 items, time = row number
    (so every row is unique and two ranges overlap exactly in their common rows)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rows = np.arange(lo, hi)
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20_000, BIG_ROWS)[rows]
    items = rng.integers(0, 5_000, BIG_ROWS)[rows]
    table = pa.table(
        {
            "user": np.char.add("U", users.astype(str)),
            "item": np.char.add("I", items.astype(str)),
            "rating": (rows % 5 + 1).astype(np.int64),
            "time": rows,
        }
    )
    pacsv.write_csv(table, path)
    return path


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    return write_rows_csv(tmp_path_factory.mktemp("big") / "big.csv", 0, BIG_ROWS)


def raw(rows: list[tuple]) -> RawInteractions:
    users, items, ratings, ts = zip(*rows, strict=True)
    return RawInteractions(
        user_id=np.array(users, dtype=object),
        item_id=np.array(items, dtype=object),
        rating=np.array(ratings, dtype=np.float64),
        timestamp=np.array(ts, dtype=np.int64),
    )


# ------------------------------------------------------- 1. ingest is all-or-nothing


def test_ingest_killed_mid_copy_leaves_the_store_as_it_was_and_a_rerun_completes(
    pg_url, db_cfg, pg_admin, big_csv, tmp_path
):
    with FeatureStore.open(db_cfg) as store:  # not empty: the big ingest goes through staging
        store.ingest(raw([(f"U{k}", f"I{k}", 3.0, -k) for k in range(100)]))
    before = store_state(db_cfg, pg_admin)
    app = f"recmf_kill_{uuid.uuid4().hex[:8]}"
    env = script_env(tmp_path, url_with(pg_url, app=app))
    proc = start_script("ingest.py", csv_args(big_csv, db_cfg.schema), tmp_path, env)
    try:
        pid = find_backend(pg_admin, app, "COPY recmf_stage_rows %", proc)
        assert proc.poll() is None  # still running, inside its COPY
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    wait_until_gone(pg_admin, pid)
    assert store_state(db_cfg, pg_admin) == before

    result = run_ingest(ingest_config(db_cfg, csv_dataset(big_csv)))
    assert (result.added, result.n_interactions) == (BIG_ROWS, before["n_interactions"] + BIG_ROWS)
    after = store_state(db_cfg, pg_admin)
    assert after["user_features"] == after["n_users"] and after["item_features"] == after["n_items"]


def test_ingest_whose_backend_is_terminated_exits_2_with_one_paragraph_and_stores_nothing(
    pg_url, db_cfg, pg_admin, big_csv, tmp_path
):
    FeatureStore.open(db_cfg).close()  # an empty store: the first load drops the primary key
    before = store_state(db_cfg, pg_admin)
    app = f"recmf_term_{uuid.uuid4().hex[:8]}"
    url, password = with_made_up_password(url_with(pg_url, app=app))
    env = script_env(tmp_path, url)
    proc = start_script("ingest.py", csv_args(big_csv, db_cfg.schema), tmp_path, env)
    try:
        pid = find_backend(pg_admin, app, "COPY %interactions (user_key%", proc)
        terminate(pg_admin, pid)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    message = the_error(err)
    assert f"ingest failed in schema {db_cfg.schema!r}" in message
    assert "terminating connection due to administrator command" in message
    assert "stored whole or not at all" in message and "interactions (+" not in out
    assert (password is None or password not in out + err) and "***@" in message
    wait_until_gone(pg_admin, pid)
    assert store_state(db_cfg, pg_admin) == before  # primary key back, nothing stored

    result = run_ingest(ingest_config(db_cfg, csv_dataset(big_csv)))
    assert result.added == result.n_interactions == BIG_ROWS


def test_concurrent_overlapping_ingests_store_the_union_once(pg_url, db_cfg, pg_admin, tmp_path):
    first = write_rows_csv(tmp_path / "first.csv", 0, 150_000)
    second = write_rows_csv(tmp_path / "second.csv", 100_000, 250_000)
    FeatureStore.open(db_cfg).close()
    apps = [f"recmf_conc{k}_{uuid.uuid4().hex[:8]}" for k in range(2)]
    # Hold them up at their first write (of users) until both are inside an ingest at once.
    with pg_admin.connect() as gate:
        gate.exec_driver_sql(f'LOCK TABLE "{db_cfg.schema}".users IN SHARE MODE')
        procs = [
            start_script(
                "ingest.py",
                csv_args(path, db_cfg.schema),
                tmp_path,
                script_env(tmp_path, url_with(pg_url, app=app)),
            )
            for path, app in zip((first, second), apps, strict=True)
        ]
        try:
            for proc, app in zip(procs, apps, strict=True):
                find_backend(pg_admin, app, "%", proc, waiting=True)
            gate.rollback()
            results = [proc.communicate(timeout=180) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err

    with FeatureStore.open(db_cfg) as store:
        data = store.read_interactions()
    order = np.argsort(data.timestamp)
    assert data.timestamp[order].tolist() == list(range(250_000))  # each row once
    expected = write_rows_csv(tmp_path / "union.csv", 0, 250_000)
    import pyarrow.csv as pacsv

    union = pacsv.read_csv(expected).to_pydict()
    assert data.vocab.user_ids[data.user_idx[order]].tolist() == union["user"]
    assert data.vocab.item_ids[data.item_idx[order]].tolist() == union["item"]
    assert data.rating[order].tolist() == [float(r) for r in union["rating"]]
    state = store_state(db_cfg, pg_admin)
    assert state["users"] == len(set(union["user"])) == state["user_features"]
    with pg_admin.connect() as conn:  # features count every row once, after both ingests
        sums = conn.exec_driver_sql(
            f'SELECT (SELECT sum(n_interactions) FROM "{db_cfg.schema}".user_features), '
            f'(SELECT sum(n_interactions) FROM "{db_cfg.schema}".item_features)'
        ).one()
    assert tuple(sums) == (250_000, 250_000)


# ------------------------------------------------- 2. training reads a consistent snapshot


def test_reads_see_none_of_an_open_ingest_and_none_or_all_across_its_commit(
    pg_url, store, pg_admin
):
    store.ingest(raw([("u1", "a", 1.0, 1), ("u2", "b", 2.0, 2)]))  # later ingests stage rows
    before = store.snapshot()
    new = raw([("u1", "c", 3.0, 3), ("u3", "a", 4.0, 4), ("u4", "d", 5.0, 5)])  # new users, items
    engine = sa.create_engine(normalise_url(pg_url))
    writer = engine.connect()
    tx = writer.begin()
    write_interactions(writer, make_tables(store.schema), new)
    assert store.snapshot() == before  # uncommitted rows are invisible to another connection
    assert store.user_history(["u3"]) == {}

    # A read that takes its snapshot before the commit and reads interactions after it: the
    # gate queues an exclusive lock on items behind the writer, and the read queues behind it.
    schema, found = store.schema, {}

    def gate() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'LOCK TABLE "{schema}".items IN ACCESS EXCLUSIVE MODE')
            conn.rollback()  # granted once the writer commits: let the read through

    def read() -> None:
        found["data"] = store.read_interactions()

    threads = [
        threading.Thread(target=gate, daemon=True),
        threading.Thread(target=read, daemon=True),
    ]
    threads[0].start()
    wait_for_lock_queue(pg_admin, f'LOCK TABLE "{schema}".items%')
    threads[1].start()
    wait_for_lock_queue(
        pg_admin, f"COPY (SELECT i.item_key, i.item_id, i.title FROM {schema}.items%"
    )
    tx.commit()
    for thread in threads:
        thread.join(timeout=60)
    writer.close()
    engine.dispose()
    assert store.snapshot(found["data"]) == before  # none of it, although it read after
    after = store.snapshot()
    assert after["n_interactions"] == 5 and after["n_users"] == 4  # a new read sees all


def wait_for_lock_queue(admin: sa.Engine, query_like: str, timeout: float = 30.0) -> None:
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %(q)s"
    )
    deadline = time.monotonic() + timeout
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while time.monotonic() < deadline:
            if conn.exec_driver_sql(sql, {"q": query_like}).scalar():
                return
            time.sleep(0.005)
    pytest.fail(f"nothing waited on a lock running {query_like!r}")


# ------------------------------------------------------------ 3. the database goes away


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Iterator[dict]:
    """A PostgreSQL of our own whose role ``recmf_pw`` must give its password (SCRAM).

    The embedded server trusts every local connection (pgserver runs initdb --auth=trust), so
    a wrong password would pass there; this one gets a pg_hba.conf rule for that role.
    """
    server = EmbeddedServer.start(tmp_path_factory.mktemp("pgauth") / "pgdata", "delete")
    admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
    password = f"pw-{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE recmf_pw LOGIN PASSWORD '{password}'")
        conn.exec_driver_sql("GRANT CREATE ON DATABASE postgres TO recmf_pw")
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text("local all recmf_pw scram-sha-256\n" + hba.read_text())
    with admin.connect() as conn:
        conn.exec_driver_sql("SELECT pg_reload_conf()")
    info = {"server": server, "admin": admin, "password": password, "user": "recmf_pw"}
    deadline = time.monotonic() + 30
    while not _refused(url_with(server.url, user="recmf_pw", password="not-it")):
        assert time.monotonic() < deadline, "pg_hba.conf reload never took effect"
        time.sleep(0.05)
    assert not _refused(url_with(server.url, user="recmf_pw", password=password))
    yield info
    admin.dispose()
    server.release()


def _refused(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            return False
    except sa.exc.OperationalError:
        return True
    finally:
        engine.dispose()


def test_train_against_an_unreachable_server_exits_2_and_records_nothing(tmp_path):
    url = "postgresql://alice:s3cr3t-unreach@127.0.0.1:1/recmf"
    proc = run_script("train.py", [*TINY], tmp_path, script_env(tmp_path, url))
    assert proc.returncode == 2
    message = the_error(proc.stderr)
    where = "'postgresql+psycopg2://alice:***@127.0.0.1:1/recmf'"
    assert f"cannot connect to PostgreSQL at {where}" in message
    assert "s3cr3t-unreach" not in proc.stdout + proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_ingest_with_a_wrong_password_exits_2_without_either_password(auth_server, tmp_path):
    url = url_with(auth_server["server"].url, user="recmf_pw", password="wrong-pw-4711")
    args = ["dataset.n_users=20", "dataset.n_items=10", "dataset.n_interactions=200"]
    proc = run_script(
        "ingest.py", [*args, "db.schema=pw_case"], tmp_path, script_env(tmp_path, url)
    )
    assert proc.returncode == 2
    message = the_error(proc.stderr)
    assert 'password authentication failed for user "recmf_pw"' in message
    assert "recmf_pw:***@" in message
    for secret in ("wrong-pw-4711", auth_server["password"]):
        assert secret not in proc.stdout + proc.stderr
    assert not schema_exists(auth_server["admin"], "pw_case")


def test_train_whose_backend_is_terminated_mid_read_exits_2_and_logs_no_run(
    pg_url, db_cfg, pg_admin, tmp_path
):
    from recmf.data.sources import synthetic

    with FeatureStore.open(db_cfg) as store:
        store.ingest(synthetic(n_users=50, n_items=30, n_interactions=600, seed=1))
    app = f"recmf_train_{uuid.uuid4().hex[:8]}"
    url, password = with_made_up_password(url_with(pg_url, app=app))
    env = script_env(tmp_path, url)
    with pg_admin.connect() as holder:  # train blocks in its read; then its server "goes away"
        holder.exec_driver_sql(f'LOCK TABLE "{db_cfg.schema}".items IN ACCESS EXCLUSIVE MODE')
        proc = start_script("train.py", [f"db.schema={db_cfg.schema}", *TINY], tmp_path, env)
        try:
            pid = find_backend(pg_admin, app, "COPY (SELECT i.item_key%", proc, waiting=True)
            terminate(pg_admin, pid)
            holder.rollback()
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 2, err
    message = the_error(err)
    assert f"reading interactions failed in schema {db_cfg.schema!r}" in message
    # the server's reason, or libpq's when the server closed the socket before it was read
    assert re.search(r"terminating connection due to administrator|server closed the", message)
    assert "check that the server is up" in message
    assert (password is None or password not in out + err) and "***@" in message
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_a_missing_schema_is_named_with_what_to_do_and_not_created(make_db_cfg, pg_admin):
    never = make_db_cfg()
    with pytest.raises(StoreError) as err:
        FeatureStore.open(never, create=False)
    message = str(err.value)
    assert f"schema {never.schema!r}" in message and "holds no recmf store" in message
    assert f"python scripts/ingest.py db.schema={never.schema}" in message
    assert not schema_exists(pg_admin, never.schema)

    gone = make_db_cfg()  # a schema dropped while a store has it open
    with FeatureStore.open(gone) as store:
        store.ingest(raw([("u1", "a", 1.0, 1)]))
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{gone.schema}" CASCADE')
        for read in (store.read_interactions, store.n_interactions, store.list_users):
            with pytest.raises(StoreError, match="disappeared while in use: ingest again"):
                read()


def test_tables_of_an_older_version_are_refused_by_ingest_and_left_alone(
    pg_url, db_cfg, pg_admin, tmp_path
):
    schema = f'"{db_cfg.schema}"'
    with pg_admin.begin() as conn:  # an older layout: no rating column, no feature tables
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        conn.exec_driver_sql(
            f"CREATE TABLE {schema}.users (user_key bigint PRIMARY KEY, user_id text UNIQUE)"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE {schema}.items (item_key bigint PRIMARY KEY, item_id text, title text)"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE {schema}.interactions (user_key bigint, item_key bigint, ts bigint)"
        )
        conn.exec_driver_sql(f"INSERT INTO {schema}.users VALUES (1, 'u1')")

    def tables() -> dict:
        with pg_admin.connect() as conn:
            names = conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = %(s)s ORDER BY 1",
                {"s": db_cfg.schema},
            ).scalars()
            return {
                n: conn.exec_driver_sql(f"SELECT count(*) FROM {schema}.{n}").scalar()
                for n in names
            }

    before = tables()
    args = ["dataset.n_users=20", "dataset.n_items=10", "dataset.n_interactions=200"]
    env = script_env(tmp_path, url_with(pg_url))
    proc = run_script("ingest.py", [*args, f"db.schema={db_cfg.schema}"], tmp_path, env)
    assert proc.returncode == 2
    message = the_error(proc.stderr)
    assert "table interactions lacks column(s) rating" in message
    assert "table user_features is missing" in message
    assert "db.schema=<new name>" in message and f"DROP SCHEMA {db_cfg.schema} CASCADE" in message
    assert tables() == before == {"interactions": 0, "items": 0, "users": 1}


# ------------------------------------------------------------ 4. bad input in CSV ingest

ID_SAMPLES = [
    "U1",
    "007",
    " spaced ",
    'quo"te',
    "semi;colon",
    "comma,id",
    "pipe|id",
    "tab\tid",
    "new\nline",
    "cr\rline",
    "crlf\r\nid",
    "NULL",
    "\\N",
    "ünï-用户",
    "bom-\ufeff-inside",
    "é" * 1000,
    "x" * 2048,  # the longest id allowed
]
BAD_IDS = ["", "nul\x00id", "用" * 683]  # empty, a NUL, 2049 bytes of UTF-8
RATINGS_OK = ["4", "3.5", " 2 ", "-1", "+2", "5.", ".5", "1E2", "007", "0", "-0", "3.4e38", ""]
RATINGS_BAD = ["nan", "inf", "-Infinity", "1e39", "x", "4 stars", "3,5", "١"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


IDS = st.one_of(
    st.sampled_from(ID_SAMPLES),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1).filter(
        lambda s: not s.startswith("\ufeff")  # at the very start of a file, that is a BOM
    ),
)
RATINGS = st.one_of(
    st.sampled_from(RATINGS_OK),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.integers(-10, 10).map(str),
)
BAD_TIMES = {
    "s": ["", "x", "1.5", "nan", "1e20", "100000000000", "1714566600000"],
    "ms": ["", "x", "1.5", "1e20", "100000000000000"],
    "iso": ["", "yesterday", "2024-13-45", "2024-05-01T25:00"],
}


@st.composite
def times(draw, kind: str) -> tuple[str, int]:
    """(text, the unix seconds stored) for a file whose times are ``kind``."""
    pad = draw(st.sampled_from(["", " ", "  "]))
    if kind == "s":
        value = draw(st.integers(-2 * 10**9, 4 * 10**9))
        text = draw(st.sampled_from([str(value), f"{value}.0"]))
        return f"{pad}{text}{pad}", value
    if kind == "ms":
        value = draw(st.integers(-2 * 10**12, 4 * 10**12))
        return f"{pad}{value}", value // 1000
    local = draw(st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)))  # naive
    offset = draw(st.sampled_from([None, 0, 330, -300, 840]))  # minutes east of UTC
    style = draw(st.sampled_from(["T", " ", "date", "Z"]))
    if style == "date":  # a day: its midnight UTC
        day = datetime.combine(local.date(), datetime.min.time(), UTC)
        return local.date().isoformat(), (day - EPOCH) // timedelta(seconds=1)
    zone = UTC if offset is None else timezone(timedelta(minutes=offset))
    text = local.isoformat(sep="T" if style == "Z" else style)
    if style == "Z":
        zone, text = UTC, text + "Z"
    elif offset is not None:
        text = local.replace(tzinfo=zone).isoformat(sep=style)
    aware = local.replace(tzinfo=zone)  # naive times are UTC
    return f"{pad}{text}", (aware - EPOCH) // timedelta(seconds=1)


@st.composite
def csv_files(draw) -> dict:
    """A delimited file of interactions, and what the documented rules say it holds (``None``:
    the file must be refused). At most one flaw per file, so that each kind is exercised."""
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    header = draw(st.booleans())
    has_rating, has_time = draw(st.booleans()), draw(st.booleans())
    kind = draw(st.sampled_from(["s", "ms", "iso"]))
    roles = ["user", "item"] + ["rating"] * has_rating + ["time"] * has_time
    roles += ["note"] * draw(st.booleans())  # a column nobody asked for
    roles = draw(st.permutations(roles))
    flaws = ["none", "none", "none", "empty", "id", "fields"]
    flaw = draw(st.sampled_from(flaws + ["rating"] * has_rating + ["time"] * has_time))
    users = draw(st.lists(IDS, min_size=1, max_size=4))
    items = draw(st.lists(IDS, min_size=1, max_size=4))
    rows = []
    for _ in range(0 if flaw == "empty" else draw(st.integers(1, 8))):
        rating = draw(RATINGS) if has_rating else ""
        time_text, ts = draw(times(kind)) if has_time else ("", None)
        row = {
            "user": draw(st.sampled_from(users)),
            "item": draw(st.sampled_from(items)),
            "rating": rating,
            "value": float(np.float32(float(rating))) if rating.strip() else None,
            "time": time_text,
            "ts": ts,
            "note": draw(st.text(max_size=5)),
        }
        rows.append(row)
        if draw(st.integers(1, 4)) == 4:
            rows.append(dict(row))  # the same row twice
    at = draw(st.integers(0, len(rows) - 1)) if rows else 0
    if flaw == "id":
        rows[at][draw(st.sampled_from(["user", "item"]))] = draw(st.sampled_from(BAD_IDS))
    elif flaw == "rating":
        rows[at]["rating"] = draw(st.sampled_from(RATINGS_BAD))
    elif flaw == "time":
        rows[at]["time"] = draw(st.sampled_from(BAD_TIMES[kind]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    quote_all = draw(st.booleans())

    def line(values: list[str]) -> str:  # RFC 4180: quote what needs it, or everything
        special = (sep, '"', "\r", "\n")
        quoted = (
            f'"{v.replace(chr(34), chr(34) * 2)}"'
            if quote_all or any(c in v for c in special)
            else v
            for v in values
        )
        return sep.join(quoted) + end

    lines = [line(roles)] if header else []
    for k, row in enumerate(rows):
        lines.append(line([row[role] for role in roles]))
        if flaw == "fields" and k == at:
            lines.append(line(["x"] * (len(roles) + 1)))
    expected = None
    if flaw == "none":
        expected, seen = set(), set()
        for k, row in enumerate(rows):
            ts = row["ts"] if has_time else k  # no time column: the row number
            if (row["user"], row["item"], ts) not in seen:  # a repeat: the first one wins
                seen.add((row["user"], row["item"], ts))
                expected.add((row["user"], row["item"], row["value"], ts))
    columns = {role: (role if header else roles.index(role)) for role in ("user", "item")}
    for role in ("rating", "time"):
        columns[role] = (role if header else roles.index(role)) if role in roles else None
    dataset = {"name": "csv", "sep": sep, "header": header, "columns": columns}
    dataset["time_unit"] = "ms" if kind == "ms" else "s"
    bom = "\ufeff" if draw(st.booleans()) else ""
    return {"text": bom + "".join(lines), "dataset": dataset, "expected": expected}


MS_EXPECTED = {("u", "i", 1.0, 1714566600), ("u", "i", 2.0, -1)}


def case_of(body: str, expected: set | None, time_unit: str = "s") -> dict:
    """A hand-written case: a file with user, item, rating and time columns and a header."""
    dataset = {"name": "csv", "sep": ",", "header": True, "columns": CSV_COLUMNS}
    text = "user,item,rating,time\n" + body
    return {"text": text, "dataset": {**dataset, "time_unit": time_unit}, "expected": expected}


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,  # reproducible from the code alone; nothing written under the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=csv_files())
# Each of these was stored wrongly, or failed with a traceback, before the rules were enforced.
@example(case=case_of("u,i,nan,1\n", None))  # NaN would have been stored as "no rating"
@example(case=case_of("u,i,1e39,1\n", None))  # beyond float32: stored as infinity
@example(case=case_of("u,i,\u0661,1\n", None))  # an Arabic-Indic digit: IndexError
@example(case=case_of('"u\x00",i,1,1\n', None))  # NUL: ValueError from the writer
@example(case=case_of(f"{'用' * 683},i,1,1\n", None))  # 2049 bytes: PostgreSQL's index refused it
@example(case=case_of("u,i,1,1714566600000\n", None))  # milliseconds read as seconds
@example(case=case_of("u,i,1,1714566600999\nu,i,2,-1\n", MS_EXPECTED, "ms"))  # floored
def test_csv_ingest_stores_what_the_file_says_or_refuses_and_stores_nothing(
    case, pg_url, pg_admin, tmp_path_factory
):
    path = tmp_path_factory.mktemp("csv") / "interactions.csv"
    path.write_bytes(case["text"].encode("utf-8"))
    schema = f"h_{uuid.uuid4().hex[:8]}"
    db = DbConfig(pg_url, schema, str(path.parent / "pgdata"))
    dataset = {**case["dataset"], "path": str(path)}
    cfg = from_dict({"db": asdict(db), "dataset": dataset}, IngestConfig)
    try:
        try:
            run_ingest(cfg)
        except DataFormatError as err:
            event(f"refused: {err.problem.split(';')[0][:40]}")  # --hypothesis-show-statistics
            assert case["expected"] is None, f"refused a valid file: {err}"
            assert str(err).startswith(str(path))
            assert not schema_exists(pg_admin, schema)  # refused before any database work
            return
        assert case["expected"] is not None, "stored a file the rules refuse"
        event(f"stored {len(case['expected'])} rows")
        with FeatureStore.open(db, create=False) as store:
            data = store.read_interactions()
        v = data.vocab
        stored = [
            (v.user_ids[u], v.item_ids[i], None if math.isnan(r) else float(r), int(t))
            for u, i, r, t in zip(
                data.user_idx, data.item_idx, data.rating, data.timestamp, strict=True
            )
        ]
        assert len(stored) == len(case["expected"]) and set(stored) == case["expected"]
        assert set(v.user_ids) == {row[0] for row in case["expected"]}
    finally:
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --------------------------------------------------------------- 5. no secrets leak


def files_holding(root: Path, secrets: list[str]) -> list[str]:
    """Files under ``root`` (and members of zip archives: checkpoints, npz) holding a secret."""
    hits = []
    needles = [s.encode() for s in secrets]
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        blobs = [(str(path), path.read_bytes())]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                blobs += [(f"{path}!{m}", zf.read(m)) for m in zf.namelist()]
        hits += [name for name, blob in blobs if any(n in blob for n in needles)]
    return hits


def test_no_script_writes_or_prints_the_database_password(auth_server, tmp_path):
    """Passwords the server really checks: one in db.url (user:password@), then one in
    RECMF_DATABASE_URL (as ?password=, the other place libpq reads one from)."""
    server, user = auth_server["server"], auth_server["user"]
    in_arg, in_env = auth_server["password"], f"pw-{uuid.uuid4().hex[:12]}"
    outputs = []

    def run(script: str, args: list[str], db_url: str | None = None) -> None:
        proc = run_script(script, args, tmp_path, script_env(tmp_path, db_url))
        outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, proc.stderr[-3000:]

    schema = f"leak_{uuid.uuid4().hex[:8]}"
    arg_url = url_with(server.url, user=user, password=in_arg)
    run("train.py", [f"db.url='{arg_url}'", f"db.schema={schema}", *TINY])
    run("recommend.py", [f"db.url='{arg_url}'", f"db.schema={schema}", "user=U1", "k=3"])
    with auth_server["admin"].connect() as conn:  # the same role, now with another password
        conn.exec_driver_sql(f"ALTER ROLE {user} PASSWORD '{in_env}'")
    auth_server["password"] = in_env
    env_url = make_url(url_with(server.url, user=user)).update_query_dict({"password": in_env})
    env_url = env_url.render_as_string(hide_password=False)
    run("train.py", [f"db.schema={schema}", *TINY], env_url)
    run("evaluate.py", [f"db.schema={schema}"], env_url)
    run("recommend.py", ["user=U1", "k=3", f"db.schema={schema}"], env_url)

    # the pyfunc of each run records its store's URL, password hidden either way
    models = sorted(p.read_text() for p in tmp_path.rglob("MLmodel"))
    assert len(models) == 2
    assert any(f"{user}:***@" in m for m in models) and any("password=***" in m for m in models)
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    # the search below covers them, recmf's run index beside the store included
    assert {"mlflow.db", "mlflow.db.recmf-runs.json", "mlruns", ".recmf"} <= written
    assert files_holding(tmp_path, [in_arg, in_env]) == []
    for output in outputs:
        assert in_arg not in output and in_env not in output
    assert f"{user}:***@" in "".join(outputs)  # the URL was shown, hidden
