"""Data sources: synthetic data, delimited files with line-accurate errors, MovieLens 100K."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recmf.data.sources import csv_source, load_source, movielens_100k, synthetic
from recmf.errors import DataFormatError

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"}


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_synthetic_is_deterministic_with_the_requested_shape():
    a = synthetic(n_users=200, n_items=150, n_interactions=4000, rank=4, seed=7)
    b = synthetic(n_users=200, n_items=150, n_interactions=4000, rank=4, seed=7)
    c = synthetic(n_users=200, n_items=150, n_interactions=4000, rank=4, seed=8)
    for name in ("user_id", "item_id", "rating", "timestamp"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.item_id, c.item_id)
    assert len(a) == 4000
    assert set(a.user_id) == {f"U{k}" for k in range(1, 201)}
    assert set(a.item_id) <= {f"I{k}" for k in range(1, 151)}
    assert a.item_titles["I17"].startswith("Item 17 (") and len(a.item_titles) == 150
    users, counts = np.unique(a.user_id, return_counts=True)
    assert counts.min() >= 5
    pairs = {(u, i) for u, i in zip(a.user_id, a.item_id, strict=True)}
    assert len(pairs) == len(a)  # without replacement: no (user, item) twice
    assert set(np.unique(a.rating)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    for user in users[:20]:  # times increase within each user
        assert np.all(np.diff(a.timestamp[a.user_id == user]) > 0)


def test_synthetic_has_structure_that_low_rank_beats_popularity_on():
    data = synthetic(n_users=400, n_items=300, n_interactions=16000, rank=8, seed=0)
    u = np.array([int(x[1:]) - 1 for x in data.user_id])
    i = np.array([int(x[1:]) - 1 for x in data.item_id])
    order = np.lexsort((data.timestamp, u))
    u, i = u[order], i[order]
    counts = np.bincount(u)
    pos = np.arange(len(u)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[u]
    test = pos >= np.ceil(0.8 * counts[u])  # each user's last 20% in time
    train = np.zeros((400, 300))
    train[u[~test], i[~test]] = 1
    held = np.zeros((400, 300), dtype=bool)
    held[u[test], i[test]] = True

    def precision_at_10(scores: np.ndarray) -> float:
        top = np.argsort(-np.where(train > 0, -np.inf, scores), axis=1)[:, :10]
        return float(np.take_along_axis(held, top, 1).mean())

    left, s, right = np.linalg.svd(train, full_matrices=False)
    low_rank = precision_at_10((left[:, :8] * s[:8]) @ right[:8])
    popularity = precision_at_10(np.broadcast_to(train.sum(0), train.shape))
    assert low_rank > 1.5 * popularity


def test_csv_by_name_with_bom_iso_times_quoted_commas_and_verbatim_ids(tmp_path):
    path = write(
        tmp_path / "r.csv",
        "\ufeffuserId,movieId,rating,timestamp\n"
        '007,"Heat, 1995",4.5,2024-05-01T12:30:00Z\n'
        "NA,00042,,2024-05-01 12:30:01+02:00\n"
        '"a ""b""",x,3,2024-05-01\n',
    )
    items = write(tmp_path / "m.csv", 'movieId,title\n"Heat, 1995","Heat (1995), a film"\n')
    data = csv_source(
        path, columns=COLUMNS, items_path=items, items_columns={"item": "movieId", "title": "title"}
    )
    assert data.user_id.tolist() == ["007", "NA", 'a "b"']
    assert data.item_id.tolist() == ["Heat, 1995", "00042", "x"]
    assert data.rating[0] == 4.5 and np.isnan(data.rating[1]) and data.rating[2] == 3.0
    assert data.timestamp.tolist() == [1714566600, 1714566600 + 1 - 7200, 1714521600]
    assert data.item_titles == {"Heat, 1995": "Heat (1995), a film"}


def test_csv_by_position_without_rating_or_time_keeps_file_order(tmp_path):
    path = write(tmp_path / "r.tsv", "u1\tx\ti1\nu2\tx\ti2\nu1\tx\ti3\n")
    data = csv_source(
        path, sep="\t", header=False, columns={"user": 0, "item": 2, "rating": None, "time": None}
    )
    assert data.user_id.tolist() == ["u1", "u2", "u1"] and data.item_id.tolist() == [
        "i1",
        "i2",
        "i3",
    ]
    assert data.rating is None and data.timestamp.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("body", "line", "match"),
    [
        ("u1,a,4,100\nu2,b,3,200\nu3,c,3\n", 4, r"expected 4 fields .* found 3"),
        ("u1,a,4,100\nu2,b,3,200,9\n", 3, r"expected 4 fields .* found 5"),
        ("u1,a,4,100\nu2,b,five,200\n", 3, r"rating 'five' is not a number"),
        ("u1,a,4,100\n\nu2,b,3,yesterday\n", 4, r"time 'yesterday' is not valid; expected integer"),
        (
            "u1,a,4,2024-01-01\nu2,b,3,2024-13-45\n",
            3,
            r"time '2024-13-45' is not valid; expected an ISO",
        ),
        ("u1,a,4,100\nu2,b,3,\n", 3, r"the time is empty"),
        ('u1,a,4,100\n"",b,3,200\n', 3, r"the user id is empty"),
        ("u1,a,4,100\nu2,,3,200\n", 3, r"the item id is empty"),
    ],
)
def test_malformed_csv_names_the_file_and_line(tmp_path, body, line, match):
    path = write(tmp_path / "bad.csv", "userId,movieId,rating,timestamp\n" + body)
    with pytest.raises(DataFormatError, match=match) as err:
        csv_source(path, columns=COLUMNS)
    assert err.value.line == line and str(err.value).startswith(f"{path}, line {line}: ")


@pytest.mark.parametrize(
    ("text", "columns", "header", "match"),
    [
        ("", COLUMNS, True, "the file is empty"),
        ("userId,movieId,rating,timestamp\n", COLUMNS, True, "has no data rows after the header"),
        (
            "user,item\nu1,a\n",
            COLUMNS,
            True,
            r"line 1: has no column 'userId' .*\['user', 'item'\]",
        ),
        ("u1,a\n", {"user": 0, "item": 5}, False, "line 1: column 5 for the item is not a 0-based"),
    ],
)
def test_csv_without_usable_content_says_what_is_missing(tmp_path, text, columns, header, match):
    path = write(tmp_path / "r.csv", text)
    with pytest.raises(DataFormatError, match=match):
        csv_source(path, header=header, columns=columns)


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.csv: file not found"):
        csv_source(tmp_path / "nope.csv", columns=COLUMNS)
    with pytest.raises(DataFormatError, match=r"ml-100k: folder not found"):
        movielens_100k(tmp_path / "ml-100k")


def make_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    write(
        folder / "u.data",
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881250950\n",
    )
    flags = "|".join("0" * 19)  # one per genre: u.item has 5 + 19 fields
    write(
        folder / "u.item",
        f"242|Kolya (1996)|24-Jan-1997||http://x|{flags}\n"
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://y|{flags}\n"
        f'303|Café "Noir" (1997)|01-Jan-1997||http://z|{flags}\n',
        encoding="latin-1",
    )
    return folder


def test_movielens_100k_reads_a_local_folder(tmp_path):
    data = movielens_100k(make_ml100k(tmp_path / "ml-100k"))
    assert data.user_id.tolist() == ["196", "186", "196"]
    assert data.item_id.tolist() == ["242", "302", "302"]
    assert data.rating.tolist() == [3.0, 3.0, 5.0]
    assert data.timestamp.tolist() == [881250949, 891717742, 881250950]
    assert data.item_titles["303"] == 'Café "Noir" (1997)'
    assert "movielens-100k from" in data.source


def test_movielens_100k_downloads_once_and_checks_the_md5(tmp_path):
    make_ml100k(tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("u.data", "u.item"):
            zf.write(tmp_path / "src" / "ml-100k" / name, f"ml-100k/{name}")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    from recmf.errors import ConfigError

    with pytest.raises(ConfigError, match="expected 0000"):
        movielens_100k(None, archive.as_uri(), "0" * 32, tmp_path / "bad-cache")
    assert not list((tmp_path / "bad-cache").glob("*.zip*"))  # a bad download is not kept
    data = movielens_100k(None, archive.as_uri(), md5, tmp_path / "cache")
    assert len(data) == 3
    archive.unlink()  # the second call uses the cache, not the URL
    assert len(movielens_100k(None, archive.as_uri(), md5, tmp_path / "cache")) == 3


def test_load_source_dispatches_and_rejects_unknown_names(tmp_path):
    from types import SimpleNamespace

    from recmf.settings import CsvColumns, CsvConfig, SyntheticConfig

    cfg = SyntheticConfig(
        n_users=20, n_items=10, n_interactions=150, rank=2, popularity_exponent=1.0, seed=3
    )
    assert len(load_source(cfg)) == 150
    with pytest.raises(ValueError, match=r"unknown dataset name 'parquet'.*'synthetic'"):
        load_source(SimpleNamespace(name="parquet"))
    with pytest.raises(ValueError, match=r"dataset=csv needs dataset.path"):
        load_source(CsvConfig(columns=CsvColumns(**COLUMNS)))


@pytest.mark.slow  # a real process (or two): ~2-5 s of start-up
def test_ingest_script_reports_a_bad_file_without_a_traceback(tmp_path):
    bad = write(tmp_path / "bad.csv", "userId,movieId,rating,timestamp\nu1,a,4,100\nu2,b,x,200\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RECMF_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ingest.py"), "dataset=csv", f"dataset.path={bad}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"{bad}, line 3: rating 'x' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".recmf" / "pgdata").exists()  # its first block: checked before


def test_an_in_memory_source_streams_in_slices_that_add_up_to_it():
    from recmf.data.sources import _slices

    raw = synthetic(30, 20, 300, 4, 1.0, 0)
    chunks = list(_slices(raw, 70))
    assert [len(c) for c in chunks] == [70, 70, 70, 70, 20]
    assert chunks[0].item_titles == raw.item_titles and not chunks[1].item_titles
    for name in ("user_id", "item_id", "rating", "timestamp"):
        whole = np.concatenate([getattr(c, name) for c in chunks])
        assert np.array_equal(whole, getattr(raw, name)), name
