"""The report: a self-contained HTML page (checked in a real headless browser), the hit rate by
item popularity bucket against a Python loop, and one evaluate run that writes the page.
"""

import base64
import json
import math
import os
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from recmf.data.sparse import UserItems
from recmf.eval.metrics import METRICS
from recmf.eval.ranking import BUCKETS, bucket_hit_rates, popularity_buckets
from recmf.eval.report import write_report

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KS = [5, 10]
CURVE_K = 12
HISTORIES = {
    "train/loss": [(3, 2.5), (7, 2.1), (11, 1.9)],
    "val/ndcg_at_10": [(3, 0.10), (7, 0.14), (11, 0.15)],
    "refit/loss": [(3, 2.4), (7, 2.0), (11, 1.8)],
}


def _curve(scale: float) -> dict[str, float]:
    """Distinct, recognisable values for every metric@K, K = 1..CURVE_K."""
    names = (*METRICS, "coverage")
    return {
        f"{name}_at_{k}": round(scale * (j + 1) / 10 + k / 1000, 4)
        for j, name in enumerate(names)
        for k in range(1, CURVE_K + 1)
    }


def _buckets(k: int) -> dict:
    model = {
        "head": {"hit_rate": 0.5, "n_pairs": 40, "n_hits": 20, "n_items": 3},
        "torso": {"hit_rate": 0.25, "n_pairs": 32, "n_hits": 8, "n_items": 7},
        "tail": {"hit_rate": math.nan, "n_pairs": 0, "n_hits": 0, "n_items": 30},
    }
    base = {**model, "head": {**model["head"], "hit_rate": 0.625, "n_hits": 25}}
    return {"k": k, "model": model, "popularity": base}


def _write(
    directory: Path, histories=HISTORIES, run_id: str | None = "abc123", towers=None
) -> Path:
    curve_model, curve_base = _curve(0.5), _curve(0.25)
    wanted = {f"{m}_at_{k}" for m in (*METRICS, "coverage") for k in KS}
    meta = {
        "loss": "softmax",
        "hparams": {"latent_dim": 8, "use_bias": False, "n_users": 60, "n_items": 40},
        "data": {"url": "postgresql://bob:***@db.example/recs", "schema": "s", "n_users": 60},
        "split": {
            "n_train": 39122,
            "n_val": 9871,
            "n_test": 9870,
            "dropped_val": 0,
            "dropped_test": 2,
        },
        "best_epoch": 3,
        "monitor": "val/ndcg_at_10",
        "best_val": 0.15,
        "refit": True,
        "config": {"model": {"lr": 0.01, "weight_decay": 0.0}},
    }
    md = write_report(
        directory,
        run_id=run_id,
        meta=meta,
        model={k: v for k, v in curve_model.items() if k in wanted},
        baseline={k: v for k, v in curve_base.items() if k in wanted},
        ks=KS,
        curve_model=curve_model,
        curve_base=curve_base,
        curve_k=CURVE_K,
        extra={"n_eval_users": 55, "dropped_test": 2},
        buckets=_buckets(max(KS)),
        histories=histories,
        towers=towers,
    )
    return md.with_name("report.html")


def test_report_of_a_two_tower_model_shows_each_feature_values_place_and_bias(tmp_path):
    view = {
        "side": "item",
        "labels": ["Comedy", "Drama", "Horror"],
        "points": np.array([[1.0, 0.0], [-1.0, 0.1], [0.0, 2.0]]),
        "bias": np.array([0.1, 0.3, -0.2]),
        "explained": 0.9,
    }
    page = _parse(_write(tmp_path, towers=[view]))
    assert page.tables["item_values"] == [
        ["value", "feature bias"],
        ["Drama", "+0.300"],
        ["Comedy", "+0.100"],
        ["Horror", "-0.200"],
    ]
    assert (tmp_path / "item_tower_values.png").is_file() and len(page.images) == 4
    assert "item_values" not in _parse(_write(tmp_path / "mf")).tables  # mf: no such section


class _Page(HTMLParser):
    """Image sources and the text of each cell of each table, by table id."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _assert_self_contained(text: str, images: list[str]) -> None:
    assert 'src="http' not in text and "<script" not in text.lower()
    assert "<link" not in text and "url(" not in text  # no external style sheet or font
    assert images
    for src in images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)


def test_html_report_is_self_contained_with_inline_pngs(tmp_path):
    path = _write(tmp_path)
    page = _parse(path)
    _assert_self_contained(path.read_text(encoding="utf-8"), page.images)
    assert len(page.images) == 3  # ranking curves, hit rate by bucket, learning curves
    # the PNGs stay on disk for the markdown, which links them
    md = (tmp_path / "report.md").read_text()
    for name in ("ranking_curves.png", "bucket_hit_rate.png", "learning_curves.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
        assert f"({name})" in md


def test_html_metrics_table_holds_the_numbers_given(tmp_path):
    page = _parse(_write(tmp_path))
    model, base = _curve(0.5), _curve(0.25)
    labels = {"precision": "P", "recall": "R", "ndcg": "NDCG", "map": "MAP", "hit_rate": "HR"}
    expected = [["metric", "model", "popularity"]] + [
        [f"{labels.get(m, m)}@{k}", f"{model[f'{m}_at_{k}']:.4f}", f"{base[f'{m}_at_{k}']:.4f}"]
        for k in KS
        for m in (*METRICS, "coverage")
    ]
    assert page.tables["metrics"] == expected
    assert page.tables["buckets"] == [
        ["bucket", "items", "test pairs", "model HR@10", "popularity HR@10"],
        ["head", "3", "40", "0.5000", "0.6250"],
        ["torso", "7", "32", "0.2500", "0.2500"],
        ["tail", "30", "0", "n/a", "n/a"],
    ]


def test_html_report_states_definition_coverage_curves_and_observations(tmp_path):
    text = _write(tmp_path).read_text(encoding="utf-8")
    assert "first third of those interactions" in text
    assert "Catalogue coverage" in text and f"@10 {_curve(0.5)['coverage_at_10']:.1%}" in text
    assert "<code>train/loss</code>" in text and "<code>refit/loss</code>" in text
    assert "NDCG@10 0.1600 is 1.88x the popularity baseline's 0.0850." in text
    assert "Averages are over 55 users" in text


def test_report_data_paragraph_and_observations_read_as_sentences(tmp_path):
    _write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert (
        "Split (per user, by time): 39,122 training interactions, 9,871 validation, 9,870 test; "
        "0 validation and 2 test interactions dropped because their item was never trained on."
    ) in md
    assert "NDCG@10 0.1600 is 1.88x the popularity baseline's 0.0850." in md
    assert "above." not in md and ": above" not in md
    for raw_key in ("n_train", "n_val", "n_test", "dropped_val", "dropped_test", "n_eval_users"):
        assert raw_key not in md


@pytest.mark.parametrize(
    ("model", "base", "expected"),
    [
        (0.4305, 0.2085, "NDCG@10 0.4305 is 2.06x the popularity baseline's 0.2085."),
        (0.1, 0.0, "NDCG@10 0.1000 is above the popularity baseline's 0.0000."),
        (
            0.1,
            0.2,
            "NDCG@10 0.1000 is not above the popularity baseline's 0.2000, 0.50x it: the model "
            "ranks worse than recommending the most popular items.",
        ),
        (
            0.2,
            0.2,
            "NDCG@10 0.2000 equals the popularity baseline's: the model ranks no better than "
            "recommending the most popular items.",
        ),
    ],
)
def test_report_observation_compares_ndcg_with_the_baseline_in_words(model, base, expected):
    from recmf.eval.report import observations

    metrics = {"ndcg_at_10": model, "coverage_at_10": 0.5}
    baseline = {"ndcg_at_10": base, "coverage_at_10": 0.1}
    notes = observations(metrics, baseline, 10, {"n_eval_users": 1234, "dropped_test": 0})
    assert notes[0] == expected
    assert notes[-1] == "Averages are over 1,234 users with test items."


def test_report_without_a_run_says_there_are_no_learning_curves(tmp_path):
    path = _write(tmp_path, histories=None, run_id=None)
    page = _parse(path)
    assert len(page.images) == 2
    assert "No learning curves are available" in path.read_text(encoding="utf-8")
    assert not (tmp_path / "learning_curves.png").exists()


def test_popularity_buckets_split_the_interactions_in_thirds():
    # 12 interactions, thirds at 4 and 8: item 0 starts at 0 (head), item 1 at 6 (torso),
    # items 2 and 3 at 9 and 11 (tail); item 4 has none (tail)
    items = torch.tensor([0] * 6 + [1] * 3 + [2] * 2 + [3])
    assert popularity_buckets(items, 5).tolist() == [0, 1, 2, 2, 2]
    # equal counts: ties go by item index, two items per third
    assert popularity_buckets(torch.arange(6).repeat(2), 6).tolist() == [0, 0, 1, 1, 2, 2]


def test_bucket_hit_rates_match_a_python_loop():
    rng = np.random.default_rng(7)
    n_users, n_items, k = 12, 14, 3
    scores = torch.from_numpy(rng.normal(size=(n_users, n_items)))
    skew = 1.0 / np.arange(1, n_items + 1)  # a long tail, so head, torso and tail all hold items
    seen_u, seen_i = rng.integers(0, n_users, 50), rng.choice(n_items, 50, p=skew / skew.sum())
    test_u, test_i = rng.integers(0, n_users, 60), rng.integers(0, n_items, 60)
    seen = UserItems.from_pairs(seen_u, seen_i, n_users)
    truth = UserItems.from_pairs(test_u, test_i, n_users)
    buckets = popularity_buckets(torch.from_numpy(seen_i), n_items)
    got = bucket_hit_rates(lambda u: scores[u].clone(), truth, seen, buckets, k, chunk_size=2)

    counts = {i: int((seen_i == i).sum()) for i in range(n_items)}
    bucket_of, before, total = {}, 0, sum(counts.values())
    for i in sorted(range(n_items), key=lambda i: (-counts[i], i)):
        bucket_of[i] = (
            "tail"
            if counts[i] == 0 or before >= 2 * total / 3
            else ("torso" if before >= total / 3 else "head")
        )
        before += counts[i]
    pairs = {b: 0 for b in BUCKETS}
    hits = {b: 0 for b in BUCKETS}
    for u, i in sorted(set(zip(test_u.tolist(), test_i.tolist(), strict=True))):
        excluded = set(seen_i[seen_u == u].tolist())
        if i in excluded:
            continue
        top = [j for j in np.argsort(-scores[u].numpy()) if j not in excluded][:k]
        pairs[bucket_of[i]] += 1
        hits[bucket_of[i]] += i in top
    assert buckets.tolist() == [BUCKETS.index(bucket_of[i]) for i in range(n_items)]
    assert all(pairs.values()) and any(hits.values())  # the example reaches every bucket
    for b in BUCKETS:
        assert got[b]["n_pairs"] == pairs[b] and got[b]["n_hits"] == hits[b]
        assert got[b]["n_items"] == sum(v == b for v in bucket_of.values())
        assert got[b]["hit_rate"] == pytest.approx(hits[b] / pairs[b])


_PROBE = """<script>
window.addEventListener("load", () => {
  const rows = (id) => document.getElementById(id).rows.length;
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    metrics: rows("metrics"),
    buckets: rows("buckets"),
    images: Array.from(document.images, (img) => img.complete && img.naturalWidth > 0),
  });
  document.body.appendChild(probe);
});
</script>"""


def _chromium() -> str:
    binary = shutil.which("chromium")
    if binary:
        return binary
    if os.environ.get("RECMF_SKIP_BROWSER") == "1":
        pytest.skip("RECMF_SKIP_BROWSER=1: the report is not opened in a browser")
    pytest.fail(
        "the report test opens the HTML in a real browser and found no `chromium`: install it "
        "with `apt-get install chromium` (or set RECMF_SKIP_BROWSER=1 to skip this test)"
    )


@pytest.mark.slow  # needs Chromium (apt-get install chromium); .ci/run installs it
def test_html_report_renders_in_headless_chromium(tmp_path):
    binary = _chromium()
    report = _write(tmp_path / "report")
    probed = tmp_path / "probed.html"  # a copy: the report itself carries no script
    probed.write_text(
        report.read_text(encoding="utf-8").replace("</body>", _PROBE + "\n</body>"),
        encoding="utf-8",
    )
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    args += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    proc = subprocess.run(
        [*args, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=30
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no probe in chromium's DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    probe = json.loads(found.group(1))
    n_metric_rows = len(KS) * (len(METRICS) + 1)  # every metric and coverage at every k
    assert probe["metrics"] == 1 + n_metric_rows  # with the header row
    assert probe["buckets"] == 1 + len(BUCKETS)
    assert probe["images"] == [True, True, True]


@pytest.mark.slow  # trains and evaluates in process; the report's quick tests use fixed inputs
def test_evaluate_writes_an_html_report_with_learning_curves(pg_url, tmp_path):
    """Train a tiny model in-process with refit, evaluate it by run id and by bundle folder."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from recmf.config import settings
    from recmf.pipeline import evaluate, train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    schema = f"report_{uuid.uuid4().hex[:8]}"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        train_cfg = compose(
            "train",
            [
                f"db.url='{pg_url}'",
                f"db.schema={schema}",
                f"logger.tracking_uri={uri}",
                "dataset.n_users=60",
                "dataset.n_items=40",
                "dataset.n_interactions=1500",
                "latent_dim=8",
                "trainer.max_epochs=3",
                "trainer.accelerator=cpu",
                "refit=true",
            ],
        )
        eval_args = [f"logger.tracking_uri={uri}", "ks=[5,10]", "curve_k=20", f"db.schema={schema}"]
        run = train(settings(train_cfg, "train"))
        by_run = compose("evaluate", [*eval_args, f"report_dir={tmp_path / 'reports'}"])
    result = evaluate(settings(by_run, "evaluate"))
    html_path = result.report_path.with_name("report.html")
    text = html_path.read_text(encoding="utf-8")
    page = _parse(html_path)
    _assert_self_contained(text, page.images)
    assert len(page.images) == 3 and "No learning curves" not in text
    # model.recency/reg = auto: the curve of the candidate chosen, then the refit's loss
    chosen = run.selected
    label = f"recency_{chosen['recency']:g}_reg_{chosen['reg']:g}"
    for key in (f"select/{label}/ndcg_at_10", "refit/loss"):
        assert f"<code>{key}</code>" in text
    assert len(page.tables["metrics"]) == 1 + 2 * (len(METRICS) + 1)
    assert [r[0] for r in page.tables["buckets"][1:]] == list(BUCKETS)
    client = MlflowClient(tracking_uri=uri)
    logged = {a.path for a in client.list_artifacts(run.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/learning_curves.png"} <= logged

    from dataclasses import replace

    from recmf import tracking
    from recmf.eval.split_file import SplitFileError
    from recmf.settings import LoggerConfig

    # a bundle folder (the MLflow model's artifacts/bundle) is evaluated on its run's split,
    # found in the tracking store, or on the split.npz named by split=
    logger = LoggerConfig(uri)
    folder = tracking.download_bundle(logger, run.run_id)
    artifacts = client.get_run(run.run_id).info.artifact_uri.removeprefix("file://")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        by_folder = compose(
            "evaluate", [*eval_args, f"bundle={folder}", f"report_dir={tmp_path / 'bundle'}"]
        )
    by_folder = settings(by_folder, "evaluate")
    found = evaluate(by_folder)
    text = found.report_path.with_name("report.html").read_text(encoding="utf-8")
    assert "No learning curves are available" in text and "bundle folder" in text
    assert found.metrics == result.metrics
    named = replace(by_folder, split=f"{artifacts}/split/split.npz")
    assert evaluate(named).metrics == result.metrics
    # a split of other data is refused: its rows would index another vocabulary
    other = tmp_path / "other_split"
    np.savez(
        other.with_suffix(".npz"),
        **{
            f"{p}_{c}": np.zeros(3, np.int32)
            for p in ("train", "val", "test")
            for c in ("user", "item")
        },
        **{f"{p}_rating": np.zeros(3, np.float32) for p in ("train", "val", "test")},
    )
    with pytest.raises(SplitFileError, match="not the one of the model evaluated"):
        evaluate(replace(by_folder, split=str(other.with_suffix(".npz"))))


def test_report_says_a_random_split_and_its_seed():
    from recmf.eval.report import _split_kind

    assert _split_kind({"config": {"split": {"kind": "random"}, "seed": 3}}) == (
        "at random, seed 3"
    )
    assert _split_kind({"config": {"split": {"kind": "temporal"}, "seed": 3}}) == "by time"
    assert _split_kind({}) == "by time"  # runs from before split.kind existed


def test_report_says_when_validation_ranked_a_sample_of_users():
    from recmf.eval.report import _summary

    def first_paragraph(config: dict) -> str:
        meta = {"best_epoch": 3, "monitor": "val/ndcg_at_10", "best_val": 0.2, "config": config}
        return _summary(None, meta)[1][0]

    sampled = first_paragraph({"val_users": 20000, "model": {}})
    assert "(val/ndcg_at_10 0.2000, over a sample of 20,000 validation users (`val_users`))" in (
        sampled
    )
    for config in ({"val_users": 0, "model": {}}, {"model": {}}):  # all users; older runs
        assert "sample" not in first_paragraph(config)
