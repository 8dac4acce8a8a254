"""What the per-run checks of one verify share across worker threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridge.adapters.features import LoggedModels
from bridge.engine.verify.report import StreamSample
from bridge.schema import RunHeader

if TYPE_CHECKING:
    from bridge.adapters.base import DestRun, Reader, Writer
    from bridge.state import StateStore


@dataclass
class VerifyContext:
    """What the per-run checks share across worker threads."""

    reader: Reader
    writer: Writer
    state: StateStore
    dest_reader: Reader
    digests: bool = False
    #: The destination's logged-model objects, when it has them (checked once).
    logged_models: LoggedModels | None = None
    #: Source ids this pair's syncs saw disappear from a complete listing (--on-delete).
    deleted_at_source: dict[str, float | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dest_headers: dict[str, RunHeader] | None = None
    _indexes: dict[str, dict[str, DestRun]] = field(default_factory=dict)
    samples: list[StreamSample] = field(default_factory=list)

    @property
    def dest_uri(self) -> str:
        return self.writer.display_uri

    def dest_index(self, project_dest_id: str) -> dict[str, DestRun]:
        with self._lock:
            if project_dest_id not in self._indexes:
                self._indexes[project_dest_id] = self.writer.find_runs_by_source(project_dest_id)
            return self._indexes[project_dest_id]

    def dest_header(self, dest_id: str) -> RunHeader | None:
        """The destination reader's header for a destination run id (listed once)."""
        with self._lock:
            if self._dest_headers is None:
                self._dest_headers = {h.native_id: h for h in self.dest_reader.list_runs()}
            headers = self._dest_headers
        found = headers.get(dest_id)
        if found is None and "/" in dest_id:  # a path-like dest id ends in the native id
            found = headers.get(dest_id.rsplit("/", 1)[1])
        return found


def mapped_dest(ctx: VerifyContext, header: RunHeader) -> tuple[str | None, str | None]:
    """(dest id, fingerprint recorded at the last completion) of a source run, if mapped."""
    st = ctx.state.get_run(ctx.dest_uri, header.source_id)
    if st is not None:
        return st.dest_id, st.fingerprint
    project_dest_id = ctx.writer.find_project(header.project)
    if project_dest_id is None:
        return None, None
    dest = ctx.dest_index(project_dest_id).get(header.source_id)
    if dest is None:
        return None, None
    return dest.dest_id, dest.fingerprint
