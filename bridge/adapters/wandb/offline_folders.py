"""The run folders of an offline ``wandb/`` directory: names, logs, fingerprints and
the console log of a resumed run read as one stream."""

from __future__ import annotations

import hashlib
import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError

FOLDER_RE = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+)$")


def run_id_of(folder: Path) -> str | None:
    """The run id a run folder's name carries (``offline-run-<date>_<time>-<id>``)."""
    m = FOLDER_RE.match(folder.name)
    return m.group(2) if m else None


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and FOLDER_RE.match(path.name) is not None


def log_of(folder: Path) -> Path | None:
    """The folder's transaction log: ``run-<id>.wandb`` (or the only ``*.wandb``)."""
    rid = run_id_of(folder)
    if rid:
        named = folder / f"run-{rid}.wandb"
        if named.is_file():
            return named
    logs = sorted(folder.glob("*.wandb"))
    return logs[0] if logs else None


def since_ms(since: str | None) -> int | None:
    """``ReaderOptions.since`` (ISO date or datetime, UTC unless it says) as epoch ms."""
    if not since:
        return None
    try:
        when = datetime.fromisoformat(since)
    except ValueError as exc:
        raise BridgeError(f"--since {since!r} is not an ISO date (e.g. 2026-01-31)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def fingerprint(folders: list[Path]) -> str:
    """Hash of (path, size, mtime) of the logs and files/: changes when anything is appended."""
    h = hashlib.sha256()
    for folder in folders:
        entries: list[Path] = [p for p in folder.glob("*.wandb") if p.is_file()]
        files_dir = folder / "files"
        if files_dir.is_dir():
            entries.extend(p for p in files_dir.rglob("*") if p.is_file())
        for p in sorted(entries):
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def stat_key(paths: list[Path], stats: list[os.stat_result]) -> str:
    """What identifies this version of a file cheaply: where it really is (symlinks that
    ``run.save`` leaves are followed), its size and mtime. A rewrite of the same size
    still moves the mtime, so the content is hashed again."""
    return "\n".join(
        f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}" for p, st in zip(paths, stats, strict=True)
    )


class ConcatFile(io.RawIOBase):
    """Several files read as one stream (``output.log`` of a resumed run's parts)."""

    def __init__(self, paths: list[str]) -> None:
        self._paths = list(paths)
        self._fh: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while True:
            if self._fh is None:
                if not self._paths:
                    return 0
                self._fh = open(self._paths.pop(0), "rb")
            n = self._fh.readinto(buf)
            if n:
                return n
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()
