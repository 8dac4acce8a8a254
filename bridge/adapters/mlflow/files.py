"""Artifact files of an MLflow store on this machine: local folders read in place, other
stores downloaded to a temp folder that goes away when the file is closed. Shared by the
run reader and the registry reader."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from bridge.paths import PathRefused


def local_dir(artifact_uri: str) -> Path | None:
    """The folder of a local artifact root (plain path or ``file:`` URI), else None."""
    if not artifact_uri:
        return None
    parts = urllib.parse.urlsplit(artifact_uri)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        return Path(artifact_uri)
    return None


def local_stat_key(folder: Path | None, rel: str) -> str | None:
    """Path, size and mtime of a local artifact file (see FileRef.stat_key), else None."""
    if folder is None:
        return None
    p = folder / rel
    try:
        st = p.stat()
    except OSError:
        return None
    return f"{p}\0{st.st_size}\0{st.st_mtime_ns}"


class _TempFile(io.FileIO):
    """A read-only binary file that deletes its temp folder when closed."""

    def __init__(self, path: Path, folder: str) -> None:
        super().__init__(path, "rb")
        self._folder = folder

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


def download_to_temp(
    download: Callable[[str], str], error: type[Exception], what: str, scrub: Callable[[str], str]
) -> IO[bytes]:
    """``download(folder)`` into a fresh temp folder (it returns the file's path); the file
    returned deletes the folder when closed. A failure is one ``error`` naming ``what``,
    with credentials scrubbed from the backend's message."""
    folder = tempfile.mkdtemp(prefix="bridge-mlflow-")
    try:
        got = Path(download(folder)).resolve()
        if not got.is_relative_to(Path(folder).resolve()):  # a server-sent absolute path
            raise PathRefused(f"{what}: the download landed outside its temp folder: {got}")
        return _TempFile(got, folder)
    except PathRefused:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise error(
            f"{what} cannot be downloaded: {type(exc).__name__}: {scrub(str(exc))}"
        ) from None
