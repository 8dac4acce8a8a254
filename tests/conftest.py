"""Shared fixtures: real MLflow stores (sqlite, an `mlflow server` process, PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MLFLOW_TRUNCATE_LONG_VALUES", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

PG_BASE = os.environ.get("BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not come up")


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    """A fresh sqlite MLflow tracking URI (artifacts under tmp_path)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def start_mlflow_server(
    workdir: Path,
    backend_uri: str | None = None,
    *,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    artifacts: Sequence[str] | None = None,
    timeout: float = 90,
) -> tuple[str, subprocess.Popen]:
    """A real ``mlflow server`` on a free loopback port, in its own process session (stop it
    with :func:`stop_mlflow_server`: with ``--workers`` > 1 uvicorn's workers go too).
    ``artifacts``: the artifact options (default: proxied ``mlflow-artifacts:/`` into
    ``workdir/server-artifacts``); ``extra_args`` e.g. ``["--app-name", "basic-auth"]``;
    ``env`` is added to this process's environment."""
    port = free_port()
    backend = backend_uri or f"sqlite:///{workdir / 'server.db'}"
    if artifacts is None:
        art = workdir / "server-artifacts"
        art.mkdir(parents=True, exist_ok=True)
        artifacts = ["--default-artifact-root", "mlflow-artifacts:/"]
        artifacts += ["--artifacts-destination", str(art)]
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend, *artifacts, "--workers", str(workers), *extra_args]
    workdir.mkdir(parents=True, exist_ok=True)
    # No background job workers (MLflow 3 starts several per server): less load, same API.
    full_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    with open(workdir / "server.log", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=full_env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=timeout)
    except Exception:
        stop_mlflow_server(proc)
        raise
    return url, proc


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    """Stop a server from :func:`start_mlflow_server` and every process of its session."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@contextlib.contextmanager
def running_mlflow_server(
    workdir: Path, backend_uri: str | None = None, **options: Any
) -> Iterator[str]:
    """A real `mlflow server` (start_mlflow_server, same options) for the block; stopped after it."""
    url, proc = start_mlflow_server(workdir, backend_uri, **options)
    try:
        yield url
    finally:
        stop_mlflow_server(proc)


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a fresh sqlite backend; yields its URL."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "bridge_") -> Iterator[str]:
    """A fresh PostgreSQL database on the local server for the block; yields its URL and
    drops it after (its connections terminated first)."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = prefix + uuid.uuid4().hex[:12]
    admin = sqlalchemy.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # pragma: no cover - environment without PostgreSQL
        pytest.fail(f"PostgreSQL at {PG_BASE} is required for this test: {exc}")
    try:
        yield PG_BASE.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server; yields its SQLAlchemy URL."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An S3 endpoint on loopback (moto's server, in process), as MLflow's artifact store:
    the client lists and fetches artifacts straight from the bucket with boto3."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": url,
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="artifacts")
    yield client
    server.stop()
