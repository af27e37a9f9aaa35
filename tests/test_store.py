"""The feature store against a real PostgreSQL: round trips, idempotence, features, errors."""

from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from recmf.data.interactions import RawInteractions
from recmf.errors import DataFormatError
from recmf.settings import DbConfig
from recmf.store import FeatureStore, StoreError, safe_url
from recmf.store.schema import make_tables
from recmf.store.server import normalise_url

ROOT = Path(__file__).resolve().parents[1]
NASTY_USERS = [
    "U1",
    "ünï-用户",
    "quote'\"q",
    "semi;colon",
    "comma,id",
    "new\nline",
    "tab\tid",
    "back\\slash",
    " spaced ",
    "NULL",
    "\\.",
]
NASTY_ITEMS = ["007", "I,2", 'I"3', "élan", "I5"]
CSV_ROLES = {"user": "user", "item": "item", "rating": "rating", "time": "time"}


def raw(rows: list[tuple], titles: dict[str, str] | None = None) -> RawInteractions:
    """RawInteractions from (user, item, rating or None, ts) tuples."""
    users, items, ratings, ts = zip(*rows, strict=True)
    return RawInteractions(
        user_id=np.array(users, dtype=object),
        item_id=np.array(items, dtype=object),
        rating=np.array([np.nan if r is None else r for r in ratings], dtype=np.float64),
        timestamp=np.array(ts, dtype=np.int64),
        item_titles=titles or {},
        source="test",
    )


def as_rows(store: FeatureStore) -> set[tuple]:
    """The store's interactions as a set of (user_id, item_id, rating or None, ts)."""
    data = store.read_interactions()
    v = data.vocab
    return {
        (str(v.user_ids[u]), str(v.item_ids[i]), None if math.isnan(r) else float(r), int(t))
        for u, i, r, t in zip(
            data.user_idx, data.item_idx, data.rating, data.timestamp, strict=True
        )
    }


def nasty_rows() -> list[tuple]:
    rng = np.random.default_rng(0)
    rows = []
    for k, user in enumerate(NASTY_USERS):
        for j in rng.choice(len(NASTY_ITEMS), size=3, replace=False):
            rating = None if (k + j) % 4 == 0 else float(rng.integers(1, 11)) / 2
            rows.append((user, NASTY_ITEMS[j], rating, 1_600_000_000 + 10 * k + int(j)))
    return rows


def test_store_round_trip_keeps_ids_ratings_and_times_exactly(store):
    rows = nasty_rows()
    result = store.ingest(raw(rows, titles={"007": "Bond, James", 'I"3': 'A "quoted" title'}))
    assert (result.added, result.duplicates_skipped) == (len(rows), 0)
    assert (result.new_users, result.new_items) == (len(NASTY_USERS), len(NASTY_ITEMS))
    assert as_rows(store) == set(rows)
    data = store.read_interactions()
    assert data.user_idx.dtype == np.int32 and data.rating.dtype == np.float32  # lean at 20M
    # vocabulary: every user and item, contiguous positions, first appearance first
    assert list(data.vocab.user_ids) == NASTY_USERS
    assert sorted(set(data.user_idx.tolist())) == list(range(len(NASTY_USERS)))
    titles = dict(zip(data.vocab.item_ids.tolist(), data.vocab.item_titles.tolist(), strict=True))
    assert titles["007"] == "Bond, James" and titles['I"3'] == 'A "quoted" title'
    assert titles["I5"] == ""  # no title given
    assert store.item_titles(["007", "I5", "missing"]) == {"007": "Bond, James"}


def test_ingest_into_a_non_empty_store_adds_only_new_rows_exactly(store):
    rows = nasty_rows()
    first, second = rows[::2], rows[1::2] + rows[:4]  # the second overlaps the first
    store.ingest(raw(first))  # an empty table is loaded by COPY straight into it
    result = store.ingest(raw(second, titles={"I5": "Five"}))  # later ones through staging
    new = len(set(second) - set(first))  # rows[1] and rows[3] also repeat within the second
    assert (result.added, result.duplicates_skipped) == (new, len(second) - new)
    assert as_rows(store) == set(rows)
    assert store.item_titles(["I5"]) == {"I5": "Five"}  # titles update stored items


def test_ingest_twice_adds_nothing_and_counts_duplicates(store):
    rows = nasty_rows()
    first = store.ingest(raw(rows))
    second = store.ingest(raw(rows))
    assert second.added == 0 and second.duplicates_skipped == len(rows)
    assert (second.new_users, second.new_items) == (0, 0)
    assert (second.n_users, second.n_items, second.n_interactions) == (
        first.n_users,
        first.n_items,
        first.n_interactions,
    )
    assert store.n_interactions() == len(rows)
    assert "+0 new" in second.summary() and f"{len(rows)} duplicates skipped" in second.summary()


def test_ingest_counts_repeats_within_one_input_and_keeps_the_first(store):
    rows = [
        ("u1", "a", 5.0, 10),
        ("u1", "b", 3.0, 11),
        ("u1", "a", 1.0, 10),
        ("u2", "a", 2.0, 10),
        ("u1", "a", 4.0, 12),
    ]
    result = store.ingest(raw(rows))
    assert (result.added, result.duplicates_skipped, result.n_interactions) == (4, 1, 4)
    assert ("u1", "a", 5.0, 10) in as_rows(store) and ("u1", "a", 1.0, 10) not in as_rows(store)


def test_ingest_without_ratings_stores_null_ratings(store):
    r = raw([("u1", "a", None, 1), ("u2", "b", None, 2)])
    r.rating = None
    store.ingest(r)
    data = store.read_interactions()
    assert np.isnan(data.rating).all() and not data.has_ratings


def features(store: FeatureStore, db_url: str) -> tuple[dict, dict]:
    """Feature rows keyed by external id: ({user_id: row}, {item_id: row})."""
    t = make_tables(store.schema)
    engine = sa.create_engine(normalise_url(db_url))
    with engine.connect() as conn:
        users = {
            r.user_id: r._asdict()
            for r in conn.execute(
                sa.select(t.users.c.user_id, t.user_features).join(t.user_features)
            )
        }
        items = {
            r.item_id: r._asdict()
            for r in conn.execute(
                sa.select(t.items.c.item_id, t.item_features).join(t.item_features)
            )
        }
    engine.dispose()
    return users, items


def test_feature_tables_hold_per_user_and_per_item_aggregates(store, pg_url):
    store.ingest(
        raw(
            [
                ("u1", "i1", 4.0, 10),
                ("u1", "i2", None, 20),
                ("u2", "i1", 2.0, 5),
                ("u2", "i1", 3.0, 30),
            ]
        )
    )
    users, items = features(store, pg_url)
    pick = ("n_interactions", "n_rated", "mean_rating", "first_ts", "last_ts")
    assert [users["u1"][k] for k in pick] == [2, 1, 4.0, 10, 20]
    assert [users["u2"][k] for k in pick] == [2, 2, 2.5, 5, 30]
    i1, i2 = items["i1"], items["i2"]
    assert (i1["n_interactions"], i1["n_users"], i1["n_rated"], i1["mean_rating"]) == (3, 2, 3, 3.0)
    assert (i1["first_ts"], i1["last_ts"], i1["popularity_rank"]) == (5, 30, 1)
    assert i1["popularity"] == pytest.approx(0.75)
    assert (i2["n_interactions"], i2["n_rated"], i2["mean_rating"], i2["popularity_rank"]) == (
        1,
        0,
        None,
        2,
    )

    # a later ingest refreshes the touched rows and every item's share and rank
    store.ingest(raw([("u3", "i2", 1.0, 40), ("u3", "i3", 5.0, 41)]))
    users, items = features(store, pg_url)
    assert items["i2"]["n_interactions"] == 2 and items["i2"]["mean_rating"] == 1.0
    assert items["i1"]["popularity"] == pytest.approx(3 / 6)
    assert [items[i]["popularity_rank"] for i in ("i1", "i2", "i3")] == [1, 2, 3]
    assert users["u3"]["n_interactions"] == 2 and users["u1"]["n_interactions"] == 2


def test_first_load_features_equal_a_full_sql_recomputation(store, pg_url):
    from recmf.data.sources import synthetic
    from recmf.store.features import refresh_features

    data = synthetic(n_users=60, n_items=40, n_interactions=900, seed=1)
    data.rating[::7] = np.nan  # some rows unrated
    data.rating[data.user_id == "U3"] = np.nan  # a user with no rating at all
    first = np.flatnonzero(data.user_id != "U3")[:50]
    again = raw([(data.user_id[k], data.item_id[k], 4.0, data.timestamp[k] + 1) for k in first])
    store.ingest(
        RawInteractions(  # same (user, item) pairs at a second time: n_users < n
            np.r_[data.user_id, again.user_id],
            np.r_[data.item_id, again.item_id],
            np.r_[data.rating, again.rating],
            np.r_[data.timestamp, again.timestamp],
        )
    )
    loaded = features(store, pg_url)  # computed in numpy by the first load
    assert loaded[0]["U3"]["mean_rating"] is None and loaded[0]["U3"]["n_rated"] == 0
    t = make_tables(store.schema)
    engine = sa.create_engine(normalise_url(pg_url))
    with engine.begin() as conn:
        refresh_features(
            conn,
            t,
            f"SELECT user_key FROM {t.qualified('users')}",
            f"SELECT item_key FROM {t.qualified('items')}",
        )
    engine.dispose()
    recomputed = features(store, pg_url)
    for mine, sql in zip(loaded, recomputed, strict=True):
        assert mine.keys() == sql.keys()
        for key in mine:
            assert mine[key] == pytest.approx(sql[key]), key


def test_snapshot_hash_is_stable_and_changes_with_one_new_row(store, make_db_cfg):
    rows = nasty_rows()
    store.ingest(raw(rows))
    first, again = store.snapshot(), store.snapshot(store.read_interactions())
    assert first == again
    assert first["n_interactions"] == len(rows) and first["schema"] == store.schema
    assert first["max_timestamp"] == max(r[3] for r in rows)
    # same rows in another schema, ingested in reverse order (other keys): same content hash
    with FeatureStore.open(make_db_cfg()) as other:
        other.ingest(raw(rows[::-1]))
        assert other.snapshot()["content_hash"] == first["content_hash"]
    store.ingest(raw([("U1", "I5", 1.0, 1)]))
    changed = store.snapshot()
    assert changed["content_hash"] != first["content_hash"]
    assert changed["n_interactions"] == len(rows) + 1


def test_user_history_reflects_rows_ingested_after_a_read(store):
    store.ingest(
        raw([("u1", "a", 1.0, 1), ("u1", "b", 1.0, 2), ("u1", "a", 1.0, 3), ("u2", "c", 1.0, 1)])
    )
    store.read_interactions()
    store.ingest(raw([("u1", "d", 1.0, 4)]))
    history = store.user_history(["u1", "nobody", "u2"])
    assert history == {"u1": ["a", "b", "d"], "u2": ["c"]}
    assert store.user_history([]) == {}
    assert store.list_users() == ["u1", "u2"] and store.list_users(1) == ["u1"]


def test_empty_store_reads_as_empty_interactions(store):
    data = store.read_interactions()
    assert len(data) == 0 and data.n_users == 0 and store.n_interactions() == 0
    assert store.snapshot(data)["max_timestamp"] is None


def test_bad_csv_raises_and_leaves_the_store_unchanged(db_cfg, tmp_path):
    from dataclasses import asdict

    from recmf.config import from_dict
    from recmf.ingest import run_ingest
    from recmf.settings import IngestConfig

    good = tmp_path / "good.csv"
    good.write_text("user,item,rating,time\nu1,a,4,100\nu2,b,3,200\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating,time\nu3,a,4,100\nu4,b,3,200\nu5,c,3\n")
    dataset = {
        "name": "csv",
        "path": str(good),
        "sep": ",",
        "header": True,
        "columns": {"user": "user", "item": "item", "rating": "rating", "time": "time"},
    }
    cfg = from_dict({"db": asdict(db_cfg), "dataset": dataset}, IngestConfig)
    assert run_ingest(cfg).n_interactions == 2
    cfg.dataset.path = str(bad)
    with pytest.raises(DataFormatError, match=r"bad\.csv, line 4: expected 4 fields"):
        run_ingest(cfg)
    with FeatureStore.open(db_cfg) as store:
        assert store.n_interactions() == 2 and store.list_users() == ["u1", "u2"]


def test_run_ingest_with_the_composed_ingest_config(pg_url, db_cfg):
    from hydra import compose, initialize_config_dir

    from recmf.config import settings
    from recmf.ingest import run_ingest

    overrides = [
        f"db.url='{pg_url}'",
        f"db.schema={db_cfg.schema}",
        "dataset.n_users=50",
        "dataset.n_items=30",
        "dataset.n_interactions=600",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("ingest", overrides)
    result = run_ingest(settings(cfg, "ingest"))
    assert (result.n_users, result.n_items, result.n_interactions) == (50, 30, 600)


def test_open_unreachable_server_raises_store_error_without_the_password(tmp_path):
    cfg = DbConfig("postgresql://alice:s3cr3t-pw@127.0.0.1:1/recmf", "recmf", str(tmp_path))
    with pytest.raises(StoreError) as err:
        FeatureStore.open(cfg)
    message = str(err.value)
    assert "s3cr3t-pw" not in message and "alice:***@127.0.0.1:1" in message
    assert "db.url" in message and "embedded" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_open_with_an_unknown_user_raises_store_error_without_the_password(pg_url, tmp_path):
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(username="nobody_here", password="s3cr3t-pw")
    cfg = DbConfig(url.render_as_string(hide_password=False), "recmf", str(tmp_path))
    with pytest.raises(StoreError) as err:
        FeatureStore.open(cfg)
    assert "s3cr3t-pw" not in str(err.value) and "nobody_here:***@" in str(err.value)


@pytest.mark.parametrize(
    ("url", "schema", "expected"),
    [
        ("mysql://bob:pw123@host/db", "recmf", "not a PostgreSQL URL"),
        ("definitely not a url", "recmf", "not a database URL"),
        (None, "Bad-Name", "not a usable schema name"),
        (None, "pg_catalog", "not a usable schema name"),
    ],
)
def test_open_rejects_bad_urls_and_schema_names(url, schema, expected, tmp_path):
    cfg = DbConfig(url, schema, str(tmp_path / "pg"))
    with pytest.raises(StoreError, match=expected) as err:
        FeatureStore.open(cfg)
    assert "pw123" not in str(err.value)
    assert not (tmp_path / "pg").exists()  # a bad schema name is caught before starting a server


def test_safe_url_hides_passwords_even_when_unparsable():
    assert safe_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "pw" not in safe_url("postgresql://u:pw@h:port/db")


@pytest.mark.slow  # a real process (or two): ~2-5 s of start-up
def test_embedded_server_is_shared_by_processes_and_stopped_by_the_last(tmp_path):
    pgdata = tmp_path / "data" / "pgdata"
    cfg = DbConfig(None, "recmf", str(pgdata))
    first = FeatureStore.open(cfg)
    first.ingest(raw([("u1", "a", 1.0, 1)]))
    second = FeatureStore.open(cfg)  # same process: closing it must not stop the server
    second.close()
    script = (
        "import sys; from recmf.settings import DbConfig; from recmf.store import FeatureStore; "
        "from recmf.data.interactions import RawInteractions; import numpy as np\n"
        f"cfg = DbConfig(None, 'recmf', {str(pgdata)!r})\n"
        "with FeatureStore.open(cfg) as s:\n"
        "    s.ingest(RawInteractions(np.array(['u2']), np.array(['b']), None, np.array([2])))\n"
        "    print(s.n_interactions())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    assert first.n_interactions() == 2  # the other process let go; the server still runs
    first.close()
    assert not (pgdata / "postmaster.pid").exists()  # the last user stopped it


@pytest.mark.parametrize("scale", [1, 1 << 40])  # small keys pack into one int64; huge ones not
def test_sort_unique_rows_orders_by_natural_key_and_keeps_first_repeat(scale):
    from recmf.store.rows import sort_unique_rows

    user = np.array([2, 1, 2, 1, 2, 1]) * scale
    item = np.array([5, 7, 5, 7, 3, 7]) * scale
    ts = np.array([9, 4, 9, 3, 1, 4])
    keep, repeats = sort_unique_rows(user, item, ts)
    assert repeats == 2
    assert keep.tolist() == [3, 1, 4, 0]  # (1,7,3) (1,7,4) (2,3,1) (2,5,9); firsts of repeats


def test_factorize_handles_inputs_pyarrow_converts_in_chunks():
    from recmf.store.rows import factorize

    # numpy unicode arrays of a few million rows come back from pa.array as a ChunkedArray
    # (the very array np.char.add("U", (np.arange(3_000_000) % 1000).astype(str)) gives, <U22,
    # built by indexing: that took 5.7 s of this test)
    ids = np.array([f"U{k}" for k in range(1000)], dtype="<U22")[np.arange(3_000_000) % 1000]
    codes, uniques = factorize(ids, "user")
    assert len(uniques) == 1000 and uniques[7] == "U7"
    assert codes[1007] == 7 and codes.max() == 999


def test_binary_copy_stream_decodes_across_arbitrary_write_boundaries():
    from recmf.store.copy_io import _RowSink, encode_fixed

    rng = np.random.default_rng(0)
    cols = [rng.integers(-(2**40), 2**40, 5000), rng.random(5000).astype(np.float32)]
    payload = encode_fixed(cols, ("int8", "float4"))
    for cuts in ([], [1, 5, 19, 20, 37], sorted(rng.integers(0, len(payload), 50).tolist())):
        sink = _RowSink(("int8", "float4"), [lambda v: v.astype(np.int64) * 2, None])
        for lo, hi in zip([0, *cuts], [*cuts, len(payload)], strict=True):
            sink.write(memoryview(payload)[lo:hi])
        key, value = sink.finish()
        assert key.tolist() == (cols[0] * 2).tolist() and value.tolist() == cols[1].tolist()
    for bad in (payload[:-1], payload[:10], payload[:-2] + payload[30:40] + payload[-2:]):
        sink = _RowSink(("int8", "float4"), None)
        with pytest.raises(ValueError):
            sink.write(bad)
            sink.finish()


def test_a_long_copy_logs_rows_copied_and_rows_per_second(store, monkeypatch, caplog):
    import logging

    from recmf.data.sources import synthetic
    from recmf.store import copy_io

    monkeypatch.setattr(copy_io, "PROGRESS_EVERY_S", 0.0)  # every read counts as "a while"
    with caplog.at_level(logging.INFO, logger="recmf"):
        store.ingest(synthetic(200, 100, 5000, 4, 1.0, 0))
    lines = [r.getMessage() for r in caplog.records if "rows copied" in r.getMessage()]
    assert lines, caplog.text
    # a streaming source's total is unknown while it is copied: "N rows copied" then
    assert re.search(r"[\d,]+ (of [\d,]+ )?rows copied, [\d.]+ M rows/s", lines[-1])


def test_a_csv_without_a_time_column_is_stored_as_untimed_and_read_back_so(db_cfg, tmp_path):
    from dataclasses import asdict, replace

    from recmf.config import from_dict
    from recmf.ingest import run_ingest
    from recmf.settings import IngestConfig

    timed, untimed = tmp_path / "timed.csv", tmp_path / "untimed.csv"
    timed.write_text("user,item,time\nu1,a,100\nu2,b,200\n")
    untimed.write_text("user,item\nu1,a\nu2,b\nu1,c\n")
    columns = {"user": "user", "item": "item", "rating": None, "time": "time"}
    dataset = {"name": "csv", "path": str(timed), "sep": ",", "header": True, "columns": columns}
    cfg = from_dict({"db": asdict(db_cfg), "dataset": dataset}, IngestConfig)
    assert "no time column" not in run_ingest(cfg).summary()
    with FeatureStore.open(db_cfg) as store:
        assert store.read_interactions().timed and store.snapshot()["timed"] is True

    other = replace(db_cfg, schema=f"{db_cfg.schema}_untimed")
    dataset.update(path=str(untimed), columns={**columns, "time": None})
    cfg = from_dict({"db": asdict(other), "dataset": dataset}, IngestConfig)
    result = run_ingest(cfg)
    assert "no time column: row order stands for time" in result.summary()
    assert run_ingest(cfg).added == 0  # idempotent: the fact is stored once, rows once
    with FeatureStore.open(other, create=False) as store:
        data = store.read_interactions()
        assert not data.timed and not data.subset(np.array([0, 1])).timed
        assert sorted(data.timestamp.tolist()) == [0, 1, 2]  # each row's number in the file
        assert store.snapshot()["timed"] is False


def _chunked_csv(tmp_path, lines: list[str]) -> Path:
    path = tmp_path / "big.csv"
    path.write_text("user,item,rating,time\n" + "".join(lines))
    return path


def _stream(path: Path, block_bytes: int = 64, time: str | None = "time"):
    from recmf.data.sources import csv_chunks

    columns = {"user": "user", "item": "item", "rating": "rating", "time": time}
    return csv_chunks(path, columns=columns, block_bytes=block_bytes)


def test_a_file_ingested_in_small_blocks_stores_what_the_whole_file_says(
    db_cfg, tmp_path, monkeypatch
):
    from dataclasses import replace

    # a first load COPYs each block in pieces, the next blocks' new ids stored between them
    monkeypatch.setattr("recmf.store.writer.COPY_PIECE", 2)
    from recmf.data.sources import csv_source

    rng = np.random.default_rng(0)
    lines = [f"u{rng.integers(40)},i{rng.integers(30)},{rng.integers(1, 6)},{rng.integers(9)}\n"
             for _ in range(3000)]  # fmt: skip
    user, item, rating, ts = lines[10].strip().split(",")
    lines.insert(2500, f"{user},{item},{int(rating) % 5 + 1},{ts}\n")  # a repeat, rated anew
    path = _chunked_csv(tmp_path, lines)
    whole = replace(db_cfg, schema=f"{db_cfg.schema}_whole")
    with FeatureStore.open(whole) as store:
        expected = store.ingest(csv_source(path, columns=dict(CSV_ROLES)))
        want = as_rows(store)
    assert len(list(_stream(path))) > 100  # many blocks: repeats across blocks, keys across them
    with FeatureStore.open(db_cfg) as store:
        got = store.ingest(_stream(path))
        assert as_rows(store) == want  # the first of a repeated row kept, whichever block
        assert (got.n_users, got.n_items, got.added, got.duplicates_skipped) == (
            expected.n_users, expected.n_items, expected.added, expected.duplicates_skipped
        )  # fmt: skip
        assert store.read_interactions().vocab.user_ids.tolist() == [
            u for u in dict.fromkeys(line.split(",")[0] for line in lines)
        ]  # keys in first-appearance order across blocks
        assert store.ingest(_stream(path)).added == 0  # again: nothing new


def test_untimed_rows_are_numbered_across_blocks(store, tmp_path):
    lines = [f"u{k % 7},i{k},1\n" for k in range(500)]
    path = tmp_path / "untimed.csv"
    path.write_text("user,item,rating\n" + "".join(lines))
    store.ingest(_stream(path, time=None))
    rows = sorted(as_rows(store), key=lambda row: row[3])
    assert [(row[0], row[1], row[3]) for row in rows] == [
        (f"u{k % 7}", f"i{k}", k) for k in range(500)
    ]


def test_a_bad_line_in_a_late_block_names_its_line_and_stores_nothing(store, tmp_path):
    from recmf.data.sources import synthetic

    before = synthetic(30, 20, 300, 4, 1.0, 0)
    store.ingest(before)
    kept = as_rows(store)
    lines = [f"n{k % 11},i{k % 13},4,{k}\n" for k in range(2000)]
    for at, bad, problem in (
        (1900, "n1,i1,four,5\n", "rating 'four' is not a number"),
        (1950, "n1,i1,4\n", "expected 4 fields"),
        (1990, "n1,,4,5\n", "the item id is empty"),
    ):
        path = _chunked_csv(tmp_path, [*lines[:at], bad, *lines[at:]])
        with pytest.raises(DataFormatError, match=rf"big\.csv, line {at + 2}: {problem}"):
            store.ingest(_stream(path))
        assert as_rows(store) == kept  # the blocks before it were rolled back
        users = store.read_interactions().vocab.user_ids.tolist()
        assert sorted(users) == sorted(set(before.user_id.tolist()))  # no user of the file


def test_spill_hands_back_every_row_by_user_key_range_in_arrival_order(tmp_path):
    from recmf.store.rows import Spill

    rng = np.random.default_rng(1)
    spill = Spill(tmp_path, shift=3)
    chunks = []
    for size in (1000, 1, 0, 700):
        user = rng.integers(1, 200, size)
        cols = (user, rng.integers(1, 50, size), np.arange(size) + 10_000 * len(chunks),
                rng.random(size).astype(np.float32))  # fmt: skip
        spill.add(*cols)
        chunks.append(cols)
    parts = list(spill.parts(max_rows=150))
    assert len(parts) > 5 and sum(len(p) for p in parts) == spill.n_rows == 1701
    for a, b in itertools.pairwise(parts):  # whole key ranges, in order
        assert (a["user_key"].max() >> 3) < (b["user_key"].min() >> 3)
    got = np.concatenate(parts)
    got = got[np.argsort(got["user_key"] >> 3, kind="stable")]  # parts: chunk, then bucket
    want = np.concatenate([c[2] for c in chunks])  # times: arrival order
    user = np.concatenate([c[0] for c in chunks])
    order = np.argsort(user >> 3, kind="stable")
    assert np.array_equal(got["ts"], want[order])
    assert np.array_equal(got["user_key"], user[order])


def test_the_ingest_verb_says_a_late_bad_line_left_nothing_stored(db_cfg, tmp_path, monkeypatch):
    from dataclasses import asdict

    from recmf.config import from_dict
    from recmf.data import sources
    from recmf.ingest import run_ingest
    from recmf.settings import IngestConfig

    monkeypatch.setattr(sources, "BLOCK_BYTES", 64)  # many blocks: the bad line is in a late one
    lines = [f"u{k % 11},i{k % 13},4,{k}\n" for k in range(2000)]
    path = _chunked_csv(tmp_path, [*lines[:1900], "u1,i1,4,soon\n", *lines[1900:]])
    dataset = {"name": "csv", "path": str(path), "sep": ",", "header": True, "columns": CSV_ROLES}
    cfg = from_dict({"db": asdict(db_cfg), "dataset": dataset}, IngestConfig)
    expected = r"big\.csv, line 1902: time 'soon' is not valid.*Nothing of the file was stored"
    with pytest.raises(DataFormatError, match=expected):
        run_ingest(cfg)
    with FeatureStore.open(db_cfg) as store:
        assert store.n_interactions() == 0 and len(store.read_interactions().vocab.user_ids) == 0


def test_id_lookups_take_the_connection_before_the_next_copy_piece():
    import threading
    import time

    from recmf.store.writer import _Turns

    turns, order = _Turns(), []

    def copy_piece():
        with turns.after():
            order.append("copy")

    def lookup():
        with turns.first():
            order.append("ids")

    with turns.after():  # a COPY piece under way
        waiting = [threading.Thread(target=copy_piece), threading.Thread(target=lookup)]
        waiting[0].start()
        time.sleep(0.05)  # the next piece waits first
        waiting[1].start()
        deadline = time.time() + 5
        while turns.urgent == 0:
            assert time.time() < deadline
            time.sleep(0.001)
        assert order == []  # nobody while the piece holds the connection
    for thread in waiting:
        thread.join(5)
    assert order == ["ids", "copy"]  # the lookup went ahead of the piece that waited longer
