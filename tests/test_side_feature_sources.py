"""Side features as sources deliver them: MovieLens 100K's genres, years and demographics, and
any CSV's columns by a feature mapping; bad values refused with their line, config mistakes with
their key."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recmf.data.features import MAX_VALUE_BYTES
from recmf.data.sources import ML100K_GENRES, csv_source, load_source, movielens_100k
from recmf.errors import ConfigError, DataFormatError

RATINGS = "userId,movieId,rating,timestamp\nu1,1,4,100\nu2,2,3,200\n"
COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"}
YEAR = r"\((\d{4})\)\s*$"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def flags(*on: int, n: int = 19) -> str:
    return "|".join("1" if k in on else "0" for k in range(n))


def ml100k(folder: Path, items: str, users: str | None = None, genres: str | None = None) -> Path:
    folder.mkdir()
    write(folder / "u.data", "1\t10\t4\t881250949\n2\t20\t3\t891717742\n")
    write(folder / "u.item", items, encoding="latin-1")
    if users is not None:
        write(folder / "u.user", users)
    if genres is not None:
        write(folder / "u.genre", genres)
    return folder


def values(features, name: str) -> list:
    return dict(zip(features.ids.tolist(), features.column(name).values.tolist(), strict=True))


def test_movielens_100k_features_are_the_flagged_genres_the_year_and_the_demographics(tmp_path):
    folder = ml100k(
        tmp_path / "ml-100k",
        f"10|Kolya (1996)|24-Jan-1997||http://x|{flags(1, 8, 18)}\n"
        f"20|Café (1995)|01-Jan-1995||http://y|{flags(4)}\n"
        f"30|unknown|||http://z|{flags(0)}\n"
        f"40|Nothing (1990)|31-Dec-1990||http://w|{flags()}\n",
        users="1|24|M|technician|85711\n2|53|F|other|94043\n3||F||T8H1N\n",
    )
    data = movielens_100k(folder)
    items = data.item_features
    assert items.side == "item" and items.kinds() == {"genres": "multi", "year": "numeric"}
    assert values(items, "genres") == {
        "10": ("Action", "Drama", "Western"),
        "20": ("Children's",),
        "30": ("unknown",),
        "40": (),
    }
    years = values(items, "year")
    assert {k: years[k] for k in ("10", "20", "40")} == {"10": 1997.0, "20": 1995.0, "40": 1990.0}
    assert math.isnan(years["30"])
    assert data.item_titles["20"] == "Café (1995)"  # latin-1, as before
    users = data.user_features
    assert users.side == "user" and users.ids.tolist() == ["1", "2", "3"]
    assert users.kinds() == {"age": "numeric", "gender": "categorical", "occupation": "categorical"}
    assert users.column("age").values[:2].tolist() == [24.0, 53.0]
    assert np.isnan(users.column("age").values[2])  # an empty field is unknown
    assert values(users, "gender") == {"1": "M", "2": "F", "3": "F"}
    assert values(users, "occupation") == {"1": "technician", "2": "other", "3": None}


def test_movielens_100k_names_genres_by_u_genre_and_has_no_user_features_without_u_user(
    tmp_path,
):
    folder = ml100k(
        tmp_path / "ml-100k",
        "10|A (1996)|24-Jan-1997||x|1|0|1\n20|B (1995)|01-Jan-1995||y|0|1|0\n",
        genres="Zeta|0\nAlpha|1\nMid|2\n\n",  # its order, not alphabetical; a blank last line
    )
    data = movielens_100k(folder)
    assert values(data.item_features, "genres") == {"10": ("Zeta", "Mid"), "20": ("Alpha",)}
    assert data.user_features is None


def test_movielens_100k_without_u_genre_uses_the_standard_19_genres(tmp_path):
    folder = ml100k(tmp_path / "ml-100k", f"10|A|01-Jan-1995||x|{flags(*range(19))}\n")
    assert values(movielens_100k(folder).item_features, "genres") == {"10": ML100K_GENRES}
    assert len(ML100K_GENRES) == 19 and ML100K_GENRES[5] == "Comedy"


GOOD_ITEM = f"10|A (1996)|24-Jan-1997||http://x|{flags(1)}\n"


@pytest.mark.parametrize(
    ("name", "text", "line", "match"),
    [
        ("u.item", GOOD_ITEM + f"20|B|01-Jan-1995||y|{flags(2)[:-1]}2\n", 2, r"flag of genre "
         r"'Western' \(field 24\) is '2'; expected 0 or 1"),
        ("u.item", GOOD_ITEM + "\n" + f"20|B|1995-01-01||y|{flags()}\n", 3, r"release date "
         r"'1995-01-01' is not a date like 01-Jan-1995"),
        ("u.item", GOOD_ITEM + f"20|B|31-Feb-1995||y|{flags()}\n", 2, "'31-Feb-1995' is not a"),
        ("u.item", GOOD_ITEM + f"20|B|01-Jan-1995||y|{flags(n=18)}\n", 2, "expected 24 fields"),
        ("u.item", f"10|A|01-Jan-1995||x|{flags(n=2)}\n", 1, r"expected 24 fields separated by "
         r"'\|' \(id\|title\|release date\|video release date\|IMDb URL\|19 genre flags\), "
         "found 7"),
        ("u.item", GOOD_ITEM + f"10|A again|01-Jan-1995||y|{flags()}\n", 2, r"the item id '10' "
         "is also on line 1"),
        ("u.user", "1|24|M|technician|85711\n2|old|F|other|94043\n", 2, r"feature 'age': 'old' "
         "is not a number"),
        ("u.user", "1|24|M|technician|85711\n2|53|F|other\n", 2, "expected 5 fields"),
        ("u.user", "1|24|M|x|1\n2|30|F|y|2\n1|25|M|z|3\n", 3, r"the user id '1' is also on line "
         "1"),
        ("u.genre", "unknown|0\nAction\n", 2, r"expected a genre name and its 0-based index"),
        ("u.genre", "unknown|0\nAction|0\n", 2, r"index 0 is also 'unknown''s, on line 1"),
    ],
)  # fmt: skip
def test_movielens_100k_bad_values_name_the_file_and_line(tmp_path, name, text, line, match):
    folder = ml100k(tmp_path / "ml-100k", GOOD_ITEM)
    write(folder / name, text)
    with pytest.raises(DataFormatError, match=match) as err:
        movielens_100k(folder)
    assert err.value.line == line
    assert str(err.value).startswith(f"{folder / name}, line {line}: ")


def test_movielens_100k_refuses_genre_indices_with_a_gap(tmp_path):
    folder = ml100k(tmp_path / "ml-100k", GOOD_ITEM, genres="a|0\nb|2\n")
    with pytest.raises(DataFormatError, match=r"u\.genre: has genre indices \[0, 2\]"):
        movielens_100k(folder)


ITEM_FEATURES = {
    "genres": {"column": "genres", "kind": "multi", "missing": "(no genres listed)"},
    "year": {"column": "title", "kind": "numeric", "pattern": YEAR},
    "studio": {"column": "studio", "kind": "categorical"},
    "tags": {"column": "tags", "kind": "multi", "sep": ";"},
}


def test_csv_features_of_each_kind_for_items_and_users(tmp_path):
    ratings = write(tmp_path / "r.csv", RATINGS)
    movies = write(
        tmp_path / "movies.csv",
        "movieId,title,genres,studio,tags\n"
        '1,"Heat (1995)",Action|Crime|Action,WB,dark; long\n'
        "2,Untitled,(no genres listed),,\n"
        '3,"Toy Story (1995) ",Animation, Pixar ,"kids;fun"\n',
    )
    users = write(
        tmp_path / "users.tsv", "id\tage\tcountry\tlangs\nu1\t30.5\tFR\ten,fr\nu9\t\t\t\n"
    )
    data = csv_source(
        ratings,
        columns=COLUMNS,
        items_path=movies,
        items_columns={"item": "movieId", "title": "title"},
        items_features=ITEM_FEATURES,
        users_path=users,
        users_sep="\t",
        users_columns={"user": "id"},
        users_features={
            "age": {"column": "age", "kind": "numeric"},
            "country": {"column": "country", "kind": "categorical"},
            "langs": {"column": "langs", "kind": "multi", "sep": ","},
        },
    )
    items = data.item_features
    assert items.ids.tolist() == ["1", "2", "3"]
    assert items.kinds() == {k: v["kind"] for k, v in ITEM_FEATURES.items()}
    assert items.column("genres").values.tolist() == [("Action", "Crime"), (), ("Animation",)]
    year = items.column("year").values
    assert year[[0, 2]].tolist() == [1995.0, 1995.0] and np.isnan(year[1])  # no match: unknown
    assert items.column("studio").values.tolist() == ["WB", None, "Pixar"]
    assert items.column("tags").values.tolist() == [("dark", "long"), (), ("kids", "fun")]
    assert data.item_titles["3"] == "Toy Story (1995) "  # titles stay verbatim
    users = data.user_features
    assert users.side == "user" and users.ids.tolist() == ["u1", "u9"]  # u9: no interactions
    assert users.column("age").values[0] == 30.5 and np.isnan(users.column("age").values[1])
    assert users.column("country").values.tolist() == ["FR", None]
    assert users.column("langs").values.tolist() == [("en", "fr"), ()]
    assert data.user_id.tolist() == ["u1", "u2"]  # the interactions are as before


def test_csv_features_by_position_without_a_header_and_without_titles(tmp_path):
    ratings = write(tmp_path / "r.csv", "u1,1\nu2,2\n")
    movies = write(tmp_path / "m.csv", "1,x,Drama|War\n2,y,\n")
    data = csv_source(
        ratings,
        header=False,
        columns={"user": 0, "item": 1},
        items_path=movies,
        items_columns={"item": 0, "title": None},
        items_features={"genres": {"column": 2, "kind": "multi"}},
    )
    assert data.item_features.column("genres").values.tolist() == [("Drama", "War"), ()]
    assert data.item_titles == {} and data.user_features is None


def test_load_source_passes_the_feature_settings_of_csv_config(tmp_path):
    from recmf.settings import CsvColumns, CsvConfig, CsvItemColumns

    write(tmp_path / "r.csv", RATINGS)
    write(tmp_path / "u.csv", "user,age\nu1,40\n")
    write(tmp_path / "m.csv", "movieId,title\n1,Heat (1995)\n")
    cfg = CsvConfig(
        path=str(tmp_path / "r.csv"),
        columns=CsvColumns(**COLUMNS),
        items_path=str(tmp_path / "m.csv"),
        items_columns=CsvItemColumns(item="movieId", title="title"),
        items_features={"year": {"column": "title", "kind": "numeric", "pattern": YEAR}},
        users_path=str(tmp_path / "u.csv"),
        users_columns={"user": "user"},
        users_features={"age": {"column": "age", "kind": "numeric"}},
    )
    data = load_source(cfg)
    assert data.item_features.column("year").values.tolist() == [1995.0]
    assert data.user_features.column("age").values.tolist() == [40.0]
    assert data.item_titles == {"1": "Heat (1995)"}


def test_csv_without_feature_settings_delivers_no_features(tmp_path):
    data = csv_source(write(tmp_path / "r.csv", RATINGS), columns=COLUMNS)
    assert data.item_features is None and data.user_features is None


TOO_LONG = "é" * (MAX_VALUE_BYTES // 2 + 1)  # fewer characters than the limit, more bytes


@pytest.mark.parametrize(
    ("kind", "field", "match"),
    [
        ("numeric", "abc", r"feature 'f': 'abc' is not a number"),
        ("numeric", "nan", r"'nan' is not a number"),
        ("numeric", "inf", r"'inf' is not a number"),
        ("numeric", "1e999", r"'1e999' is not a finite number"),
        ("multi", "a||b", r"'a\|\|b' has an empty element"),
        ("multi", "|a", r"'\|a' has an empty element"),
        ("multi", "a|", r"'a\|' has an empty element"),
        ("multi", f"a|{TOO_LONG}", rf"a value of {MAX_VALUE_BYTES + 2} bytes \(UTF-8\) is longer"),
        ("categorical", TOO_LONG, rf"a value of {MAX_VALUE_BYTES + 2} bytes \(UTF-8\) is longer"),
        ("categorical", "a\x00b", r"contains a NUL character"),
    ],
)
def test_csv_bad_feature_values_name_the_file_and_line(tmp_path, kind, field, match):
    items = write(tmp_path / "items.csv", f"id,f\n1,1\n\n2,{field}\n3,1\n")
    with pytest.raises(DataFormatError, match=match) as err:
        csv_source(
            write(tmp_path / "r.csv", RATINGS),
            columns=COLUMNS,
            items_path=items,
            items_columns={"item": "id"},
            items_features={"f": {"column": "f", "kind": kind}},
        )
    assert err.value.line == 4  # the blank line counts
    assert str(err.value).startswith(f"{items}, line 4: ")


def test_csv_features_file_with_an_id_twice_names_both_lines(tmp_path):
    users = write(tmp_path / "users.csv", "user,age\nu1,20\nu2,30\nu1,21\n")
    with pytest.raises(DataFormatError, match=r"line 4: the user id 'u1' is also on line 2"):
        csv_source(
            write(tmp_path / "r.csv", RATINGS),
            columns=COLUMNS,
            users_path=users,
            users_columns={"user": "user"},
            users_features={"age": {"column": "age", "kind": "numeric"}},
        )


def test_csv_users_file_hints_name_its_own_keys(tmp_path):
    ratings = write(tmp_path / "r.csv", RATINGS)
    semicolons = write(tmp_path / "users.csv", "user;age\nu1;20\n")
    age = {"age": {"column": "age", "kind": "numeric"}}
    with pytest.raises(ConfigError) as err:
        csv_source(ratings, columns=COLUMNS, users_path=semicolons, users_columns={"user": "user"},
                   users_features=age)  # fmt: skip
    assert "dataset.users_features.age.column is 'age'" in str(err.value)
    assert 'dataset.users_sep=";"' in str(err.value)  # not dataset.sep: that is the ratings'
    commas = write(tmp_path / "users2.csv", "id,age\nu1,20\n")
    with pytest.raises(DataFormatError) as err:
        csv_source(ratings, columns=COLUMNS, users_path=commas, users_columns={"user": "user"},
                   users_features=age)  # fmt: skip
    assert "has no column 'user' for the user" in str(err.value)
    assert "Set dataset.users_columns.user to one of them" in str(err.value)


def _items(**feature) -> dict:
    return {"items_features": {"genres": {"column": "genres", "kind": "multi", **feature}}}


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (_items(kind="tags"), r"dataset\.items_features\.genres\.kind must be one of categorical"),
        (_items(sep="||"), r"dataset\.items_features\.genres\.sep must be one character"),
        (_items(kind="categorical", sep=","), r"genres\.sep splits multi features only"),
        (_items(pattern="(("), r"dataset\.items_features\.genres\.pattern '\(\(' is not a valid"),
        (_items(pattern=r"\d{4}"), r"genres\.pattern '\\\\d\{4\}' has 0 capturing groups"),
        (_items(pattern=r"(\d)(\d)"), r"genres\.pattern .* has 2 capturing groups"),
        (_items(column="genre"), r"dataset\.items_features\.genres\.column is 'genre', but the "
         r"header of .*items\.csv has no such column; it has \['id', 'title', 'genres'\]"),
        (_items(column=7), r"dataset\.items_features\.genres\.column is 7, but the header"),
        (_items(column=None), r"dataset\.items_features\.genres\.column must be a column name"),
        (_items(missing=[1]), r"dataset\.items_features\.genres\.missing must be a text"),
        (_items(kinds="multi"), r"dataset\.items_features\.genres\.kinds is not a feature setting"),
        ({"items_features": ["genres"]}, r"dataset\.items_features must map feature names"),
        ({"items_features": {"genres": "multi"}}, r"dataset\.items_features\.genres must be a "
         "mapping"),
        ({"items_features": {"": {"column": "id", "kind": "multi"}}}, r"a feature name must be"),
        (_items() | {"items_path": None}, r"dataset\.items_features needs dataset\.items_path"),
        ({"items_columns": {"item": "id", "title": None}}, r"dataset\.items_columns needs item "
         "and title"),
        ({"users_features": {"age": {"column": "age", "kind": "numeric"}}}, r"dataset\."
         r"users_features needs dataset\.users_path"),
        ({"users_path": "USERS"}, r"dataset\.users_path is set but dataset\.users_features names "
         "no feature"),
        ({"users_path": "USERS", "users_features": {"age": {"column": "age", "kind": "numeric"}}},
         r"dataset\.users_columns needs user"),
    ],
)  # fmt: skip
def test_csv_feature_config_mistakes_name_their_key(tmp_path, settings, match):
    # the ratings file is bad on line 3: the settings are refused before any file is read
    ratings = write(tmp_path / "r.csv", RATINGS + "u3,3,bad,300\n")
    items = write(tmp_path / "items.csv", "id,title,genres\n1,Heat,Drama\n")
    users = write(tmp_path / "users.csv", "user,age\nu1,20\n")
    kwargs = {"items_path": items, "items_columns": {"item": "id", "title": "title"}} | settings
    if kwargs.get("users_path") == "USERS":
        kwargs["users_path"] = users
    with pytest.raises(ConfigError, match=match) as err:
        csv_source(ratings, columns=COLUMNS, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["+dataset.items_features.g={column: genres, kind: tags}"],
         r"dataset\.items_features\.g\.kind must be one of"),
        ([r"+dataset.items_features.g={column: genres, kind: multi, pattern: '\d'}"],
         r"dataset\.items_features\.g\.pattern '\\\\d' has 0 capturing groups"),
        (["+dataset.items_features.g={column: genres, kind: multi}", "dataset.items_path=null"],
         r"dataset\.items_features needs dataset\.items_path"),
        (["dataset.items_columns.title=null"], r"dataset\.items_columns\.title must be a column"),
        (["dataset.users_path=users.csv"], r"dataset\.users_columns\.user must be a column"),
        (["dataset.users_path=users.csv", "dataset.users_columns.user=id"],
         r"dataset\.users_path is set but dataset\.users_features names no feature"),
        (["dataset.users_sep=ab"], r"dataset\.users_sep must be one character"),
        (["dataset.users_path=nowhere.csv", "dataset.users_columns.user=id",
          "+dataset.users_features.a={column: a, kind: numeric}"],
         r"dataset\.users_path 'nowhere\.csv' does not exist"),
    ],
)  # fmt: skip
def test_config_checks_the_feature_settings_before_anything(
    tmp_path, monkeypatch, overrides, match
):
    from recmf.config import compose, settings

    monkeypatch.chdir(tmp_path)
    for name in ("ratings.csv", "movies.csv", "users.csv"):
        write(tmp_path / name, "id\n1\n")
    base = ["dataset=csv", "dataset.path=ratings.csv", "dataset.items_path=movies.csv"]
    cfg = compose("ingest", [*base, *overrides])
    with pytest.raises(ConfigError, match=match):
        settings(cfg, "ingest")


def test_config_accepts_features_without_titles(tmp_path, monkeypatch):
    from recmf.config import compose, settings

    monkeypatch.chdir(tmp_path)
    for name in ("ratings.csv", "movies.csv"):
        write(tmp_path / name, "id\n1\n")
    cfg = compose(
        "ingest",
        [
            "dataset=csv",
            "dataset.path=ratings.csv",
            "dataset.items_path=movies.csv",
            "dataset.items_columns.title=null",
            "+dataset.items_features.g={column: genres, kind: multi, sep: ';'}",
        ],
    )
    dataset = settings(cfg, "ingest").dataset
    assert dataset.items_features == {"g": {"column": "genres", "kind": "multi", "sep": ";"}}
    assert dataset.items_columns.title is None
