"""Per-user item lists as CSR tensors: what evaluation masks and what it compares against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recmf.data.split import key_order


@dataclass(frozen=True)
class UserItems:
    """Items of each user in CSR form: ``indices[indptr[u]:indptr[u + 1]]`` are user u's items."""

    indptr: torch.Tensor  # (n_users + 1,) int64
    indices: torch.Tensor  # (nnz,) int32 or int64, item_idx sorted within each user
    weights: torch.Tensor | None = None  # (nnz,) or (nnz, k) float32 per pair, when weighted

    @classmethod
    def from_pairs(
        cls,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        n_users: int,
        weights: np.ndarray | None = None,
    ) -> UserItems:
        """Build from aligned (user, item) arrays; a repeated pair is kept once (max weight)."""
        u, i = np.asarray(user_idx), np.asarray(item_idx)
        order = key_order(u, i)  # np.lexsort's (user, item) order, in one sort
        u, i = u[order], i[order]
        w = None if weights is None else np.asarray(weights, dtype=np.float32)[order]
        if len(u):
            keep = np.ones(len(u), dtype=bool)
            keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
            if w is not None:
                w = np.maximum.reduceat(w, np.flatnonzero(keep))
            u, i = u[keep], i[keep]
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        return cls(
            torch.from_numpy(indptr),
            torch.from_numpy(np.ascontiguousarray(i)),  # int32 from the store: half the memory
            None if w is None else torch.from_numpy(w),
        )

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def counts(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def to(self, device: torch.device | str) -> UserItems:
        w = None if self.weights is None else self.weights.to(device)
        return UserItems(self.indptr.to(device), self.indices.to(device), w)

    def _positions(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.indptr[users]
        counts = self.indptr[users + 1] - start
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        first = torch.cumsum(counts, 0) - counts  # offset of each user's first pair in the output
        offsets = torch.arange(len(rows), device=users.device) - first[rows]
        return rows, start[rows] + offsets

    def rows(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened (row-in-batch, item) pairs of the given users, without a Python loop."""
        rows, pos = self._positions(users)
        return rows, self.indices[pos]

    def weighted_rows(self, users: torch.Tensor):
        """(row-in-batch, item, weight) of the given users; weight is None when unweighted."""
        rows, pos = self._positions(users)
        return rows, self.indices[pos], None if self.weights is None else self.weights[pos]
