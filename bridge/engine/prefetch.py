"""Read ahead on a thread: parse the source while the destination writes.

Parsing a log and writing a store both spend time outside the GIL (file reads, sqlite,
HTTP), so overlapping them shortens a run's sync. The queue is bounded, so memory stays
flat however long the history is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar, cast

T = TypeVar("T")

_DONE = object()


def prefetch(items: Iterable[T], depth: int = 32) -> Iterator[T]:
    """Yield ``items`` produced by a background thread, at most ``depth`` ahead.

    An exception in the producer is re-raised here; leaving the loop early stops the
    producer at its next item.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failure.append(exc)
        finally:
            while not stop.is_set():
                try:
                    buffer.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue

    worker = threading.Thread(target=produce, name="bridge-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                break
            yield cast(T, item)
        if failure:
            raise failure[0]
    finally:
        stop.set()
        worker.join(timeout=5)
