"""What a run read: the store snapshot as an MLflow dataset input, and its digest."""

from __future__ import annotations

from typing import Any

from recmf.settings import LoggerConfig
from recmf.tracking.names import DATASET_CONTEXT
from recmf.tracking.store import _client


def split_profile(split) -> dict[str, Any]:
    """Sizes, what the split dropped, and each part's time range (its boundaries: the split is
    per user, so a part's range overlaps the others')."""
    out: dict[str, Any] = dict(split.sizes())
    for part in ("train", "val", "test"):
        ts = getattr(split, part).timestamp
        out[f"{part}_time_min"] = int(ts.min()) if len(ts) else None
        out[f"{part}_time_max"] = int(ts.max()) if len(ts) else None
    return out


def log_data_input(logger, snapshot: dict, split: dict, query: str) -> str:
    """Record what a run read as an MLflow dataset input; returns the digest logged.

    Source: the store (URL without password, schema, query). Digest: the first 32 hex digits
    of the order-independent content hash (MLflow keeps at most 36 characters; the whole hash
    is in the profile and in the ``data.content_hash`` param). Profile: counts, time watermark,
    split sizes and boundaries.
    """
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = {"url": snapshot["url"], "schema": snapshot["schema"], "query": query}
    profile = {k: v for k, v in snapshot.items() if k not in ("url", "schema")}
    profile["split"] = split
    digest = snapshot["content_hash"][:32]
    dataset = Dataset(
        name=f"recmf:{snapshot['schema']}",
        digest=digest,
        source_type="recmf-postgres",
        source=json.dumps(source, sort_keys=True),
        profile=json.dumps(profile, sort_keys=True),
    )
    context = InputTag(key="mlflow.data.context", value=DATASET_CONTEXT)
    logger.experiment.log_inputs(
        logger.run_id, datasets=[DatasetInput(dataset=dataset, tags=[context])]
    )
    return digest


def data_digest(logger_cfg: LoggerConfig, run_id: str) -> str | None:
    """The digest of the training data a run logged (None for runs from before lineage)."""
    run = _client(logger_cfg.tracking_uri).get_run(run_id)
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in dataset_input.tags}
        if tags.get("mlflow.data.context") == DATASET_CONTEXT:
            return dataset_input.dataset.digest
    return None
