"""Checks the MLflow writer runs before writing: is the store there, writable, reachable."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError


def store_missing(kind: str, target: str) -> bool:
    """A sqlite store that does not exist yet holds nothing; MLflow creates it on first use."""
    if kind != "sqlite":
        return False
    from sqlalchemy.engine import make_url

    db = make_url(target).database
    return db is not None and db not in ("", ":memory:") and not Path(db).expanduser().exists()


def check_sqlite_path(target: str, display_uri: str) -> None:
    """The sqlite file (or the folder it would be created in) is writable."""
    from sqlalchemy.engine import make_url

    db = make_url(target).database
    if not db or db == ":memory:":
        raise BridgeError(
            f"{display_uri}: an in-memory sqlite store cannot keep anything; use sqlite:///PATH.db"
        )
    path = Path(db).expanduser()
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if path.exists():
        ok = path.is_file() and os.access(path, os.W_OK) and os.access(parent, os.W_OK)
    else:
        ok = probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
    if not ok:
        raise BridgeError(
            f"{display_uri}: sqlite database {path} is not writable (folder {parent} "
            "missing, not a folder, or read-only); choose a writable path"
        )


def check_sql_connect(target: str, display_uri: str, scrub: Callable[[str], str]) -> None:
    """One connection to the database, quickly (5 s for PostgreSQL/MySQL)."""
    import sqlalchemy

    args: dict[str, Any] = {}
    if target.startswith(("postgresql", "mysql")):
        args["connect_timeout"] = 5
    try:
        engine = sqlalchemy.create_engine(target, connect_args=args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:
        raise BridgeError(
            f"{display_uri}: cannot connect to the database "
            f"({type(exc).__name__}: {scrub(str(exc))}); check host, port, "
            "database name, credentials and that the driver is installed"
        ) from None


def check_file_store_allowed(display_uri: str) -> None:
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise BridgeError(
            f"{display_uri}: MLflow 3 refuses file stores by default; set MLFLOW_ALLOW_FILE_STORE=true "
            "or use a sqlite:///PATH.db store"
        )


def transient(exc: BaseException) -> bool:
    """A server error worth one more try: 429, 5xx, or a connection dropped or timed out."""
    status = getattr(exc, "get_http_status_code", None)
    code = status() if callable(status) else None
    if isinstance(code, int) and (code == 429 or code >= 500):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        word in text
        for word in (
            "connectionerror",
            "connection reset",
            "remotedisconnected",
            "timed out",
            "max retries exceeded",
            "503",
            "502",
            "504",
            "too many 500",
        )
    )
