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

Damage is never silent, and never the end of reading where the format allows more: every
intact record before it is yielded, the damaged range is recorded in
:attr:`TxlogReader.damages` (file, byte offset, where reading went on), and reading resumes
where the framing can be trusted again — after a bad checksum, length or chunk type at the
next 32 KiB block boundary (a chunk never crosses one), after a chunk that is intact but out
of order at the next chunk, as LevelDB's own reader does. Continuation chunks of a record
whose start was lost are part of the skipped range. Only a bad file header (not a W&B log)
and the end of the file stop reading.

A record is assembled up to a size cap (``BRIDGE_MAX_RECORD_MB``, default 64 MiB, far above
any record the SDK writes): a bigger one is skipped chunk by chunk without being buffered and
reported like damage, so one absurd record costs no memory and the rest of the log is read.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.adapters.wandb.proto_light import load_internal
from bridge.errors import BridgeError

# wandb_internal_pb2's messages (without importing the SDK: see proto_light); Any, as the
# generated protobuf module has no type stubs.
pb: Any = load_internal()
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
MIB = 1024 * 1024
MAX_RECORD_ENV = "BRIDGE_MAX_RECORD_MB"
DEFAULT_MAX_RECORD_MB = 64
ZERO_FILL = "zero-filled chunk header"


def max_record_bytes() -> int:
    """The record size cap: ``BRIDGE_MAX_RECORD_MB`` (MiB) or 64 MiB."""
    raw = os.environ.get(MAX_RECORD_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RECORD_MB * MIB
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if not (math.isfinite(mib) and mib > 0):
        raise BridgeError(
            f"{MAX_RECORD_ENV}={raw!r}: expected a positive number of MiB "
            f"(default {DEFAULT_MAX_RECORD_MB})"
        )
    return max(1, int(mib * MIB))


@dataclass(frozen=True)
class TxlogDamage:
    """One unreadable range of a log: where it starts, why, and where reading went on."""

    path: str
    offset: int  # byte offset of the bad chunk header (or 0 for a bad file header)
    reason: str
    record_offset: int | None = None  # start of the record that was lost, if different
    resumed_at: int | None = None  # where reading went on; None: nothing read after it

    def __str__(self) -> str:
        text = f"{self.path}: {self.reason} at byte {self.offset}"
        if self.resumed_at is not None:
            text += f", read on from byte {self.resumed_at}"
        return text


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


class _Skip:
    """A range being skipped after damage, until a record starts again (or the file ends)."""

    def __init__(self, offset: int, reason: str, record_offset: int | None) -> None:
        self.offset = offset
        self.reasons = [reason]
        self.record_offset = record_offset

    def add(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def only_zero_fill(self) -> bool:
        """A zero-filled tail with no record in it: a preallocated end, not a loss."""
        return self.reasons == [ZERO_FILL] and self.record_offset is None

    def damage(self, path: str, resumed_at: int | None) -> TxlogDamage:
        return TxlogDamage(
            path, self.offset, ", ".join(self.reasons), self.record_offset, resumed_at
        )


class TxlogReader:
    """One pass over one ``.wandb`` file.

    Iterate :meth:`payloads` or :meth:`records`; when the generator ends, :attr:`damages`
    lists every damaged range (all intact records around them were yielded),
    :attr:`damage` is the first of them, :attr:`empty` tells a header-only log, and
    :attr:`end_offset` is where the last record read ends. ``max_record`` (bytes) caps a
    record's size; default :func:`max_record_bytes`.
    """

    def __init__(
        self, path: str | Path, *, verify_crc: bool = True, max_record: int | None = None
    ) -> None:
        self.path = Path(path)
        self.verify_crc = verify_crc
        self.max_record = max_record if max_record is not None else max_record_bytes()
        self.damages: list[TxlogDamage] = []
        self.empty = False
        self.count = 0
        self.end_offset = 0

    @property
    def damage(self) -> TxlogDamage | None:
        """The first damaged range, or None for an intact log."""
        return self.damages[0] if self.damages else None

    def _fail(self, offset: int, reason: str, record_offset: int | None = None) -> None:
        self.damages.append(TxlogDamage(str(self.path), offset, reason, record_offset))

    def _skip(self, skip: _Skip | None, at: int, reason: str, rec_start: int) -> _Skip:
        """Start (or extend) the skipped range at a bad chunk; a pending record is lost."""
        if skip is None:
            return _Skip(at, reason, _lost(rec_start))
        skip.add(reason)
        return skip

    def _resume(self, skip: _Skip | None, at: int) -> None:
        """A record starts at ``at``: the skipped range before it ends there."""
        if skip is not None:
            self.damages.append(skip.damage(str(self.path), at))

    def _oversized(self, rec_start: int, size: int, end: int | None) -> None:
        cap = self.max_record
        cap_text = f"{cap // MIB} MiB" if cap % MIB == 0 else f"{cap} bytes"
        what = f"over the {cap_text} record cap ({MAX_RECORD_ENV})"
        if end is None:
            self._fail(rec_start, f"record {what} cut off at end of file", rec_start)
            return
        self.damages.append(
            TxlogDamage(
                str(self.path), rec_start, f"record of {size} bytes {what} skipped", None, end
            )
        )

    def payloads(self, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, payload)`` per record; ``limit`` stops after that many."""
        self.damages, self.empty, self.count = [], False, 0
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
            rec_size = 0  # bytes of the pending record so far
            oversized = False  # the pending record passed the cap: its chunks are dropped
            skip: _Skip | None = None  # damaged range being skipped
            cap = self.max_record
            verify = self.verify_crc
            unpack = CHUNK.unpack_from
            crc32 = zlib.crc32
            eof_problem: str | None = None
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
                        eof_problem = "file ends inside a block trailer"
                        break
                    pos += room
                    continue
                if pos + CHUNK_LEN > n:
                    eof_problem = "truncated chunk header"
                    break
                at = base + pos
                crc, length, ctype = unpack(buf, pos)
                bad: str | None = None
                if ctype == 0 and crc == 0 and length == 0:
                    stop = min(pos + room, n)  # zeros to the block's end: preallocated space?
                    bad = ZERO_FILL if buf.count(0, pos, stop) == stop - pos else "zeroed chunk"
                elif length > room - CHUNK_LEN:
                    bad = "chunk length overflows block"
                else:
                    start = pos + CHUNK_LEN
                    end = start + length
                    if end > n:
                        eof_problem = "truncated chunk"
                        break
                    data = buf[start:end]
                    if verify and crc != crc32(data, _TYPE_CRC[ctype]):
                        bad = "checksum mismatch"
                    elif not FULL <= ctype <= LAST:
                        bad = f"unknown chunk type {ctype}"
                if bad is not None:  # the framing is lost up to the next block
                    skip = self._skip(skip, at, bad, rec_start)
                    rec_start, parts, rec_size, oversized = -1, [], 0, False
                    pos += room
                    continue
                pos = end
                if ctype == FULL or ctype == FIRST:
                    if rec_start >= 0:  # an intact chunk, but the pending record never ended
                        skip = self._skip(
                            skip, at, f"{_NAMES[ctype]} chunk inside a record", rec_start
                        )
                    self._resume(skip, at)
                    skip = None
                    if ctype == FIRST:
                        rec_start, rec_size = at, length
                        oversized = length > cap
                        parts = [] if oversized else [data]
                        continue
                    rec_start, parts, rec_size, oversized = -1, [], 0, False
                    if length > cap:
                        self._oversized(at, length, base + end)
                        continue
                    self.count += 1
                    self.end_offset = base + end
                    yield at, data
                else:  # MIDDLE or LAST
                    if rec_start < 0:  # the tail of a record whose start was lost
                        if skip is None:  # (after damage: part of the range skipped)
                            skip = _Skip(at, "continuation chunk without a FIRST chunk", None)
                        continue
                    rec_size += length
                    if not oversized:
                        if rec_size > cap:  # stop buffering; skip the rest of it
                            oversized, parts = True, []
                        else:
                            parts.append(data)
                    if ctype == MIDDLE:
                        continue
                    first_at = rec_start
                    rec_start = -1
                    if oversized:
                        self._oversized(first_at, rec_size, base + end)
                        oversized, rec_size = False, 0
                        continue
                    payload = b"".join(parts)
                    parts, rec_size = [], 0  # free the pieces before the caller parses
                    self.count += 1
                    self.end_offset = base + end
                    yield first_at, payload
                if limit is not None and self.count >= limit:
                    return
            self._finish(skip, eof_problem, base + pos, rec_start, oversized, rec_size)

    def _finish(
        self,
        skip: _Skip | None,
        eof_problem: str | None,
        at: int,
        rec_start: int,
        oversized: bool,
        rec_size: int,
    ) -> None:
        """Record how the file ended: cleanly, cut off, or inside a skipped range."""
        if skip is not None:
            if eof_problem is not None:
                skip.add(eof_problem)
            if not skip.only_zero_fill():
                self.damages.append(skip.damage(str(self.path), None))
        elif eof_problem is not None:
            self._fail(at, eof_problem, _lost(rec_start))
        elif rec_start >= 0:
            if oversized:
                self._oversized(rec_start, rec_size, None)
            else:
                self._fail(rec_start, "record cut off at end of file", rec_start)
        if not self.damages:
            self.end_offset = at
            self.empty = self.count == 0

    def records(self, limit: int | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(offset, Record)``; an undecodable payload is skipped and reported."""
        parse = pb.Record.FromString
        for offset, data in self.payloads(limit):
            try:
                rec = parse(data)
            except Exception as exc:  # protobuf DecodeError
                self.damages.append(
                    TxlogDamage(
                        str(self.path),
                        offset,
                        f"undecodable record ({type(exc).__name__})",
                        None,
                        self.end_offset,
                    )
                )
                continue
            yield offset, rec


_NAMES = {FULL: "FULL", FIRST: "FIRST", MIDDLE: "MIDDLE", LAST: "LAST"}


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


def describe_damages(damages: list[TxlogDamage], shown: int = 5) -> str:
    """One line naming a log's damaged ranges (the first ``shown``, then a count)."""
    text = "; ".join(str(d) for d in damages[:shown])
    if len(damages) > shown:
        text += f"; and {len(damages) - shown} more damaged range(s)"
    return text
