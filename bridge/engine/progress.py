"""Progress bars of a sync pass (shown only when asked for)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

from bridge.display import for_terminal


class Bars:
    """The pass's progress bars: runs finished, and one points bar per run being written
    (each on a line of its own, reused when its run is done)."""

    def __init__(self, total: int, workers: int, dry_run: bool, show: bool) -> None:
        self._lock = threading.Lock()
        self._show = show
        self._slots = list(range(max(1, workers)))
        self._runs = tqdm(
            total=total,
            desc="plan" if dry_run else "sync",
            unit="run",
            disable=not show,
            position=0,
        )

    def run_done(self) -> None:
        with self._lock:
            self._runs.update(1)

    @contextmanager
    def points(self, name: str) -> Iterator[Callable[[int], None]]:
        with self._lock:
            slot = self._slots.pop(0) if self._slots else 0
        bar = tqdm(
            desc=for_terminal(name)[:30],
            unit="pt",
            leave=False,
            disable=not self._show,
            position=slot + 1,
        )

        def update(points: int) -> None:
            bar.update(points)

        try:
            yield update
        finally:
            bar.close()
            with self._lock:
                self._slots.append(slot)

    def close(self) -> None:
        self._runs.close()
