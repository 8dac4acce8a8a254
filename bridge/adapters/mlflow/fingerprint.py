"""The MLflow reader's run fingerprint: a hash of what ``search_runs`` already returns,
plus (SQL stores) each key's point count and (local artifact folders) a walk of the files.
See :class:`~bridge.adapters.mlflow.reader.MlflowReader` for what it does and does not see."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FINGERPRINT_VERSION = "mlflow-reader/1"


def _hash(doc: Any) -> str:
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _num(value: float) -> str:
    """A float as text that tells NaN and ±inf apart (JSON cannot)."""
    return repr(float(value))


def fingerprint_of(run: Any, points: list[Any] | None, listing: list[Any] | None) -> str:
    """Hash of a run as ``search_runs``/``get_run`` return it, plus the per-key point
    statistics ``points`` and the artifact ``listing`` when given."""
    info, data = run.info, run.data
    metrics = getattr(data, "_metric_objs", None)
    if metrics is None:  # pragma: no cover - older entity layout
        metrics = list(data.to_proto().metrics)
    inputs = getattr(run, "inputs", None)
    outputs = getattr(run, "outputs", None)
    doc: dict[str, Any] = {
        "v": FINGERPRINT_VERSION,
        "status": info.status,
        "start": info.start_time,
        "end": info.end_time,
        "stage": info.lifecycle_stage,
        "name": info.run_name,
        "params": sorted(data.params.items()),
        "tags": sorted(data.tags.items()),
        "metrics": sorted((m.key, _num(m.value), m.step, m.timestamp) for m in metrics),
        "datasets": sorted(
            (
                d.dataset.name,
                d.dataset.digest,
                sorted((t.key, t.value) for t in d.tags),
            )
            for d in (inputs.dataset_inputs if inputs else [])
        ),
        "model_inputs": sorted(m.model_id for m in (getattr(inputs, "model_inputs", None) or [])),
        "model_outputs": sorted(
            (m.model_id, m.step) for m in (getattr(outputs, "model_outputs", None) or [])
        ),
    }
    if points is not None:
        doc["points"] = points
    if listing is not None:
        doc["artifacts"] = listing
    return _hash(doc)


def local_listing(local: Path) -> list[Any]:
    """(path, size, mtime) of every file under a local artifact folder, sorted."""
    out: list[Any] = []
    for root, dirs, files in os.walk(local):
        dirs.sort()
        for name in sorted(files):
            p = Path(root, name)
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p.relative_to(local).as_posix(), st.st_size, st.st_mtime_ns))
    return out
