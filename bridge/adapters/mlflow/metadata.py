"""A run's metadata written into MLflow: params and tags in batches MLflow accepts, dataset
inputs, and the ``bridge/*.json`` files kept beside them (full config and summary, the key
map, long values)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.adapters.mlflow.names import BATCH_BYTES, PARAMS_PER_BATCH, TAGS_PER_BATCH
from bridge.adapters.mlflow.render import Full
from bridge.errors import RunError
from bridge.mapping import json_dumps
from bridge.schema import Run


def log_params_and_tags(
    client: Any,
    dest_id: str,
    params: dict[str, str],
    tags: dict[str, str],
    scrub: Callable[[str], str],
) -> None:
    """Params and tags in ≤100/≤100 batches, under the 1 MB request limit."""
    from mlflow.entities import Param, RunTag
    from mlflow.exceptions import MlflowException

    param_batches = _size_batches(params.items(), PARAMS_PER_BATCH, BATCH_BYTES // 2)
    tag_batches = _size_batches(tags.items(), TAGS_PER_BATCH, BATCH_BYTES // 2)
    for i in range(max(len(param_batches), len(tag_batches))):
        pb = param_batches[i] if i < len(param_batches) else []
        tb = tag_batches[i] if i < len(tag_batches) else []
        try:
            client.log_batch(
                dest_id,
                params=[Param(k, v) for k, v in pb],
                tags=[RunTag(k, v) for k, v in tb],
                synchronous=True,
            )
        except MlflowException as exc:
            raise RunError(
                f"MLflow rejected params/tags for run {dest_id}: {scrub(exc.message)}"
            ) from exc


def log_dataset_inputs(client: Any, dest_id: str, run: Run) -> None:
    """Datasets the run used → MLflow dataset inputs (lineage). MLflow's SQL store keeps
    one input per (dataset, run), so logging them again on a re-sync adds nothing."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for art in run.artifacts:
        if art.direction != "used" or art.type != "dataset":
            continue
        meta = art.metadata
        dataset = Dataset(
            name=art.name,
            digest=art.digest or "",
            source_type=str(meta.get("source_type") or "external"),
            source=str(meta.get("source") or run.header.source_id),
            schema=meta.get("schema"),
            profile=meta.get("profile"),
        )
        tags = [InputTag(str(k), str(v)) for k, v in (meta.get("tags") or {}).items()]
        inputs.append(DatasetInput(dataset, tags))
    if inputs:
        client.log_inputs(dest_id, datasets=inputs)


def key_map_doc(full: Full, metrics: dict[str, str]) -> dict | None:
    """``bridge/key-map.json``: every key the writer had to change (original → stored)."""
    doc = {
        "rule": "see mappings/wandb-to-mlflow.toml; original key -> stored key",
        "params": full.key_map["params"],
        "tags": full.key_map["tags"],
        "metrics": metrics,
    }
    if not (doc["params"] or doc["tags"] or doc["metrics"]):
        return None
    return doc


def put_json_files(client: Any, dest_id: str, files: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="bridge-mlflow-") as tmp:
        folder = Path(tmp) / "bridge"
        folder.mkdir()
        for name, doc in files.items():
            (folder / name).write_text(json_dumps(doc, indent=2) + "\n", encoding="utf-8")
        client.log_artifacts(dest_id, str(folder), "bridge")


def read_json_artifact(client: Any, dest_id: str, path: str) -> dict | None:
    try:
        with tempfile.TemporaryDirectory(prefix="bridge-mlflow-") as tmp:
            local = client.download_artifacts(dest_id, path, tmp)
            with open(local, encoding="utf-8") as fh:
                data = json.load(fh)
    except Exception:
        return None
    return data if isinstance(data, dict) else None


def _size_batches(items: Any, count: int, max_bytes: int) -> list[list[tuple[str, str]]]:
    """Key/value pairs in lists of ≤ ``count`` items and ≤ ``max_bytes`` of JSON."""
    batches: list[list[tuple[str, str]]] = []
    batch: list[tuple[str, str]] = []
    size = 0
    for key, value in items:
        cost = len(json.dumps(key)) + len(json.dumps(value)) + 30
        if batch and (len(batch) >= count or size + cost > max_bytes):
            batches.append(batch)
            batch, size = [], 0
        batch.append((key, value))
        size += cost
    if batch:
        batches.append(batch)
    return batches
