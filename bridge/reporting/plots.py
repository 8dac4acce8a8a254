"""Source-vs-destination samples of changed metric streams, for the HTML plan report.

A dry run (or a sync) knows which runs gain points; this reads those runs' histories on
both sides — the destination through its own reader, as ``verify`` does — and keeps a
bounded, evenly thinned sample per stream (memory does not grow with history length).
Only streams whose point counts differ are plotted, a few per run, a few runs per page.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.adapters.base import ReaderOptions
from bridge.engine.model import Plan
from bridge.reporting.html_page import Streams
from bridge.schema import MetricChunk
from bridge.uris import open_reader

MAX_RUNS = 10
MAX_KEYS = 5
KEEP = 1000  # points kept per side of a stream (thinned by doubling strides)


class _Sample:
    """Every ``stride``-th point, the stride doubling whenever the sample would pass KEEP."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []
        self.stride = 1
        self.seen = 0

    def add(self, x: float, y: float) -> None:
        if self.seen % self.stride == 0:
            self.points.append((x, y))
            if len(self.points) >= 2 * KEEP:
                self.points = self.points[::2]
                self.stride *= 2
        self.seen += 1


def _sample(items: Iterable[object]) -> dict[str, _Sample]:
    out: dict[str, _Sample] = {}
    for item in items:
        if isinstance(item, MetricChunk):
            sample = out.setdefault(item.key, _Sample())
            for step, value in zip(item.steps, item.values, strict=True):
                sample.add(float(step), value)
    return out


def _histories(uri: str, native_ids: list[str]) -> dict[str, dict[str, _Sample]]:
    """Sampled histories of the named runs (by native id) of one backend."""
    reader = open_reader(uri, ReaderOptions(run_ids=native_ids, registry=False))
    out: dict[str, dict[str, _Sample]] = {}
    try:
        for header in reader.list_runs():
            if header.native_id in native_ids:
                out[header.native_id] = _sample(reader.iter_history(reader.read_run(header)))
    finally:
        reader.close()
    return out


def changed_streams(source: str, dest: str, plan: Plan) -> Streams:
    """(run source id, key) -> (source points, destination points) for changed streams."""
    runs = [
        r
        for r in plan.runs
        if r.dest_id and r.action in ("update", "resume") and (r.points_new or r.points_written)
    ][:MAX_RUNS]
    if not runs:
        return {}
    native = {r.source_id: r.native_id or "" for r in runs}
    src = _histories(source, sorted(set(native.values())))
    dst = _histories(dest, sorted({r.dest_id for r in runs if r.dest_id}))
    streams: dict[tuple[str, str], tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {}
    for r in runs:
        have = dst.get(r.dest_id or "", {})
        changed = [
            (key, sample)
            for key, sample in sorted(src.get(native[r.source_id], {}).items())
            if have.get(key) is None or have[key].seen != sample.seen
        ][:MAX_KEYS]
        for key, sample in changed:
            other = have.get(key)
            streams[(r.source_id, key)] = (sample.points, other.points if other else [])
    return streams
