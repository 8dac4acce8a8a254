"""Reverse the bridge's own W&B layout when a W&B reader meets a run the bridge wrote.

The W&B writers (``layout`` and ``sink`` in this package, rules in
``mappings/mlflow-to-wandb.toml``) store what W&B has no field for in the run config
(flat ``_bridge.*`` keys, the source's backend tags under ``mlflow_tags`` — for another
source kind the name its rules give, e.g. ``tensorboard_tags``) and make ``_step`` a row
counter, keeping each point's source step in a history column (``_bridge.step_key``, e.g.
``mlflow_step``). The rules are keyed on the source kind ``_bridge.source_id`` records. Both W&B readers (offline folders and the
server) call these functions so such a run reads as the run that was written: source steps,
original start/end time and status, clean config, the source's tags in ``extra_tags``.

A run is bridge-written when its config has a string ``_bridge.source_id``. Readers store
:func:`layout_of`'s result in the run header's locator under :data:`LOCATOR_KEY`, so that
``iter_history`` knows the step column without reading the config again. Readers built
with ``restore_bridge=False`` skip all of this (the writer itself needs the raw layout to
find its runs and diff them).
"""

from __future__ import annotations

import posixpath
from typing import Any, cast, get_args

from bridge.adapters.wandb.mapping import WandbMapping, rules_for
from bridge.schema import FileRef, Run, RunStatus

BRIDGE_PREFIX = "_bridge."
SOURCE_ID_KEY = "_bridge.source_id"
STEP_KEY_KEY = "_bridge.step_key"
LOCATOR_KEY = "bridge_layout"
#: How the writer renames a source metric W&B owns (``_step`` → ``metric:_step``).
RENAMED_METRIC_PREFIX = "metric:"
INTERNAL_HISTORY_KEYS = frozenset({"_step", "_timestamp", "_runtime"})
#: Top-level names the SDK writes into a run's files dir itself (the writer moves source
#: files so named to ``bridge/source-files/``): in a bridge-written run they describe the
#: import, not the source, and are left out of ``files``.
SDK_FILES = frozenset(
    {
        "config.yaml",
        "wandb-summary.json",
        "wandb-metadata.json",
        "requirements.txt",
        "output.log",
        "diff.patch",
        "conda-environment.yaml",
        "media",
        "code",
        "artifact",
    }
)
SOURCE_FILES_DIR = "bridge/source-files/"
_STATUSES = frozenset(get_args(RunStatus))


def layout_of(config: dict[str, Any]) -> dict[str, str] | None:
    """``{"step_key": ..., "extra_tags_key": ...}`` for a bridge-written run, else None."""
    source_id = config.get(SOURCE_ID_KEY)
    if not isinstance(source_id, str):
        return None
    defaults = _defaults(source_id)
    step_key = config.get(STEP_KEY_KEY)
    return {
        "step_key": step_key if isinstance(step_key, str) and step_key else defaults.step_key,
        "extra_tags_key": defaults.extra_tags_config_key,
    }


def _defaults(source_id: str | None) -> WandbMapping:
    """The default rules the writer used for a run of the recorded source kind."""
    return rules_for(WandbMapping(), source_id)


def written_step_key(config: dict[str, Any], mapping: WandbMapping) -> str:
    """The history step column of a written run (raw config): the one its config records,
    else that of ``mapping``'s rules for its source kind."""
    recorded = config.get(STEP_KEY_KEY)
    if isinstance(recorded, str) and recorded:
        return recorded
    source_id = config.get(SOURCE_ID_KEY)
    return rules_for(mapping, source_id if isinstance(source_id, str) else None).step_key


def source_metric_key(key: str, step_key: str) -> str:
    """The source's metric key for a history key the writer stored (``metric:_step``)."""
    if key.startswith(RENAMED_METRIC_PREFIX):
        rest = key[len(RENAMED_METRIC_PREFIX) :]
        if rest in INTERNAL_HISTORY_KEYS or rest == step_key:
            return rest
    return key


def split_row(
    flat: list[tuple[str, Any]], step_key: str
) -> tuple[int | None, list[tuple[str, Any]]]:
    """(source step of the row or None, the row's values without the step column and with
    source metric keys)."""
    step: int | None = None
    out: list[tuple[str, Any]] = []
    for key, value in flat:
        if key == step_key:
            if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
                step = int(value)
            continue
        out.append((source_metric_key(key, step_key), value))
    return step, out


def _config_key(stored: str, extra_key: str) -> str:
    """Undo the writer's renaming of reserved / dash-edged config keys."""
    if stored == extra_key + "_" or (stored.startswith(BRIDGE_PREFIX) and stored.endswith("_")):
        return stored[:-1]
    if len(stored) > 2 and stored[0] == "_" and stored[-1] == "_":
        inner = stored[1:-1]
        if inner != inner.strip("-"):
            return inner
    return stored


def _is_bookkeeping(key: str) -> bool:
    """A ``_bridge.*`` key of the writer's own (a source key so named is stored as ``key_``)."""
    return key.startswith(BRIDGE_PREFIX) and not key.endswith("_")


def _file_path(ref: FileRef) -> str | None:
    """The source path of a file in a bridge-written run, or None for the SDK's own files."""
    rel = ref.path.removeprefix("files/")
    if rel.startswith(SOURCE_FILES_DIR):
        return rel[len(SOURCE_FILES_DIR) :]
    if rel.split("/", 1)[0] in SDK_FILES:
        return None
    return rel


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def restore_run(run: Run, layout: dict[str, str]) -> None:
    """Rewrite a bridge-written run (as read) into the run the writer was given."""
    step_key = layout["step_key"]
    extra_key = layout["extra_tags_key"]
    cfg = run.config
    source_id = cfg.get(SOURCE_ID_KEY)
    mapping = _defaults(source_id if isinstance(source_id, str) else None)
    meta = {k[len(BRIDGE_PREFIX) :]: v for k, v in cfg.items() if _is_bookkeeping(k)}
    start, end = _int(meta.get("start_time_ms")), _int(meta.get("end_time_ms"))
    if start is not None:
        run.start_time_ms = start
    if end is not None:
        run.end_time_ms = end
    status = meta.get("status")
    if status in _STATUSES:
        run.status = cast(RunStatus, status)
    for field, key in (
        ("status_reason", "status_reason"),
        ("incomplete_reason", "incomplete"),
        ("user", "user"),
        ("host", "host"),
        ("parent_source_id", "parent_source_id"),
    ):
        value = meta.get(key)
        setattr(run, field, value if isinstance(value, str) and value else None)
    extra = cfg.get(extra_key)
    # The source's backend tags; the bridge process's own environment is not the source's.
    run.extra_tags = {str(k): str(v) for k, v in extra.items()} if isinstance(extra, dict) else {}
    # W&B tags the writer derived from backend tags are in extra_tags already.
    run.tags = [
        t
        for t in run.tags
        if not (t in run.extra_tags and mapping.is_wandb_tag(t, run.extra_tags[t]))
    ]
    run.config = {
        _config_key(k, extra_key): v
        for k, v in cfg.items()
        if not _is_bookkeeping(k) and k != extra_key
    }
    run.results = {
        source_metric_key(k, step_key): v for k, v in run.results.items() if k != step_key
    }
    run.metric_definitions = [
        d
        for d in run.metric_definitions
        if d.get("name") != step_key and d.get("step_metric") != step_key
    ]
    files: list[FileRef] = []
    for ref in run.files:
        path = _file_path(ref)
        if path and posixpath.normpath(path) == path:
            files.append(ref.model_copy(update={"path": path}))
    run.files = files
    run.header = run.header.model_copy(
        update={"locator": {**run.header.locator, LOCATOR_KEY: dict(layout)}}
    )
