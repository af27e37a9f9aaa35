"""The report's charts (matplotlib, headless): ranking curves, hit rate by item popularity and
learning curves, each saved as a PNG."""

from __future__ import annotations

from pathlib import Path

LABELS = {"precision": "P", "recall": "R", "ndcg": "NDCG", "map": "MAP", "hit_rate": "HR"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def plot_curves(curve_model, curve_base, max_k: int, path: Path) -> None:
    ks = list(range(1, max_k + 1))
    fig, axes = _pyplot().subplots(1, 3, figsize=(12, 3.5))
    for ax, name in zip(axes, ("precision", "recall", "ndcg"), strict=True):
        ax.plot(ks, [curve_model[f"{name}_at_{k}"] for k in ks], label="model")
        ax.plot(ks, [curve_base[f"{name}_at_{k}"] for k in ks], label="popularity", ls="--")
        ax.set_xlabel("K")
        ax.set_title(f"{LABELS[name]}@K")
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_buckets(buckets: dict, path: Path) -> None:
    names = list(buckets["model"])
    fig, ax = _pyplot().subplots(figsize=(6, 3.5))
    for offset, who in ((-0.2, "model"), (0.2, "popularity")):
        rates = [buckets[who][n]["hit_rate"] for n in names]
        ax.bar([i + offset for i in range(len(names))], rates, width=0.4, label=who)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"hit rate@{buckets['k']}")
    ax.set_title("Hit rate by item popularity")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    _save(fig, path)


def plot_learning(histories: dict[str, list[tuple[int, float]]], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    # losses on one panel, the validation metric on another; x is the epoch (one value each)
    losses = [key for key in histories if key.endswith("/loss")]
    panels = [p for p in (losses, [key for key in histories if key not in losses]) if p]
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, keys in zip(axes[0], panels, strict=True):
        for key in keys:
            values = [v for _, v in histories[key]]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_values(view: dict, path: Path) -> None:
    """Each feature value's tower embedding offset on its two principal axes, coloured by its
    feature bias."""
    points, labels = view["points"], view["labels"]
    fig, ax = _pyplot().subplots(figsize=(7, 5))
    dots = ax.scatter(points[:, 0], points[:, 1], c=view["bias"], cmap="coolwarm")
    for (x, y), label in zip(points, labels, strict=True):
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    fig.colorbar(dots, ax=ax, label="feature bias")
    share = f"{view['explained']:.0%} of the variance"
    ax.set_title(f"{view['side'].capitalize()} tower: each feature value ({share})")
    ax.grid(alpha=0.3)
    _save(fig, path)
