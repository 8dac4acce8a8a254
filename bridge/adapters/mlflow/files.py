"""Artifact files of an MLflow store on this machine: local folders read in place, other
stores downloaded to a temp folder that goes away when the file is closed. Shared by the
run reader and the registry reader. And the other way: one stream into a run's artifacts
with as few copies of its bytes as MLflow's artifact repository allows (:func:`log_stream`)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bridge.errors import ContentError
from bridge.paths import PathRefused

_CHUNK = 1 << 20
_PROC_FD = "/proc/self/fd"
#: MLflow's presigned multipart downloads (an ``mlflow server --serve-artifacts`` on S3, GCS,
#: Azure ...) hold each part in memory, one per download thread, 100 MiB by default: a
#: 256 MiB file added ~400 MiB to the bridge's peak RSS. In 2 MiB parts it adds ~65 MiB
#: (8 MiB parts: ~150 MiB, freed parts stay in the threads' malloc arenas), whatever the
#: file's size; a value the operator sets is left alone.
DOWNLOAD_PART_ENV = "MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE"
DOWNLOAD_PART = 2 << 20


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
    returned deletes the folder when closed (multipart downloads in bounded parts, see
    :data:`DOWNLOAD_PART`). A failure is one ``error`` naming ``what``, with credentials
    scrubbed from the backend's message."""
    os.environ.setdefault(DOWNLOAD_PART_ENV, str(DOWNLOAD_PART))
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


def log_stream(client: Any, run_id: str, folder: str | None, name: str, stream: IO[bytes]) -> None:
    """Put ``stream``'s bytes into run ``run_id``'s artifacts as ``folder/name``.

    Why three ways (each byte is read through ``stream`` once, so a verifying stream
    hashes and checks all of it before MLflow publishes anything):

    - a repository that takes a stream (MLflow's local folders): written straight into
      its own hidden temp file, renamed into place (no staged copy);
    - ``log_artifact`` wants a path (S3, HTTP...): a regular local source file
      (``stream.source_fd()``) is read through, then handed over by a symlink to its open
      descriptor, so the bytes sent are the very file hashed; a change of the file while
      it was sent (size, mtime, ctime) is refused as a :class:`ContentError`;
    - any other stream: staged in a temp file (one extra copy; unavoidable there)."""
    repo = _artifact_repo(client, run_id)
    if repo is not None and _takes_streams(repo):
        repo.log_artifact_from_stream(stream, name, folder)
        return
    source_fd = getattr(stream, "source_fd", None)
    fd = source_fd() if callable(source_fd) and os.path.isdir(_PROC_FD) else None
    with tempfile.TemporaryDirectory(prefix="bridge-mlflow-") as tmp:
        local = Path(tmp) / name
        if fd is None:
            with open(local, "wb") as out:
                shutil.copyfileobj(stream, out, _CHUNK)
            client.log_artifact(run_id, str(local), folder)
            return
        before = _identity(fd)
        while stream.read(_CHUNK):
            pass
        os.symlink(f"{_PROC_FD}/{fd}", local)
        client.log_artifact(run_id, str(local), folder)
    if _identity(fd) != before:
        raise ContentError(f"{name}: the source file changed while it was copied")


def _identity(fd: int) -> tuple[int, ...]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _artifact_repo(client: Any, run_id: str) -> Any:
    """The run's artifact repository as MlflowClient caches it, or None (a client
    without that private hook: the path way then)."""
    get = getattr(getattr(client, "_tracking_client", None), "_get_artifact_repo", None)
    return get(run_id) if callable(get) else None


def _takes_streams(repo: Any) -> bool:
    try:
        from mlflow.store.artifact.artifact_repo import StreamUploadMixin
    except ImportError:  # an MLflow before streaming uploads
        return False
    return isinstance(repo, StreamUploadMixin)
