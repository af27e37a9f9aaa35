"""The split a run was trained and evaluated on, saved as its own run artifact (``split/``).

Kept apart from the model bundle so the served model carries no interactions: only evaluation
reads it. npz, loaded with ``allow_pickle=False``; row positions are those of the bundle's
vocabulary, so the file records the data digest and part sizes of its run, and
:meth:`SavedSplit.check_matches` refuses a split saved by a run on other data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmf.errors import RecmfError

FILE = "split.npz"
PARTS = ("train", "val", "test")


class SplitFileError(RecmfError):
    """A split file that is missing, unreadable, or not the one of the model evaluated."""


@dataclass
class SavedSplit:
    arrays: dict[str, np.ndarray]  # {part}_user, {part}_item (int32), {part}_rating (float32)
    data_digest: str  # of the data the run read ("" when not recorded)

    @classmethod
    def from_split(cls, split, data_digest: str | None) -> SavedSplit:
        """The row positions and ratings of a :class:`~recmf.data.split.Split`."""
        arrays = {}
        for part in PARTS:
            rows = getattr(split, part)
            arrays[f"{part}_user"] = rows.user_idx.astype(np.int32, copy=False)
            arrays[f"{part}_item"] = rows.item_idx.astype(np.int32, copy=False)
            arrays[f"{part}_rating"] = rows.rating.astype(np.float32, copy=False)
        return cls(arrays, data_digest or "")

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/split.npz``; returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / FILE, data_digest=np.array(self.data_digest), **self.arrays)
        return d

    @classmethod
    def load(cls, path: str | Path) -> SavedSplit:
        """Read a ``split.npz`` file, or the one in folder ``path``."""
        p = Path(path)
        file = p / FILE if p.is_dir() else p
        if not file.is_file():
            raise SplitFileError(
                f"no split file at {str(file)!r}. Pass split=<the split.npz of the training run> "
                "(its `split` artifact), or evaluate by run_id=<id>."
            )
        try:
            with np.load(file, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise SplitFileError(
                f"split file {str(file)!r} could not be read safely ({exc}); it may be corrupted. "
                "Pass the split.npz of the training run."
            ) from None
        wanted = [f"{p}_{c}" for p in PARTS for c in ("user", "item", "rating")]
        missing = [k for k in wanted if k not in arrays]
        if missing:
            raise SplitFileError(
                f"{str(file)!r} is not a recmf split file: {', '.join(missing)} missing. Pass the "
                "split.npz of the training run."
            )
        digest = str(arrays.pop("data_digest", ""))
        return cls({k: arrays[k] for k in wanted}, digest)

    def pairs(self, *parts: str) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated (user_idx, item_idx) of the named parts."""
        users = np.concatenate([self.arrays[f"{p}_user"] for p in parts]).astype(np.int64)
        items = np.concatenate([self.arrays[f"{p}_item"] for p in parts]).astype(np.int64)
        return users, items

    def check_matches(self, meta: dict, n_users: int, n_items: int, where: str) -> None:
        """Refuse a split of another run: its positions would index another vocabulary."""
        sizes = meta.get("split", {})
        got = {f"n_{p}": len(self.arrays[f"{p}_user"]) for p in PARTS}
        want = {k: sizes[k] for k in got if k in sizes}
        digest = meta.get("data_digest") or ""
        reasons = []
        if want and want != {k: got[k] for k in want}:
            reasons.append(f"its part sizes are {got}, the model's run had {want}")
        if digest and self.data_digest and digest != self.data_digest:
            reasons.append(f"its data digest is {self.data_digest}, the model's is {digest}")
        for part in PARTS:
            u, i = self.arrays[f"{part}_user"], self.arrays[f"{part}_item"]
            if len(u) and (u.max() >= n_users or i.max() >= n_items or min(u.min(), i.min()) < 0):
                reasons.append(f"its {part} rows fall outside the model's {n_users} x {n_items}")
                break
        if reasons:
            raise SplitFileError(
                f"the split {where} is not the one of the model evaluated ({'; '.join(reasons)}). "
                "Pass split=<the split.npz of the same training run>."
            )
