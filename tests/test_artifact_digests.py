"""Manifest digests: algorithm-prefixed (``md5:<base64>``) or bare base64 MD5, checked the
same way; what the state records for an entry does not change with the spelling."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest

from bridge.engine.artifacts import VerifyingStream, checksum_problem, entry_digest, md5_of
from bridge.errors import ContentError
from bridge.schema import ManifestEntry

DATA = b"hello, bridge\n"
MD5 = base64.b64encode(hashlib.md5(DATA).digest()).decode()


def _stream(entry: ManifestEntry) -> VerifyingStream:
    stream = VerifyingStream(io.BytesIO(DATA))
    while stream.read(4):
        pass
    return stream


@pytest.mark.parametrize("digest", [MD5, f"md5:{MD5}"], ids=["bare", "prefixed"])
def test_md5_digests_are_checked_either_way(digest: str) -> None:
    entry = ManifestEntry(path="a.txt", digest=digest, size=len(DATA))
    assert md5_of(digest) == MD5
    assert checksum_problem(entry, _stream(entry)) is None
    other = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    bad = ManifestEntry(path="a.txt", digest=digest.replace(MD5, other), size=len(DATA))
    assert "MD5" in (checksum_problem(bad, _stream(bad)) or "")
    with pytest.raises(ContentError):
        VerifyingStream(io.BytesIO(DATA), expect=bad).read()
    # The state's value is the one recorded before digests named their algorithm.
    assert entry_digest(entry) == f"md5:{MD5}:{len(DATA)}"


@pytest.mark.parametrize("digest", ['"d41d8cd98f00b204e9800998ecf8427e-2"', "sha256:abc", None])
def test_other_digests_are_not_checked(digest: str | None) -> None:
    entry = ManifestEntry(path="a.txt", digest=digest, size=len(DATA))
    assert md5_of(digest) is None
    assert checksum_problem(entry, _stream(entry)) is None
    assert entry_digest(entry) == f"md5:{digest}:{len(DATA)}"
