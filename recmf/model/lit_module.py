"""Lightning wrapper: the training step, validation NDCG@k per epoch, the optimizer."""

from __future__ import annotations

import time

import lightning as L
import torch

from recmf.eval.ranking import MetricAccumulator, topk_chunks
from recmf.model import losses
from recmf.model.mf import Catalogue, MatrixFactorization


class MFLitModule(L.LightningModule):
    """Trains a :class:`MatrixFactorization` with one of :data:`recmf.model.losses.LOSSES`.

    It reads its batches and nothing else: the data module places them on the device, and each
    validation batch carries the users to rank, the items to exclude, the truth, and (on the
    first batch) the validation ratings for ``val/rmse`` (see
    :class:`recmf.data.batches.ValUsers`). It never configures nor reads ``trainer.datamodule``.

    Args:
        model: The torch model (kept apart from Lightning so it loads without it).
        loss: ``softmax`` (user-batched, full catalogue), ``bpr``, ``bce`` or ``mse``.
        lr: Adam learning rate.
        reg: L2 penalty on the embedding rows a step touches, per positive pair.
        bias_reg: L2 penalty on the user and item biases a step touches, per positive pair
            (with two towers, the feature biases too: a features-only side has no id bias).
        feature_reg: L2 penalty on the tower outputs of the rows a step touches, per positive
            pair (two towers only: :meth:`recmf.model.towers.TwoTower.tower_norms`).
        lr_decay: Multiplies the learning rate after every epoch (1.0 keeps it constant).
        k: Cut-off of the validation metrics; ``val/ndcg_at_{k}`` drives early stopping.
        log_prefix: Namespace of the logged training loss (``train/loss``, ``refit/loss``).
        catalogue: The items the full softmax runs over (a matrix factorization's, with
            biases), pinned in ``model`` already (:class:`recmf.model.mf.Catalogue`); None: all.
    """

    def __init__(
        self,
        model: MatrixFactorization,
        loss: str,
        lr: float,
        reg: float,
        k: int,
        bias_reg: float = 0.0,
        lr_decay: float = 1.0,
        log_prefix: str = "train",
        feature_reg: float = 0.0,
        catalogue: Catalogue | None = None,
    ):
        super().__init__()
        if loss not in losses.LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {losses.LOSSES}")
        self.model, self.loss_name, self.lr, self.reg, self.k = model, loss, lr, reg, k
        self.bias_reg = bias_reg if model.use_bias else 0.0
        self.feature_reg = feature_reg if hasattr(model, "tower_norms") else 0.0
        self.lr_decay = lr_decay
        self.log_prefix = log_prefix
        self.catalogue = catalogue
        self.monitor, self.monitor_mode = self.monitor_for(loss, k)
        self._val_acc: MetricAccumulator | None = None
        self._val_rmse: torch.Tensor | None = None

    @staticmethod
    def monitor_for(loss: str, k: int) -> tuple[str, str]:
        """The validation metric that selects the epoch, and whether higher is better."""
        # rating prediction is judged by RMSE, ranking losses by NDCG@k
        return ("val/rmse", "min") if loss == "mse" else (f"val/ndcg_at_{k}", "max")

    def _l2(self, users: torch.Tensor, items: torch.Tensor, n_pairs: int) -> torch.Tensor:
        m, penalty = self.model, torch.zeros((), device=self.device)
        if self.reg:
            penalty = self.reg * (m.user_emb(users).pow(2).sum() + m.item_emb(items).pow(2).sum())
        if self.bias_reg:
            biases = m.user_bias(users).pow(2).sum() + m.item_bias(items).pow(2).sum()
            if hasattr(m, "feature_bias_norms"):
                biases = biases + m.feature_bias_norms(users, items)
            penalty = penalty + self.bias_reg * biases
        if self.feature_reg:
            penalty = penalty + self.feature_reg * m.tower_norms(users, items)
        return penalty / n_pairs

    def _bias_l2_counted(self, users: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        """:meth:`_l2`'s bias part of the pairs (``users[rows]``, ``cols``) of a matrix
        factorization, as each bias's square times its number of pairs: the same penalty without
        gathering (and scattering the gradient of) one row per pair (the embeddings' part is the
        ``reg`` of :func:`recmf.model.losses.full_softmax_loss`)."""
        m = self.model
        per_user = torch.bincount(rows, minlength=len(users)).to(m.item_emb.weight.dtype)
        per_item = torch.bincount(cols, minlength=m.n_items).to(per_user.dtype)
        penalty = self.bias_reg * (
            per_user @ m.user_bias(users).view(-1).pow(2)
            + per_item @ m.item_bias.weight.view(-1).pow(2)
        )
        return penalty / len(rows)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.model
        if self.loss_name == "softmax":
            users, rows, cols = batch["users"], batch["rows"], batch["cols"]
            towers = hasattr(m, "tower_norms")
            reg = None if towers or not self.reg else self.reg  # an MF's L2 inside the loss
            u, bu, v, bi = m.score_parts(users)
            items, cat = cols, self.catalogue
            if cat is not None:  # the softmax over the trained items only
                v, bi, items = cat.select(v, 0), cat.select(bi, 0), cat.position[cols]
            loss = losses.full_softmax_loss(u, bu, v, bi, rows, items, batch["weights"], reg)
            if towers:
                loss = loss + self._l2(users[rows], cols, len(rows))
            elif self.bias_reg:
                loss = loss + self._bias_l2_counted(users, rows, cols)
            n = len(rows)
        else:
            users, items = batch["users"], batch["items"]
            pos = m(users, items)
            if self.loss_name == "mse":
                loss = losses.mse_loss(pos, batch["ratings"], batch["weights"])
                loss = loss + self._l2(users, items, len(users))
            else:
                neg_items = batch["negatives"]  # (B, n_neg)
                neg = m(users.unsqueeze(1).expand_as(neg_items), neg_items)
                fn = losses.bpr_loss if self.loss_name == "bpr" else losses.bce_loss
                loss = fn(pos, neg, batch["weights"]) + self._l2(users, items, len(users))
            n = len(users)
        log_epoch_mean(self, f"{self.log_prefix}/loss", loss, n, batch_idx)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_acc = MetricAccumulator([self.k], self.model.n_items, self.device)
        self._val_rmse = None
        self._val_started = time.perf_counter()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        exclude, truth = batch["exclude"], batch["truth"]
        # each user's items ranked: a per-user constant (the user bias) does not change that
        score, candidates = self.model.rank_scores, batch.get("candidates")
        if candidates is not None:  # rank only these items (the others can never be in the top)

            def score(users, rank_scores=self.model.rank_scores):
                return rank_scores(users).masked_fill(~candidates, float("-inf"))

        for chunk, top, _ in topk_chunks(score, batch["users"], exclude, self.k):
            self._val_acc.add(chunk, top, truth, exclude)
        if self.loss_name == "mse" and batch["ratings"] is not None:
            users, items, ratings = batch["ratings"]  # all of validation, on the first batch
            if len(ratings):
                self._val_rmse = (self.model(users, items) - ratings).pow(2).mean().sqrt()

    def on_validation_epoch_end(self) -> None:
        result = self._val_acc.result()
        for name in ("ndcg", "precision", "recall"):
            key = f"{name}_at_{self.k}"
            self.log(f"val/{key}", result[key], prog_bar=name == "ndcg", sync_dist=True)
        if self._val_rmse is not None:
            self.log("val/rmse", self._val_rmse, prog_bar=True, sync_dist=True)
            self._val_rmse = None
        # what validation adds to an epoch (benchmark.py scale counts training time without it)
        seconds = time.perf_counter() - self._val_started
        self.log("time/validation_seconds", seconds, sync_dist=True)

    def configure_optimizers(self):
        return adam(self.model.parameters(), self.lr, self.lr_decay)


def log_epoch_mean(module: L.LightningModule, name: str, value, n: int, batch_idx: int) -> None:
    """``module.log(name, ...)`` of the epoch's mean of ``value`` (weighted by ``n``, as
    Lightning's ``on_epoch`` mean), summed here and logged once, at the epoch's last step: a
    ``log`` call every step was ~1 ms, a tenth of a small data set's softmax step."""
    total = value.detach() * n
    if batch_idx > 0:
        total, n = total + module._epoch_sum, n + module._epoch_n
    module._epoch_sum, module._epoch_n = total, n
    if batch_idx + 1 >= module.trainer.num_training_batches:  # inf: no length, never logged
        # sync_dist: the mean over DDP ranks (a no-op in one process)
        module.log(name, total / n, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)


def adam(parameters, lr: float, lr_decay: float):
    """Adam, with the learning rate multiplied by ``lr_decay`` after every epoch unless it is 1
    (what ``configure_optimizers`` returns)."""
    # fused: one kernel per table; at 20M rows a step's update went from 35 to 7 ms
    optimizer = torch.optim.Adam(parameters, lr=lr, fused=True)
    if lr_decay == 1.0:
        return optimizer
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay)
    return {"optimizer": optimizer, "lr_scheduler": schedule}
