"""Several matrix factorizations trained side by side in one fit, each with its own recency
weighting and L2, each stopped on its own validation NDCG@k: the built-in selection of
``model.recency=auto`` / ``model.reg=auto`` (:mod:`recmf.train.selection`).

The candidates share every batch (the same users, in the same order) and their tables are
stacked, so one batched matrix product scores all of them: on small catalogues a step costs
little more than one model's. Each candidate starts from the initialisation a plain run with
the same seed starts from, and Adam updates every element on its own, so a candidate follows
the run it stands for (up to float rounding of the batched products).
"""

from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn

from recmf.eval.ranking import MetricAccumulator, top_k
from recmf.model.lit_module import adam, log_epoch_mean
from recmf.model.losses import full_softmax_loss
from recmf.model.mf import UNTRAINED_BIAS, Catalogue, MatrixFactorization, product_scores

CHUNK = 512  # users a validation step ranks at once, per candidate (K x 512 x items scores)


class StackedMF(nn.Module):
    """``n_models`` :class:`MatrixFactorization` models in (n_models, rows, dim) tables.

    With a ``catalogue`` (:class:`recmf.model.mf.Catalogue`) the item tables hold its items'
    rows only (``item_rows`` of them): the others are pinned and never trained, so a step neither
    scores, copies nor updates them; :meth:`state_of` puts them back.
    """

    def __init__(self, models: list[MatrixFactorization], catalogue: Catalogue | None = None):
        super().__init__()
        first = models[0]
        self.n_models, self.use_bias = len(models), first.use_bias
        self.n_users, self.n_items = first.n_users, first.n_items
        self.catalogue = catalogue
        # the rows of its item tables: the catalogue's items, or all of them
        self.item_rows = first.n_items if catalogue is None else len(catalogue.items)

        def stack(name: str, of_items: bool = False) -> torch.Tensor:
            table = torch.stack([getattr(m, name).weight.detach() for m in models])
            return table if catalogue is None or not of_items else catalogue.select(table, 1)

        self.user_emb = nn.Parameter(stack("user_emb"))
        self.item_emb = nn.Parameter(stack("item_emb", True))  # (n_models, items, dim)
        if self.use_bias:
            self.user_bias = nn.Parameter(stack("user_bias").squeeze(-1))  # (n_models, n_users)
            self.item_bias = nn.Parameter(stack("item_bias", True).squeeze(-1))
            self.global_bias = nn.Parameter(torch.zeros(self.n_models))

    def score_parts(self, which: torch.Tensor, users: torch.Tensor):
        """Models ``which``'s (K,) parts of the scores of ``users`` (B,), as
        :meth:`MatrixFactorization.score_parts` for one: user vectors (K, B, dim), user biases
        with the global one (K, B), item vectors (K, items, dim), item biases (K, items); the
        biases None without them."""
        p, q = self.rows(which, users)
        if not self.use_bias:
            return p, None, q, None
        bu = self._of(self.user_bias, which).index_select(1, users)
        bu = bu + self.global_bias.index_select(0, which)[:, None]
        return p, bu, q, self._of(self.item_bias, which)

    def rows(self, which: torch.Tensor, users: torch.Tensor):
        """Models ``which``'s rows of ``users`` (K, B, dim) and item tables (K, items, dim)."""
        return self._of(self.user_emb, which).index_select(1, users), self._of(self.item_emb, which)

    def _of(self, table: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        # index_select, not [...]: its backward adds rows, where advanced indexing's accumulating
        # index_put took a third of a step; all models: the table as it is, no copy
        return table if len(which) == self.n_models else table.index_select(0, which)

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index``'s weights as a :class:`MatrixFactorization` state dict (copies; the
        catalogue's other items pinned, as :meth:`recmf.model.mf.Catalogue.pin` leaves them)."""
        items = self.item_emb[index].detach().clone()
        if self.catalogue is not None:
            full = items.new_zeros(self.n_items, items.shape[1])
            items = full.index_copy_(0, self.catalogue.items, items)
        state = {"user_emb.weight": self.user_emb[index].detach().clone(), "item_emb.weight": items}
        if self.use_bias:
            bias = self.item_bias[index].detach().clone()
            if self.catalogue is not None:
                full = bias.new_full((self.n_items,), UNTRAINED_BIAS)
                bias = full.index_copy_(0, self.catalogue.items, bias)
            state["user_bias.weight"] = self.user_bias[index].detach().clone().unsqueeze(1)
            state["item_bias.weight"] = bias.unsqueeze(1)
            state["global_bias"] = self.global_bias[index].detach().clone()
        return state


class RaceLitModule(L.LightningModule):
    """Trains :class:`StackedMF`'s candidates with the full-catalogue softmax loss.

    Candidate j weighs its pairs by column j of the batch's ``weights`` (one recency strength
    per column, :class:`recmf.data.batches.InteractionsDataModule` given several) and pays
    ``regs[j]`` L2 on the embedding rows a step touches, per positive pair, as
    :class:`recmf.model.lit_module.MFLitModule` does for one model. After each validation a
    candidate that has not improved its NDCG@k by more than ``min_delta`` for ``patience``
    epochs is done and trains no more. So is one that did not improve this epoch while its best
    is below ``prune`` times the leader's best, once twice ``patience`` epochs (at least 6)
    have passed: curves cross late and slowly (on ml-latest-small recency 4 was 15% behind at
    epoch 7 and passed recency 2 at epoch 26), so a candidate still improving stays. The leader
    is the best of the candidates still running and of ``reference`` up to this epoch (the
    validation curve of an earlier race's candidate, trained on the same batches). The fit stops
    when every candidate is done. ``best`` holds each candidate's best NDCG@k, its epoch
    (1-based), its weights then and its ``curve`` (the NDCG@k of each epoch it ran).

    Logged per epoch: ``val/ndcg_at_{k}`` (the best candidate's this epoch) and each
    candidate's as ``select/{label}/ndcg_at_{k}``.
    """

    def __init__(
        self,
        model: StackedMF,
        labels: list[str],
        regs: list[float],
        k: int,
        lr: float,
        patience: int,
        bias_reg: float = 0.0,
        lr_decay: float = 1.0,
        prune: float = 0.85,
        reference: list[float] | None = None,
        min_delta: float = 0.0,
    ):
        super().__init__()
        self.model, self.labels, self.k, self.lr, self.patience = model, labels, k, lr, patience
        self.prune, self.reference = prune, reference
        self.log_prefix = "select"  # of its logged loss, as MFLitModule's (progress lines read it)
        self.register_buffer("regs", torch.tensor(regs, dtype=torch.float32), persistent=False)
        self.bias_reg = bias_reg if model.use_bias else 0.0
        self.lr_decay = lr_decay
        self.alive = list(range(model.n_models))
        self.best: list[dict] = [{"val": -1.0, "epoch": 0, "state": None} for _ in labels]
        self._waits = [0] * model.n_models
        self.min_delta = min_delta
        self._bar = [-1.0] * model.n_models  # what an epoch must beat to reset the wait
        self._accs: dict[int, MetricAccumulator] = {}
        self._fixed_parts: dict[tuple[int, int], tuple] = {}  # per validation chunk: _fixed

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m, which = self.model, torch.tensor(self.alive, device=self.device)
        users, rows, cols = batch["users"], batch["rows"], batch["cols"]
        if m.catalogue is not None:  # the items' places in the stacked tables
            cols = m.catalogue.position[cols]
        p, bu, q, bi = m.score_parts(which, users)  # (K, B, dim), (K, B), (K, items, ...)
        w = batch["weights"]  # (P, recency strengths) or None
        w = None if w is None else w.index_select(1, which).T  # (K, P)
        # every candidate's loss in one (K, B, items) buffer: 5 candidates x 64 users x 1682
        # items, a step 10.7 -> 8.3 ms (the autograd graph kept five such buffers), and its L2
        # of the rows a step touches, per pair (each row counted once per pair it is in)
        loss = full_softmax_loss(p, bu, q, bi, rows, cols, w, self.regs.index_select(0, which))
        if self.bias_reg:
            per_user = torch.bincount(rows, minlength=len(users)).to(p.dtype)
            per_item = torch.bincount(cols, minlength=m.item_rows).to(p.dtype)
            ub = m._of(m.user_bias, which).index_select(1, users)
            ib = m._of(m.item_bias, which)
            biases = (ub.pow(2) * per_user).sum(1) + (ib.pow(2) * per_item).sum(1)
            loss = loss + self.bias_reg * biases / len(rows)
        total = loss.sum()  # independent tables: each candidate gets its own loss's gradient
        log_epoch_mean(self, "select/loss", loss.mean(), len(rows), batch_idx)
        return total

    def on_validation_epoch_start(self) -> None:
        self._accs = {j: MetricAccumulator([self.k], self.model.n_items, self.device)
                      for j in self.alive}  # fmt: skip
        self._val_started = time.perf_counter()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Every running candidate ranks the batch's users at once: one batched product, the
        exclusions and the relevant items found once for the whole race (:meth:`_fixed`; each
        candidate ranking on its own, validation was 23% of a race on ML-100K). Ranked as
        :meth:`MatrixFactorization.rank_scores` ranks."""
        exclude, truth, candidates = batch["exclude"], batch["truth"], batch.get("candidates")
        m, alive, cat = self.model, sorted(self._accs), self.model.catalogue
        if not alive:
            return
        which = torch.tensor(alive, device=self.device)
        users = batch["users"]
        if cat is not None and candidates is not None:  # the catalogue's: the others pinned
            candidates = cat.select(candidates, 0)
        for start in range(0, len(users), CHUNK):
            chunk = users[start : start + CHUNK]
            excluded, relevance = self._fixed((batch_idx, start), chunk, exclude, truth)
            p, _, q, bi = m.score_parts(which, chunk)  # ranked without the users' own biases
            scores = product_scores(p, None, q, bi)  # (K, B, items)
            if candidates is not None:
                scores.masked_fill_(~candidates, -torch.inf)
            if excluded is not None:
                scores.view(len(alive), -1).index_fill_(1, excluded, -torch.inf)
            _, top = top_k(scores.view(-1, m.item_rows), min(self.k, m.item_rows))
            top = top if cat is None else cat.items[top]  # back to the model's items
            for j, tops in zip(alive, top.view(len(alive), len(chunk), -1), strict=True):
                self._accs[j].add_hits(tops, relevance)

    def _fixed(self, key: tuple[int, int], chunk: torch.Tensor, exclude, truth):
        """What ranking ``chunk`` needs besides the scores, the same every epoch, computed once:
        the places of its users' training items in one candidate's flattened (users x items)
        scores (None without exclusions), and its relevance (:meth:`MetricAccumulator.relevance`).
        """
        cached = self._fixed_parts.get(key)
        if cached is not None and torch.equal(cached[0], chunk):
            return cached[1:]
        excluded = None
        if exclude is not None:  # a user's training items: in the catalogue, all of them
            rows, cols = exclude.rows(chunk)
            cat = self.model.catalogue
            cols = cols if cat is None else cat.position[cols]
            excluded = rows * self.model.item_rows + cols
        relevance = next(iter(self._accs.values())).relevance(chunk, truth, exclude)
        self._fixed_parts[key] = (chunk.clone(), excluded, relevance)
        return excluded, relevance

    def on_validation_epoch_end(self) -> None:
        key = f"ndcg_at_{self.k}"
        values = {j: acc.result()[key] for j, acc in self._accs.items()}
        if not values:
            return
        vector = torch.tensor([values[j] for j in sorted(values)], device=self.device)
        vector = self.trainer.strategy.reduce(vector, reduce_op="mean")  # the same on every rank
        epoch = self.current_epoch + 1
        for j, value in zip(sorted(values), vector.tolist(), strict=True):
            self.log(f"select/{self.labels[j]}/{key}", value, sync_dist=False)
            best = self.best[j]
            best["curve"] = [*best.get("curve", []), value]
            if value > best["val"]:
                best.update(val=value, epoch=epoch, state=self.model.state_of(j))
            if value > self._bar[j] + self.min_delta:  # as Lightning's EarlyStopping counts
                self._bar[j], self._waits[j] = value, 0
            else:
                self._waits[j] += 1
        self.log(f"val/{key}", float(vector.max()), prog_bar=True, sync_dist=False)
        # what the running candidates' validation adds to the epoch, as a plain run logs it
        seconds = time.perf_counter() - self._val_started
        self.log("time/validation_seconds", seconds, sync_dist=False)
        # done after `patience` epochs without a better value, as Lightning's EarlyStopping
        waits = self._waits
        self.alive = [j for j in self.alive if waits[j] == 0 or waits[j] < self.patience]
        leader = max([self.best[j]["val"] for j in self.alive], default=0.0)
        if self.reference:  # an earlier stage's candidate, at this epoch, trained on these batches
            leader = max(leader, max(self.reference[:epoch]))
        if epoch > max(2 * self.patience, 6):  # early epochs rank candidates poorly (measured)
            floor = self.prune * leader
            self.alive = [j for j in self.alive if waits[j] == 0 or self.best[j]["val"] >= floor]
        if not self.alive:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        return adam(self.model.parameters(), self.lr, self.lr_decay)  # each element on its own
