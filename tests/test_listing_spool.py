"""The pass's run listing kept on disk (engine/listing.py): the same headers, in order,
as often as asked; a header that cannot be pickled keeps the listing in memory."""

from __future__ import annotations

import os
import threading

from bridge.engine.listing import Listing
from bridge.schema import Project, RunHeader


def _headers(n: int, locator: dict[str, object] | None = None) -> list[RunHeader]:
    project = Project(source_id="p", name="p")
    return [
        RunHeader(
            source_id=f"src#{i}",
            native_id=str(i),
            project=project,
            name=f"r{i}" if i % 2 else None,
            fingerprint=f"f{i}",
            locator=locator if locator is not None and i == 3 else {"experiment_id": str(i)},
        )
        for i in range(n)
    ]


def test_a_listing_reads_back_the_same_headers_in_order_and_deletes_its_file() -> None:
    headers = _headers(50)
    listing = Listing(iter(headers))
    assert len(listing) == 50 and listing.ids == [h.source_id for h in headers]
    assert listing._kept is None  # on disk, not in memory
    assert list(listing) == headers
    assert list(listing) == headers  # read again from the start
    first = iter(listing)  # two walks at once do not share a position
    assert next(first) == headers[0]
    assert [h.source_id for h in listing][:2] == ["src#0", "src#1"]
    assert next(first) == headers[1]
    path = listing._path
    assert os.path.isfile(path)
    listing.close()
    assert not os.path.exists(path)


def test_an_unpicklable_locator_keeps_the_listing_in_memory() -> None:
    headers = _headers(6, locator={"handle": threading.Lock()})
    listing = Listing(headers)
    assert listing._kept is not None
    assert [h.source_id for h in listing] == [h.source_id for h in headers]
    assert list(listing)[3] is headers[3]
    listing.close()


def test_an_empty_listing() -> None:
    listing = Listing([])
    assert len(listing) == 0 and list(listing) == [] and listing.ids == []
    listing.close()
