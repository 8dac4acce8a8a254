"""create_once (bridge/adapters/mlflow/once.py): the retry rule for MLflow create calls.

The end-to-end proof against a real server behind the fault proxy is in
tests/test_fault_campaign.py; these pin the rule itself, in milliseconds.
"""

from __future__ import annotations

import threading

import pytest
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES
from mlflow.exceptions import MlflowException, RestException

from bridge.adapters.mlflow.once import create_once, may_have_committed, no_client_retry


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")


def test_a_lost_answer_is_found_not_created_again() -> None:
    calls: list[str] = []
    store: list[str] = []

    def create() -> str:
        calls.append("create")
        store.append("run-1")  # the server committed ...
        raise MlflowException("API request to /runs/create failed with exception reset")

    def find() -> str | None:
        calls.append("find")
        return store[0] if store else None

    assert create_once("http", create, find, "run") == "run-1"
    assert calls == ["create", "find"]
    assert store == ["run-1"]


def test_nothing_committed_is_created_again_until_attempts_run_out() -> None:
    calls: list[str] = []

    def create() -> str:
        calls.append("create")
        raise MlflowException("API request failed with exception 503")

    with pytest.raises(MlflowException, match="503"):
        create_once("http", create, lambda: calls.append("find") or None, "run")
    # 1 + 3 attempts (MLFLOW_HTTP_REQUEST_MAX_RETRIES=3), a look-up before each retry and
    # after the last one
    assert calls == ["create", "find"] * 4


def test_a_refusal_is_raised_at_once_without_look_up() -> None:
    calls: list[str] = []

    def create() -> str:
        calls.append("create")
        raise RestException({"error_code": "RESOURCE_ALREADY_EXISTS", "message": "exists"})

    with pytest.raises(RestException):
        create_once("http", create, lambda: calls.append("find") or None, "experiment")
    assert calls == ["create"]


def test_sql_and_file_stores_call_create_once_plainly() -> None:
    def create() -> str:
        raise MlflowException("boom")

    with pytest.raises(MlflowException):
        create_once("sqlite", create, lambda: pytest.fail("no look-up for SQL stores"), "run")


def test_classification() -> None:
    assert may_have_committed(ConnectionResetError())
    assert may_have_committed(MlflowException("API request failed with timeout exception"))
    assert may_have_committed(RestException({"error_code": "TEMPORARILY_UNAVAILABLE"}))
    assert may_have_committed(RestException({"error_code": "REQUEST_LIMIT_EXCEEDED"}))  # 429
    assert not may_have_committed(RestException({"error_code": "INVALID_PARAMETER_VALUE"}))


def test_client_retry_is_off_for_this_thread_only() -> None:
    seen: dict[str, int] = {}

    def other() -> None:
        seen["other"] = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()

    with no_client_retry():
        seen["inside"] = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    seen["after"] = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    assert seen == {"inside": 0, "other": 3, "after": 3}
