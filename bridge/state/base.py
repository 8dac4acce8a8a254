"""Opening a state store: the engine, its lock and one transaction at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from bridge.errors import BridgeError
from bridge.redact import register_uri
from bridge.state.migrate import create_tables
from bridge.state.records import normalize_state_url


class StoreBase:
    """The connection: thread-safe transactions on the state tables (writes are serialized).
    The other parts of :class:`~bridge.state.StateStore` are mixins over this base."""

    def __init__(self, url: str | None = None, read_only: bool = False) -> None:
        self.url = normalize_state_url(url)
        register_uri(self.url)
        self._lock = threading.RLock()
        sqlite_path = self.url[len("sqlite:///") :] if self.url.startswith("sqlite:///") else None
        if read_only and sqlite_path and not Path(sqlite_path).exists():
            # A dry run against a state store that does not exist yet: read an empty
            # in-memory one rather than create a file.
            self.url = "sqlite://"
            sqlite_path = None
        try:
            if sqlite_path:
                Path(sqlite_path).parent.mkdir(parents=True, exist_ok=True)
                self.engine = sa.create_engine(
                    self.url, connect_args={"check_same_thread": False, "timeout": 60}
                )
            elif self.url == "sqlite://":
                self.engine = sa.create_engine(
                    self.url, connect_args={"check_same_thread": False}, poolclass=sa.StaticPool
                )
            else:
                self.engine = sa.create_engine(self.url, pool_pre_ping=True)
            create_tables(self.engine, indexes=not read_only)
        except Exception as exc:
            safe = sa.engine.make_url(self.url).render_as_string(hide_password=True)
            raise BridgeError(
                f"state store {safe} cannot be opened ({type(exc).__name__}); "
                "pass --state with a writable path or a reachable database URL"
            ) from exc

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self._lock, self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()
