"""Messages a user reads first: a mistyped db.url without its password, column hints that name
the config keys to type, and a file that is not UTF-8 with the command that converts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from recmf.data.delimited import read_columns
from recmf.data.sources import csv_source
from recmf.errors import DataFormatError
from recmf.settings import DbConfig
from recmf.store import FeatureStore, StoreError, safe_url
from recmf.store.errors import hide_secret
from recmf.store.server import normalise_url

COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"}

# (db.url as typed, its password, what of the URL the message must still show)
MISTYPED_URLS = [
    ("postgresql//bob:secret-4711@host/db", "secret-4711", "postgresql//bob:***@host/db"),
    ("bob:secret-4711@host", "secret-4711", "bob:***@host"),
    ("postgresql:/bob:secret-4711@host/db", "secret-4711", "postgresql:/bob:***@host/db"),
    ("postgres://bob:se:cr@t-4711@host/db", "se:cr@t-4711", "postgres://bob:***@host/db"),
    ("postgresql://bob:p@ss-4711@host:5432/db", "p@ss-4711", "postgresql://bob:***@host:5432/db"),
    ("postgresql://bob:secret-4711@host:port/db", "secret-4711", "bob:***@host:port/db"),
    ("postgresql//bob:secret-4711", "secret-4711", "postgresql//bob:***"),
]


def _fragments(password: str) -> list[str]:
    """The password and its parts around '@' and ':' longer than 2 characters: a message that
    keeps "t-4711" of "se:cr@t-4711" leaks part of it."""
    parts = password.replace("@", ":").split(":")
    return [password, *(p for p in parts if len(p) > 2)]


@pytest.mark.parametrize(("url", "password", "shown"), MISTYPED_URLS)
def test_normalise_url_rejects_a_mistyped_url_without_its_password(url, password, shown):
    with pytest.raises(StoreError) as err:
        normalise_url(url)
    message = str(err.value)
    assert shown in message
    assert not any(part in message for part in _fragments(password)), message
    assert "postgresql://user:password@host:5432/dbname" in message or "%40" in message


@pytest.mark.parametrize(("url", "password", "shown"), MISTYPED_URLS)
def test_store_open_with_a_mistyped_url_names_it_without_its_password(
    url, password, shown, tmp_path
):
    cfg = DbConfig(url, "recmf", str(tmp_path / "pg"))
    with pytest.raises(StoreError) as err:
        FeatureStore.open(cfg)
    message = str(err.value)
    assert "db.url" in message and shown in message
    assert not any(part in message for part in _fragments(password)), message
    assert not (tmp_path / "pg").exists()  # rejected before any server is started


def test_normalise_url_says_when_the_scheme_lacks_its_slashes():
    with pytest.raises(StoreError, match="does not begin with a scheme and '://'"):
        normalise_url("postgresql//bob:pw@host/db")


def test_normalise_url_asks_for_an_at_sign_in_a_password_as_percent_40():
    with pytest.raises(StoreError, match="%40") as err:
        normalise_url("postgresql://bob:k@y-4711@host/db")
    assert "k@y" not in str(err.value) and "y-4711" not in str(err.value)
    # written as asked, it is accepted and keeps the password
    assert normalise_url("postgresql://bob:p%40ss@host/db").endswith("bob:p%40ss@host/db")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("host=db.example password=secret-4711 dbname=recs", "password=***"),
        ("postgresql//bob@host/db?password=secret-4711", "?password=***"),
    ],
)
def test_safe_url_hides_a_password_given_as_a_keyword(url, shown):
    assert "secret-4711" not in safe_url(url) and shown in safe_url(url)


def test_safe_url_keeps_a_parsable_url_readable():
    url = "postgresql://bob:secret-4711@db.example:5432/recs?sslmode=require"
    assert safe_url(url) == "postgresql://bob:***@db.example:5432/recs?sslmode=require"
    assert safe_url("postgresql://db.example:5432/recs") == "postgresql://db.example:5432/recs"


def test_hide_secret_masks_the_password_of_an_unparsable_url_in_driver_text():
    url = "postgresql//bob:s%40cret-4711@host/db"
    text = hide_secret("refused s%40cret-4711 and s@cret-4711", url)
    assert text == "refused *** and ***"
    # a parsable URL leaves text alone but for its password
    url = "postgresql://bob@host/db?application_name=a:b@c"
    assert hide_secret("role bob at host b", url) == "role bob at host b"


# --------------------------------------------------------------- column hints name full keys


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_column_hint_names_the_dataset_keys(tmp_path):
    path = _write(tmp_path / "r.csv", b"user,movieId\nU1,I1\n")
    with pytest.raises(DataFormatError) as err:
        csv_source(path, columns={"user": "userId", "item": "movieId"})
    message = str(err.value)
    assert "dataset.columns.user" in message and "dataset.header=false" in message
    assert " header=false" not in message  # only ever the full key


def test_position_hint_names_the_dataset_keys(tmp_path):
    path = _write(tmp_path / "r.csv", b"U1,I1\nU2,I2\n")
    with pytest.raises(DataFormatError) as err:
        csv_source(path, header=False, columns={"user": 0, "item": 5})
    message = str(err.value)
    assert "With dataset.header=false set dataset.columns.item to a position from 0 to 1" in message
    assert "dataset.header=true" in message and " header=false" not in message


def test_items_file_hints_name_the_items_keys(tmp_path):
    ratings = _write(tmp_path / "r.csv", b"userId,movieId\nU1,I1\n")
    items = _write(tmp_path / "i.csv", b"movieId;title\nI1;Heat\n")
    with pytest.raises(DataFormatError) as err:
        csv_source(
            ratings,
            columns={"user": "userId", "item": "movieId"},
            items_path=items,
            items_columns={"item": "movieId", "title": "title"},
        )
    message = str(err.value)
    assert "dataset.items_columns.item" in message
    assert "'dataset.items_sep=\";\"'" in message  # line 1 is one field holding a ";"


def test_single_field_header_suggests_the_separator_as_a_hydra_override(tmp_path):
    path = _write(tmp_path / "r.csv", b"userId\tmovieId\nU1\tI1\n")
    with pytest.raises(DataFormatError) as err:
        csv_source(path, columns={"user": "userId", "item": "movieId"})
    assert "'dataset.sep=\"\\t\"'" in str(err.value)


def test_separator_of_two_characters_names_the_key(tmp_path):
    path = _write(tmp_path / "r.csv", b"userId,movieId\nU1,I1\n")
    with pytest.raises(Exception, match="dataset.sep"):
        read_columns(path, sep=";;", header=True, columns={"user": "userId"})


# --------------------------------------------------------------- not UTF-8


LATIN1 = "userId,movieId,rating,timestamp\nU1,I1,4,100\nJosé,I2,3,200\n".encode("latin-1")


def test_latin1_file_names_the_line_and_the_iconv_command(tmp_path):
    path = _write(tmp_path / "ratings.csv", LATIN1)
    with pytest.raises(DataFormatError) as err:
        csv_source(path, columns=COLUMNS)
    assert err.value.line == 3
    message = str(err.value)
    assert message.startswith(f"{path}, line 3: is not UTF-8 text")
    assert "0xe9" in message and "'é' in latin-1" in message
    assert f"iconv -f latin1 -t utf-8 {path} > {tmp_path / 'ratings.utf8.csv'}" in message


def test_latin1_header_is_reported_as_encoding_not_as_a_missing_column(tmp_path):
    path = _write(tmp_path / "ratings.csv", "usér,movieId\nU1,I1\n".encode("latin-1"))
    with pytest.raises(DataFormatError) as err:
        csv_source(path, columns={"user": "usér", "item": "movieId"})
    assert err.value.line == 1 and "is not UTF-8 text" in str(err.value)
    assert "iconv -f latin1 -t utf-8" in str(err.value)


def test_utf16_file_suggests_converting_from_utf16(tmp_path):
    path = _write(tmp_path / "ratings.csv", "userId,movieId\nU1,I1\n".encode("utf-16"))
    with pytest.raises(DataFormatError) as err:
        csv_source(path, columns={"user": "userId", "item": "movieId"})
    assert "iconv -f utf-16 -t utf-8" in str(err.value)


def test_converted_file_reads(tmp_path):
    path = _write(tmp_path / "ratings.csv", LATIN1.decode("latin-1").encode("utf-8"))
    assert csv_source(path, columns=COLUMNS).user_id.tolist() == ["U1", "José"]
