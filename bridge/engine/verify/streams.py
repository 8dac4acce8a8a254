"""Metric streams compared without holding them: a count and an order-independent
checksum per stream, then — only for streams that differ — example points and plot samples.

A checksum is a sum of per-point hashes, so the order a backend returns points in does not
matter. A point is hashed as non-negative integers (step and timestamp zigzagged, the
value's IEEE bits in two halves), then mixed: Python's ``hash`` of floats and negative ints
is not one-to-one (``hash(-1.0) == hash(-2.0)``, ``hash(1.0) == hash(2.0**61)``), and a sum
of unmixed tuple hashes lets changes of opposite sign in two points cancel. A destination that cannot store ±inf (``Capabilities.stores_infinity`` False)
keeps ±max float in its place: for it, ±max float compares equal to ±inf on both sides.
"""

from __future__ import annotations

import math
import struct
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.engine.sampling import PLOT_POINTS, downsample
from bridge.engine.verify.context import VerifyContext
from bridge.engine.verify.report import Mismatch, RunVerify, StreamSample
from bridge.schema import ExtraValue, FileRef, MetricChunk, Run

#: Points kept per side of a mismatched stream for the example diff (beyond: counts only).
DETAIL_CAP = 200_000
#: Example points named per mismatched stream.
EXAMPLES = 3

_MAX = sys.float_info.max
_NAN_TOKEN = 0x7FF8_0000_0000_0001  # stands for NaN in a point hash (hash(nan) is per object)
_MASK = (1 << 64) - 1
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def normalize_value(value: float, stores_infinity: bool = False) -> float:
    """The value as compared: -0.0 is 0.0; unless the destination stores infinity
    (``Capabilities.stores_infinity``), ±max float is ±inf (the destination's stand-in)."""
    if not stores_infinity:
        if value >= _MAX:
            return math.inf
        if value <= -_MAX:
            return -math.inf
    if value == 0.0:
        return 0.0
    return value


def _token(value: float, stores_infinity: bool) -> float | int:
    """A value as hashed and compared (NaN as a token: ``hash(nan)`` is per object)."""
    return _NAN_TOKEN if value != value else normalize_value(value, stores_infinity)


def _zigzag(n: int) -> int:
    """A signed int as a non-negative one, one to one (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...)."""
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def point_hash(step: int, timestamp: int, value: float, stores_infinity: bool = False) -> int:
    """A 64-bit hash of one point as compared (see the module doc)."""
    if value != value:
        bits = _NAN_TOKEN  # every NaN alike
    else:
        bits = _U64.unpack(_F64.pack(normalize_value(value, stores_infinity)))[0]
    h = hash((_zigzag(step), _zigzag(timestamp), bits >> 32, bits & 0xFFFF_FFFF)) & _MASK
    h = ((h ^ (h >> 30)) * 0xBF58_476D_1CE4_E5B9) & _MASK  # splitmix64's finalizer
    h = ((h ^ (h >> 27)) * 0x94D0_49BB_1331_11EB) & _MASK
    return h ^ (h >> 31)


@dataclass
class StreamStats:
    """Count and order-independent checksum of one metric stream."""

    count: int = 0
    checksum: int = 0
    #: The destination's ``Capabilities.stores_infinity`` (see :func:`normalize_value`).
    stores_infinity: bool = False

    def add(self, chunk: MetricChunk) -> None:
        total, inf = self.checksum, self.stores_infinity
        for step, ts, value in zip(chunk.steps, chunk.timestamps, chunk.values, strict=True):
            total += point_hash(step, ts, value, inf)
        self.checksum = total & _MASK
        self.count += len(chunk)

    def describe(self) -> str:
        return f"{self.count} points, checksum {self.checksum:016x}"


@dataclass
class HistoryStats:
    streams: dict[str, StreamStats] = field(default_factory=dict)
    media: dict[str, FileRef] = field(default_factory=dict)  # files named by history values


def history_stats(items: Iterable[object], stores_infinity: bool = False) -> HistoryStats:
    """One streaming pass over a history: stats per metric key, media files on the way."""
    out = HistoryStats()
    for item in items:
        if isinstance(item, MetricChunk):
            stats = out.streams.get(item.key)
            if stats is None:
                stats = out.streams[item.key] = StreamStats(stores_infinity=stores_infinity)
            stats.add(item)
        elif isinstance(item, ExtraValue) and item.file is not None:
            out.media.setdefault(item.file.path, item.file)
    return out


Point = tuple[int, int, float | int]


def _collect(
    items: Iterable[object], keys: set[str], stores_infinity: bool
) -> dict[str, list[Point] | None]:
    """All points of ``keys`` (None for a key past :data:`DETAIL_CAP`), NaN as a token."""
    out: dict[str, list[Point] | None] = {k: [] for k in keys}
    for item in items:
        if not isinstance(item, MetricChunk) or item.key not in keys:
            continue
        points = out[item.key]
        if points is None:
            continue
        for step, ts, value in zip(item.steps, item.timestamps, item.values, strict=True):
            points.append((step, ts, _token(value, stores_infinity)))
        if len(points) > DETAIL_CAP:
            out[item.key] = None
    return out


def _plot_points(points: list[Point]) -> list[tuple[float, float]]:
    ordered = sorted(points, key=lambda p: (p[0], p[1]))
    finite = [
        (float(s), float(v)) for s, _, v in ordered if isinstance(v, float) and math.isfinite(v)
    ]
    return downsample(finite, PLOT_POINTS)


def _fmt_point(p: Point) -> str:
    value = "NaN" if p[2] == _NAN_TOKEN and isinstance(p[2], int) else repr(float(p[2]))
    return f"step {p[0]} ts {p[1]} value {value}"


def compare_history(
    ctx: VerifyContext, rv: RunVerify, run: Run, dest_run: Run, src: HistoryStats
) -> None:
    inf = ctx.writer.capabilities.stores_infinity
    dst = history_stats(ctx.dest_reader.iter_history(dest_run), inf)
    differing: set[str] = set()
    for key in sorted(src.streams.keys() | dst.streams.keys()):
        a, b = src.streams.get(key), dst.streams.get(key)
        if a is not None:
            rv.metrics_checked += 1
            rv.points_checked += a.count
        if a is not None and b is not None and (a.count, a.checksum) == (b.count, b.checksum):
            continue
        differing.add(key)
    if not differing:
        return
    # Second pass, only over the differing streams: example points and plot samples.
    src_pts = _collect(ctx.reader.iter_history(run), differing, inf)
    dst_pts = _collect(ctx.dest_reader.iter_history(dest_run), differing, inf)
    dedupes = ctx.writer.capabilities.dedupes_metric_points
    for key in sorted(differing):
        a, b = src.streams.get(key), dst.streams.get(key)
        sp, dp = src_pts.get(key), dst_pts.get(key)
        detail: str | None = None
        if a is None:
            detail = "stream exists only at the destination"
        elif b is None:
            detail = "stream missing at the destination"
        elif sp is not None and dp is not None:
            if dedupes and set(sp) == set(dp):
                rv.notes.append(
                    f"metric {key!r}: the source repeats identical points, which the "
                    "destination stores once; same distinct points on both sides"
                )
                continue
            only_src = list((Counter(sp) - Counter(dp)).elements())
            only_dst = list((Counter(dp) - Counter(sp)).elements())
            parts = []
            if only_src:
                shown = "; ".join(_fmt_point(p) for p in sorted(only_src)[:EXAMPLES])
                parts.append(f"{len(only_src)} only at the source (e.g. {shown})")
            if only_dst:
                shown = "; ".join(_fmt_point(p) for p in sorted(only_dst)[:EXAMPLES])
                parts.append(f"{len(only_dst)} only at the destination (e.g. {shown})")
            detail = "; ".join(parts) or None
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field=f"metric:{key}",
                source_value=a.describe() if a is not None else None,
                dest_value=b.describe() if b is not None else None,
                detail=detail,
            )
        )
        sample = StreamSample(
            source_id=rv.source_id,
            key=key,
            source=_plot_points(sp) if sp else [],
            dest=_plot_points(dp) if dp else [],
        )
        with ctx._lock:
            ctx.samples.append(sample)
