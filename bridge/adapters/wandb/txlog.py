"""Streaming reader for W&B ``.wandb`` transaction logs.

wandb >= 0.30 ships no Python reader for its own offline logs, so the bridge carries one.
Format (mirrors wandb-core ``core/pkg/leveldb/record.go``, IEEE CRC flavour):

* a 7-byte file header ``<4sHB>`` = ``b":W&B"``, ``0xBEE1``, version ``0``; it occupies the
  start of the first 32 KiB block;
* then LevelDB-log chunks packed into 32 KiB blocks (block boundaries are absolute file
  offsets). A chunk is ``<IHB>`` (crc, length, type) + payload and never crosses a block;
  block tails shorter than a chunk header are zero padding;
* chunk types FULL=1, FIRST=2, MIDDLE=3, LAST=4; one record = FULL or FIRST MIDDLE* LAST;
* crc = ``zlib.crc32(payload, zlib.crc32(bytes([type])))``;
* each record payload is a serialized ``wandb.proto.wandb_internal_pb2.Record``.

The reader is strict (unlike the Go reader it does not skip to the next block after
damage): it yields every intact record up to the first problem and then stops, leaving
the problem in :attr:`TxlogReader.damage`. Silently skipping a damaged block would drop
history in the middle of a run without anyone noticing.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as _pb

# The generated protobuf module has no type stubs: treat its classes as Any.
pb: Any = _pb
HEADER = struct.Struct("<4sHB")
HEADER_LEN = 7
MAGIC = b":W&B"
HEADER_MAGIC = 0xBEE1
VERSION = 0
BLOCK = 32 * 1024
CHUNK = struct.Struct("<IHB")
CHUNK_LEN = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = [zlib.crc32(bytes([t])) for t in range(256)]
_READ_SIZE = 32 * BLOCK  # 1 MiB per read: streaming, but few syscalls


@dataclass(frozen=True)
class TxlogDamage:
    """Where and why a log stops being readable."""

    path: str
    offset: int  # byte offset of the bad chunk header (or 0 for a bad file header)
    reason: str
    record_offset: int | None = None  # start of the record that was lost, if different

    def __str__(self) -> str:
        return f"{self.path}: {self.reason} at byte {self.offset}"


class TxlogError(Exception):
    """Raised by :func:`iter_records` after the last intact record of a damaged log."""

    def __init__(self, damage: TxlogDamage) -> None:
        super().__init__(str(damage))
        self.damage = damage


def check_header(data: bytes) -> str | None:
    """Why ``data`` (the first 7 bytes of a file) is not a W&B log header, or None if it is."""
    if len(data) < HEADER_LEN:
        return f"file header truncated ({len(data)} of {HEADER_LEN} bytes)"
    ident, magic, version = HEADER.unpack_from(data)
    if ident != MAGIC or magic != HEADER_MAGIC:
        return "not a W&B transaction log (bad file header)"
    if version != VERSION:
        return f"unsupported W&B log version {version}"
    return None


class TxlogReader:
    """One pass over one ``.wandb`` file.

    Iterate :meth:`payloads` or :meth:`records`; when the generator ends, :attr:`damage`
    is set if the log is damaged (all intact records before the damage were yielded),
    :attr:`empty` tells a header-only log, and :attr:`end_offset` is how far it was read.
    """

    def __init__(self, path: str | Path, *, verify_crc: bool = True) -> None:
        self.path = Path(path)
        self.verify_crc = verify_crc
        self.damage: TxlogDamage | None = None
        self.empty = False
        self.count = 0
        self.end_offset = 0

    def _fail(self, offset: int, reason: str, record_offset: int | None = None) -> None:
        self.damage = TxlogDamage(str(self.path), offset, reason, record_offset)

    def payloads(self, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, payload)`` per record; ``limit`` stops after that many."""
        self.damage, self.empty, self.count = None, False, 0
        with open(self.path, "rb") as fh:
            head = fh.read(HEADER_LEN)
            problem = check_header(head)
            if problem:
                self._fail(0, problem)
                return
            buf = head + fh.read(_READ_SIZE - HEADER_LEN)
            n = len(buf)
            base = 0  # file offset of buf[0]; a multiple of BLOCK, so blocks align in buf
            pos = HEADER_LEN  # offset in buf
            parts: list[bytes] = []
            rec_start = -1  # file offset of the pending multi-chunk record, -1 if none
            verify = self.verify_crc
            unpack = CHUNK.unpack_from
            crc32 = zlib.crc32
            while True:
                if pos >= n:
                    if n < _READ_SIZE:  # the last read was short: end of file
                        break
                    base += n
                    buf = fh.read(_READ_SIZE)
                    n, pos = len(buf), 0
                    if n == 0:
                        break
                    continue
                room = BLOCK - (pos % BLOCK)
                if room < CHUNK_LEN:  # block trailer: padding, the next chunk is in the next block
                    if pos + room > n:
                        self._fail(base + pos, "file ends inside a block trailer", _lost(rec_start))
                        break
                    pos += room
                    continue
                if pos + CHUNK_LEN > n:
                    self._fail(base + pos, "truncated chunk header", _lost(rec_start))
                    break
                at = base + pos
                crc, length, ctype = unpack(buf, pos)
                if ctype == 0 and crc == 0 and length == 0:
                    if rec_start < 0:  # zeroed rest of block: skip it, as the Go reader does
                        pos += room
                        continue
                    self._fail(at, "zero chunk inside a record", rec_start)
                    break
                if length > room - CHUNK_LEN:
                    self._fail(at, "chunk length overflows block", _lost(rec_start))
                    break
                start = pos + CHUNK_LEN
                end = start + length
                if end > n:
                    self._fail(at, "truncated chunk", _lost(rec_start))
                    break
                data = buf[start:end]
                if verify and crc != crc32(data, _TYPE_CRC[ctype]):
                    self._fail(at, "checksum mismatch", _lost(rec_start))
                    break
                pos = end
                if ctype == FULL:
                    if rec_start >= 0:
                        self._fail(at, "FULL chunk inside a record", rec_start)
                        break
                    self.count += 1
                    self.end_offset = base + end
                    yield at, data
                elif ctype == FIRST:
                    if rec_start >= 0:
                        self._fail(at, "FIRST chunk inside a record", rec_start)
                        break
                    rec_start, parts = at, [data]
                    continue
                elif ctype == MIDDLE or ctype == LAST:
                    if rec_start < 0:
                        self._fail(at, "continuation chunk without a FIRST chunk")
                        break
                    parts.append(data)
                    if ctype == MIDDLE:
                        continue
                    self.count += 1
                    self.end_offset = base + end
                    yield rec_start, b"".join(parts)
                    rec_start, parts = -1, []
                else:
                    self._fail(at, f"unknown chunk type {ctype}", _lost(rec_start))
                    break
                if limit is not None and self.count >= limit:
                    return
            if self.damage is None and rec_start >= 0:
                self._fail(rec_start, "record cut off at end of file", rec_start)
            if self.damage is None:
                self.end_offset = base + pos
                self.empty = self.count == 0

    def records(self, limit: int | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(offset, Record)``; an undecodable payload is damage like a bad CRC."""
        parse = pb.Record.FromString
        for offset, data in self.payloads(limit):
            try:
                rec = parse(data)
            except Exception as exc:  # protobuf DecodeError
                self._fail(offset, f"undecodable record ({type(exc).__name__})")
                return
            yield offset, rec


def _lost(rec_start: int) -> int | None:
    return rec_start if rec_start >= 0 else None


def iter_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Every intact record; raises :class:`TxlogError` after them if the log is damaged."""
    reader = TxlogReader(path)
    yield from reader.records()
    if reader.damage is not None:
        raise TxlogError(reader.damage)


def is_header_only(path: str | Path) -> bool:
    """True for a log holding the file header and nothing else (a run killed early)."""
    p = Path(path)
    if p.stat().st_size != HEADER_LEN:
        return False
    with open(p, "rb") as fh:
        return check_header(fh.read(HEADER_LEN)) is None


def record_type(rec: Any) -> str | None:
    """The name of the record's payload field (``"history"``, ``"run"`` ...)."""
    return rec.WhichOneof("record_type")
