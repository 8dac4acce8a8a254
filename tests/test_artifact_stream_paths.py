"""The MLflow writer's three ways of putting a file (bridge.adapters.mlflow.files.log_stream):
a stream straight into a local artifact folder, a local source file handed to an S3 store
by a link to its open descriptor, and a staged temp copy for any other stream. Each must
store the same bytes as the slow path, refuse content that does not match its manifest
before anything is published, and refuse a source file that changed while it was sent."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge.engine.artifacts import VerifyingStream
from bridge.errors import ContentError
from bridge.schema import ManifestEntry
from bridge.uris import open_writer

DATA = os.urandom(3 * (1 << 20) + 12345)  # several chunks and a partial one


def _entry(data: bytes, path: str = "big.bin") -> ManifestEntry:
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    return ManifestEntry(path=path, digest=f"md5:{md5}", size=len(data))


def _source(tmp_path: Path, data: bytes = DATA) -> Path:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    return src


def _run(tmp_path: Path, artifact_location: str | None) -> tuple[Any, str, MlflowClient]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("art", artifact_location=artifact_location)
    run_id = client.create_run(exp).info.run_id
    return open_writer(f"mlflow:{uri}"), run_id, client


def _stored(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> bytes:
    out = tmp_path / "back"
    out.mkdir(exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(out))).read_bytes()


def _put(writer: Any, run_id: str, stream: Any, path: str = "a/files/big.bin") -> None:
    with stream:
        writer.put_file(run_id, path, stream)
        stream.verify()


def test_source_fd_only_for_a_plain_local_file_from_its_start(tmp_path: Path) -> None:
    src = _source(tmp_path)
    with VerifyingStream(open(src, "rb")) as s:
        assert s.source_fd() is not None
        s.read(10)
        assert s.source_fd() is None  # part of it already went through
    with VerifyingStream(io.BytesIO(DATA)) as s:
        assert s.source_fd() is None
    fh = open(src, "rb")
    fh.seek(5)
    with VerifyingStream(fh) as s:
        assert s.source_fd() is None
    assert not hasattr(VerifyingStream(io.BytesIO()), "sha256")  # MD5 only: one hash


@pytest.mark.parametrize(
    "reads",
    [[1 << 20] * 5, [100, 1 << 20, 7, (1 << 20) + 3, 0], [-1], [4096] * 900 + [-1]],
)
def test_md5_hashed_beside_the_copy_is_the_md5_of_every_byte(reads: list[int]) -> None:
    """Big chunks are hashed on a thread beside the copy (artifacts._Hasher): whatever the
    mix of read sizes, the MD5 and size are those of the bytes read, in order, and a
    mismatch with the manifest is still refused."""
    read = bytearray()
    with VerifyingStream(io.BytesIO(DATA)) as s:
        for n in reads:
            read += s.read(n)
        assert s.size == len(read)
        assert s.md5_b64() == base64.b64encode(hashlib.md5(read).digest()).decode()
    bad = _entry(DATA[:-1] + bytes([DATA[-1] ^ 1]))
    with VerifyingStream(io.BytesIO(DATA), expect=bad) as s:
        with pytest.raises(ContentError, match="MD5"):
            while s.read(1 << 20):
                pass


@pytest.mark.e2e
def test_local_store_streams_the_same_bytes_and_refuses_a_mismatch(tmp_path: Path) -> None:
    writer, run_id, client = _run(tmp_path, None)
    _put(writer, run_id, VerifyingStream(open(_source(tmp_path), "rb"), expect=_entry(DATA)))
    assert _stored(client, run_id, "a/files/big.bin", tmp_path) == DATA
    bad = _entry(DATA[:-1] + b"x", "bad.bin")
    with pytest.raises(ContentError):
        _put(writer, run_id, VerifyingStream(open(_source(tmp_path), "rb"), expect=bad), "b/x.bin")
    root = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    assert [p.name for p in root.rglob("*") if p.is_file()] == ["big.bin"]  # no temp left


@pytest.mark.e2e
def test_s3_store_sends_the_hashed_file_and_refuses_a_mismatch(s3: Any, tmp_path: Path) -> None:
    writer, run_id, client = _run(tmp_path, "s3://artifacts/mlruns")
    _put(writer, run_id, VerifyingStream(open(_source(tmp_path), "rb"), expect=_entry(DATA)))
    assert _stored(client, run_id, "a/files/big.bin", tmp_path) == DATA
    # Not a file: staged in a temp copy, same bytes.
    _put(writer, run_id, VerifyingStream(io.BytesIO(DATA), expect=_entry(DATA)), "c/mem.bin")
    assert _stored(client, run_id, "c/mem.bin", tmp_path) == DATA
    bad = _entry(DATA[:-1] + b"x")
    with pytest.raises(ContentError):
        _put(writer, run_id, VerifyingStream(open(_source(tmp_path), "rb"), expect=bad), "b/x.bin")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts").get("Contents", [])]
    assert sorted(k.rsplit("/", 1)[-1] for k in keys) == ["big.bin", "mem.bin"], keys


@pytest.mark.e2e
def test_s3_store_refuses_a_source_file_changed_while_sent(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes hashed, then the file is appended to before the upload ends: the copy is
    refused (a ContentError: not recorded, the next sync copies it again)."""
    writer, run_id, client = _run(tmp_path, "s3://artifacts/mlruns")
    src = _source(tmp_path)
    real = client.log_artifact.__func__  # type: ignore[attr-defined]

    def log_then_change(self: Any, rid: str, local: str, path: str | None = None) -> None:
        real(self, rid, local, path)
        with open(src, "ab") as fh:
            fh.write(b"late")

    monkeypatch.setattr(MlflowClient, "log_artifact", log_then_change)
    with pytest.raises(ContentError, match="changed while it was copied"):
        _put(writer, run_id, VerifyingStream(open(src, "rb"), expect=_entry(DATA)))
