"""A closed-form start for matrix factorization (``model.init=svd``): a truncated SVD of the
training matrix, scaled to be a sensible softmax, before any gradient step.

With item columns weighted by ``popularity ** -0.5`` (PureSVD with item normalisation), the
projection ``X V V^T`` of a user's history ranks about as well as implicit's ALS at its best on
``benchmark.py scale``'s data, and costs a few products of the sparse matrix with a thin dense
one: under 1 s at 5M rows, 4-5 s at 20M on two cores. Training then starts from there
instead of from noise.
"""

from __future__ import annotations

import warnings

import torch

from recmf.data.sparse import UserItems
from recmf.model.mf import Catalogue

ITEM_WEIGHT_EXPONENT = 0.5  # columns scaled by popularity ** -0.5 (0.3 and 0.6 ranked worse at 20M)
OVERSAMPLING, POWER_ITERATIONS = 16, 2  # randomized SVD (Halko et al.): extra columns, passes


def _csr(indptr, indices, values, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state", per process
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(indptr, indices, values, shape, check_invariants=False)


def truncated_svd(items: UserItems, n_items: int, rank: int, seed: int):
    """(P, V): V (n_items, rank) the top right singular vectors of the item-normalised binary
    matrix X D (X: ``items`` as a users x items 0/1 matrix, D = popularity ** -0.5), P = X V
    (n_users, rank) each user's history projected on them, so that P V^T is PureSVD's score.
    ``rank`` is at most min(n_users, n_items)."""
    n_users = items.n_users
    index = torch.int32 if max(n_users, n_items, len(items.indices)) < 2**31 else torch.int64
    cols = items.indices.to(index)  # int32 where it fits: the transpose's sort is the peak
    popularity = torch.bincount(cols, minlength=n_items).float()
    weight = popularity.clamp(min=1).pow(-ITEM_WEIGHT_EXPONENT)
    values = weight[cols]
    indptr = items.indptr.to(index)
    a = _csr(indptr, cols, values, (n_users, n_items))  # X D
    order = torch.sort(cols, stable=True).indices  # the transpose: item-major, users sorted
    rows = torch.repeat_interleave(torch.arange(n_users, dtype=index), items.indptr.diff())
    rows = rows[order]
    values_t = values[order]
    del order
    indptr_t = torch.zeros(n_items + 1, dtype=index)
    torch.cumsum(popularity.to(index), 0, out=indptr_t[1:])
    a_t = _csr(indptr_t, rows, values_t, (n_items, n_users))  # (X D)^T
    width = min(rank + OVERSAMPLING, n_users, n_items)
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(a @ torch.randn(n_items, width, generator=generator))
    for _ in range(POWER_ITERATIONS):  # sharpen the range towards the top singular vectors
        z, _ = torch.linalg.qr(a_t @ q)
        q, _ = torch.linalg.qr(a @ z)
    _, _, vh = torch.linalg.svd((a_t @ q).T, full_matrices=False)
    v = vh[:rank].T.contiguous()
    p = a @ (v / weight.unsqueeze(1))  # X V = (X D) (D^-1 V)
    return p, v


def softmax_scale(p: torch.Tensor, v: torch.Tensor, items: UserItems, seed: int) -> float:
    """The factor c for which softmax(c * P V^T) best predicts the training pairs ``items`` of a
    sample of users (Newton's method on the convex one-dimensional log-likelihood), the softmax
    over the items with a pair (a full softmax's catalogue: :class:`recmf.model.mf.Catalogue`)."""
    n_users = items.n_users
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(n_users, generator=generator)[:1024]
    chunks = [sample[s : s + 256] for s in range(0, len(sample), 256)]  # (256, n_items) buffers
    pairs = [items.rows(users) for users in chunks]  # the same every Newton step
    trained = Catalogue.of(torch.bincount(items.indices.long(), minlength=len(v)))
    if trained is not None:  # an item without a pair is out of training's softmax too
        v = trained.select(v, 0)
        pairs = [(rows, trained.position[cols]) for rows, cols in pairs]
    # the sample's scores, computed once when they fit in 64 MB (ml-latest-small: 0.38 -> 0.17 s)
    kept = [p[users] @ v.T for users in chunks] if len(sample) * len(v) <= 1 << 24 else None
    c = 1.0
    for _ in range(20):
        grad, hess, n = 0.0, 0.0, 0
        for j, (users, (rows, cols)) in enumerate(zip(chunks, pairs, strict=True)):
            if not len(rows):
                continue
            s = kept[j] if kept is not None else p[users] @ v.T
            prob = torch.softmax(c * s, dim=1)
            mean = (prob * s).sum(1)
            var = (prob * s * s).sum(1) - mean * mean
            grad += float((mean[rows] - s[rows, cols]).sum())  # d/dc of -log softmax
            hess += float(var[rows].sum())
            n += len(rows)
        if n == 0 or hess <= 0:
            break
        step = grad / hess
        c = max(c - step, c / 4)  # a damped Newton step; c stays positive
        if abs(step) < 1e-3 * c:
            break
    return c


@torch.no_grad()
def start_from_svd(model, items: UserItems, seed: int) -> dict:
    """Overwrite ``model``'s (a MatrixFactorization) embeddings with the scaled SVD of its
    training pairs ``items``; biases start at zero. Columns past the matrix's rank keep their
    random start. Returns what was done (rank, scale)."""
    n_users, n_items = model.n_users, model.n_items
    rank = min(model.latent_dim, n_users, n_items)
    p, v = truncated_svd(items, n_items, rank, seed)
    c = softmax_scale(p, v, items, seed)
    # split c between the sides so that their count-weighted squared norms match: the L2 term
    # (each row's square times its number of pairs) is then smallest for this product
    per_user = items.counts()
    per_item = torch.bincount(items.indices.long(), minlength=n_items)
    user_mass = float(per_user.double() @ p.double().pow(2).sum(1))
    item_mass = float(per_item.double() @ v.double().pow(2).sum(1))
    balance = (item_mass / user_mass) ** 0.25 if user_mass > 0 and item_mass > 0 else 1.0
    model.user_emb.weight[:, :rank] = p * (c**0.5 * balance)
    model.item_emb.weight[:, :rank] = v * (c**0.5 / balance)
    if model.use_bias:
        for table in (model.user_bias.weight, model.item_bias.weight, model.global_bias):
            table.zero_()
    return {"rank": rank, "scale": c}
