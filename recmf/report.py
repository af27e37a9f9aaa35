"""The performance report: a markdown page with the metrics table, curves and observations."""

from __future__ import annotations

from pathlib import Path

from recmf.metrics import METRICS

_LABELS = {"precision": "P", "recall": "R", "ndcg": "NDCG", "map": "MAP", "hit_rate": "HR"}


def metrics_table(model: dict[str, float], baseline: dict[str, float], ks: list[int]) -> str:
    """A plain-text table: one row per metric@k, model beside popularity."""
    lines = [f"{'metric':<14}{'model':>9}{'popularity':>12}"]
    for k in ks:
        for name in (*METRICS, "coverage"):
            key = f"{name}_at_{k}"
            label = f"{_LABELS.get(name, name)}@{k}"
            lines.append(f"{label:<14}{model[key]:>9.4f}{baseline[key]:>12.4f}")
    return "\n".join(lines)


def _plot_curves(curve_model, curve_base, max_k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    ks = list(range(1, max_k + 1))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, name in zip(axes, ("precision", "recall"), strict=True):
        ax.plot(ks, [curve_model[f"{name}_at_{k}"] for k in ks], label="model")
        ax.plot(ks, [curve_base[f"{name}_at_{k}"] for k in ks], label="popularity", ls="--")
        ax.set_xlabel("K")
        ax.set_title(f"{name.capitalize()}@K")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def observations(model: dict, baseline: dict, k: int, extra: dict) -> list[str]:
    """Short, factual remarks a reader checks first."""
    notes = []
    m, b = model[f"ndcg_at_{k}"], baseline[f"ndcg_at_{k}"]
    ratio = m / b if b > 0 else float("inf")
    verdict = "above" if m > b else "NOT above"
    notes.append(f"NDCG@{k} is {m:.4f}, {ratio:.2f}x the popularity baseline ({b:.4f}): {verdict}.")
    cm, cb = model[f"coverage_at_{k}"], baseline[f"coverage_at_{k}"]
    notes.append(f"Top-{k} lists cover {cm:.1%} of the catalogue (popularity: {cb:.1%}).")
    if extra.get("dropped_test"):
        notes.append(
            f"{extra['dropped_test']} test interactions with items never seen in training were "
            "dropped before evaluation."
        )
    notes.append(f"Averages are over {extra.get('n_eval_users', '?')} users with test items.")
    return notes


def write_report(
    directory: Path,
    *,
    run_id: str | None,
    meta: dict,
    model: dict[str, float],
    baseline: dict[str, float],
    ks: list[int],
    curve_model: dict[str, float],
    curve_base: dict[str, float],
    curve_k: int,
    extra: dict,
) -> Path:
    """Write ``report.md`` and ``pk_rk_curves.png`` into ``directory``; returns the markdown."""
    directory.mkdir(parents=True, exist_ok=True)
    _plot_curves(curve_model, curve_base, curve_k, directory / "pk_rk_curves.png")
    hp, data = meta.get("hparams", {}), meta.get("data", {})
    cfg_model = meta.get("config", {}).get("model", {})
    rows = ["| metric | model | popularity |", "|---|---|---|"]
    for k in ks:
        for name in (*METRICS, "coverage"):
            key = f"{name}_at_{k}"
            rows.append(
                f"| {_LABELS.get(name, name)}@{k} | {model[key]:.4f} | {baseline[key]:.4f} |"
            )
    for key in ("rmse", "mae"):
        if key in extra:
            rows.append(f"| {key.upper()} | {extra[key]:.4f} | |")
    k_main = 10 if 10 in ks else ks[0]
    lines = [
        f"# recmf performance report{f' — run {run_id}' if run_id else ''}",
        "",
        "## Model",
        f"Dot-product matrix factorization, loss `{meta.get('loss')}`, latent_dim "
        f"{hp.get('latent_dim')}, biases {hp.get('use_bias')}, {hp.get('n_users')} users x "
        f"{hp.get('n_items')} items; best epoch {meta.get('best_epoch')} ({meta.get('monitor')} "
        f"{meta.get('best_val', float('nan')):.4f}), refit on train+val: "
        f"{meta.get('refit')}.",
        "",
        "Hyperparameters: "
        + ", ".join(f"`{k}={v}`" for k, v in sorted(cfg_model.items()) if not isinstance(v, dict)),
        "",
        "## Data",
        f"Store `{data.get('url')}` schema `{data.get('schema')}`: {data.get('n_users')} users, "
        f"{data.get('n_items')} items, {data.get('n_interactions')} interactions, content hash "
        f"`{str(data.get('content_hash', ''))[:16]}`. Split (per-user temporal): "
        + ", ".join(f"{k} {v}" for k, v in meta.get("split", {}).items())
        + ".",
        "",
        "## Metrics (test split, train and validation items excluded)",
        *rows,
        "",
        "![Precision and recall at K](pk_rk_curves.png)",
        "",
        "## Observations",
        *[f"- {n}" for n in observations(model, baseline, k_main, extra)],
        "",
    ]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path
