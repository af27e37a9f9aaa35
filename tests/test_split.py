import numpy as np
import pytest

from recmf.data.interactions import Interactions, Vocab
from recmf.data.split import key_order, make_split, random_split, temporal_split, user_time_order


def make(users, items, times):
    n_users, n_items = max(users) + 1, max(items) + 1
    vocab = Vocab(
        [f"U{i}" for i in range(n_users)], [f"I{i}" for i in range(n_items)], [""] * n_items
    )
    n = len(users)
    return Interactions(
        np.array(users), np.array(items), np.full(n, np.nan, np.float32), np.array(times), vocab
    )


def test_split_holds_out_each_users_latest_interactions():
    # user 0: 10 interactions at times 0..9 on items 0..9 (given shuffled)
    # user 1 has every item in its train part, so no held-out item is unseen in train
    rng = np.random.default_rng(0)
    order = rng.permutation(10)
    data = make(
        [1] * 20 + [0] * 10, list(range(10)) * 2 + list(order), list(range(20)) + list(order + 100)
    )
    s = temporal_split(data, 0.2, 0.25)
    u0 = s.test.user_idx == 0
    assert sorted(s.test.timestamp[u0]) == [108, 109]  # floor(0.2 * 10) = 2 latest
    assert sorted(s.val.timestamp[s.val.user_idx == 0]) == [106, 107]  # floor(0.25 * 8) = 2
    assert sorted(s.train.timestamp[s.train.user_idx == 0]) == list(range(100, 106))
    assert s.dropped_test == s.dropped_val == 0


def test_split_sizes_add_up_and_parts_are_disjoint():
    rng = np.random.default_rng(1)
    n = 2000
    users = rng.integers(0, 50, n)
    items = rng.integers(0, 30, n)
    times = rng.integers(0, 10_000, n)
    data = make(list(users), list(items), list(times))
    s = temporal_split(data)
    assert len(s.train) + len(s.val) + len(s.test) + s.dropped_val + s.dropped_test == n
    for u in range(50):  # no leakage: every held-out row is no earlier than the user's train rows
        tr = s.train.timestamp[s.train.user_idx == u]
        te = s.test.timestamp[s.test.user_idx == u]
        if len(tr) and len(te):
            assert te.min() >= tr.max()


def test_split_breaks_time_ties_by_item_and_is_deterministic():
    data = make([0] * 5 + [1] * 5, [4, 3, 2, 1, 0] * 2, [7] * 5 + [0, 1, 2, 3, 4])
    a, b = temporal_split(data, 0.2, 0.0), temporal_split(data, 0.2, 0.0)
    assert a.test.item_idx[a.test.user_idx == 0].tolist() == [4]  # largest item id is "last"
    assert b.test.item_idx.tolist() == a.test.item_idx.tolist()
    assert a.train.item_idx.tolist() == b.train.item_idx.tolist()


@pytest.mark.parametrize(
    "times",
    [
        (0, 50),  # small spans: the combined key, with many ties to break by item and position
        (1_600_000_000, 1_600_010_000),  # unix seconds
        (2**63 - 10_000, 2**63 - 1),  # the key's running sum wraps around and comes back
        (-(2**60), 2**60),  # too wide to combine with the user and item ranges: np.lexsort
    ],
)
def test_user_time_order_is_lexsorts_order(times):
    rng = np.random.default_rng(7)
    n = 5000
    u = rng.integers(0, 300, n).astype(np.int32)
    t = rng.integers(*times, n).astype(np.int64)
    i = rng.integers(0, 40, n).astype(np.int32)
    i[:100], u[:100], t[:100] = 3, 5, t[0]  # exact (user, time, item) repeats keep their order
    assert np.array_equal(user_time_order(u, t, i), np.lexsort((i, t, u)))


def test_key_order_is_lexsorts_order_for_any_keys():
    rng = np.random.default_rng(3)
    a, b = rng.integers(-50, 50, 3000), rng.integers(-(2**20), 2**20, 3000).astype(np.int32)
    assert np.array_equal(key_order(a, b), np.lexsort((b, a)))  # negative values, two keys
    f = rng.random(3000)
    assert np.array_equal(key_order(a, f), np.lexsort((f, a)))  # floats: lexsort itself
    assert key_order(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
    # the leading two fit in 63 bits, the third does not: ties on them ordered by it, stably
    wide = rng.integers(-(2**62), 2**62, 3000)
    wide[:40] = wide[0]  # exact repeats keep their order
    a[:40], b[:40] = a[0], b[0]
    a[40:400], b[40:400] = a[1], b[1]  # 360 rows tied on the leading two, ordered by the third
    assert np.array_equal(key_order(a, b, wide), np.lexsort((wide, b, a)))
    assert np.array_equal(key_order(a, b, f), np.lexsort((f, b, a)))  # a float after two ints


def test_split_drops_and_counts_items_unseen_in_train():
    # item 9 only ever appears as user 0's latest interaction; user 1's latest, item 0, is known
    data = make([0] * 5 + [1] * 5, [0, 1, 2, 3, 9, 1, 2, 3, 4, 0], list(range(10)))
    s = temporal_split(data, 0.2, 0.0)
    assert s.dropped_test == 1
    assert s.test.item_idx.tolist() == [0]
    assert s.test.user_idx.tolist() == [1]


def test_split_rejects_bad_fractions():
    data = make([0], [0], [0])
    with pytest.raises(ValueError):
        temporal_split(data, 1.0, 0.1)


def test_recency_weights_decay_from_each_users_latest_row():
    from recmf.data.split import recency_weights

    data = make([0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [30, 10, 20, 5, 7])
    w = recency_weights(data, 2.0)
    # user 0: times 10, 20, 30 -> ages 1, 0.5, 0; user 1: times 5, 7 -> ages 1, 0
    assert w.tolist() == pytest.approx([1.0, np.exp(-2.0), np.exp(-1.0), np.exp(-2.0), 1.0])
    assert recency_weights(data, 0.0).tolist() == [1.0] * 5


def test_faded_recency_weakens_long_histories_and_keeps_each_users_total():
    """fade: a user with more rows than the median user gets strength * median / count, its
    weights scaled back to the plain total; users at or below the median keep theirs."""
    from recmf.data.split import recency_weights

    counts = [2, 3, 12]  # the median user has 3 rows; the last user 4x as many
    users = np.repeat(np.arange(3), counts)
    items = np.concatenate([np.arange(c) for c in counts])
    data = make(list(users), list(items), list(range(len(users))))  # each user in time order
    plain, faded = recency_weights(data, 4.0), recency_weights(data, 4.0, fade=True)
    light = users < 2
    assert faded[light].tolist() == pytest.approx(plain[light].tolist())
    heavy = users == 2
    ages = np.arange(11, -1, -1) / 11  # the 12 rows in time order: oldest age 1, latest 0
    expected = np.exp(-4.0 * 3 / 12 * ages)  # the strength 4 * median 3 / count 12 = 1
    expected *= plain[heavy].sum() / expected.sum()
    assert faded[heavy].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert faded[heavy].sum() == pytest.approx(plain[heavy].sum(), rel=1e-5)
    assert faded[heavy].min() / faded[heavy].max() > plain[heavy].min() / plain[heavy].max()
    assert recency_weights(data, 0.0, fade=True).tolist() == [1.0] * len(users)


def _rows(part) -> set[tuple[int, int, int]]:
    return set(
        zip(part.user_idx.tolist(), part.item_idx.tolist(), part.timestamp.tolist(), strict=True)
    )


def test_random_split_holds_out_the_same_counts_as_temporal_but_rows_drawn_by_the_seed():
    rng = np.random.default_rng(2)
    n = 3000
    users, items = rng.integers(0, 40, n), rng.integers(0, 25, n)
    data = make(list(users), list(items), list(rng.permutation(n)))  # distinct times
    by_time = temporal_split(data, 0.2, 0.25)
    a, b, c = (random_split(data, 0.2, 0.25, seed) for seed in (7, 7, 8))
    for part in ("train", "val", "test"):  # per user, the same counts as the temporal split
        want = np.bincount(getattr(by_time, part).user_idx, minlength=40)
        got = np.bincount(getattr(a, part).user_idx, minlength=40)
        assert np.abs(got - want).sum() <= a.dropped_val + a.dropped_test + by_time.dropped_test
    kept = len(a.train) + len(a.val) + len(a.test) + a.dropped_val + a.dropped_test
    assert kept == n and not (_rows(a.train) & _rows(a.test)) and not (_rows(a.val) & _rows(a.test))
    assert _rows(a.test) == _rows(b.test) and _rows(a.train) == _rows(b.train)  # seeded
    assert _rows(a.test) != _rows(c.test)  # another seed, another draw
    older = sum(  # not the latest rows: a random share of each user's test rows is older
        (
            a.test.timestamp[a.test.user_idx == u] < a.train.timestamp[a.train.user_idx == u].max()
        ).sum()
        for u in range(40)
    )
    assert older > len(a.test) // 2
    assert _rows(make_split(data, "random", 0.2, 0.25, 7).test) == _rows(a.test)
    assert _rows(make_split(data, "temporal", 0.2, 0.25, 7).test) == _rows(by_time.test)
    with pytest.raises(ValueError, match="temporal or random"):
        make_split(data, "kfold", 0.2, 0.25, 7)
