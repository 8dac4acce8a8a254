"""``tensorboard:LOGDIR`` — read TensorBoard event files as runs.

Every folder under LOGDIR that holds ``events.out.tfevents.*`` files is one run, its
identity ``tensorboard:<absolute LOGDIR>#<folder relative to LOGDIR>`` ("." for LOGDIR
itself), its name that relative path, its project LOGDIR's folder name (a destination's
mapping renames it). What becomes what:

* scalars (``simple_value`` of tensorboardX/torch, TF2 scalar tensors) -> metrics, with
  their step and wall time in ms, every point (no sampling), streamed in bounded chunks;
* HParams sessions -> config (params); their metrics are ordinary scalars of the run;
  a session's end status -> the run status;
* text -> history extras of kind ``text``; histograms -> extras of kind ``histogram``
  (the buckets as ``[left, right, count]``); other tensors -> extras of kind ``tensor``;
* images, audio, graphs -> media files under ``files/media/<plugin>/<tag>/``, named by
  history extras (kind ``image-file`` ...), read from the event file when copied.

What is not a metric is counted on the run's warnings, so the report says so.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bridge.adapters.base import Reader, ReaderOptions
from bridge.adapters.tensorboard.events import (
    Timing,
    Value,
    as_array,
    blobs_of,
    event_files,
    extension_of,
    file_key,
    find_runs,
    fingerprint,
    is_blob,
    iter_values,
    number_of,
)
from bridge.adapters.tensorboard.media import MediaCursors
from bridge.adapters.tensorboard.values import Session, dumps, extra_of
from bridge.errors import BridgeError, NothingToImport, RunError
from bridge.schema import (
    ExtraValue,
    FileRef,
    HistoryItem,
    MetricChunk,
    Project,
    Run,
    RunHeader,
    SourceId,
)

SCHEME = "tensorboard"
#: Points per metric chunk: memory holds at most this many points per tag.
CHUNK_POINTS = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_MEDIA_KIND = {"images": "image-file", "audio": "audio-file"}


def _safe_path(tag: str) -> str:
    """A tag as a relative folder path: no empty, "." or ".." parts, no odd characters."""
    parts = [_UNSAFE.sub("_", p) for p in tag.split("/") if p]
    parts = ["_" if p in (".", "..") else p for p in parts]
    return "/".join(parts) or "_"


class TensorboardReader(Reader):
    """Reads the event files under a log dir; needs no TensorFlow."""

    scheme = SCHEME

    @classmethod
    def normalize_target(cls, target: str) -> str:
        return str(Path(target).expanduser().resolve())

    def __init__(self, target: str, options: ReaderOptions | None = None) -> None:
        super().__init__(target, options)
        self.root = Path(target)
        self._media = MediaCursors()
        self._said_ignored = False

    def check(self) -> None:
        if not self.root.is_dir():
            raise BridgeError(f"tensorboard: {self.root} is not a folder; point it at a log dir")
        if next(find_runs(self.root), None) is None:
            raise BridgeError(
                f"tensorboard: no events.out.tfevents.* files under {self.root}; point it "
                "at the log dir given to the SummaryWriter (or a folder above it)"
            )

    def _project(self) -> Project:
        return Project(
            source_id=str(SourceId(SCHEME, str(self.root))), name=self.root.name or str(self.root)
        )

    def list_runs(self) -> Iterator[RunHeader]:
        wanted = set(self.options.run_ids)
        project = self._project()
        opts = self.options
        ignored = [
            name
            for name, given in (
                ("--since", opts.since),
                ("--tag", opts.tags),
                ("--run-state", opts.states),
                ("--experiment", opts.experiments),
            )
            if given
        ]
        if ignored and not self._said_ignored:
            self._said_ignored = True  # once per reader, however often runs are listed
            self.notices.add(
                project.source_id,
                "ignored-filter",
                f"{', '.join(ignored)} do(es) not apply to event files: every run under "
                f"{self.root} is in scope (--runs picks runs by their path)",
            )
        for rel, folder in find_runs(self.root):
            if wanted and rel not in wanted:
                continue
            files = event_files(folder)
            if not files:
                continue
            yield RunHeader(
                source_id=str(SourceId(SCHEME, f"{self.root}#{rel}")),
                native_id=rel,
                project=project,
                name=rel,
                fingerprint=fingerprint(files),
                locator={"folder": str(folder), "files": [str(p) for p in files]},
            )

    # ---- the run body ----------------------------------------------------------------

    def read_run(self, header: RunHeader) -> Run:
        files: list[str] = list(header.locator.get("files", []))
        if not files:
            raise RunError(f"{header.source_id}: no event files in the locator")
        timing = Timing()
        session = Session()
        counts: dict[str, int] = {}
        points = 0
        try:
            for v in iter_values(files, timing):
                if v.plugin == "hparams":
                    session.read(v)
                    continue
                kind = _kind(v)
                if kind == "scalar":
                    points += 1
                else:
                    counts[kind] = counts.get(kind, 0) + 1
        except OSError as exc:
            raise RunError(f"{header.source_id}: cannot read {header.locator}: {exc}") from exc
        if timing.events == 0:
            raise NothingToImport(f"{header.source_id}: no readable events in {', '.join(files)}")
        status = session.status or "FINISHED"
        end_ms = session.end_ms or timing.last_ms
        return Run(
            header=header,
            name=header.name,
            start_time_ms=_earliest(session.start_ms, timing.first_ms),
            end_time_ms=end_ms,
            status=status,  # type: ignore[arg-type]
            status_reason=None if session.status else "event files carry no end status",
            config=dict(session.hparams),
            incomplete_reason="; ".join(timing.damaged) or None,
            extra_tags=self._extra_tags(header, session),
            warnings=_count_lines(counts, points),
            # the HParams session group: TensorBoard's own field, in its namespace
            extras={SCHEME: {"group": session.group}} if session.group else {},
        )

    def _extra_tags(self, header: RunHeader, session: Session) -> dict[str, str]:
        """Where the run came from, and the metrics an HParams experiment names."""
        tags = {"tensorboard.run": header.native_id, "tensorboard.logdir": str(self.root)}
        if session.metrics:
            tags["tensorboard.hparams.metrics"] = dumps(session.metrics)
        return tags

    def iter_history(self, run: Run) -> Iterator[HistoryItem]:
        files: list[str] = list(run.header.locator.get("files", []))
        buffers: dict[str, tuple[list[int], list[int], list[float]]] = {}
        for v in iter_values(files):
            if v.plugin == "hparams":
                continue
            number = number_of(v)
            if number is not None:
                buf = buffers.get(v.tag)
                if buf is None:
                    buf = buffers[v.tag] = ([], [], [])
                buf[0].append(v.step)
                buf[1].append(v.wall_ms)
                buf[2].append(number)
                if len(buf[0]) >= CHUNK_POINTS:
                    yield MetricChunk(key=v.tag, steps=buf[0], timestamps=buf[1], values=buf[2])
                    buffers[v.tag] = ([], [], [])
            elif is_blob(v):
                yield from _media(v, as_array(v))
            else:
                kind, value = extra_of(v, as_array(v))
                yield ExtraValue(
                    key=v.tag, step=v.step, timestamp=v.wall_ms, value_json=dumps(value), kind=kind
                )
        for key, (steps, stamps, values) in buffers.items():
            if steps:
                yield MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)

    def open_file(self, ref: FileRef) -> IO[bytes]:
        if "event_file" not in ref.locator:
            raise FileNotFoundError(f"{ref.path}: not a TensorBoard media file")
        return self._media.open(ref.locator)

    def close(self) -> None:
        self._media.close()


def _earliest(*stamps: int | None) -> int | None:
    known = [s for s in stamps if s is not None]
    return min(known) if known else None


def _kind(v: Value) -> str:
    """How a value is counted: scalar, or the kind of extra/media it becomes."""
    if is_blob(v):
        return v.plugin or "blob"
    if number_of(v) is not None:
        return "scalar"
    if v.plugin in ("histograms", "text"):
        return v.plugin
    return extra_of(v, as_array(v))[0]


def _count_lines(counts: dict[str, int], points: int) -> list[str]:
    """One report line per kind of value that is not a metric point."""
    lines = []
    where = {
        "images": "as image files under files/media/images/ (named in the history extras)",
        "audio": "as audio files under files/media/audio/ (named in the history extras)",
        "histograms": "in the history extras file (kind histogram: [left, right, count] buckets)",
        "text": "in the history extras file (kind text)",
    }
    for kind, n in sorted(counts.items()):
        said = where.get(kind, f"in the history extras file or as media files ({kind})")
        lines.append(f"tensorboard: {n} {kind} value(s) are not metrics: copied {said}")
    return lines


def _media(v: Value, arr: Any) -> Iterator[ExtraValue]:
    """One history extra per payload, naming the media file the engine copies."""
    folder = f"media/{_safe_path(v.plugin or 'blobs')}/{_safe_path(v.tag)}"
    stem = f"step{v.step}_{file_key(v.file)}_{v.ordinal}.{v.index}"
    for i, (data, meta) in enumerate(blobs_of(v, arr)):
        rel = f"{folder}/{stem}.{i}{extension_of(data, v.plugin)}"
        sha = hashlib.sha256(data).hexdigest()
        kind = _MEDIA_KIND.get(v.plugin, "blob-file")
        value = {"_type": kind, "path": rel, "size": len(data), "sha256": sha, **meta}
        ref = FileRef(
            path=f"files/{rel}",
            size=len(data),
            sha256=sha,
            locator={
                "event_file": v.file,
                "ordinal": v.ordinal,
                "index": v.index,
                "blob": i,
                "plugin": v.plugin,
                "data_class": v.data_class,
            },
        )
        yield ExtraValue(
            key=v.tag,
            step=v.step,
            timestamp=v.wall_ms,
            value_json=dumps(value),
            kind=kind,
            file=ref,
        )
