"""Per-stream digests and merges: points that arrive out of order are never lost.

A watermark says "the first N points of this key, in source order, are in the
destination". That holds only while sources append at the end of their order; a
source that orders a key by timestamp lets a point logged late with an older timestamp land
*inside* the first N, and the point that used to be N-th slides past the watermark.
Counting alone would re-send an old point and skip the new one.

So beside each watermark the state keeps an order-independent digest of those N points
(the sum mod 2^64 of a 64-bit hash of each point's (step, timestamp, value)). While a
key's history streams by, :class:`StreamGate` sums its first N points: the same digest →
the prefix is what was written and only the points past it are appended (O(new points)
writes, as before); a different digest → the key needs a merge. :class:`PointDifference`
then computes, on disk (bounded memory however long the history), exactly the source
points the destination lacks, from the destination's own points read back.

Values are compared as a destination stores them: NaNs are one NaN, ±inf equals ±max
float (what stores without infinities keep), -0.0 equals 0.0.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from bridge.adapters.base import Reader, Writer
from bridge.adapters.features import MetricReadBack
from bridge.schema import MetricChunk, Run
from bridge.state import StateStore

MASK = (1 << 64) - 1
#: Points per chunk the merge yields.
MERGE_CHUNK = 1000
_MAX = sys.float_info.max
_SEED = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def canonical_bits(values: Iterable[float]) -> np.ndarray:
    """Each value's float64 bits as a destination compares them (see module doc)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isnan(v), np.nan, np.clip(v, -_MAX, _MAX)) + 0.0
    return v.view(np.uint64)


def point_hashes(steps: list[int], timestamps: list[int], values: list[float]) -> np.ndarray:
    """A 64-bit hash per point of (step, timestamp, value), vectorized."""
    s = np.asarray(steps, dtype=np.int64).view(np.uint64)
    t = np.asarray(timestamps, dtype=np.int64).view(np.uint64)
    h = _mix(s ^ _SEED)
    h = _mix(h ^ t)
    return _mix(h ^ canonical_bits(values))


def digest_of(chunk: MetricChunk, start: int = 0, stop: int | None = None) -> int:
    """Order-independent digest of ``chunk``'s points ``[start:stop]`` (0 when empty)."""
    stop = len(chunk) if stop is None else stop
    if stop <= start:
        return 0
    h = point_hashes(
        chunk.steps[start:stop], chunk.timestamps[start:stop], chunk.values[start:stop]
    )
    return int(h.sum(dtype=np.uint64))


def combine(a: int, b: int) -> int:
    """The digest of two disjoint parts of a multiset."""
    return (a + b) & MASK


def to_hex(digest: int) -> str:
    return f"{digest:016x}"


def from_hex(text: str) -> int:
    return int(text, 16)


def slice_new(chunk: MetricChunk, seen_before: int, already: int) -> MetricChunk | None:
    """The part of ``chunk`` past the watermark (``already`` points of its key written,
    ``seen_before`` points of the key streamed before this chunk)."""
    start = max(0, already - seen_before)
    if start >= len(chunk):
        return None
    if start == 0:
        return chunk
    return MetricChunk(
        key=chunk.key,
        steps=chunk.steps[start:],
        timestamps=chunk.timestamps[start:],
        values=chunk.values[start:],
    )


class Verdict(Enum):
    PENDING = "pending"  # still inside the part the destination holds
    APPEND = "append"  # prefix checked: the points past the watermark are new
    MERGE = "merge"  # points arrived inside the prefix: the key needs a merge


@dataclass
class _Key:
    written: int  # watermark: points of the key the destination holds
    expected: int | None  # digest of those points as recorded; None = not known
    seen: int = 0
    digest: int = 0  # of the points seen so far (while PENDING/APPEND)
    verdict: Verdict = Verdict.PENDING


@dataclass
class StreamGate:
    """Per key, while the source history streams past once: which points to append now,
    which keys need a merge.

    ``recorded`` holds, per key, (points, digest) as stored with the watermark; a digest
    recorded for another point count than the watermark's is not trusted. Keys with a
    watermark and no trusted digest (a state store from before digests, or rebuilt from
    the destination's counts) are merged when ``merge_unknown`` (the destination can read
    its points back), else their watermark is trusted as before; so are keys whose source
    now ends inside the prefix (points gone at the source: nothing can be appended).
    """

    watermarks: dict[str, int]
    recorded: dict[str, tuple[int, int]] = field(default_factory=dict)
    merge_unknown: bool = False
    _keys: dict[str, _Key] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)

    def _key(self, key: str) -> _Key:
        st = self._keys.get(key)
        if st is None:
            written = self.watermarks.get(key, 0)
            points, digest = self.recorded.get(key, (-1, 0))
            expected = 0 if written == 0 else (digest if points == written else None)
            st = self._keys[key] = _Key(written=written, expected=expected)
        return st

    def admit(self, chunk: MetricChunk) -> MetricChunk | None:
        """The part of ``chunk`` to append now, or None (inside the prefix, or merged later)."""
        st = self._key(chunk.key)
        before = st.seen
        st.seen += len(chunk)
        if st.verdict is Verdict.MERGE:
            return None
        inside = min(max(st.written - before, 0), len(chunk))
        st.digest = combine(st.digest, digest_of(chunk, 0, inside))
        if st.seen < st.written:
            return None
        if st.verdict is Verdict.PENDING:
            st.verdict = self._decide(st)
            if st.verdict is Verdict.MERGE:
                return None
        new = slice_new(chunk, before, st.written)
        if new is None:
            return None
        st.digest = combine(st.digest, digest_of(chunk, inside))
        self._dirty.add(chunk.key)
        return new

    def _decide(self, st: _Key) -> Verdict:
        if st.expected is None:
            return Verdict.MERGE if self.merge_unknown else Verdict.APPEND
        return Verdict.APPEND if st.digest == st.expected else Verdict.MERGE

    def seen(self, key: str) -> int:
        return self._key(key).seen

    def to_merge(self) -> set[str]:
        """Keys that need a merge, once the stream has ended: points arrived inside their
        prefix, or their source now has fewer points than were written (and they differ)."""
        out = set()
        for key, st in self._keys.items():
            if st.verdict is Verdict.PENDING:  # the source ended inside the prefix
                unsure = st.expected is None or st.digest != st.expected
                st.verdict = Verdict.MERGE if unsure and self.merge_unknown else Verdict.APPEND
            if st.verdict is Verdict.MERGE:
                out.add(key)
        return out

    def take_recorded(self) -> dict[str, tuple[int, int]]:
        """(points, digest) of the keys appended to since the last call: to store with
        their watermarks."""
        out = {k: (self._keys[k].seen, self._keys[k].digest) for k in sorted(self._dirty)}
        self._dirty.clear()
        return out


class PointDifference:
    """The multiset difference source − destination of some keys' points, on disk.

    A temporary SQLite table counts each (key, step, timestamp, value) +1 per source point
    and -1 per destination point; the rows left positive are what the destination lacks.
    Memory stays bounded whatever the history length; the file is removed on close.
    """

    def __init__(self) -> None:
        fd, self._path = tempfile.mkstemp(prefix="bridge-merge-", suffix=".sqlite")
        os.close(fd)
        self._db = sqlite3.connect(self._path)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8192;"
            "CREATE TABLE p (key TEXT, step INTEGER, ts INTEGER, v INTEGER, raw INTEGER,"
            " n INTEGER, PRIMARY KEY (key, step, ts, v)) WITHOUT ROWID;"
        )
        #: Per key: source points and their digest (what the destination holds after).
        self.source: dict[str, tuple[int, int]] = {}

    def _add(self, chunk: MetricChunk, sign: int) -> None:
        bits = canonical_bits(chunk.values).view(np.int64).tolist()
        raw = np.asarray(chunk.values, dtype=np.float64).view(np.int64).tolist()
        rows = zip([chunk.key] * len(chunk), chunk.steps, chunk.timestamps, bits, raw, strict=True)
        self._db.executemany(
            "INSERT INTO p VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
            f" n = n + ({sign}), raw = coalesce(raw, excluded.raw)",
            [(k, s, t, b, r if sign > 0 else None, sign) for k, s, t, b, r in rows],
        )

    def add_source(self, chunk: MetricChunk) -> None:
        points, digest = self.source.get(chunk.key, (0, 0))
        self.source[chunk.key] = (points + len(chunk), combine(digest, digest_of(chunk)))
        self._add(chunk, +1)

    def add_dest(self, chunk: MetricChunk) -> None:
        self._add(chunk, -1)

    def missing(self) -> Iterator[MetricChunk]:
        """Source points the destination lacks, per key in (timestamp, step) order."""
        rows = self._db.execute(
            "SELECT key, step, ts, raw, n FROM p WHERE n > 0 ORDER BY key, ts, step, v"
        )
        key: str | None = None
        steps: list[int] = []
        stamps: list[int] = []
        raws: list[int] = []
        for k, step, ts, raw, n in rows:
            if k != key or len(steps) >= MERGE_CHUNK:
                if steps and key is not None:
                    yield _chunk(key, steps, stamps, raws)
                key, steps, stamps, raws = k, [], [], []
            steps.extend([step] * n)
            stamps.extend([ts] * n)
            raws.extend([raw] * n)
        if steps and key is not None:
            yield _chunk(key, steps, stamps, raws)

    def close(self) -> None:
        self._db.close()
        try:
            os.unlink(self._path)
        except OSError:
            pass

    def __enter__(self) -> PointDifference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunk(key: str, steps: list[int], stamps: list[int], raws: list[int]) -> MetricChunk:
    values = np.asarray(raws, dtype=np.int64).view(np.float64).tolist()
    return MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)


# ---- what the engine calls (state and backends through their interfaces only) ---------


def open_gate(
    state: StateStore,
    dest_uri: str,
    source_id: str,
    watermarks: dict[str, int],
    read_back: MetricReadBack | None,
) -> StreamGate:
    """A gate over the recorded watermarks and digests of one run (``read_back``: the
    destination, where it can read its points back)."""
    recorded = {
        key: (points, from_hex(digest))
        for key, (points, digest) in state.get_stream_digests(dest_uri, source_id).items()
    }
    return StreamGate(
        watermarks=dict(watermarks), recorded=recorded, merge_unknown=read_back is not None
    )


def can_merge(writer: Writer, read_back: MetricReadBack | None) -> bool:
    """A merge writes exactly the missing points where the destination reads its points
    back; where it only ignores duplicates, it re-sends the keys' source points."""
    return read_back is not None or writer.capabilities.dedupes_metric_points


def merge_streams(
    reader: Reader,
    run: Run,
    read_back: MetricReadBack | None,
    dest_id: str,
    keys: Collection[str],
    write: Callable[[MetricChunk], None],
) -> dict[str, tuple[int, int]]:
    """Write (through ``write``) the source points of ``keys`` the destination lacks, from
    a second pass over the source history and the destination's points read back (without
    ``read_back``: every source point of the keys). Returns per key (points, digest) of
    the source's points, all held by the destination after."""
    wanted = set(keys)
    with PointDifference() as diff:
        if read_back is not None:
            for chunk in read_back.read_metric_points(dest_id, sorted(wanted)):
                diff.add_dest(chunk)
        for item in reader.iter_history(run):
            if isinstance(item, MetricChunk) and item.key in wanted:
                diff.add_source(item)
        for chunk in diff.missing():
            write(chunk)
        return dict(diff.source)


def unmergeable_error(writer: Writer, keys: Collection[str]) -> str:
    """The line that fails a run whose late points cannot be written without duplicates."""
    shown = ", ".join(repr(k) for k in sorted(keys)[:5])
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    return (
        f"metric {shown}{more}: points arrived inside the history already copied (logged "
        f"late, with older timestamps); {writer.display_uri} can neither read its points "
        "back nor ignore duplicates, so they were not written (the run's other points "
        "were); copy the run into a new destination run to include them"
    )
