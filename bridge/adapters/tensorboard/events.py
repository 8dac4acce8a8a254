"""Event files: which folders are runs, and every summary value of a run, in a stable order.

Every record is read with the ``tensorboard`` package's ``EventFileLoader`` (never
``EventAccumulator``, which keeps a reservoir sample of 10,000 points per tag). The loader
migrates old-style values (``simple_value``, ``histo``, ``image``) to the tensor form TF2
writes, so one decoding path serves tensorboardX, torch and TF2 files alike. TF2 writes a
tag's metadata (its plugin) only with the tag's first value: the plugin of every tag is
remembered across all event files of a run.

Order: event files by name (their names start with the creation time), then record order.
A writer that is still appending only adds records at the end of the newest file, so a
growing run yields its old values first, unchanged.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "events.out.tfevents."

#: data_class values of ``SummaryMetadata`` (tensorboard.compat.proto.summary_pb2).
DATA_CLASS_SCALAR = 1
DATA_CLASS_TENSOR = 2
DATA_CLASS_BLOB_SEQUENCE = 3

#: Plugins whose values are blobs (image/audio bytes, graphs) rather than numbers.
BLOB_PLUGINS = {"images", "audio", "graphs", "graph_run_metadata", "graph_run_metadata_graph"}


def event_files(folder: Path) -> list[Path]:
    """The folder's event files (not its subfolders'), by name."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [folder / n for n in names if n.startswith(PREFIX) and (folder / n).is_file()]


def find_runs(root: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to ``root`` — "." for root itself, "/"-separated —, folder) of every
    folder under ``root`` holding event files, in path order. Symlinked folders are not
    followed (a link loop, or a folder outside the log dir)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        if any(n.startswith(PREFIX) for n in filenames):
            folder = Path(dirpath)
            rel = folder.relative_to(root).as_posix()
            yield (rel or "."), folder


def fingerprint(files: list[Path]) -> str:
    """Names, sizes and mtimes of a run's event files: changes when a file grows or a
    new one appears, without reading any content."""
    h = hashlib.sha256()
    for p in files:
        try:
            st = p.stat()
        except OSError:
            h.update(f"{p.name}\0gone\n".encode())
            continue
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def file_key(path: str | Path) -> str:
    """A short stable name for an event file, used in media file names."""
    return hashlib.sha256(Path(path).name.encode()).hexdigest()[:8]


@dataclass
class Value:
    """One summary value with where it sits (for media read back later)."""

    tag: str
    step: int
    wall_ms: int
    plugin: str  # the tag's plugin ("scalars", "images", "hparams", ... or "")
    data_class: int
    value: Any  # summary_pb2.Summary.Value (tensor form)
    file: str  # the event file
    ordinal: int  # index of the event among those the loader yields for the file
    index: int  # index of the value in the event's summary


@dataclass
class Timing:
    """What a pass over a run's events saw besides values."""

    first_ms: int | None = None
    last_ms: int | None = None
    events: int = 0
    damaged: list[str] = field(default_factory=list)  # files the loader stopped short in

    def see(self, ms: int) -> None:
        self.first_ms = ms if self.first_ms is None else min(self.first_ms, ms)
        self.last_ms = ms if self.last_ms is None else max(self.last_ms, ms)


class _Counting:
    """Counts the raw records the loader takes from its record iterator."""

    def __init__(self, records: Any) -> None:
        self.records = records
        self.count = 0

    def __iter__(self) -> _Counting:
        return self

    def __next__(self) -> Any:
        record = next(self.records)
        self.count += 1
        return record


def complete_records(path: str, size: int) -> int:
    """Records whose frame (length, data, CRCs) lies whole within the first ``size`` bytes,
    found by walking the length headers only."""
    count = pos = 0
    with open(path, "rb") as fh:
        while True:
            head = fh.read(12)
            if len(head) < 12:
                return count
            end = pos + 12 + struct.unpack("<Q", head[:8])[0] + 4
            if end > size:
                return count
            fh.seek(end)
            pos, count = end, count + 1


def load(path: str, timing: Timing | None = None) -> Iterator[Any]:
    """The events of one file, as the tensorboard package's loader migrates them.

    The loader stops quietly at a damaged record (it reads a cut-off last record as one
    still being written); with ``timing``, a file it stopped short in before its last
    complete record is named in ``timing.damaged``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    size = os.path.getsize(path)
    loader = EventFileLoader(path)
    counter: _Counting | None = None
    if timing is not None and hasattr(loader, "_iterator"):
        counter = loader._iterator = _Counting(loader._iterator)
    yield from loader.Load()
    if counter is not None and timing is not None:
        whole = complete_records(path, size)
        if counter.count < whole:
            timing.damaged.append(
                f"{Path(path).name}: record {counter.count + 1} of {whole} is damaged; "
                f"the {whole - counter.count} record(s) from it on were not read"
            )


def iter_values(files: list[str], timing: Timing | None = None) -> Iterator[Value]:
    """Every summary value of a run's event files, in file-name then record order."""
    plugins: dict[str, tuple[str, int]] = {}
    for path in files:
        if not os.path.isfile(path):
            continue  # removed since it was listed: the fingerprint changes, next sync sees it
        for ordinal, event in enumerate(load(path, timing)):
            wall_ms = int(event.wall_time * 1000)
            if timing is not None:
                timing.events += 1
                if event.wall_time > 0:
                    timing.see(wall_ms)
            if not event.HasField("summary"):
                continue
            for index, v in enumerate(event.summary.value):
                known = plugins.get(v.tag)
                if known is None or (not known[0] and v.metadata.plugin_data.plugin_name):
                    known = (v.metadata.plugin_data.plugin_name, v.metadata.data_class)
                    plugins[v.tag] = known
                yield Value(
                    tag=v.tag,
                    step=int(event.step),
                    wall_ms=wall_ms,
                    plugin=known[0],
                    data_class=known[1],
                    value=v,
                    file=path,
                    ordinal=ordinal,
                    index=index,
                )


def as_array(v: Value) -> Any:
    """The value's tensor as a numpy array (None when it holds no tensor)."""
    from tensorboard.util import tensor_util

    if v.value.WhichOneof("value") != "tensor":
        return None
    return tensor_util.make_ndarray(v.value.tensor)


#: Scalar tensors decoded without numpy: dtype enum -> the proto field holding the value.
_SCALAR_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 9: "int64_val"}


def number_of(v: Value) -> float | None:
    """The number of a scalar value: the ``scalars`` plugin (simple_value, migrated, and
    TF2's scalar tensors), or a one-element numeric tensor of a tag without a plugin."""
    if v.value.WhichOneof("value") != "tensor" or is_blob(v):
        return None
    if not (v.plugin == "scalars" or v.data_class == DATA_CLASS_SCALAR or not v.plugin):
        return None
    t = v.value.tensor
    field = _SCALAR_FIELDS.get(t.dtype)
    if field is not None and not t.tensor_content and not t.tensor_shape.dim:
        vals = getattr(t, field)
        if len(vals) == 1:
            return float(vals[0])
    arr = as_array(v)
    if arr is None or arr.size != 1 or arr.dtype.kind not in "fiub":
        return None
    return float(arr.reshape(()).item())


def is_blob(v: Value) -> bool:
    return v.plugin in BLOB_PLUGINS or v.data_class == DATA_CLASS_BLOB_SEQUENCE


def blobs_of(v: Value, arr: Any) -> list[tuple[bytes, dict[str, Any]]]:
    """The byte payloads of a blob value, each with what describes it (width/height for
    images: the tensor is ``[width, height, image, image, ...]``; audio: ``[[wav, label]]``)."""
    if arr is None:
        return []
    if v.plugin == "images" and arr.ndim == 1 and arr.size >= 2:
        meta: dict[str, Any] = {}
        try:
            meta = {"width": int(arr[0]), "height": int(arr[1])}
        except (TypeError, ValueError):
            pass
        return [(bytes(b), meta) for b in arr[2:]]
    if v.plugin == "audio" and arr.ndim == 2:
        out = []
        for row in arr:
            label = bytes(row[1]).decode("utf-8", "replace") if row.size > 1 else ""
            out.append((bytes(row[0]), {"label": label} if label else {}))
        return out
    return [(bytes(b), {}) for b in arr.reshape(-1) if isinstance(b, bytes)]


def extension_of(data: bytes, plugin: str) -> str:
    """A file extension from the payload's magic bytes."""
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"GIF8"):
        return ".gif"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"RIFF"):
        return ".wav"
    return ".pb" if plugin.startswith("graph") else ".bin"
