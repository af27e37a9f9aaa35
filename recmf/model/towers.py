"""Two towers: each side's embedding from its id *and* its features, the score a dot product.

``v_i = e_i + g(x_i)`` and ``b_i = c_i + w . x_i``: an id embedding ``e_i`` and bias ``c_i``
(optional) plus an MLP ``g`` and a linear bias over the side's encoded features ``x_i``
(:class:`recmf.data.encoding.SideEncoder`); users alike. ``layers=[]`` makes ``g`` linear.
During training the id part of each row is dropped with probability ``id_dropout`` (a fresh
draw every step), so the feature part learns to stand alone: that is what scores an item or a
user the model never trained on, from its features.

Once trained, :meth:`TwoTower.export` gives the plain dot-product weights of every known user
and item (what :class:`~recmf.model.mf.MatrixFactorization`, evaluation and serving use as
they are) and the tower arrays that score new ones (:mod:`recmf.serve.cold`, numpy).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recmf.model.mf import MatrixFactorization

SIDES = ("user", "item")


def _mlp(width_in: int, layers: list[int], width_out: int) -> nn.Sequential:
    sizes = [width_in, *layers, width_out]
    modules: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        modules.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            modules.append(nn.ReLU())
    last = modules[-1]
    nn.init.normal_(last.weight, std=0.01)  # starts near the id-only model
    nn.init.zeros_(last.bias)
    return nn.Sequential(*modules)


class TwoTower(MatrixFactorization):
    """score(u, i) = <p_u + g_u(x_u), q_i + g_i(x_i)> + biases (see the module docstring).

    Args:
        n_users, n_items, latent_dim, use_bias, init_std: as for MatrixFactorization.
        user_x: (n_users, w_u) encoded user features, or None (no user tower).
        item_x: (n_items, w_i) encoded item features, or None.
        id_embeddings: Keep the id embeddings and id biases (False: a side with features is
            embedded from them alone; a side without keeps its ids).
        user_layers, item_layers: Hidden widths of each tower's MLP ([]: linear).
        id_dropout: Probability of dropping a row's id part in a training step.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        latent_dim: int,
        user_x: np.ndarray | None,
        item_x: np.ndarray | None,
        use_bias: bool = True,
        init_std: float = 0.1,
        id_embeddings: bool = True,
        user_layers: list[int] | tuple[int, ...] = (),
        item_layers: list[int] | tuple[int, ...] = (),
        id_dropout: float = 0.0,
    ):
        super().__init__(n_users, n_items, latent_dim, use_bias=use_bias, init_std=init_std)
        self.id_embeddings, self.id_dropout = id_embeddings, float(id_dropout)
        self.layers = {"user": list(user_layers), "item": list(item_layers)}
        self.towers = nn.ModuleDict()
        self.feature_bias = nn.ModuleDict()
        for side, x, n in (("user", user_x, n_users), ("item", item_x, n_items)):
            x = np.zeros((n, 0), np.float32) if x is None else np.asarray(x, np.float32)
            self.register_buffer(f"{side}_x", torch.from_numpy(x.copy()), persistent=False)
            if x.shape[1]:
                self.towers[side] = _mlp(x.shape[1], self.layers[side], latent_dim)
                if use_bias:
                    self.feature_bias[side] = nn.Linear(x.shape[1], 1)
                    nn.init.zeros_(self.feature_bias[side].weight)
                    nn.init.zeros_(self.feature_bias[side].bias)
                if not id_embeddings:  # this side from its features alone
                    for table in self._id_tables(side):
                        nn.init.zeros_(table.weight)
                        table.weight.requires_grad_(False)

    def _id_tables(self, side: str) -> list[nn.Embedding]:
        if side == "user":
            return [self.user_emb] + ([self.user_bias] if self.use_bias else [])
        return [self.item_emb] + ([self.item_bias] if self.use_bias else [])

    def _side(self, side: str, idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors, biases) of rows ``idx`` of a side (all rows when None)."""
        emb = self.user_emb if side == "user" else self.item_emb
        vec = emb.weight if idx is None else emb(idx)
        bias = None
        if self.use_bias:
            table = self.user_bias if side == "user" else self.item_bias
            bias = (table.weight if idx is None else table(idx)).squeeze(-1)
        if self.training and self.id_dropout > 0 and self.id_embeddings and side in self.towers:
            keep = (torch.rand(vec.shape[0], 1, device=vec.device) >= self.id_dropout).to(vec)
            vec = vec * keep
            bias = bias * keep.squeeze(-1) if bias is not None else None
        if side in self.towers:
            x = getattr(self, f"{side}_x")
            x = x if idx is None else x[idx]
            vec = vec + self.towers[side](x)
            if side in self.feature_bias:
                bias = bias + self.feature_bias[side](x).squeeze(-1)
        return vec, bias

    def tower_norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The summed squares of the tower outputs of rows ``users`` and ``items`` (what
        ``feature_reg`` penalises, as ``reg`` does the id rows)."""
        total = torch.zeros((), device=self.global_bias.device)
        for side, idx in (("user", users), ("item", items)):
            if side in self.towers:
                total = total + self.towers[side](getattr(self, f"{side}_x")[idx]).pow(2).sum()
        return total

    def feature_bias_norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The summed squares of the feature biases of rows ``users`` and ``items`` (what
        ``bias_reg`` penalises beside the id biases)."""
        total = torch.zeros((), device=self.global_bias.device)
        for side, idx in (("user", users), ("item", items)):
            if side in self.feature_bias:
                x = getattr(self, f"{side}_x")[idx]
                total = total + self.feature_bias[side](x).pow(2).sum()
        return total

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        shape = user_idx.shape
        u, bu = self._side("user", user_idx.reshape(-1))
        i, bi = self._side("item", item_idx.reshape(-1))
        score = (u * i).sum(-1)
        if self.use_bias:
            score = score + bu + bi + self.global_bias
        return score.reshape(shape)

    def score_parts(self, user_idx: torch.Tensor):
        """As :meth:`recmf.model.mf.MatrixFactorization.score_parts`."""
        u, bu = self._side("user", user_idx)
        items, bi = self._side("item", None)
        if not self.use_bias:
            return u, None, items, None
        return u, bu + self.global_bias, items, bi

    @torch.no_grad()
    def export(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(the dot-product weights of every known user and item, as MatrixFactorization's
        state; the tower arrays for new ones, named ``<side>_w<k>``/``<side>_b<k>`` per
        layer and ``<side>_fw``/``<side>_fb`` for the feature bias)."""
        was = self.training
        self.eval()
        weights: dict[str, np.ndarray] = {}
        for side in SIDES:
            vec, bias = self._side(side, None)
            weights[f"{side}_emb"] = vec.cpu().numpy().astype(np.float32)
            if self.use_bias:
                weights[f"{side}_bias"] = bias.view(-1, 1).cpu().numpy().astype(np.float32)
        if self.use_bias:
            weights["global_bias"] = self.global_bias.detach().cpu().numpy().astype(np.float32)
        towers: dict[str, np.ndarray] = {}
        for side, tower in self.towers.items():
            linears = [m for m in tower if isinstance(m, nn.Linear)]
            for k, layer in enumerate(linears):
                towers[f"{side}_w{k}"] = layer.weight.cpu().numpy().astype(np.float32)
                towers[f"{side}_b{k}"] = layer.bias.cpu().numpy().astype(np.float32)
            if side in self.feature_bias:
                towers[f"{side}_fw"] = self.feature_bias[side].weight.cpu().numpy()[0]
                towers[f"{side}_fb"] = self.feature_bias[side].bias.cpu().numpy()
        self.train(was)
        return weights, towers

    def hparams(self) -> dict:
        """The plain model that scores known users and items from :meth:`export`'s weights."""
        return super().hparams()
