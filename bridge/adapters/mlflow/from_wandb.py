"""Reverse the W&B → MLflow mapping when reading a run the bridge imported from W&B.

The MLflow writer (``bridge/adapters/mlflow/writer.py``, rules in
``mappings/wandb-to-mlflow.toml``) flattens a W&B run into params and tags and keeps the
structure beside it in ``bridge/*.json`` artifacts. Reading such a run as a plain MLflow run
would hand the next destination flat string params and a pile of ``wandb.*`` tags; this
module puts the W&B fields back where the neutral :class:`~bridge.schema.Run` keeps them, so
W&B → MLflow → W&B ends where it started. The run keeps its MLflow identity
(``mlflow:<uri>#<run_id>``): it is a different source than the W&B original.

What is restored: ``config`` from ``bridge/config.json`` (typed, nested), ``summary`` from
``bridge/summary.json``, tags from ``wandb.tags``, group / job type / host / exit code from
``wandb.*``, git from ``mlflow.source.git.*``, status reason and incomplete reason from
``bridge.*``, values cut to fit MLflow from ``bridge/long-values.json``, metric keys the
writer had to encode (via ``bridge/key-map.json`` for hashed ones) and ±inf points (MLflow
stores ±max float; ``bridge/history-extras.jsonl`` records where an inf was).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

from bridge.adapters.mlflow.kinds import WANDB, from_wandb
from bridge.adapters.mlflow.names import SOURCE_ID_TAG
from bridge.mapping import Mapping, restore_key
from bridge.schema import MetricChunk, Run

CONFIG_JSON = "bridge/config.json"
SUMMARY_JSON = "bridge/summary.json"
KEY_MAP_JSON = "bridge/key-map.json"
LONG_VALUES_JSON = "bridge/long-values.json"
#: Run locator key telling ``iter_history`` to restore metric keys (stored → original).
LOCATOR_KEY = "wandb_metric_keys"

#: Tags carried in Run fields by the plain MLflow reading already.
FIELD_TAGS = frozenset(
    {"mlflow.runName", "mlflow.user", "mlflow.note.content", "mlflow.parentRunId"}
)
#: (artifact path) -> parsed JSON, or None when absent/unreadable.
JsonLoader = Callable[[str], Any]


def is_wandb_import(tags: dict[str, str]) -> bool:
    """Whether the MLflow writer made this run from a W&B run (its recorded source kind)."""
    return from_wandb(tags.get(SOURCE_ID_TAG))


def _inverse(doc: Any, kind: str) -> dict[str, str]:
    """stored → original for one section of ``bridge/key-map.json``."""
    section = doc.get(kind) if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        return {}
    return {str(v): str(k) for k, v in section.items()}


def restore_wandb_fields(
    run: Run,
    tags: dict[str, str],
    present: set[str],
    load_json: JsonLoader,
    mapping: Mapping | None = None,
) -> dict[str, str]:
    """Rewrite ``run`` (read as a plain MLflow run) into the W&B run it was made from.

    ``tags`` are all the run's MLflow tags, ``present`` the ``bridge/`` artifact paths that
    exist (only those are downloaded). Returns the metric key map (stored → original) that
    ``iter_history`` needs; warnings go to ``run.warnings``.
    """
    m = mapping or Mapping()
    p = m.source_tag_prefix
    key_map_doc = load_json(KEY_MAP_JSON) if KEY_MAP_JSON in present else None
    long_doc = load_json(LONG_VALUES_JSON) if LONG_VALUES_JSON in present else None
    long_tags = long_doc.get("tags", {}) if isinstance(long_doc, dict) else {}
    tag_names = _inverse(key_map_doc, "tags")

    # Every tag under its original key and full (untruncated) value.
    full: dict[str, str] = {}
    for stored, value in tags.items():
        key = restore_key(stored, tag_names)
        long = long_tags.get(key) if isinstance(long_tags, dict) else None
        full[key] = long if isinstance(long, str) else value

    if "mlflow.note.content" in full:
        run.notes = full["mlflow.note.content"] or None
    if full.get("mlflow.runName"):
        run.name = full["mlflow.runName"]
    # W&B's own run fields go back where the W&B reader puts them: extras["wandb"]
    run.set_extra(WANDB, "group", full.get(f"{p}group") or None)
    run.set_extra(WANDB, "job_type", full.get(f"{p}job_type") or None)
    run.host = full.get(f"{p}host") or None
    run.git_commit = full.get("mlflow.source.git.commit") or None
    run.git_remote = full.get("mlflow.source.git.repoURL") or None
    run.status_reason = full.get("bridge.status_reason") or run.status_reason
    run.incomplete_reason = full.get("bridge.incomplete") or None
    code = full.get(f"{p}exit_code")
    if code is not None:
        try:
            run.set_extra(WANDB, "exit_code", int(code))
        except ValueError:
            run.warnings.append(f"tag {p}exit_code={code!r} is not an integer; ignored")
    run.tags = _tags(full, m, run.warnings)

    consumed = {
        f"{p}{name}" for name in ("group", "job_type", "host", "exit_code", "tags", "run_id")
    }
    consumed.update({"mlflow.source.git.commit", "mlflow.source.git.repoURL"})
    run.extra_tags = {
        k: v
        for k, v in sorted(full.items())
        if k not in consumed
        and k not in FIELD_TAGS
        and not k.startswith(m.tag_prefix)
        and not k.startswith(m.summary_tag_prefix)
        and not k.startswith("bridge.")
    }

    config = load_json(CONFIG_JSON) if CONFIG_JSON in present else None
    if isinstance(config, dict):
        run.config = config
    else:
        run.warnings.append(
            f"{CONFIG_JSON} missing or unreadable: config left as MLflow's flat string params"
        )
    summary = load_json(SUMMARY_JSON) if SUMMARY_JSON in present else None
    if isinstance(summary, dict):
        run.results = summary
    else:
        run.warnings.append(f"{SUMMARY_JSON} missing or unreadable: summary left empty")
    return _inverse(key_map_doc, "metrics")


def _tags(full: dict[str, str], m: Mapping, warnings: list[str]) -> list[str]:
    """W&B tags: the ``wandb.tags`` JSON list (order kept), else the per-tag tags."""
    raw = full.get(f"{m.source_tag_prefix}tags")
    if raw is not None:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(t, str) for t in value):
            return list(value)
        warnings.append(f"tag {m.source_tag_prefix}tags is not a JSON list of strings; ignored")
    if m.per_tag_tags:
        return sorted(k[len(m.tag_prefix) :] for k in full if k.startswith(m.tag_prefix))
    return []


def metric_key(stored: str, key_map: dict[str, str]) -> str:
    """The W&B metric key for a metric key the MLflow writer stored."""
    return restore_key(stored, key_map)


#: Written by the engine beside every run whose history had values MLflow cannot hold.
HISTORY_EXTRAS_JSONL = "bridge/history-extras.jsonl"
#: Run locator key: the extras file exists, so ±inf points can be restored from it.
LOCATOR_EXTRAS = "wandb_history_extras"
_MAX = sys.float_info.max


def non_finite_points(lines: Iterable[bytes]) -> dict[tuple[str, int, int], float]:
    """(key, step, timestamp) → ±inf for the points MLflow stored as ±max float."""
    found: dict[tuple[str, int, int], float] = {}
    for line in lines:
        if b'"non-finite"' not in line:
            continue  # strings and media values: not metric points
        try:
            rec = json.loads(line)
            value = float(json.loads(rec["value_json"]))
            point = (str(rec["key"]), int(rec["step"]), int(rec["timestamp"]))
        except (ValueError, KeyError, TypeError):
            continue
        if rec.get("kind") == "non-finite" and math.isinf(value):
            found[point] = value
    return found


def restore_non_finite(chunk: MetricChunk, points: dict[tuple[str, int, int], float]) -> None:
    """Put ±inf back where MLflow holds ±max float and the extras file recorded an inf."""
    values = chunk.values
    for i, value in enumerate(values):
        if abs(value) == _MAX:
            values[i] = points.get((chunk.key, chunk.steps[i], chunk.timestamps[i]), value)
