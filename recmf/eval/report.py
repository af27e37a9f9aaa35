"""The performance report: a markdown page and a self-contained HTML page with the metrics
table, ranking curves, hit rate by item popularity, learning curves and observations.

The HTML page carries its images as ``data:`` URIs and its CSS inline, so the one file opens
anywhere (an MLflow artifact view, a mail attachment) with no network and no JavaScript.
"""

from __future__ import annotations

import base64
import html
import math
import re
from numbers import Integral
from pathlib import Path

import numpy as np

from recmf.eval.metrics import METRICS
from recmf.eval.report_plots import LABELS as _LABELS
from recmf.eval.report_plots import plot_buckets, plot_curves, plot_learning, plot_values

CURVES_PNG = "ranking_curves.png"
TOWER_TEXT = (
    "For each value of the {side}s' categorical and multi features, the {side} tower's embedding "
    "of one {side} with that value and nothing else, minus that of one with no known feature: "
    "what the value adds. Shown on its two principal axes (values the model treats alike lie "
    "close), coloured by the value's feature bias (what it adds to every score); the table "
    "lists the biases, highest first. Any {side} the model never trained on is embedded from "
    "these."
)
BUCKETS_PNG = "bucket_hit_rate.png"
LEARNING_PNG = "learning_curves.png"
BUCKET_DEFINITION = (
    "Items are ranked by their train + validation interaction count (the counts the popularity "
    "baseline ranks by). Head is the most popular items that together hold the first third of "
    "those interactions, torso the next third, tail the rest, with items never seen in training. "
    "Hit rate@{k} of a bucket: among the test (user, item) pairs whose item is in that bucket, "
    "the share found in that user's top {k} (train and validation items excluded)."
)
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def metrics_table(model: dict[str, float], baseline: dict[str, float], ks: list[int]) -> str:
    """A plain-text table: one row per metric@k, model beside popularity."""
    lines = [f"{'metric':<14}{'model':>9}{'popularity':>12}"]
    for k in ks:
        for name in (*METRICS, "coverage"):
            key = f"{name}_at_{k}"
            label = f"{_LABELS.get(name, name)}@{k}"
            lines.append(f"{label:<14}{model[key]:>9.4f}{baseline[key]:>12.4f}")
    return "\n".join(lines)


def _metric_rows(model: dict, baseline: dict, ks: list[int], extra: dict) -> list[list[str]]:
    rows = [
        [f"{_LABELS.get(name, name)}@{k}", f"{model[key]:.4f}", f"{baseline[key]:.4f}"]
        for k in ks
        for name in (*METRICS, "coverage")
        for key in [f"{name}_at_{k}"]
    ]
    rows += [[key.upper(), f"{extra[key]:.4f}", ""] for key in ("rmse", "mae") if key in extra]
    return rows


def _bucket_rows(buckets: dict) -> list[list[str]]:
    def rate(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.4f}"

    model, base = buckets["model"], buckets["popularity"]
    return [
        [name, str(m["n_items"]), str(m["n_pairs"]), rate(m["hit_rate"]), rate(b["hit_rate"])]
        for name, m in model.items()
        for b in [base[name]]
    ]


def observations(model: dict, baseline: dict, k: int, extra: dict) -> list[str]:
    """Short, factual remarks a reader checks first."""
    notes = [_versus_baseline(model[f"ndcg_at_{k}"], baseline[f"ndcg_at_{k}"], k)]
    cm, cb = model[f"coverage_at_{k}"], baseline[f"coverage_at_{k}"]
    notes.append(f"Top-{k} lists cover {cm:.1%} of the catalogue (popularity: {cb:.1%}).")
    if extra.get("dropped_test"):
        notes.append(
            f"{_count(extra['dropped_test'])} test interactions with items never seen in training "
            "were dropped before evaluation."
        )
    notes.append(f"Averages are over {_count(extra.get('n_eval_users'))} users with test items.")
    return notes


def _versus_baseline(m: float, b: float, k: int) -> str:
    """One sentence comparing the model's NDCG@k with the popularity baseline's."""
    if m > b:
        if b > 0:
            return f"NDCG@{k} {m:.4f} is {m / b:.2f}x the popularity baseline's {b:.4f}."
        return f"NDCG@{k} {m:.4f} is above the popularity baseline's {b:.4f}."
    if m == b:
        return (
            f"NDCG@{k} {m:.4f} equals the popularity baseline's: the model ranks no better than "
            "recommending the most popular items."
        )
    share = f", {m / b:.2f}x it" if b > 0 and not math.isnan(m) else ""
    return (
        f"NDCG@{k} {m:.4f} is not above the popularity baseline's {b:.4f}{share}: the model "
        "ranks worse than recommending the most popular items."
    )


def _count(value: object) -> str:
    """An integer with thousands separators (``39,122``); ``?`` when unknown."""
    return f"{value:,}" if isinstance(value, Integral) and not isinstance(value, bool) else "?"


# Split.sizes() keys, in reading order, and the words each count is shown with.
_SPLIT_WORDS = {"n_train": "training interactions", "n_val": "validation", "n_test": "test"}
_DROPPED_WORDS = {"dropped_val": "validation", "dropped_test": "test"}


def _split_sentence(split: dict) -> str:
    """``Split.sizes()`` as words: "39,122 training interactions, 9,871 validation, ...; 0 test
    interactions dropped because their item was never trained on"."""
    sizes = [f"{_count(split[key])} {words}" for key, words in _SPLIT_WORDS.items() if key in split]
    dropped = [
        f"{_count(split[key])} {words}" for key, words in _DROPPED_WORDS.items() if key in split
    ]
    text = ", ".join(sizes)
    if dropped:
        text += f"; {' and '.join(dropped)} interactions dropped because their item was never "
        text += "trained on"
    return text


def _split_kind(meta: dict) -> str:
    """How the run held out its rows: ``by time``, or ``at random, seed 42`` (split=random)."""
    config = meta.get("config", {})
    if config.get("split", {}).get("kind") == "random":
        return f"at random, seed {config.get('seed')}"
    return "by time"


def _validated_on(meta: dict) -> str:
    """``, over a sample of N validation users`` when the run validated on one (val_users)."""
    n = meta.get("config", {}).get("val_users") or 0
    return f", over a sample of {_count(n)} validation users (`val_users`)" if n > 0 else ""


def _summary(run_id: str | None, meta: dict) -> tuple[str, list[str]]:
    """The title and the model and data paragraphs, in markdown's inline ``code`` only."""
    hp, data = meta.get("hparams", {}), meta.get("data", {})
    cfg_model = meta.get("config", {}).get("model", {})
    params = sorted((k, v) for k, v in cfg_model.items() if not isinstance(v, dict))
    split = _split_sentence(meta.get("split", {}))
    paragraphs = [
        f"Dot-product matrix factorization, loss `{meta.get('loss')}`, latent_dim "
        f"{hp.get('latent_dim')}, biases {hp.get('use_bias')}, {hp.get('n_users')} users x "
        f"{hp.get('n_items')} items; best epoch {meta.get('best_epoch')} ({meta.get('monitor')} "
        f"{meta.get('best_val', float('nan')):.4f}{_validated_on(meta)}), refit on train+val: "
        f"{meta.get('refit')}.",
        "Hyperparameters: " + ", ".join(f"`{k}={v}`" for k, v in params),
        f"Store `{data.get('url')}` schema `{data.get('schema')}`: {_count(data.get('n_users'))} "
        f"users, {_count(data.get('n_items'))} items, {_count(data.get('n_interactions'))} "
        f"interactions, content hash `{str(data.get('content_hash', ''))[:16]}`."
        + (f" Split (per user, {_split_kind(meta)}): {split}." if split else ""),
    ]
    return f"recmf performance report{f' — run {run_id}' if run_id else ''}", paragraphs


def _coverage_note(model: dict, baseline: dict, ks: list[int]) -> str:
    parts = [
        f"@{k} {model[f'coverage_at_{k}']:.1%} ({baseline[f'coverage_at_{k}']:.1%})" for k in ks
    ]
    return "Catalogue coverage (share of items in any top-K list), model (popularity): " + (
        ", ".join(parts) + "."
    )


# The page as blocks, rendered twice: ("h1"|"h2"|"p", text), ("table", id, header, rows),
# ("img", file name, alt), ("ul", items). Text is markdown with inline `code` only.
Block = tuple


def _markdown(blocks: list[Block]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind == "p":
            out.append(args[0])
        elif kind == "table":
            _, header, rows = args
            out.append("\n".join(f"| {' | '.join(r)} |" for r in [header, ["---"] * len(header)]))
            out[-1] += "".join(f"\n| {' | '.join(r)} |" for r in rows)
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
        else:
            out.append("\n".join(f"- {item}" for item in args[0]))
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Markdown-ish text as HTML: escaped, `code` spans as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


def _html(blocks: list[Block], title: str, directory: Path) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{_inline(args[0])}</{kind}>")
        elif kind == "table":
            table_id, header, rows = args
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>\n" for r in rows
            )
            out.append(f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n')
            out[-1] += f"{body}</tbody>\n</table>"
        elif kind == "img":  # inline, so the page is one self-contained file
            data = base64.b64encode((directory / args[0]).read_bytes()).decode("ascii")
            alt = html.escape(args[1])
            out.append(f'<p><img alt="{alt}" src="data:image/png;base64,{data}"></p>')
        else:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in args[0]) + "</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(out)
        + "\n</body>\n</html>\n"
    )


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
    buckets: dict | None = None,
    histories: dict[str, list[tuple[int, float]]] | None = None,
    towers: list[dict] | None = None,
) -> Path:
    """Write ``report.md``, ``report.html`` and their PNGs into ``directory``.

    Args:
        buckets: ``{"k": k, "model": ..., "popularity": ...}``, each a result of
            :func:`recmf.eval.ranking.bucket_hit_rates`; None leaves the section out.
        histories: ``{metric: [(step, value), ...]}`` of the training run (see
            :func:`recmf.tracking.metric_histories`); None when there is no run (a bundle folder).
        towers: per side of a two-tower model, :func:`recmf.serve.explain.value_map`.

    Returns:
        The markdown page; ``report.html`` lies beside it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    title, (model_text, params_text, data_text) = _summary(run_id, meta)
    blocks: list[Block] = [("h1", title), ("h2", "Model"), ("p", model_text), ("p", params_text)]
    blocks += [("h2", "Data"), ("p", data_text)]
    blocks += [("h2", "Metrics (test split, train and validation items excluded)")]
    rows = _metric_rows(model, baseline, ks, extra)
    blocks += [("table", "metrics", ["metric", "model", "popularity"], rows)]
    blocks += [("p", _coverage_note(model, baseline, ks))]
    plot_curves(curve_model, curve_base, curve_k, directory / CURVES_PNG)
    alt = f"Precision, recall and NDCG at K = 1..{curve_k}, model and popularity"
    blocks += [("img", CURVES_PNG, alt)]
    if buckets is not None:
        k = buckets["k"]
        header = ["bucket", "items", "test pairs", f"model HR@{k}", f"popularity HR@{k}"]
        plot_buckets(buckets, directory / BUCKETS_PNG)
        blocks += [("h2", "Hit rate by item popularity"), ("p", BUCKET_DEFINITION.format(k=k))]
        blocks += [("table", "buckets", header, _bucket_rows(buckets))]
        blocks += [("img", BUCKETS_PNG, f"Hit rate@{k} by item popularity bucket")]
    blocks += [("h2", "Learning curves")]
    if histories:
        plot_learning(histories, directory / LEARNING_PNG)
        keys = ", ".join(f"`{key}`" for key in histories)
        blocks += [("p", f"Per epoch, from the run's MLflow history: {keys}.")]
        blocks += [("img", LEARNING_PNG, "Learning curves")]
    else:
        why = "the model came from a bundle folder, with no training run to read them from"
        if histories is not None:
            why = "the run has no per-epoch metrics logged"
        blocks += [("p", f"No learning curves are available: {why}.")]
    for view in towers or []:
        side, png = view["side"], f"{view['side']}_tower_values.png"
        plot_values(view, directory / png)
        blocks += [("h2", f"What the {side} tower learned"), ("p", TOWER_TEXT.format(side=side))]
        order = np.argsort(-np.asarray(view["bias"]))
        rows = [[view["labels"][i], f"{view['bias'][i]:+.3f}"] for i in order]
        blocks += [("table", f"{side}_values", ["value", "feature bias"], rows)]
        blocks += [("img", png, f"{side} tower embedding of each feature value, 2-D")]
    k_main = 10 if 10 in ks else ks[0]
    blocks += [("h2", "Observations"), ("ul", observations(model, baseline, k_main, extra))]
    (directory / "report.html").write_text(_html(blocks, title, directory), encoding="utf-8")
    path = directory / "report.md"
    path.write_text(_markdown(blocks))
    return path
