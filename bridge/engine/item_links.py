"""What a workspace item links to (its experiment, run, logged model), in the destination's
terms: from the state store and the writer, for the sync's item pass and for verify."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from bridge.adapters.base import Writer
from bridge.adapters.features import ItemLinks, LoggedModels
from bridge.schema import Project
from bridge.schema_items import ItemProject
from bridge.state import StateStore


class StateLinks(ItemLinks):
    """Links resolved through the state store (runs: ``bridge_runs``; logged models:
    ``bridge_objects``, where the logged-model path records each copy) and the writer
    (projects). ``create`` False (a dry run, verify): a project is looked up, never made.
    Thread-safe; each project is looked up once per pass."""

    def __init__(
        self,
        state: StateStore,
        writer: Writer,
        *,
        create: bool,
        logged_models: LoggedModels | None = None,
    ) -> None:
        self.state = state
        self.writer = writer
        self.create = create
        self.logged_models = logged_models
        self._names: dict[str, str] = {}
        self._projects: dict[str, str | None] = {}
        self._lock = threading.Lock()

    @property
    def dest_uri(self) -> str:
        return self.writer.display_uri

    def know(self, projects: Iterable[ItemProject]) -> None:
        """Remember the names of the projects items name (``project`` gets only an id)."""
        with self._lock:
            for p in projects:
                self._names.setdefault(p.source_id, p.name)

    def project(self, source_id: str) -> str | None:
        with self._lock:
            if source_id in self._projects and (self._projects[source_id] or not self.create):
                return self._projects[source_id]
            name = self._names.get(source_id)
            if name is None:
                return None  # a project no listed item named: nothing to map it by
            project = Project(source_id=source_id, name=name)
            found = (
                self.writer.ensure_project(project)
                if self.create
                else self.writer.find_project(project)
            )
            self._projects[source_id] = found
            return found

    def run(self, source_id: str) -> str | None:
        known = self.state.get_run(self.dest_uri, source_id)
        return known.dest_id if known is not None else None

    def model(self, source_id: str) -> str | None:
        known = self.state.get_object(self.dest_uri, source_id)
        if known is None:  # a model no run made, copied by the item pass
            mark = self.state.get_item(self.dest_uri, source_id)
            known = mark.dest_id if mark is not None and mark.kind == "model" else None
        if known is None and self.logged_models is not None:
            known = self.logged_models.find_model(source_id)  # state lost: its identity tag
        return known
