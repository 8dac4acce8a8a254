"""Tracking-URI helpers shared by the MLflow reader and writer."""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError

_SQL_SCHEMES = {"postgresql", "mysql", "mssql"}
_SECRET_QUERY_KEYS = ("pass", "secret", "token", "key", "auth", "cred", "sig")


def redact_uri(uri: str) -> str:
    """``uri`` without ``user:password@`` and without secret-looking query parameters.

    Edits the text in place rather than re-assembling it: ``urlunsplit`` would turn
    ``sqlite:////abs.db`` into ``sqlite://abs.db``.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri.rsplit("@", 1)[-1]
    out = uri
    if "@" in parts.netloc:
        prefix = uri[: uri.index("//") + 2] if "//" in uri else ""
        out = prefix + parts.netloc.rsplit("@", 1)[-1] + uri[len(prefix) + len(parts.netloc) :]
    if parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not any(s in k.lower() for s in _SECRET_QUERY_KEYS)]
        if len(kept) != len(pairs):
            head, _, rest = out.partition("?")
            frag = "#" + parts.fragment if parts.fragment else ""
            query = urllib.parse.urlencode(kept)
            out = head + ("?" + query if query else "") + frag
    return out


def store_kind(uri: str) -> str:
    """Classify a tracking URI: "sqlite", "sql", "http" or "file"; BridgeError otherwise."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return "sqlite"
    if base in _SQL_SCHEMES:
        return "sql"
    if base in ("http", "https"):
        return "http"
    if base == "file":
        return "file"
    raise BridgeError(
        f"mlflow:{redact_uri(uri)}: unsupported tracking URI scheme {scheme or '(none)'!r}; "
        "use sqlite:///PATH.db, postgresql://..., mysql://..., http(s)://HOST:PORT or file:PATH"
    )


def scrub(text: object, uri: str) -> str:
    """The first line of an error message with ``uri`` redacted and its secrets masked."""
    line = (str(text).strip().splitlines() or [""])[0][:300]
    line = line.replace(uri, redact_uri(uri))
    try:
        parts = urllib.parse.urlsplit(uri)
        secrets = [parts.password] + [
            v
            for k, v in urllib.parse.parse_qsl(parts.query)
            if any(s in k.lower() for s in _SECRET_QUERY_KEYS)
        ]
    except ValueError:
        secrets = []
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***").replace(urllib.parse.quote(secret), "***")
    return line


@contextmanager
def quick_http(kind: str) -> Iterator[None]:
    """No retries and a short timeout for a server, for a check only: MLflow reads these
    settings on every call, so they apply to what runs inside the block."""
    if kind != "http":
        yield
        return
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {n: os.environ.get(n) for n in names}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_server(uri: str) -> None:
    """One quick GET of the server's /health; unreachable is one BridgeError line."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    url = urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")
    )
    try:
        with urllib.request.urlopen(url, timeout=5):  # noqa: S310 - the user's own server
            pass
    except urllib.error.HTTPError:
        return  # something answers; auth and paths are checked by the API call after this
    except Exception as exc:
        reason = getattr(exc, "reason", exc)
        raise BridgeError(
            f"mlflow:{redact_uri(uri)}: MLflow server unreachable ({scrub(reason, uri)}); "
            "start it (mlflow server ...) or fix host/port"
        ) from None


def absolute_uri(uri: str) -> str:
    """``sqlite:///rel.db`` and ``file:rel`` with their paths made absolute; else as given."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, q, query = uri[len("sqlite:///") :].partition("?")
        if path and path != ":memory:":
            return f"sqlite:///{Path(path).expanduser().resolve()}{q}{query}"
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return f"file:{Path(uri[len('file:') :]).expanduser().resolve()}"
    return uri


def alembic_leftovers(uri: str) -> list[str]:
    """``_alembic_tmp_*`` tables in a SQL store: what an interrupted MLflow migration leaves."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(uri)
        try:
            names = sa.inspect(engine).get_table_names()
        finally:
            engine.dispose()
    except Exception:  # noqa: BLE001 - unreadable: nothing to say beyond MLflow's own error
        return []
    return sorted(n for n in names if n.startswith("_alembic_tmp_"))


def _empty_sqlite_file(uri: str) -> str | None:
    """The path of ``uri``'s sqlite file if it is absent or holds no table yet, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].partition("?")[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return path
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=60)
        try:
            (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # not ours to judge: MLflow's own open reports it
    return path if tables == 0 else None


def _no_fsync(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA synchronous=OFF")


def _fsync(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_sqlite_schema(uri: str) -> None:
    """Create a new sqlite store's schema with MLflow's own code, fsync-free, beside the
    store, then move it into place: fast, and a crash leaves no half-migrated store.

    Python's sqlite3 commits every DDL statement of MLflow's ~60 alembic migrations on its
    own, each with its fsyncs: on these machines ~4 s of a fresh store's ~5.6 s, for ~1.2 s
    CPU. Here they run under ``PRAGMA synchronous=OFF`` into ``<db>.bridge-new``, which is
    fsynced and renamed over the (absent or empty) store file. MLflow's own creation killed
    midway leaves a store it cannot open again (``duplicate column``, ``_alembic_tmp_*``);
    this one leaves a stray ``.bridge-new`` that the next creation replaces. Same tables and
    rows as MLflow's creation (tests/test_mlflow_store_open.py). The caller holds the store
    init lock. Only a file with no table at all: an existing store is MLflow's to upgrade.
    """
    path = _empty_sqlite_file(uri)
    if path is None:
        return
    try:
        from mlflow.store.db import utils as db_utils

        make_engine = db_utils.create_sqlalchemy_engine_with_retry
        all_exist, initialize = db_utils._all_tables_exist, db_utils._initialize_tables
    except (ImportError, AttributeError):  # another MLflow: its own (slower) creation
        return
    import sqlalchemy as sa

    path = os.path.realpath(path)  # a symlinked store: create its target, keep the link
    new = path + ".bridge-new"
    for stale in (new, new + "-journal"):
        if os.path.exists(stale):
            os.remove(stale)
    query = uri.partition("?")[2]
    engine = make_engine(f"sqlite:///{new}" + (f"?{query}" if query else ""))
    sa.event.listen(engine, "connect", _no_fsync)
    try:
        if not all_exist(engine):
            initialize(engine)
    finally:
        engine.dispose()
    _fsync(new)
    if _empty_sqlite_file(uri) is None:  # created meanwhile by someone else: theirs stands
        os.remove(new)
        return
    os.replace(new, path)
    _fsync(os.path.dirname(os.path.abspath(path)))


class MlflowStore:
    """What the MLflow reader and writer share: the tracking URI, its credential-free form,
    one lazily created MlflowClient, and error lines with secrets scrubbed."""

    scheme = "mlflow"
    target: str

    @classmethod
    def normalize_target(cls, target: str) -> str:
        return absolute_uri(target)

    def _init_store(self, target: str) -> None:
        self.kind = store_kind(target)
        self._lock = threading.Lock()
        self._client_obj: Any = None

    @property
    def display_uri(self) -> str:
        return f"{self.scheme}:{redact_uri(self.target)}"

    @property
    def client(self) -> Any:
        """The shared MlflowClient (created on first use)."""
        if self._client_obj is None:
            with self._lock:
                if self._client_obj is None:
                    self._client_obj = self._open_client()
        return self._client_obj

    def _open_client(self) -> Any:
        """A new MlflowClient. The first one on a new SQL store creates the schema (MLflow's
        migrations): one process at a time, or two leave it half-migrated; a store a crash
        left half-migrated is named with its fix instead of MLflow's obscure error."""
        from mlflow.tracking import MlflowClient

        from bridge.locks import store_init_lock

        with store_init_lock(self.target, self.display_uri):
            try:
                if self.kind == "sqlite":
                    create_sqlite_schema(self.target)
                return MlflowClient(tracking_uri=self.target)
            except Exception as exc:
                leftover = alembic_leftovers(self.target) if self.kind in ("sqlite", "sql") else []
                if not leftover:
                    raise
                raise BridgeError(
                    f"{self.display_uri}: table {leftover[0]} was left by an interrupted MLflow "
                    f"schema migration ({type(exc).__name__}); back up the database, drop that "
                    f"table and run `mlflow db upgrade {redact_uri(self.target)}`"
                ) from None

    def _scrub(self, text: str) -> str:
        """One line of an error message, with the raw URI and any secret removed."""
        return scrub(text, self.target)
