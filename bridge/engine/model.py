"""The plan and its outcome: one object that reports render, for dry and real runs alike."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from bridge.schema import Warning_

Action = Literal["create", "resume", "update", "unchanged", "conflict", "skip", "source-deleted"]
OnConflict = Literal["skip", "fail", "source-wins", "dest-wins"]
OnDelete = Literal["keep", "tag", "delete"]
Outcome = Literal["pending", "done", "failed", "skipped", "unchanged"]


class Conflict(BaseModel):
    source_id: str
    field: str  # "param:lr", "tag:team", "run"
    source_value: str | None = None
    dest_value: str | None = None
    synced_value: str | None = None
    reason: str
    # Set when settled (by a policy or an earlier `bridge conflicts resolve`): what was done.
    resolution: str | None = None


class RunPlan(BaseModel):
    source_id: str
    name: str | None = None
    project: str
    action: Action
    reason: str | None = None  # for skip/resume/conflict: why
    dest_id: str | None = None
    params_to_write: dict[str, str] = Field(default_factory=dict)
    tags_to_write: dict[str, str] = Field(default_factory=dict)
    points_new: int | None = None  # counted in dry runs; None = "read while applying"
    files_new: int | None = None
    conflicts: list[Conflict] = Field(default_factory=list)  # open: left untouched
    resolved: list[Conflict] = Field(default_factory=list)  # settled by policy/resolution
    warnings: list[Warning_] = Field(default_factory=list)
    # Filled in by the applier.
    outcome: Outcome = "pending"
    points_written: int = 0
    files_written: int = 0
    error: str | None = None


class Plan(BaseModel):
    source: str
    dest: str
    dry_run: bool
    runs: list[RunPlan] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)  # problems not tied to one run
    # Set when the cycle did not run at all (another process holds the pair's lock).
    skipped: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            out[run.action] = out.get(run.action, 0) + 1
        return out

    def outcomes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            out[run.outcome] = out.get(run.outcome, 0) + 1
        return out

    @property
    def conflicts(self) -> list[Conflict]:
        return [c for run in self.runs for c in run.conflicts]

    @property
    def resolved(self) -> list[Conflict]:
        return [c for run in self.runs for c in run.resolved]

    @property
    def warnings(self) -> list[Warning_]:
        return [w for run in self.runs for w in run.warnings]

    def exit_code(self) -> int:
        """1 if any run failed (others still synced), else 3 on conflicts, else 0."""
        if self.errors or any(r.outcome == "failed" for r in self.runs):
            return 1
        if self.conflicts:
            return 3
        return 0
