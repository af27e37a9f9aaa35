"""The model bundle: weights, id vocabulary, config and the saved split, as npz + JSON, no pickle.

Loading needs numpy only (recommendation scores with numpy); :meth:`Bundle.to_model` builds the
torch :class:`~recmf.model.mf.MatrixFactorization` for evaluation, still without Lightning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmf.data.interactions import Vocab
from recmf.errors import RecmfError

FORMAT = "recmf-bundle/1"
_FILES = ("meta.json", "weights.npz", "vocab.npz", "split.npz")
_PARTS = ("train", "val", "test")


class BundleError(RecmfError):
    """A bundle directory that is missing, incomplete, or not a recmf bundle."""


@dataclass
class Bundle:
    """Everything needed to score, evaluate and recommend without the store or the trainer."""

    meta: dict  # format, model hparams, loss, resolved config (secrets hidden), data snapshot
    weights: dict[str, np.ndarray]  # user_emb, item_emb and, with biases, *_bias
    vocab: Vocab
    split: dict[str, np.ndarray]  # {part}_user, {part}_item (int32), {part}_rating (float32)

    @classmethod
    def from_model(cls, model, vocab: Vocab, split, meta: dict) -> Bundle:
        """A trained torch model, its vocabulary and its :class:`~recmf.data.split.Split`."""
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        weights = {k.removesuffix(".weight"): v.astype(np.float32) for k, v in state.items()}
        arrays = {}
        for part in _PARTS:
            rows = getattr(split, part)
            arrays[f"{part}_user"] = rows.user_idx.astype(np.int32, copy=False)
            arrays[f"{part}_item"] = rows.item_idx.astype(np.int32, copy=False)
            arrays[f"{part}_rating"] = rows.rating.astype(np.float32, copy=False)
        meta = {"format": FORMAT, "hparams": model.hparams(), **meta}
        return cls(meta, weights, vocab, arrays)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        np.savez(d / "weights.npz", **self.weights)
        v = self.vocab
        np.savez(
            d / "vocab.npz", user_ids=v.user_ids, item_ids=v.item_ids, item_titles=v.item_titles
        )
        np.savez(d / "split.npz", **self.split)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Bundle:
        """Read a bundle; refuses anything that would need pickle to load."""
        d = Path(directory)
        missing = [f for f in _FILES if not (d / f).is_file()]
        if missing:
            raise BundleError(
                f"{str(d)!r} is not a recmf model bundle: {', '.join(missing)} missing. Pass the "
                "`bundle` folder of a training run (or a run id) and retrain if it was deleted."
            )
        try:
            meta = json.loads((d / "meta.json").read_text())
            arrays = {}
            for name in ("weights", "vocab", "split"):
                with np.load(d / f"{name}.npz", allow_pickle=False) as z:
                    arrays[name] = {k: z[k] for k in z.files}
        except (ValueError, OSError, json.JSONDecodeError) as exc:
            raise BundleError(
                f"model bundle {str(d)!r} could not be read safely ({exc}); it may be corrupted or "
                "tampered with. Retrain, or point at another run's bundle."
            ) from None
        if meta.get("format") != FORMAT:
            raise BundleError(
                f"{str(d)!r} has bundle format {meta.get('format')!r}, expected {FORMAT!r}; "
                "retrain with this version of recmf."
            )
        v = arrays["vocab"]
        vocab = Vocab(v["user_ids"], v["item_ids"], v["item_titles"])
        return cls(meta, arrays["weights"], vocab, arrays["split"])

    def pairs(self, *parts: str) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated (user_idx, item_idx) of the named split parts."""
        users = np.concatenate([self.split[f"{p}_user"] for p in parts]).astype(np.int64)
        items = np.concatenate([self.split[f"{p}_item"] for p in parts]).astype(np.int64)
        return users, items

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of the given users against every item with numpy, shape (B, n_items)."""
        w = self.weights
        scores = w["user_emb"][user_idx] @ w["item_emb"].T
        if "item_bias" in w:
            scores += w["item_bias"].T + w["user_bias"][user_idx] + w["global_bias"]
        return scores

    def to_model(self):
        """The torch model with these weights (imports torch, not Lightning)."""
        import torch

        from recmf.model.mf import MatrixFactorization

        model = MatrixFactorization(**self.meta["hparams"])
        state = {
            (k if k == "global_bias" else f"{k}.weight"): torch.from_numpy(np.array(v))
            for k, v in self.weights.items()
        }
        model.load_state_dict(state)
        return model.eval()
