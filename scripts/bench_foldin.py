"""``benchmark.py foldin``: users held out of training, folded in at request time, against the
same users trained normally and against popularity.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from bench_common import save

if TYPE_CHECKING:
    from recmf.data.interactions import Interactions
    from recmf.settings import TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("foldin", help="users held out of training, folded in at request time")
    f.add_argument("--data", required=True, help="ml-100k folder (or a file for --dataset csv)")
    f.add_argument("--dataset", default="movielens-100k")
    f.add_argument("--experiment", default="ml100k", help="'none' for the default config")
    f.add_argument("--schema", default="bench_ml100k")
    f.add_argument("--holdout", type=float, default=0.1, help="share of test users held out")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--min-ratio", type=float, default=None, help="exit 1 below this ratio")
    f.add_argument("--workdir", default=".recmf/benchmark")
    f.add_argument("--out", default=None)
    f.add_argument("overrides", nargs="*", help="train config overrides, after --")


def run(args: argparse.Namespace) -> int:
    """Ingest, train twice, print NDCG@k of the three; 1 below ``--min-ratio`` of trained."""
    from recmf import cli
    from recmf.config import compose_settings
    from recmf.data.sources import load_source
    from recmf.store import FeatureStore
    from recmf.train.fitting import quiet_lightning
    from recmf.train.run import load_interactions

    overrides = [f"dataset={args.dataset}", f"db.schema={args.schema}", f"seed={args.seed}"]
    if args.experiment != "none":
        overrides.append(f"experiment={args.experiment}")
    overrides.append(f"dataset.path={Path(args.data).resolve()}")
    cfg = compose_settings("train", [*overrides, *args.overrides])
    with FeatureStore.open(cfg.db) as store:
        cli.run(lambda: store.ingest(load_source(cfg.dataset)))
    data, _, _ = load_interactions(cfg)
    quiet_lightning()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recmf-foldin-") as tmp:
        result = held_out_users(data, cfg, args.holdout, args.seed, Path(tmp))
    result["seconds"] = time.perf_counter() - t0
    key = f"ndcg_at_{cfg.k}"
    print(
        f"{result['held_out_users']} users held out of training ({args.holdout:.0%} of those "
        f"with test items), {result['evaluated_users']} evaluated, NDCG@{cfg.k}:\n"
        f"  trained with them    {result['trained'][key]:.4f}\n"
        f"  folded in            {result['fold_in'][key]:.4f}  "
        f"({result['fold_in_vs_trained']:.0%} of trained; {result['fold_in']['params']})\n"
        f"  popularity           {result['popularity'][key]:.4f}  "
        f"(fold-in {result['fold_in_vs_popularity']:.2f}x)"
    )
    save(args, f"foldin-{args.schema}-seed{args.seed}.json", result)
    if args.min_ratio is not None and result["fold_in_vs_trained"] < args.min_ratio:
        print(f"fold-in below {args.min_ratio:.0%} of trained", file=sys.stderr)
        return 1
    return 0


def held_out_users(
    data: Interactions, cfg: TrainConfig, holdout: float, seed: int, workdir: Path
) -> dict:
    """Users held out of training entirely, folded in at request time, against the same users
    trained normally and against popularity (NDCG@k and P@k on their test items).

    The split is the usual per-user temporal one. Model A trains on every user; model B on
    every user but a random ``holdout`` share of those with test items, whose train and
    validation rows B never sees. Those users are then folded into B from their train and
    validation items (what the store holds for them before the test period), with the constants
    B's own validation chose (:func:`recmf.train.fold_in_tuning.tune`), and ranked on their test
    items with those items excluded, as are A's rankings of the same users.
    """
    import torch

    from recmf.data.sparse import UserItems
    from recmf.data.split import Split, temporal_split
    from recmf.eval.ranking import evaluate_ranking, popularity_scores
    from recmf.serve.bundle import Bundle
    from recmf.train.fitting import fit_select_refit
    from recmf.train.fold_in_tuning import evaluate_fold_in, histories_of, tune

    k = int(cfg.k)
    split = temporal_split(data, cfg.split.test_fraction, cfg.split.val_fraction)
    rng = np.random.default_rng(seed)
    candidates = np.unique(split.test.user_idx)
    held = np.sort(rng.choice(candidates, max(1, int(holdout * len(candidates))), replace=False))

    def without(part):
        return part.subset(~np.isin(part.user_idx, held))

    def only(part):
        return part.subset(np.isin(part.user_idx, held))

    split_b = Split(without(split.train), without(split.val), split.test, 0, 0)
    fit_a = fit_select_refit(cfg, split, False, workdir)
    fit_b = fit_select_refit(cfg, split_b, False, workdir)
    weights_b = Bundle.from_model(fit_b.model, data.vocab, split_b, {}).weights
    chosen = tune(fit_b.selected_weights or weights_b, split_b, k, seed=seed)  # as training does
    n_users, n_items = data.n_users, data.n_items
    past_u = np.concatenate([only(split.train).user_idx, only(split.val).user_idx])
    past_i = np.concatenate([only(split.train).item_idx, only(split.val).item_idx])
    past_t = np.concatenate([only(split.train).timestamp, only(split.val).timestamp])
    history = UserItems.from_pairs(past_u, past_i, n_users)
    test = only(split.test)
    truth = UserItems.from_pairs(test.user_idx, test.item_idx, n_users)
    with torch.no_grad():
        trained, n_eval = evaluate_ranking(fit_a.model.score_all, truth, history, [k], n_items)
        seen_b = np.concatenate([split_b.train.item_idx, split_b.val.item_idx])
        pop = popularity_scores(torch.from_numpy(seen_b), n_items)
        popular, _ = evaluate_ranking(pop, truth, history, [k], n_items)
    hist = histories_of(held, past_u, past_i, past_t)
    folded = evaluate_fold_in(weights_b, held, hist, history, truth, k, **chosen["params"])
    key = f"ndcg_at_{k}"
    return {
        "held_out_users": int(len(held)),
        "evaluated_users": int(n_eval),
        "fold_in": {"params": chosen["params"], key: folded},
        "trained": {key: trained[key], f"precision_at_{k}": trained[f"precision_at_{k}"]},
        "popularity": {key: popular[key], f"precision_at_{k}": popular[f"precision_at_{k}"]},
        "fold_in_vs_trained": folded / trained[key] if trained[key] else float("nan"),
        "fold_in_vs_popularity": folded / popular[key] if popular[key] else float("nan"),
    }
