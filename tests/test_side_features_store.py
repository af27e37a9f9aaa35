"""Side features in the store: typed tables, replaced per entity and feature, all or nothing,
part of the data digest; items named only by a features file are stored but not trained on."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from recmf.data.features import FeatureColumn, RawFeatures
from recmf.data.interactions import RawInteractions
from recmf.store import FeatureStore, StoreError

ROWS = [("u1", "a", 4.0, 1), ("u1", "b", 3.0, 2), ("u2", "b", 5.0, 3), ("u2", "c", 1.0, 4)]


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def items(ids=("a", "b", "c"), genres=(("Comedy",), ("Drama", "Comedy"), ()), years=None):
    years = [1995.0, np.nan, 2001.0] if years is None else years
    return RawFeatures(
        "item",
        np.array(ids, dtype=object),
        [
            FeatureColumn("genres", "multi", _objects(list(genres))),
            FeatureColumn("year", "numeric", np.array(years, dtype=np.float64)),
        ],
        source="items.csv",
    )


def users(ids=("u1", "u2"), gender=("F", None)):
    return RawFeatures(
        "user",
        np.array(ids, dtype=object),
        [FeatureColumn("gender", "categorical", _objects(list(gender)))],
        source="users.csv",
    )


def raw(rows=ROWS, item_features=None, user_features=None, titles=None) -> RawInteractions:
    u, i, r, t = zip(*rows, strict=True) if rows else ((), (), (), ())
    return RawInteractions(
        user_id=np.array(u, dtype=object),
        item_id=np.array(i, dtype=object),
        rating=np.array(r, dtype=np.float64),
        timestamp=np.array(t, dtype=np.int64),
        item_titles=titles or {},
        source="test",
        item_features=item_features,
        user_features=user_features,
    )


def _as_dict(features: RawFeatures) -> dict:
    out = {}
    for p, entity in enumerate(features.ids.tolist()):
        row = {}
        for c in features.columns:
            v = c.values[p]
            row[c.name] = None if c.kind == "numeric" and np.isnan(v) else v
        out[entity] = row
    return out


def test_features_are_stored_typed_and_read_back_exactly(store):
    result = store.ingest(raw(item_features=items(), user_features=users()))
    assert "item features of 3 items" in result.summary()
    got = _as_dict(store.read_features("item"))
    # a multi feature's values come back sorted; no genres is an empty tuple
    assert got == {
        "a": {"genres": ("Comedy",), "year": 1995.0},
        "b": {"genres": ("Comedy", "Drama"), "year": None},
        "c": {"genres": (), "year": 2001.0},
    }
    assert store.read_features("item").kinds() == {"genres": "multi", "year": "numeric"}
    # an entity with no known value has no row: u2's gender is unknown
    assert _as_dict(store.read_features("user")) == {"u1": {"gender": "F"}}


def test_features_change_neither_the_vocabulary_nor_a_featureless_digest(store, make_db_cfg):
    store.ingest(raw())
    plain = store.snapshot()
    with FeatureStore.open(make_db_cfg()) as other:
        other.ingest(raw(item_features=items(("c", "b", "a"), ((), ("Drama",), ("Comedy",)))))
        data, mine = other.read_interactions(), store.read_interactions()
        assert data.vocab.item_ids.tolist() == mine.vocab.item_ids.tolist() == ["a", "b", "c"]
        with_features = other.snapshot()
    assert "item_side_features" not in plain
    assert with_features["item_side_features"] == "genres:multi,year:numeric"
    assert with_features["content_hash"] != plain["content_hash"]


def test_ingesting_again_is_idempotent_and_a_corrected_file_replaces_values(store):
    store.ingest(raw(item_features=items()))
    first = store.snapshot()
    store.ingest(raw(item_features=items()))
    assert store.snapshot() == first
    fixed = items(ids=("b",), genres=(("Thriller",),), years=[1990.0])
    store.ingest(raw(rows=[], item_features=fixed))
    got = _as_dict(store.read_features("item"))
    assert got["b"] == {"genres": ("Thriller",), "year": 1990.0}  # Drama and Comedy are gone
    assert got["a"] == {"genres": ("Comedy",), "year": 1995.0}  # others untouched
    assert store.snapshot()["content_hash"] != first["content_hash"]


def test_an_item_added_with_its_features_is_stored_but_not_in_the_training_vocabulary(store):
    store.ingest(raw(item_features=items()))
    new = items(ids=("z",), genres=(("Comedy",),), years=[2024.0])
    result = store.ingest(raw(rows=[], item_features=new, titles={"z": "Brand New (2024)"}))
    assert result.features[0].new_entities == 1 and result.n_items == 4
    assert result.n_interactions == len(ROWS)
    assert "z" in _as_dict(store.read_features("item"))
    assert store.item_titles(["z"]) == {"z": "Brand New (2024)"}
    data = store.read_interactions()
    assert data.vocab.item_ids.tolist() == ["a", "b", "c"]  # z has no interactions yet
    # once someone interacts with it, it joins the vocabulary (after the others)
    store.ingest(raw(rows=[("u1", "z", 5.0, 9)]))
    assert store.read_interactions().vocab.item_ids.tolist() == ["a", "b", "c", "z"]


def test_a_kind_clash_is_refused_and_the_whole_ingest_is_stored_or_not_at_all(store):
    store.ingest(raw(item_features=items()))
    before = store.snapshot()
    clash = RawFeatures(
        "item",
        np.array(["a"], dtype=object),
        [FeatureColumn("year", "categorical", _objects(["nineties"]))],
        source="other.csv",
    )
    with pytest.raises(StoreError, match=r"year is stored as numeric, given as categorical"):
        store.ingest(raw(rows=[("u3", "d", 2.0, 5)], item_features=clash))
    assert store.snapshot() == before  # the new interaction was not stored either
    assert "d" not in store.read_interactions().vocab.item_ids.tolist()


def test_a_store_of_an_earlier_version_gains_the_feature_tables_on_a_writable_open(
    make_db_cfg, pg_admin
):
    from recmf.store.schema import ADDED_LATER, make_tables

    db = make_db_cfg()
    tables = make_tables(db.schema)
    with pg_admin.begin() as conn:  # the tables an earlier recmf made, and no others
        conn.execute(sa.schema.CreateSchema(db.schema))
        for table in tables.metadata.sorted_tables:
            if table.name not in ADDED_LATER:
                table.create(conn)
    with FeatureStore.open(db, create=False) as reader:
        assert reader.read_features("item") is None  # read-only: nothing created
    with FeatureStore.open(db) as writer:
        writer.ingest(raw(item_features=items()))
        assert len(writer.read_features("item")) == 3


def _key_types(engine: sa.Engine, schema: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT table_name || '.' || column_name, data_type "
                "FROM information_schema.columns "
                "WHERE table_schema = :s AND column_name IN ('user_key', 'item_key')"
            ),
            {"s": schema},
        ).all()
    return dict(rows)


def test_a_store_made_with_bigint_keys_keeps_them_and_works_as_an_int4_one(make_db_cfg, pg_admin):
    """Stores made before int4 keys: no migration; ingest (a first load, then through
    staging), side features (whose tables came later) and reads give what a new store gives."""
    from recmf.store.schema import ADDED_LATER, make_tables

    old_cfg, new_cfg = make_db_cfg(), make_db_cfg()
    with pg_admin.begin() as conn:  # the tables as an earlier recmf made them
        conn.execute(sa.schema.CreateSchema(old_cfg.schema))
        for table in make_tables(old_cfg.schema, sa.BigInteger).metadata.sorted_tables:
            if table.name not in ADDED_LATER:
                table.create(conn)
    more = [("u3", "a", 2.0, 5), ("u1", "c", None, 6), ("u1", "a", 4.0, 1)]  # the last is stored
    got = {}
    for cfg in (old_cfg, new_cfg):
        with FeatureStore.open(cfg) as store:
            store.ingest(raw(item_features=items()))  # a first load: COPY straight in
            second = store.ingest(raw(rows=more, user_features=users(("u3",), ("M",))))
            data = store.read_interactions()
            got[cfg.schema] = (
                (second.added, second.duplicates_skipped, second.n_users),
                data.vocab.user_ids[data.user_idx].tolist(),
                data.vocab.item_ids[data.item_idx].tolist(),
                np.nan_to_num(data.rating, nan=-1).tolist(),
                data.timestamp.tolist(),
                _as_dict(store.read_features("item")),
                _as_dict(store.read_features("user")),
                store.snapshot()["content_hash"],
            )
    assert got[old_cfg.schema] == got[new_cfg.schema]
    assert got[old_cfg.schema][0] == (2, 1, 3)
    old, new = _key_types(pg_admin, old_cfg.schema), _key_types(pg_admin, new_cfg.schema)
    assert set(old) == set(new) and len(old) == 10  # every key column, the later tables' too
    assert set(old.values()) == {"bigint"} and set(new.values()) == {"integer"}
