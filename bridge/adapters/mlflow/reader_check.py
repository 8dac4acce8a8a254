"""Checks the MLflow reader runs before reading: is the store there and is it MLflow's.

Each raises one BridgeError line naming the store and the fix."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.adapters.mlflow.files import local_dir
from bridge.errors import BridgeError


def check_sqlite_file(target: str, display_uri: str) -> None:
    from sqlalchemy.engine import make_url

    try:
        db = make_url(target).database
    except Exception:
        db = None
    if not db or db == ":memory:":
        raise BridgeError(f"{display_uri}: names no sqlite database file; use sqlite:///PATH.db")
    path = Path(db).expanduser()
    if not path.is_file():
        # Checked before MLflow sees the URI: MlflowClient would create an empty store.
        raise BridgeError(
            f"{display_uri}: sqlite database {path} does not exist; "
            "check the path (sqlite:////abs/path.db for an absolute path)"
        )


def check_file_store(target: str, display_uri: str) -> None:
    path = local_dir(target) or Path(target.split(":", 1)[1])
    if not path.is_dir():
        raise BridgeError(f"{display_uri}: folder {path} does not exist; check the path")
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise BridgeError(
            f"{display_uri}: MLflow 3 refuses file stores by default; "
            "set MLFLOW_ALLOW_FILE_STORE=true"
        )


def check_sql_tables(target: str, kind: str, display_uri: str, scrub: Callable[[str], str]) -> None:
    import sqlalchemy

    args: dict[str, Any] = {}
    if kind == "sql" and target.startswith(("postgresql", "mysql")):
        args["connect_timeout"] = 5
    try:
        engine = sqlalchemy.create_engine(target, connect_args=args)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:
        raise BridgeError(
            f"{display_uri}: cannot connect to the database "
            f"({type(exc).__name__}: {scrub(str(exc))}); check host, port, "
            "database name, credentials and that the driver is installed"
        ) from None
    missing = {"experiments", "runs", "metrics"} - tables
    if missing:
        raise BridgeError(
            f"{display_uri}: not an MLflow tracking database (no table "
            f"{', '.join(sorted(missing))}); point at the database your MLflow server uses"
        )
