"""Listing runs of a W&B entity or project: projects, server-side filters, headers
with a fingerprint of everything a re-sync compares."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from bridge.adapters.wandb import answers, edits
from bridge.adapters.wandb.api_base import PAGE_SIZE, ApiAccess
from bridge.adapters.wandb.edits import EDITABLE
from bridge.adapters.wandb.ids import project_source_id
from bridge.errors import BridgeError
from bridge.schema import (
    Project,
    RunHeader,
)

# Neutral status (as users pass it in --states) -> W&B states.
STATES_OF = {
    "FINISHED": ["finished"],
    "FAILED": ["failed", "crashed", "preempted"],
    "KILLED": ["killed"],
    "RUNNING": ["running", "pending", "preempting"],
}


class ApiListing(ApiAccess):
    """Projects and run headers."""

    def _projects(self) -> list[str]:
        if self._t.project:
            return [self._t.project]
        api = self._client()
        api._projects.pop(self._t.entity, None)  # wandb.Api caches listings forever
        projects = api.projects(self._t.entity, per_page=PAGE_SIZE)
        names: list[str] = []
        seen: set[Any] = set()
        while self._next_page("projects", projects, seen):
            names.extend(p.name for p in projects.objects)
            projects.objects = []
        return names

    def _filters(self) -> dict[str, Any]:
        o = self.options
        conds: list[dict[str, Any]] = []
        if o.run_ids:
            conds.append({"name": {"$in": list(o.run_ids)}})
        if o.tags:
            conds.append({"tags": {"$in": list(o.tags)}})
        if o.states:
            states: list[str] = []
            for s in o.states:
                states.extend(STATES_OF.get(s.upper(), [s.lower()]))
            conds.append({"state": {"$in": states}})
        if o.since:
            conds.append(
                {"$or": [{"createdAt": {"$gte": o.since}}, {"heartbeatAt": {"$gte": o.since}}]}
            )
        if not conds:
            return {}
        return conds[0] if len(conds) == 1 else {"$and": conds}

    def list_runs(self) -> Iterator[RunHeader]:
        from wandb.apis import public

        api = self._client()
        for name in self._projects():
            project = Project(
                source_id=project_source_id(self._t.entity, name), name=name, entity=self._t.entity
            )
            path = f"{self._t.entity}/{name}"
            try:
                # Not api.runs(): it caches the listing per Api object, so a second
                # listing (mirror mode) would see nothing new.
                runs = public.Runs(
                    api._service_api,
                    self._t.entity,
                    name,
                    filters=self._filters(),
                    order="+created_at",
                    per_page=PAGE_SIZE,
                    lazy=False,
                )
                seen: set[Any] = set()
                while self._next_page("runs", runs, seen):
                    for r in runs.objects:
                        yield self._header(project, r)
                    runs.objects = []
            except (ValueError, TypeError) as exc:
                raise BridgeError(f"wandb: {path} on {self._t.base_url}: {exc}") from None

    def _header(self, project: Project, r: Any) -> RunHeader:
        a = answers.run_attrs(r._attrs, f"run {r.id!r} in the listing")
        fp = hashlib.sha256(
            json.dumps(
                [
                    a.get("heartbeatAt"),
                    a.get("state"),
                    a.get("historyLineCount"),
                    r.summary_metrics,
                    a.get("tags"),
                    a.get("notes"),
                    r.config,
                    a.get("displayName"),
                    a.get("group"),
                    a.get("jobType"),
                ],
                sort_keys=True,
                default=str,
                allow_nan=True,
            ).encode()
        ).hexdigest()[:32]
        return RunHeader(
            source_id=f"{project.source_id}/{r.id}",
            native_id=r.id,
            project=project,
            name=a.get("displayName"),
            fingerprint=fp,
            locator={
                "path": f"{project.entity}/{project.name}/{r.id}",
                # What --two-way compares, as listed (no extra call per run and cycle).
                EDITABLE: edits.listed(a.get("notes"), a.get("tags")),
            },
        )
