"""A pass's run listing, kept on disk: what it holds per run is its source id.

A pass lists every source run before planning any (the listing is recorded as the pair's
members, and a complete one tells deleted runs from listed ones), so the headers of the
whole listing used to be held in memory until the pass ended: ~1.5 KB per run (locators
included), 15 MB at 10,000 runs. Here each header is pickled to a private temporary file
as it is listed and read back, in listing order, when the pass walks the listing; only the
source ids stay in memory. A header that cannot be pickled (a reader's locator holding a
live handle) keeps the whole listing in memory instead, as before.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator

from bridge.schema import RunHeader


class Listing:
    """The headers of one listing, in order: iterable any number of times, ``len`` and
    ``ids`` without reading the file. :meth:`close` deletes the file (also when collected)."""

    def __init__(self, headers: Iterable[RunHeader]) -> None:
        self.ids: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="bridge-listing-")
        self._path = os.path.join(self._dir.name, "headers.pickle")
        self._kept: list[RunHeader] | None = None  # the fallback: held in memory
        with open(self._path, "wb") as out:
            for header in headers:
                self.ids.append(header.source_id)
                if self._kept is not None:
                    self._kept.append(header)
                    continue
                try:
                    data = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # an unpicklable locator: the listing stays in memory
                    out.flush()
                    self._kept = [*self._read(), header]
                    continue
                out.write(data)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[RunHeader]:
        return iter(self._kept) if self._kept is not None else self._read()

    def _read(self) -> Iterator[RunHeader]:
        with open(self._path, "rb") as f:
            while True:
                try:
                    yield pickle.load(f)  # noqa: S301 - our own file, in a private folder
                except EOFError:
                    return

    def close(self) -> None:
        self._kept = None
        self._dir.cleanup()
