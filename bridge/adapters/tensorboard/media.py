"""Media payloads (images, audio, graphs) read back from their event file on demand.

History names each payload by (event file, event ordinal, value index, blob index); the
content stays in the event file until the engine copies it. The engine opens a run's
media in history order, so one forward cursor per event file reads each file once; a
request behind the cursor starts the file over. Memory holds one payload at a time.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import IO, Any

from bridge.adapters.tensorboard.events import Value, as_array, blobs_of, load

#: Event files kept open at once (runs copied in parallel each read one at a time).
MAX_OPEN = 16


class _Cursor:
    def __init__(self, path: str) -> None:
        self.path = path
        self._events: Iterator[tuple[int, Any]] = enumerate(load(path))
        self.pos = -1
        self.event: Any = None

    def seek(self, ordinal: int) -> Any:
        while self.pos < ordinal:
            try:
                self.pos, self.event = next(self._events)
            except StopIteration:
                raise FileNotFoundError(
                    f"{self.path}: event {ordinal} is no longer in the file"
                ) from None
        return self.event


class MediaCursors:
    """Forward cursors over event files, for :meth:`TensorboardReader.open_file`."""

    def __init__(self) -> None:
        self._cursors: dict[str, _Cursor] = {}
        self._lock = threading.Lock()

    def open(self, locator: dict[str, Any]) -> IO[bytes]:
        path = str(locator["event_file"])
        ordinal, index, blob = int(locator["ordinal"]), int(locator["index"]), int(locator["blob"])
        with self._lock:
            cur = self._cursors.pop(path, None)
            if cur is None or cur.pos > ordinal:
                cur = _Cursor(path)
            self._cursors[path] = cur  # most recently used last
            while len(self._cursors) > MAX_OPEN:  # each cursor holds its file open
                del self._cursors[next(iter(self._cursors))]
            event = cur.seek(ordinal)
            values = event.summary.value if event.HasField("summary") else []
            if index >= len(values):
                raise FileNotFoundError(f"{path}: event {ordinal} has no value {index}")
            raw = values[index]
            v = Value(
                tag=raw.tag,
                step=int(event.step),
                wall_ms=0,
                plugin=str(locator.get("plugin", "")),
                data_class=int(locator.get("data_class", 0)),
                value=raw,
                file=path,
                ordinal=ordinal,
                index=index,
            )
            blobs = blobs_of(v, as_array(v))
            if blob >= len(blobs):
                raise FileNotFoundError(f"{path}: event {ordinal} has no payload {blob}")
            return io.BytesIO(blobs[blob][0])

    def close(self) -> None:
        with self._lock:
            self._cursors.clear()
