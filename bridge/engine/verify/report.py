"""What ``verify`` produces: one line per source run or registered model, the fields that
differ, and downsampled samples of mismatched streams (the reports render it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

RunStatusV = Literal["ok", "mismatch", "unsynced", "not-copied", "error"]
#: Statuses that fail a verify (exit 1): a copy that differs, a copy that is missing, a
#: run that could not be checked. ``not-copied`` (left out on purpose) does not.
FINDINGS: frozenset[str] = frozenset({"mismatch", "unsynced", "error"})
#: Display order of the statuses in a summary line.
STATUS_ORDER = ("ok", "mismatch", "unsynced", "not-copied", "error")


class Mismatch(BaseModel):
    """One line of a verify report: a field of a run that differs."""

    source_id: str
    field: str  # "run", "param:lr", "tag:team", "metric:loss", "file:files/output.log"
    source_value: str | None = None
    dest_value: str | None = None
    detail: str | None = None


class RunVerify(BaseModel):
    source_id: str
    name: str | None = None
    project: str
    dest_id: str | None = None
    status: RunStatusV = "ok"
    #: The source changed since the last sync: differences may just be not synced yet.
    stale: bool = False
    params_checked: int = 0
    tags_checked: int = 0
    metrics_checked: int = 0
    points_checked: int = 0
    files_checked: int = 0
    mismatches: list[Mismatch] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    #: Why a ``not-copied`` run was left out on purpose.
    reason: str | None = None


class ItemVerify(BaseModel):
    """A workspace item (trace, prompt, evaluation dataset) whose copy is missing or
    differs (items that verify clean are counted, not listed)."""

    kind: str
    source_id: str
    name: str
    dest_id: str | None = None
    status: RunStatusV = "ok"
    stale: bool = False  # the source changed since the last sync
    findings: list[str] = Field(default_factory=list)  # "trace tr-1: span tree differs"
    error: str | None = None


class StreamSample(BaseModel):
    """Downsampled (step, value) points of one mismatched stream, both sides, for plots."""

    source_id: str
    key: str
    source: list[tuple[float, float]] = Field(default_factory=list)
    dest: list[tuple[float, float]] = Field(default_factory=list)


class VerifyReport(BaseModel):
    source: str
    dest: str
    runs: list[RunVerify] = Field(default_factory=list)
    samples: list[StreamSample] = Field(default_factory=list)
    #: Workspace items with a finding, and per kind: listed, copies found, each status.
    items: list[ItemVerify] = Field(default_factory=list)
    item_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)  # problems not tied to one run
    #: Which source objects were checked and where that scope came from.
    scope: str = "every source run"
    filters: dict[str, Any] = Field(default_factory=dict)
    #: The mapping file the writer rendered with (None: its default rules).
    mapping: str | None = None

    @property
    def mismatches(self) -> list[Mismatch]:
        return [m for run in self.runs for m in run.mismatches]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            out[run.status] = out.get(run.status, 0) + 1
        return out

    def counts_line(self) -> str:
        """Statuses as counted, e.g. ``4 ok, 2 unsynced, 1 not copied`` (ok, unsynced and
        not copied always; the others when present)."""
        counts = self.counts()
        always = ("ok", "unsynced", "not-copied")
        return ", ".join(
            f"{counts.get(s, 0)} {s.replace('-', ' ')}"
            for s in STATUS_ORDER
            if s in always or counts.get(s)
        )

    def exit_code(self) -> int:
        """0 when every run in scope has a copy that verifies clean (or was left out on
        purpose), else 1: a mismatch, a source run without a copy, an error."""
        if self.errors or any(r.status in FINDINGS for r in self.runs):
            return 1
        if any(i.status in FINDINGS for i in self.items):
            return 1
        return 0

    def streams(self) -> dict[tuple[str, str], tuple[list, list]]:
        """(source id, key) → (source points, dest points): what the HTML report plots."""
        return {(s.source_id, s.key): (s.source, s.dest) for s in self.samples}
