"""The MLflow REST reader refuses a malformed answer instead of reading it as data: a JSON
bool where a number goes (protobuf's ParseDict reads ``"value": true`` as 1.0)."""

from __future__ import annotations

import json

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import GetMetricHistory

from bridge.adapters.mlflow.strict_rest import _parse

ENDPOINT = "/api/2.0/mlflow/metrics/get-history"


def _answer(value: object) -> str:
    point = {"key": "loss", "value": value, "timestamp": 5, "step": 1}
    return json.dumps({"metrics": [point]})


def test_a_number_is_read() -> None:
    proto = GetMetricHistory.Response()
    _parse(ENDPOINT, _answer(2.5), proto)
    assert [(m.key, m.value, m.step) for m in proto.metrics] == [("loss", 2.5, 1)]


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_where_a_double_goes_is_refused(value: bool) -> None:
    with pytest.raises(MlflowException, match=r"metrics\[0\]\.value: a JSON bool where a double"):
        _parse(ENDPOINT, _answer(value), GetMetricHistory.Response())
