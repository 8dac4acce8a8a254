"""Create calls that never commit twice when a server's response is lost.

MLflow's REST client retries every request itself, POSTs included (urllib3 ``Retry`` with
``allowed_methods=None``): on a read error or timeout — the request reached the server, the
answer never came back — it sends the request again. For an idempotent call that is fine;
for ``runs/create``, ``model-versions/create`` or ``logged-models`` it commits a second
object (checked against a real ``mlflow server`` behind tests/fakes/fault_proxy.py).

:func:`create_once` therefore sends a create with the client's own retries off *for the
calling thread only* and retries it itself: after any failure that may have committed, it
first looks the object up by its identity (the ``bridge.source_id`` tag the create call
wrote), and creates again only if nothing is there. SQL and file stores answer in-process
and keep their own behaviour.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

_T = TypeVar("_T")
log = logging.getLogger(__name__)

_local = threading.local()
_install_lock = threading.Lock()
_installed = False
#: urllib3's cap on one backoff sleep (Retry.DEFAULT_BACKOFF_MAX), which MLflow's retry uses.
BACKOFF_MAX_S = 120.0


def _install() -> None:
    """Make MLflow's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` read 0 on threads inside
    :func:`no_client_retry` (it is read on every request; other threads are unaffected)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from mlflow import environment_variables as ev
        from mlflow.utils import rest_utils

        var = ev.MLFLOW_HTTP_REQUEST_MAX_RETRIES
        if getattr(rest_utils, "MLFLOW_HTTP_REQUEST_MAX_RETRIES", None) is not var:
            raise RuntimeError(
                "this MLflow version reads MLFLOW_HTTP_REQUEST_MAX_RETRIES elsewhere; "
                "bridge/adapters/mlflow/once.py needs updating"
            )
        configured = var.get

        def get() -> int:
            return 0 if getattr(_local, "off", False) else int(configured())

        var.get = get  # type: ignore[method-assign]
        _installed = True


@contextmanager
def no_client_retry() -> Iterator[None]:
    """MLflow's own HTTP retries off for requests made by this thread inside the block."""
    _install()
    before = getattr(_local, "off", False)
    _local.off = True
    try:
        yield
    finally:
        _local.off = before


def may_have_committed(exc: BaseException) -> bool:
    """False for an answer that says the request was refused (4xx other than 429); True
    for resets, timeouts, 5xx and 429 — the request may or may not have been carried out."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return not (400 <= status < 500) or status == 429
    return True


def _policy() -> tuple[int, float, float]:
    """Attempts, backoff factor and jitter as the user configured MLflow's client."""
    from mlflow import environment_variables as ev

    _install()
    attempts = int(ev.MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()) + 1
    factor = float(ev.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get())
    jitter = float(ev.MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get())
    return max(1, attempts), factor, jitter


def _sleep(attempt: int, factor: float, jitter: float) -> None:
    delay = min(BACKOFF_MAX_S, factor * (2 ** (attempt - 1))) + random.random() * jitter
    time.sleep(delay)


def create_once(
    kind: str, create: Callable[[], _T], find: Callable[[], _T | None], what: str
) -> _T:
    """``create()`` exactly once in effect on a server (``kind == "http"``): retried by
    us, never by the client, with ``find()`` (the object by its identity, or None) asked
    before every new attempt. Other stores: ``create()``. The last error if all fail."""
    if kind != "http":
        return create()
    attempts, factor, jitter = _policy()
    last: BaseException | None = None
    for attempt in range(attempts + 1):
        if attempt:
            _sleep(attempt, factor, jitter)
            try:
                found = find()
            except Exception as exc:  # noqa: BLE001 - unknown yet: look again next round
                log.debug("looking up %s after a failed create failed", what, exc_info=True)
                last = exc
                continue
            if found is not None:
                log.debug("%s was created by an attempt whose answer was lost", what)
                return found
            if attempt == attempts:
                break
        try:
            with no_client_retry():
                return create()
        except Exception as exc:
            if not may_have_committed(exc):
                raise
            log.debug("creating %s failed (attempt %d)", what, attempt + 1, exc_info=True)
            last = exc
    assert last is not None
    raise last
