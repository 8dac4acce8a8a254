"""Names and limits the MLflow writer writes by: the bridge's run tags, the files it keeps
beside a run under ``bridge/``, and MLflow's size limits (mlflow/utils/validation.py)."""

from __future__ import annotations

SOURCE_ID_TAG = "bridge.source_id"
SOURCE_URI_TAG = "bridge.source_uri"
COMPLETE_TAG = "bridge.complete"
FINGERPRINT_TAG = "bridge.fingerprint"
STATUS_REASON_TAG = "bridge.status_reason"
INCOMPLETE_TAG = "bridge.incomplete"
NOTE_TAG = "mlflow.note.content"

CONFIG_ARTIFACT = "bridge/config.json"
SUMMARY_ARTIFACT = "bridge/summary.json"
KEY_MAP_ARTIFACT = "bridge/key-map.json"
LONG_VALUES_ARTIFACT = "bridge/long-values.json"
#: Written by the engine beside every run whose history had values MLflow cannot hold.
HISTORY_EXTRAS_ARTIFACT = "bridge/history-extras.jsonl"

MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000
MAX_EXPERIMENT_TAG_LEN = 20000
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
TAGS_PER_BATCH = 100
#: MLflow's REST limit is 1 MB of request JSON per log_batch; stay clearly below it.
BATCH_BYTES = 900_000
#: JSON bytes of one metric besides its key: value, timestamp, step, field names.
METRIC_OVERHEAD_BYTES = 110
