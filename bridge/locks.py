"""One cycle per source/destination pair at a time, across processes and machines.

The lock lives where the state lives, so everyone sharing a state store shares the lock:

* PostgreSQL state: a session-level advisory lock (``pg_try_advisory_lock``) on a 64-bit
  hash of the pair, held by one dedicated connection. A killed process's session ends
  and PostgreSQL drops the lock with it.
* SQLite state (or any other URL): an ``flock`` on a file beside the state file
  (``<state>.locks/<hash>.lock``). The kernel drops it when the holding process dies, so
  a stale lock file is harmless: its content (holder pid, host, time) is only a hint.
  Lock files are opened without following symbolic links and the lock folder is the
  user's own (mode 0700, not a link), so a planted link cannot make the bridge truncate or
  write another file.

``wait=False`` gives up at once (the caller skips the cycle and says so); ``wait=True``
polls until the lock is free, or until ``timeout`` seconds have passed.

The pair lock schedules (one cycle per pair, what ``bridge status`` shows as running); it
is not what keeps runs from being copied twice: the pair is named by URI strings, and two
URIs can yield the same runs. That is the run claims' job (bridge/engine/claims.py), per
(destination, source identity), so syncs of different runs proceed in parallel.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from bridge.errors import BridgeError
from bridge.state import default_state_url, normalize_state_url

POLL_SECONDS = 0.5


class LockHeld(Exception):
    """Another process holds the pair's lock; ``holder`` says who, when known."""

    def __init__(self, pair: str, holder: str | None) -> None:
        self.pair = pair
        self.holder = holder
        who = f" (held by {holder})" if holder else ""
        super().__init__(f"another cycle of {pair} is running{who}")


def pair_key(source_uri: str, dest_uri: str) -> str:
    """The lock name of a pair: credential-free display URIs."""
    return f"{source_uri} -> {dest_uri}"


def advisory_key(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` (stable across machines)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def whoami() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextmanager
def pair_lock(
    state_url: str | None,
    source_uri: str,
    dest_uri: str,
    *,
    wait: bool = False,
    timeout: float | None = None,
) -> Iterator[None]:
    """Hold the pair's lock for the block; raise :class:`LockHeld` if it is taken."""
    url = normalize_state_url(state_url)
    name = pair_key(source_uri, dest_uri)
    if url.startswith(("postgresql", "postgres")):
        with _pg_lock(url, name, wait, timeout):
            yield
    else:
        with _file_lock(_lock_path(url, name), name, wait, timeout):
            yield


def _lock_path(url: str, name: str) -> Path:
    digest = hashlib.sha256(name.encode()).hexdigest()[:24]
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        base = Path(url[len("sqlite:///") :])
    else:  # in-memory SQLite or another database: a machine-local lock only
        base = Path(default_state_url()[len("sqlite:///") :])
        digest = hashlib.sha256(f"{url}\0{name}".encode()).hexdigest()[:24]
    folder = base.with_name(base.name + ".locks")
    folder.parent.mkdir(parents=True, exist_ok=True)
    _own_folder(folder)
    return folder / f"{digest}.lock"


def _own_folder(folder: Path) -> None:
    """Create ``folder`` (0700) or accept it only as the user's own real folder."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise BridgeError(f"lock folder {folder} is not a plain folder (a link?); remove it")
    if info.st_uid != os.getuid():
        raise BridgeError(f"lock folder {folder} belongs to another user (uid {info.st_uid})")


def _open_lock_file(path: Path) -> IO[str]:
    """Open (or create) a lock file without following a link and without truncating it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise BridgeError(f"lock file {path} is a symbolic link; not following it") from None
        raise BridgeError(f"cannot open lock file {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise BridgeError(f"lock file {path} is not a regular file of its own (a link?); remove it")
    return os.fdopen(fd, "r+", encoding="utf-8")


def _deadline(wait: bool, timeout: float | None) -> float:
    if not wait:
        return 0.0
    return time.monotonic() + timeout if timeout is not None else float("inf")


@contextmanager
def _file_lock(
    path: Path, name: str, wait: bool, timeout: float | None, busy: str | None = None
) -> Iterator[None]:
    """``busy``: raise BridgeError with this text instead of LockHeld when it stays taken."""
    import fcntl

    deadline = _deadline(wait, timeout)
    fh = _open_lock_file(path)  # held for the block
    try:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    if busy is not None:
                        raise BridgeError(busy) from None
                    raise LockHeld(name, _read_holder(fh)) from None
                time.sleep(POLL_SECONDS)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pair": name, "holder": whoami(), "since": time.time()}))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def _read_holder(fh: IO[str]) -> str | None:
    """The holder written into the lock file (read through the handle we opened safely)."""
    try:
        fh.seek(0)
        info = json.loads(fh.read(4096) or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if not info.get("holder"):
        return None
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"{info['holder']} since {since}"


#: How long a process waits for another one to finish creating an MLflow store's schema.
STORE_INIT_TIMEOUT = 600.0


@contextmanager
def store_init_lock(uri: str, display: str) -> Iterator[None]:
    """Hold MLflow's store initialization for one process at a time.

    The first ``MlflowClient`` on a new SQL store creates its schema with MLflow's alembic
    migrations; two processes doing it at once leave it half-migrated (``_alembic_tmp_*``
    tables, "table already exists", version rows not found). Serialized here: an ``flock``
    on ``<db>.bridge-init.lock`` beside a sqlite file, a session advisory lock in a
    PostgreSQL database. Other stores (servers, files, MySQL) are not locked. A sqlite
    folder where no lock file can be made (read-only) holds no store to create: no lock.
    """
    name = f"mlflow store init {display}"
    if uri.startswith("sqlite:///"):
        path = _sqlite_init_lock_path(uri)
        if path is None:
            yield
            return
        with _file_lock(path, name, True, STORE_INIT_TIMEOUT, _init_timeout(display)):
            yield
    elif uri.startswith(("postgresql", "postgres")):
        with _pg_lock(uri, name, True, STORE_INIT_TIMEOUT, _init_timeout(display)):
            yield
    else:
        yield


def _sqlite_init_lock_path(uri: str) -> Path | None:
    db = sa.engine.make_url(uri).database
    if not db or db == ":memory:":
        return None
    path = Path(db).expanduser()
    lock = path.with_name(path.name + ".bridge-init.lock")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return None
    if os.path.isfile(lock) and not os.path.islink(lock) and not os.access(lock, os.W_OK):
        return None  # another user's lock file in a shared folder: no lock, as before
    return lock


def _init_timeout(display: str) -> str:
    return (
        f"{display}: another process has been creating this MLflow store's schema for "
        f"{STORE_INIT_TIMEOUT:.0f} s; check it, then retry"
    )


@contextmanager
def _pg_lock(
    url: str, name: str, wait: bool, timeout: float | None, busy: str | None = None
) -> Iterator[None]:
    key = advisory_key(name)
    app = f"tracking-bridge {whoami()}"[:63]
    try:
        engine = sa.create_engine(
            url,
            poolclass=sa.NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"application_name": app},
        )
        conn = engine.connect()
    except Exception as exc:
        safe = sa.engine.make_url(url).render_as_string(hide_password=True)
        if busy is None:
            raise BridgeError(f"cannot reach the state store {safe} to take the pair lock") from exc
        raise BridgeError(f"cannot reach {safe} to take its initialization lock") from exc
    deadline = _deadline(wait, timeout)
    try:
        while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            if time.monotonic() >= deadline:
                if busy is not None:
                    raise BridgeError(busy)
                raise LockHeld(name, _pg_holder(conn, key))
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        conn.close()
        engine.dispose()


def _pg_holder(conn: Any, key: int) -> str | None:
    """Who holds the advisory lock: the holder's application name and backend pid."""
    # A bigint key is stored as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        sa.text(
            "SELECT a.application_name, a.pid, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).first()
    if row is None:
        return None
    return f"{row.application_name or 'a session'} (backend {row.pid})"
