"""Speed measurements, each beside its reference measured in the same run (scripts/benchmark.py).

- store: see bench_speed_store.py;
- training: one recmf epoch (Lightning, device-resident slices) against a plain PyTorch loop with
  the same model, loss, batch and optimizer;
- evaluation: recmf's ranking of all users (masking included) against a bare chunked matmul +
  ``topk`` over the same sizes;
- recommend: the command line against ``python -c "import torch"``, and in-process top-K.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import best_of, interleaved


def _synthetic_indices(n_rows: int, n_users: int, n_items: int, seed: int):
    """Power-law item popularity and uniform users, generated fast in process (no store)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_rows)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, n_rows, p=pop / pop.sum())
    return users.astype(np.int64), items.astype(np.int64)


def reference_epoch(users, items, n_users, n_items, dim, batch, loss, device, epochs=2) -> float:
    """Seconds per epoch of a plain PyTorch loop: permutation, slices, negatives, fused Adam."""
    import torch

    from recmf.data.sparse import UserItems
    from recmf.model import losses
    from recmf.model.mf import MatrixFactorization

    torch.manual_seed(0)
    model = MatrixFactorization(n_users, n_items, dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    u = torch.from_numpy(users).to(device)
    i = torch.from_numpy(items).to(device)
    csr = UserItems.from_pairs(users, items, n_users).to(device)
    active = torch.nonzero(csr.counts() > 0).squeeze(1)
    times = []
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        if loss == "softmax":
            perm = active[torch.randperm(len(active), device=device)]
            for s in range(0, len(perm), batch):
                chunk = perm[s : s + batch]
                rows, cols = csr.rows(chunk)
                out = losses.softmax_loss(model.score_all(chunk), rows, cols)
                opt.zero_grad(set_to_none=True)
                out.backward()
                opt.step()
        else:
            perm = torch.randperm(len(u), device=device)
            for s in range(0, len(perm), batch):
                idx = perm[s : s + batch]
                neg = torch.randint(n_items, (len(idx), 1), device=device)
                bu, bi = u[idx], i[idx]
                out = losses.bpr_loss(model(bu, bi), model(bu.unsqueeze(1), neg))
                opt.zero_grad(set_to_none=True)
                out.backward()
                opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def recmf_epoch(users, items, n_users, n_items, dim, batch, loss, device, epochs=2) -> float:
    """Seconds per epoch of recmf's Lightning module fed by its data module (no validation)."""
    import lightning as L
    import torch

    from recmf.data.batches import InteractionsDataModule
    from recmf.data.interactions import Interactions, Vocab
    from recmf.data.split import Split
    from recmf.model.lit_module import MFLitModule
    from recmf.model.mf import MatrixFactorization
    from recmf.train.fitting import quiet_lightning

    quiet_lightning()
    n = len(users)
    vocab = Vocab(
        np.arange(n_users).astype(str), np.arange(n_items).astype(str), np.full(n_items, "")
    )
    data = Interactions(users, items, np.full(n, np.nan, np.float32), np.zeros(n, np.int64), vocab)
    empty = data.subset(np.zeros(n, dtype=bool))
    torch.manual_seed(0)
    lit = MFLitModule(MatrixFactorization(n_users, n_items, dim), loss, lr=0.01, reg=0.0, k=10)
    dm = InteractionsDataModule(Split(data, empty, empty, 0, 0), loss, batch, 1, seed=0)
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            _sync(device)
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            _sync(device)
            times.append(time.perf_counter() - self.t0)

    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Clock()],
    )
    trainer.fit(lit, dm)
    return min(times)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def training(n_rows, n_users, n_items, dim, batch, loss, device, side, seed=0) -> dict:
    """One side's epoch time (recmf or the plain-loop reference), on the seeded data."""
    users, items = _synthetic_indices(n_rows, n_users, n_items, seed)
    epoch = recmf_epoch if side == "recmf" else reference_epoch
    seconds = epoch(users, items, n_users, n_items, dim, batch, loss, device)
    return {"rows": n_rows, "loss": loss, "batch": batch, "device": device, "side": side,
            "epoch_seconds": seconds}  # fmt: skip


def evaluation(n_users, n_items, n_train, dim, k, chunk, device, seed=0) -> dict:
    """Rank the users with test items over every item: recmf (masking, metrics) against a bare
    chunked matmul + topk of the same users, alternating, three runs each."""
    import torch

    from recmf.data.sparse import UserItems
    from recmf.eval.ranking import evaluate_ranking

    users, items = _synthetic_indices(n_train, n_users, n_items, seed)
    test_u, test_i = _synthetic_indices(n_users * 2, n_users, n_items, seed + 1)
    g = torch.Generator().manual_seed(seed)
    user_emb = torch.randn(n_users, dim, generator=g).to(device)
    item_emb = torch.randn(n_items, dim, generator=g).to(device)
    seen = UserItems.from_pairs(users, items, n_users).to(device)
    truth = UserItems.from_pairs(test_u, test_i, n_users).to(device)

    ranked = torch.nonzero(truth.counts() > 0).squeeze(1)  # recmf ranks users with test items

    def bare():
        for s in range(0, len(ranked), chunk):
            torch.topk(user_emb[ranked[s : s + chunk]] @ item_emb.T, k, dim=1)
        _sync(device)

    def ours():
        evaluate_ranking(lambda u: user_emb[u] @ item_emb.T, truth, seen, [k], n_items, chunk)
        _sync(device)

    with torch.no_grad():
        times = interleaved({"recmf": ours, "bare": bare}, 3)
    return {
        "users": n_users,
        "ranked_users": int(len(ranked)),
        "items": n_items,
        "k": k,
        "device": device,
        "recmf_seconds": min(times["recmf"]),
        "bare_matmul_topk_seconds": min(times["bare"]),
        "recmf_runs_seconds": times["recmf"],
        "bare_runs_seconds": times["bare"],
        "ratio": min(times["recmf"]) / min(times["bare"]),
    }


def recommend_cli(
    root: Path, bundle: Path, db_overrides: list[str], user: str, env: dict, repeat: int = 5
) -> dict:
    """Median wall time of the recommend command against ``python -c 'import torch'``, the two
    alternating."""
    cmd = [
        sys.executable,
        str(root / "scripts" / "recommend.py"),
        f"user={user}",
        f"bundle={bundle}",
        *db_overrides,
    ]

    def run(args):
        return lambda: subprocess.run(args, check=True, capture_output=True, env=env)

    times = interleaved(
        {"cli": run(cmd), "torch": run([sys.executable, "-c", "import torch"])}, repeat
    )
    cli_s, torch_s = statistics.median(times["cli"]), statistics.median(times["torch"])
    return {
        "recommend_cli_seconds": cli_s,
        "import_torch_seconds": torch_s,
        "ratio": cli_s / torch_s,
        "cli_runs_seconds": times["cli"],
        "torch_runs_seconds": times["torch"],
    }


def recommend_in_process(bundle_dir: Path, user: str, history: list[str], k: int = 10) -> dict:
    from recmf.serve.bundle import Bundle
    from recmf.serve.recommender import Recommender

    rec = Recommender(Bundle.load(bundle_dir))
    seconds = best_of(lambda: rec.recommend([user], k, {user: history}), 50)
    return {"top_k_one_user_ms": seconds * 1000}
