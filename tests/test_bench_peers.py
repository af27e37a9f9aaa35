"""The peers of ``benchmark.py quality`` (ALS, EASE) on a tiny saved split: EASE's closed form,
tuning on validation only, scoring test with train and validation excluded, and the message when
implicit is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark modes import each other by name

import bench_peers  # noqa: E402

from recmf.eval.split_file import SavedSplit  # noqa: E402


def _saved(parts: dict[str, list[tuple[int, int]]]) -> SavedSplit:
    arrays = {}
    for part in ("train", "val", "test"):
        pairs = np.array(parts.get(part, []), dtype=np.int32).reshape(-1, 2)
        arrays[f"{part}_user"], arrays[f"{part}_item"] = pairs[:, 0], pairs[:, 1]
        arrays[f"{part}_rating"] = np.full(len(pairs), np.nan, np.float32)
    return SavedSplit(arrays, "")


def _two_blocks() -> SavedSplit:
    """Users 0-5 like items 0-4, users 6-11 like items 5-9, in an order of their own; each
    user's last liked item is in test, the one before in validation, the rest in train."""
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for u in range(12):
        block = list(range(0, 5) if u < 6 else range(5, 10))
        items = block[u % 5 :] + block[: u % 5]
        parts["train"] += [(u, i) for i in items[:-2]]
        parts["val"].append((u, items[-2]))
        parts["test"].append((u, items[-1]))
    return _saved(parts)


def test_ease_weights_are_the_closed_form():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 8)) < 0.3).astype(np.float64)
    from scipy.sparse import csr_matrix

    score = bench_peers._fit_ease(csr_matrix(x.astype(np.float32)), {"lambda": 5.0}, 0)
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(8))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    assert np.allclose(score(np.arange(30)), x @ b, atol=1e-4)


def test_ease_is_tuned_on_validation_and_scores_test_with_seen_items_excluded(monkeypatch):
    seen_grids = []
    fit, grid = bench_peers.FITS["EASE"]

    def spy(x, params, seed):
        seen_grids.append((params["lambda"], x.nnz))
        return fit(x, params, seed)

    monkeypatch.setitem(bench_peers.FITS, "EASE", (spy, grid))
    saved = _two_blocks()
    result = bench_peers.run_peer("EASE", saved, 0, [1, 5])
    n_train = len(saved.arrays["train_user"])
    n_trval = n_train + len(saved.arrays["val_user"])
    assert [n for _, n in seen_grids] == [n_train] * len(grid) + [n_trval]  # tune, then refit
    assert result.params in grid and result.val_ndcg == max(v for _, v in result.grid)
    assert seen_grids[-1][0] == result.params["lambda"]
    # every user's test item is the one item of its block left once train and validation items
    # are excluded: it comes first
    assert result.metrics["precision_at_1"] == pytest.approx(1.0)
    assert result.metrics["recall_at_5"] == pytest.approx(1.0)
    fits = len(seen_grids)  # EASE is deterministic: the same split (another seed) is not refit
    assert bench_peers.run_peer("EASE", _two_blocks(), 1, [1, 5]) is result
    assert len(seen_grids) == fits


def test_als_without_implicit_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit.cpu.als", None)  # import fails as if missing
    with pytest.raises(bench_peers.PeerUnavailable, match=r'pip install -e "\.\[bench\]"'):
        bench_peers.run_peer("ALS", _two_blocks(), 0, [5])
