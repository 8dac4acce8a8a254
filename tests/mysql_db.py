"""A fresh MySQL/MariaDB database per test (tests/test_mysql_store.py, the "mysql" store of
tests/test_bulk_differential.py). The server: ``BRIDGE_TEST_MYSQL`` (default root with no
password on 127.0.0.1:3306, MariaDB 10.11 on the CI machine); tests skip only when nothing
answers on its port."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

MYSQL_BASE = os.environ.get("BRIDGE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")


def mysql_answers() -> bool:
    """Something listens on the server's port (a refused or silent port: False)."""
    from sqlalchemy.engine import make_url

    url = make_url(MYSQL_BASE)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 3306), timeout=2):
            return True
    except OSError:
        return False


SKIP_REASON = f"no MySQL/MariaDB server answers at {MYSQL_BASE} (BRIDGE_TEST_MYSQL)"


@contextlib.contextmanager
def fresh_mysql_database(prefix: str = "bridge_t_", collate: str = "") -> Iterator[str]:
    """A new database for the block (server default charset and collation, as MLflow users
    get them, unless ``collate`` names one); yields its SQLAlchemy URL and drops it after."""
    import sqlalchemy as sa

    if not mysql_answers():
        pytest.skip(SKIP_REASON)
    name = prefix + uuid.uuid4().hex[:12]
    admin = sa.create_engine(MYSQL_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        extra = f" CHARACTER SET utf8mb4 COLLATE {collate}" if collate else ""
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`{extra}")
    try:
        yield MYSQL_BASE.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
