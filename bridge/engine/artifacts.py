"""Artifact content on its way to a destination: which entries to copy, reference entries
fetched on request, checksums checked while streaming, and one copy per destination.

A manifest entry's digest names its algorithm: ``md5:<base64>`` (a bare 24-character base64
value, as manifests that name no algorithm give it, is MD5 too). Every byte the bridge
copies is hashed as it streams through (no second read); a copy whose MD5 differs from its
manifest is reported by name. Digests of other algorithms (an S3 ETag...) are kept as they
are and not checked. An artifact version's content is placed once per destination
(``StateStore.put_object``, keyed by the version's content-addressed source identity), and
every later run, registry version or re-sync reuses that location.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import queue
import re
import stat
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, Any

from bridge.errors import ContentError
from bridge.paths import PathRefused, check_reference_target, open_no_follow
from bridge.schema import ArtifactVersion, ManifestEntry

OpenEntry = Callable[[], IO[bytes]]
ARTIFACTS_DIR = "artifacts"  # logged artifacts' content: <name>/<digest>/files/...
_MD5_B64 = re.compile(r"^[A-Za-z0-9+/]{22}==$")
_MD5_PREFIX = "md5:"
FETCHABLE = ("file://", "http://", "https://", "s3://")


class _Hasher:
    """MD5 on a thread of its own. hashlib lets go of the GIL while it hashes a large
    buffer, so one chunk is hashed while the next is read and the last one written: a
    copy then takes about the longer of hashing and I/O, not their sum (MD5 runs at
    ~700 MiB/s of CPU here, slower than a local disk's copy)."""

    def __init__(self, md5: Any) -> None:
        self.md5 = md5
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # bounded memory
        self.thread = threading.Thread(target=self._run, name="bridge-md5", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.chunks.get()) is not None:
            self.md5.update(data)

    def finish(self) -> None:
        self.chunks.put(None)
        self.thread.join()


class VerifyingStream:
    """A read-only stream that hashes what passes through it (MD5: the only digest a
    manifest or the state compares; a SHA-256 beside it cost a third of the copy's CPU).

    With ``expect`` (the manifest entry), content that does not match is refused while it
    streams: more bytes than the manifest's size, or a size/MD5 difference at the end,
    raise :class:`ContentError` from ``read`` — so the writer reading it aborts before the
    bad copy is stored or finalized, and nothing records it as copied."""

    #: Chunks from this size on are hashed on a thread beside the copy (:class:`_Hasher`).
    THREAD_MIN = 256 * 1024

    def __init__(self, raw: IO[bytes], expect: ManifestEntry | None = None, what: str = "") -> None:
        self.raw = raw
        self._md5 = hashlib.md5()
        self._hasher: _Hasher | None = None
        self.size = 0
        self.expect = expect
        self.what = what
        self._checked = False

    def read(self, n: int | None = -1) -> bytes:
        data = self.raw.read(-1 if n is None else n)
        if self._hasher is None and len(data) >= self.THREAD_MIN:
            self._hasher = _Hasher(self._md5)
        if self._hasher is not None:  # in order: every chunk after the first big one too
            self._hasher.chunks.put(data)
        else:
            self._md5.update(data)
        self.size += len(data)
        if self.expect is not None:
            too_long = self.expect.size is not None and self.size > self.expect.size
            if too_long or not data or n is None or n < 0:
                self.verify()
        return data

    def verify(self) -> None:
        """Raise ContentError once if what streamed so far does not match ``expect``."""
        if self.expect is None or self._checked:
            return
        self._checked = True
        problem = checksum_problem(self.expect, self)
        if problem is not None:
            raise ContentError(
                f"{self.what or self.expect.path}: content does not match its manifest: {problem}"
            )

    def readable(self) -> bool:
        return True

    def source_fd(self) -> int | None:
        """The descriptor of the regular local file this stream reads unchanged from its
        start, or None. A writer whose backend takes only paths may then read the stream
        through (hashing, verifying) and hand the backend that file instead of a staged
        copy of it (see ``bridge.adapters.mlflow.files.log_stream``)."""
        raw = self.raw
        if isinstance(raw, io.BufferedReader) and isinstance(raw.raw, io.FileIO):
            inner: io.FileIO = raw.raw
        elif isinstance(raw, io.FileIO):
            inner = raw
        else:
            return None
        try:
            if raw.tell() != 0 or self.size:
                return None
            fd = inner.fileno()
            return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except (OSError, ValueError):
            return None

    def _settled(self) -> Any:
        """The MD5 of every byte read so far (the hashing thread caught up and ended)."""
        if self._hasher is not None:
            self._hasher.finish()
            self._hasher = None
        return self._md5

    def md5_b64(self) -> str:
        return base64.b64encode(self._settled().digest()).decode()

    def close(self) -> None:
        self._settled()
        self.raw.close()

    def __enter__(self) -> VerifyingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def md5_of(digest: str | None) -> str | None:
    """The base64 MD5 a manifest digest names (``md5:<base64>`` or bare base64 MD5), or
    None for a digest of another form."""
    if digest is None:
        return None
    value = digest.removeprefix(_MD5_PREFIX)
    return value if _MD5_B64.match(value) else None


def checksum_problem(entry: ManifestEntry, stream: VerifyingStream) -> str | None:
    """Why a copied entry does not match its manifest, or None. Only MD5 digests and sizes
    are comparable; other digest forms (S3 ETags ...) are not checked."""
    if entry.size is not None and stream.size != entry.size:
        return f"size {stream.size} bytes, manifest says {entry.size}"
    md5 = md5_of(entry.digest)
    if md5 is not None and stream.md5_b64() != md5:
        return f"MD5 {stream.md5_b64()}, manifest says {entry.digest}"
    return None


def entry_digest(entry: ManifestEntry) -> str:
    """What the state records for a copied manifest entry (and compares next time):
    ``md5:<digest>:<size>`` — the digest without its ``md5:`` prefix, so an entry records
    the same value whichever way its manifest spells the algorithm (and as it always has)."""
    digest = entry.digest.removeprefix(_MD5_PREFIX) if entry.digest is not None else None
    return f"md5:{digest}:{entry.size}"


def hash_content(opener: Callable[[], IO[bytes]]) -> tuple[str, int]:
    """(base64 MD5, size) of a file's content, streamed in 1 MiB reads."""
    md5, size = hashlib.md5(), 0
    with opener() as fh:
        while chunk := fh.read(1 << 20):
            md5.update(chunk)
            size += len(chunk)
    return base64.b64encode(md5.digest()).decode(), size


def open_reference(uri: str, file_roots: Sequence[str] | None = None) -> IO[bytes]:
    """Open a reference entry's target for ``--download-references``.

    ``file://`` and ``http(s)://`` through the standard library; ``s3://`` through boto3
    with the usual AWS environment (an S3-compatible store's endpoint from
    ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL``, see :func:`s3_endpoint`). A
    ``file://`` target is read only under ``file_roots`` (what the reader allows, see
    ``Reader.file_reference_roots``; None: never) — else :class:`PathRefused`, a loss that
    fails the run. Any other failure is a FileNotFoundError naming the reference:
    reported, the run goes on."""
    try:
        return _open_reference(uri, file_roots)
    except (FileNotFoundError, PathRefused):
        raise
    except Exception as exc:
        raise FileNotFoundError(
            f"reference {uri} cannot be fetched: {type(exc).__name__}: {exc}"
        ) from exc


def _open_reference(uri: str, file_roots: Sequence[str] | None) -> IO[bytes]:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        target = check_reference_target(uri, file_roots)
        if not target.is_file():
            raise FileNotFoundError(f"reference {uri}: no file at {target}")
        return os.fdopen(open_no_follow(target), "rb")
    if parsed.scheme in ("http", "https"):
        return urllib.request.urlopen(uri, timeout=60)  # noqa: S310 - scheme checked
    if parsed.scheme == "s3":
        import boto3

        client = boto3.client("s3", endpoint_url=s3_endpoint())
        body = client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        stream: IO[bytes] = body["Body"]
        return stream
    raise FileNotFoundError(
        f"cannot fetch {parsed.scheme}:// references (the bridge fetches {', '.join(FETCHABLE)})"
    )


def s3_endpoint() -> str | None:
    """The S3-compatible endpoint to fetch ``s3://`` references from: none given when
    boto3 finds one itself (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``), else
    ``MLFLOW_S3_ENDPOINT_URL`` — the variable an MLflow on S3 (MinIO, moto ...) is
    configured with, so one environment serves both."""
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    return os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


def version_label(art: ArtifactVersion) -> str:
    """How a copy names the version: by content digest — an offline log never knows the
    version number the server assigns later, and the same artifact must land in the same
    place either way."""
    return art.digest or art.version or "unversioned"


def artifact_folder(art: ArtifactVersion) -> str:
    """The run-relative folder of a logged version's copy (``files/`` + ``manifest.json``)."""
    return f"{ARTIFACTS_DIR}/{art.name}/{version_label(art)}"


def content_entries(
    art: ArtifactVersion,
    opener: Callable[[ArtifactVersion, ManifestEntry], IO[bytes]],
    download_references: bool,
    file_roots: Sequence[str] | None = None,
) -> list[tuple[ManifestEntry, OpenEntry]]:
    """The entries whose bytes go to the destination: stored content always, reference
    targets only with ``download_references`` (else they stay references in the manifest);
    ``file://`` targets only under ``file_roots`` (see :func:`open_reference`)."""
    out: list[tuple[ManifestEntry, OpenEntry]] = []
    for entry in art.manifest:
        if entry.ref is None:
            out.append((entry, partial(opener, art, entry)))
        elif download_references:
            out.append((entry, partial(open_reference, entry.ref, file_roots)))
    return out


def manifest_record(art: ArtifactVersion) -> dict[str, Any]:
    """The manifest kept beside copied content: every entry, references included. It holds
    what the source says, never where the copy went (a model id or run id the destination
    assigned): the state keeps that, and the run's files stay equal across destinations."""
    doc = art.model_dump(mode="json", exclude={"locator"})
    for entry in doc["manifest"]:
        entry.pop("local_path", None)
    return doc


def transfer_bytes(art: ArtifactVersion, download_references: bool) -> int:
    """Bytes a copy of ``art`` would move (what dry runs report)."""
    return sum(
        e.size or 0 for e in art.manifest if e.ref is None or (download_references and e.size)
    )
