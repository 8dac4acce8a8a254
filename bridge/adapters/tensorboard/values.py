"""Non-scalar summary values in neutral terms: HParams sessions, histograms, text, tensors."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

from bridge.adapters.tensorboard.events import Value

#: HParams session_end_info status -> neutral run status.
_STATUS = {1: "FINISHED", 2: "FAILED", 3: "RUNNING"}
#: Largest tensor (elements) of an unknown plugin kept in full in the history extras.
MAX_TENSOR_ELEMENTS = 100_000


@dataclass
class Session:
    """What the HParams plugin recorded for a run."""

    hparams: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)  # metric tags the experiment names
    group: str | None = None
    start_ms: int | None = None
    status: str | None = None
    end_ms: int | None = None

    def read(self, v: Value) -> None:
        """Fold one ``hparams`` plugin value (experiment / session start / session end)."""
        from tensorboard.plugins.hparams import plugin_data_pb2

        data = plugin_data_pb2.HParamsPluginData()
        try:
            data.ParseFromString(v.value.metadata.plugin_data.content)
        except Exception:  # noqa: BLE001 - a damaged plugin payload: nothing to fold
            return
        kind = data.WhichOneof("data")
        if kind == "session_start_info":
            info = data.session_start_info
            for name, pv in info.hparams.items():
                self.hparams[name] = _proto_value(pv)
            if info.group_name:
                self.group = info.group_name
            if info.start_time_secs:
                self.start_ms = int(info.start_time_secs * 1000)
        elif kind == "session_end_info":
            end = data.session_end_info
            self.status = _STATUS.get(int(end.status))
            if end.end_time_secs:
                self.end_ms = int(end.end_time_secs * 1000)
        elif kind == "experiment":
            for m in data.experiment.metric_infos:
                name = m.name.tag if not m.name.group else f"{m.name.group}/{m.name.tag}"
                if name not in self.metrics:
                    self.metrics.append(name)


def _proto_value(pv: Any) -> Any:
    """A ``google.protobuf.Value`` as plain JSON (HParams values are numbers, strings or
    booleans; numbers are stored as doubles, so an int 32 reads as 32.0)."""
    kind = pv.WhichOneof("kind")
    if kind == "number_value":
        return pv.number_value
    if kind == "string_value":
        return pv.string_value
    if kind == "bool_value":
        return pv.bool_value
    if kind == "null_value" or kind is None:
        return None
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(pv)


def _text(b: Any) -> str:
    return bytes(b).decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def _json_number(x: float) -> Any:
    """NaN/inf kept as the strings JSON cannot hold otherwise (the raw value survives)."""
    return x if math.isfinite(x) else str(x)


def extra_of(v: Value, arr: Any) -> tuple[str, Any]:
    """(kind, JSON-able value) of a histogram, text or other tensor value."""
    if arr is None:
        return "tensorboard-value", {"tag": v.tag, "field": v.value.WhichOneof("value")}
    if v.plugin == "histograms" and arr.ndim == 2 and arr.shape[1] == 3:
        buckets = [[_json_number(float(x)) for x in row] for row in arr.tolist()]
        return "histogram", {"_type": "histogram", "buckets": buckets}
    if v.plugin == "text" or arr.dtype.kind in "OSU":
        text = [_text(b) for b in arr.reshape(-1)]
        value: Any = text[0] if arr.ndim == 0 or arr.size == 1 else text
        if arr.ndim > 1:
            value = {"shape": list(arr.shape), "values": text}
        return ("text" if v.plugin == "text" else "string"), value
    out: dict[str, Any] = {
        "_type": "tensor",
        "plugin": v.plugin or None,
        "dtype": str(arr.dtype),
        "shape": list(arr.shape),
    }
    if arr.size <= MAX_TENSOR_ELEMENTS:
        if arr.dtype.kind == "f":
            out["values"] = [_json_number(float(x)) for x in arr.reshape(-1).tolist()]
        elif arr.dtype.kind in "iub":
            out["values"] = arr.reshape(-1).tolist()
        else:
            out["base64"] = base64.b64encode(arr.tobytes()).decode()
    else:
        out["base64"] = base64.b64encode(arr.tobytes()).decode()
    return "tensor", out


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
