"""The model bundle: what serving needs, as npz + JSON, no pickle, and no interactions.

Weights, the id vocabulary, each item's training interaction count (the popularity ranking),
and ``meta.json`` (config, data snapshot, fold-in constants). The split a run was evaluated on
is kept apart, as a run artifact of its own (:mod:`recmf.eval.split_file`): wherever the model
goes, the training data does not go with it.

Loading needs numpy only (recommendation scores with numpy); :meth:`Bundle.to_model` builds the
torch :class:`~recmf.model.mf.MatrixFactorization` for evaluation, still without Lightning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recmf.data.interactions import Vocab
from recmf.errors import RecmfError

FORMAT = "recmf-bundle/2"  # 1 held the split; 2 holds item counts instead
_FILES = ("meta.json", "weights.npz", "vocab.npz", "popularity.npz")


class BundleError(RecmfError):
    """A bundle directory that is missing, incomplete, or not a recmf bundle."""


@dataclass
class Bundle:
    """Everything needed to score, evaluate and recommend without the store or the trainer."""

    meta: dict  # format, model hparams, loss, resolved config (secrets hidden), data snapshot
    weights: dict[str, np.ndarray]  # user_emb, item_emb and, with biases, *_bias
    vocab: Vocab
    item_count: np.ndarray  # (n_items,) int64: train + validation interactions per item
    # two towers only: the arrays that embed a new user or item from its features
    # (recmf.serve.cold); meta["encoders"] says how features become their input
    towers: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model, vocab: Vocab, split, meta: dict, encoders=None) -> Bundle:
        """A trained torch model, its vocabulary and its :class:`~recmf.data.split.Split` (only
        the per-item counts of its train and validation parts are kept); ``encoders`` (side ->
        :class:`~recmf.data.encoding.SideEncoder`) for a two-tower model."""
        weights, towers = model_arrays(model)
        seen = np.concatenate([split.train.item_idx, split.val.item_idx]).astype(np.int64)
        item_count = np.bincount(seen, minlength=vocab.n_items).astype(np.int64)
        meta = {"format": FORMAT, "hparams": model.hparams(), **meta}
        if towers:
            meta["encoders"] = {side: e.to_json() for side, e in (encoders or {}).items()}
        return cls(meta, weights, vocab, item_count, towers)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        np.savez(d / "weights.npz", **self.weights)
        v = self.vocab
        np.savez(
            d / "vocab.npz", user_ids=v.user_ids, item_ids=v.item_ids, item_titles=v.item_titles
        )
        np.savez(d / "popularity.npz", item_count=self.item_count)
        if self.towers:
            np.savez(d / "towers.npz", **self.towers)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Bundle:
        """Read a bundle; refuses anything that would need pickle to load."""
        d = Path(directory)
        _check_format(d)
        missing = [f for f in _FILES if not (d / f).is_file()]
        if missing:
            raise BundleError(
                f"{str(d)!r} is not a recmf model bundle: {', '.join(missing)} missing. Pass the "
                "`bundle` folder of a training run (or a run id) and retrain if it was deleted."
            )
        try:
            meta = json.loads((d / "meta.json").read_text())
            arrays = {}
            for name in ("weights", "vocab", "popularity", "towers"):
                if name == "towers" and not (d / "towers.npz").is_file():
                    continue  # only two-tower models have one
                with np.load(d / f"{name}.npz", allow_pickle=False) as z:
                    arrays[name] = {k: z[k] for k in z.files}
        except (ValueError, OSError, json.JSONDecodeError) as exc:
            raise BundleError(
                f"model bundle {str(d)!r} could not be read safely ({exc}); it may be corrupted or "
                "tampered with. Retrain, or point at another run's bundle."
            ) from None
        found = meta.get("format") if isinstance(meta, dict) else None
        if found != FORMAT:
            raise _format_error(d, found)
        v = arrays["vocab"]
        vocab = Vocab(v["user_ids"], v["item_ids"], v["item_titles"])
        item_count = arrays["popularity"].get("item_count")
        if item_count is None or item_count.shape != (vocab.n_items,):
            raise BundleError(
                f"model bundle {str(d)!r} has no item count per item in popularity.npz (expected "
                f"{vocab.n_items} counts); it may be corrupted. Retrain, or point at another run."
            )
        return cls(meta, arrays["weights"], vocab, item_count, arrays.get("towers", {}))

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


def model_arrays(model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(dot-product weights of every known user and item, tower arrays): a two-tower model
    exports both (:meth:`recmf.model.towers.TwoTower.export`), a plain one its state."""
    if hasattr(model, "export"):
        return model.export()
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return {k.removesuffix(".weight"): v.astype(np.float32) for k, v in state.items()}, {}


def _check_format(d: Path) -> None:
    """Refuse a bundle of another format before looking for its files (a version 1 bundle held
    the split and no item counts)."""
    try:
        found = json.loads((d / "meta.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return  # missing or unreadable: the checks that follow say so
    if found != FORMAT:
        raise _format_error(d, found)


def _format_error(d: Path, found) -> BundleError:
    return BundleError(
        f"{str(d)!r} has bundle format {found!r}, expected {FORMAT!r}; retrain with this "
        "version of recmf."
    )
