"""The MLflow writer's start-up probe: one passing server fault does not stop a pass
(the fault campaign saw a single 503 at start-up end a sync with exit 2), a refusal does."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, TEMPORARILY_UNAVAILABLE

from bridge.adapters.mlflow import writer as writer_mod
from bridge.adapters.mlflow.writer import MlflowWriter


class _Client:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    def search_experiments(self, max_results: int) -> list[Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return []


def _writer(client: _Client, monkeypatch: pytest.MonkeyPatch) -> MlflowWriter:
    monkeypatch.setattr(writer_mod.time, "sleep", lambda s: None)
    w = MlflowWriter("http://127.0.0.1:9")
    w._client_obj = client
    return w


def test_transient_faults_are_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Client(
        [
            MlflowException("unavailable", error_code=TEMPORARILY_UNAVAILABLE),
            MlflowException("API request failed: ConnectionError: connection reset by peer"),
        ]
    )
    _writer(client, monkeypatch)._probe()
    assert client.calls == 3


def test_a_refusal_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Client([MlflowException("no", error_code=PERMISSION_DENIED)])
    with pytest.raises(MlflowException):
        _writer(client, monkeypatch)._probe()
    assert client.calls == 1


def test_a_fault_that_does_not_pass_ends_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    faults: list[BaseException] = [
        MlflowException("unavailable", error_code=TEMPORARILY_UNAVAILABLE) for _ in range(5)
    ]
    client = _Client(faults)
    with pytest.raises(MlflowException):
        _writer(client, monkeypatch)._probe()
    assert client.calls == 3
