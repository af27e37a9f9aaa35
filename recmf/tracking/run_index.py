"""recmf's own index of finished training runs, beside a local sqlite tracking store.

``<mlflow.db>.recmf-runs.json`` holds, per experiment and store schema, the latest finished
training run's id, start time and the local folder of its model's bundle. Training writes it
when a run finishes (under :func:`recmf.tracking.store_lock`); ``recommend.py`` reads it without
importing MLflow (about 2.5 s) or reading MLflow's private tables, and asks MLflow whenever the
index has no answer (no file, no entry, a folder that is gone). Written whole and renamed into
place, so a reader never sees half a file. Standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

FORMAT = "recmf-runs/1"
SUFFIX = ".recmf-runs.json"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a local ``sqlite:///`` tracking store; None for any other store."""
    if not str(tracking_uri).startswith("sqlite:///"):
        return None
    path = str(tracking_uri).removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def index_path(tracking_uri: str) -> Path | None:
    """``<mlflow.db>.recmf-runs.json`` of a local sqlite store; None for any other store."""
    db = sqlite_path(tracking_uri)
    return db.with_name(db.name + SUFFIX) if db is not None else None


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: nothing to answer from
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def record(
    path: Path, experiment: str, schema: str, run_id: str, bundle: Path, start_time: int
) -> None:
    """Make ``run_id`` the latest run of (``experiment``, ``schema``) unless a run that started
    later is already there (MLflow's "latest" orders by start time; a resumed run finishes late
    but started early). The caller holds the store lock."""
    data = _read(path) or {"format": FORMAT, "experiments": {}}
    runs = data.setdefault("experiments", {}).setdefault(experiment, {})
    current = runs.get(schema)
    if current and int(current.get("start_time", 0)) > start_time:
        return
    runs[schema] = {"run_id": run_id, "bundle": str(bundle.resolve()), "start_time": start_time}
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        store = path.with_name(path.name.removesuffix(SUFFIX))
        if store.is_file():  # readable by whoever can read the store (mkstemp made it 0600)
            os.chmod(tmp, store.stat().st_mode & 0o666)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lookup(path: Path, experiment: str, run_id: str | None, schema: str | None) -> Path | None:
    """The bundle folder of ``run_id`` (when it is some schema's latest), else of the latest run
    on ``schema``, else of the latest run of the experiment; None when the index does not know
    or the folder is gone (the caller asks MLflow)."""
    runs = _read(path).get("experiments", {}).get(experiment) or {}
    entries = [dict(e, schema=s) for s, e in runs.items() if isinstance(e, dict)]
    if run_id:
        entries = [e for e in entries if e.get("run_id") == str(run_id)]
    if schema:
        entries = [e for e in entries if e["schema"] == str(schema)]
    if not entries:
        return None
    latest = max(entries, key=lambda e: int(e.get("start_time", 0)))
    folder = Path(str(latest.get("bundle", "")))
    return folder if latest.get("bundle") and (folder / "meta.json").is_file() else None
