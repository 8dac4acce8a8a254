"""Third-party telemetry is off in the bridge's process unless the user opts in.

MLflow 3 sends usage telemetry (``mlflow/telemetry``: off when ``MLFLOW_DISABLE_TELEMETRY``
is true or ``DO_NOT_TRACK`` is ``true``); the wandb SDK reports its own errors to Sentry and
OpenTelemetry (``wandb-core --no-observability`` when ``WANDB_ERROR_REPORTING`` is false), and
exception text can carry URIs. The bridge sets these before either library starts, keeping
any value the user set; ``BRIDGE_ALLOW_TELEMETRY=1`` leaves them all alone.
"""

from __future__ import annotations

import os

OPT_IN = "BRIDGE_ALLOW_TELEMETRY"
#: What the bridge sets when the user set nothing (values these libraries read as "off").
OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "WANDB_ERROR_REPORTING": "false",
}


def telemetry_allowed() -> bool:
    return os.environ.get(OPT_IN, "").strip().lower() in ("1", "true", "yes", "on")


def disable_telemetry() -> None:
    """Turn library telemetry off for this process and its children (wandb-core), unless
    the user opted in or set the variables themselves. Call before MLflow or wandb start."""
    if telemetry_allowed():
        return
    for name, value in OFF.items():
        os.environ.setdefault(name, value)
