"""A data set whose right answer is known: even users like even items, odd users odd items.

Each user has every item of their parity except the diagonal one (item u for user u), which is
withheld as validation and test: the only unseen item of the right parity, so a model that learnt
the structure ranks it first.
"""

import numpy as np

from recmf.data.interactions import Interactions, Vocab
from recmf.data.split import Split


def checkerboard(n: int = 20) -> Split:
    users, items = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    users, items = users.ravel(), items.ravel()
    liked = (users % 2) == (items % 2)
    diagonal = users == items
    vocab = Vocab(
        [f"U{u}" for u in range(n)], [f"I{i}" for i in range(n)], [f"Title {i}" for i in range(n)]
    )

    def part(mask):
        k = int(mask.sum())
        return Interactions(
            users[mask],
            items[mask],
            np.full(k, 4.0, np.float32),
            np.arange(k, dtype=np.int64),
            vocab,
        )

    held_out = part(liked & diagonal)
    return Split(part(liked & ~diagonal), held_out, held_out, 0, 0)
