"""The plan and its outcome: one object that reports render, for dry and real runs alike."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

from bridge.engine.lines import RunLines
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
    native_id: str | None = None  # the source backend's own run id
    name: str | None = None
    project: str
    action: Action
    reason: str | None = None  # for skip/resume/conflict: why
    dest_id: str | None = None
    params_to_write: dict[str, str] = Field(default_factory=dict)
    tags_to_write: dict[str, str] = Field(default_factory=dict)
    # Set by ``keep_counts`` once the run is settled: reports print only how many.
    params_count: int | None = None
    tags_count: int | None = None
    points_new: int | None = None  # counted in dry runs; None = "read while applying"
    files_new: int | None = None
    # Logged artifact versions not yet in the destination, "name:version (bytes)" (dry runs).
    artifacts_new: list[str] = Field(default_factory=list)
    bytes_new: int | None = None
    # --two-way: editable fields carried to each side ("notes", "tags", "label:<key>").
    edits_to_dest: dict[str, str | None] = Field(default_factory=dict)
    edits_to_source: dict[str, str | None] = Field(default_factory=dict)
    conflicts: list[Conflict] = Field(default_factory=list)  # open: left untouched
    resolved: list[Conflict] = Field(default_factory=list)  # settled by policy/resolution
    warnings: list[Warning_] = Field(default_factory=list)
    # Filled in by the applier.
    outcome: Outcome = "pending"
    points_written: int = 0
    files_written: int = 0
    error: str | None = None

    @property
    def n_params(self) -> int:
        """How many params the run gets (all reports print; the values may be gone)."""
        return len(self.params_to_write) if self.params_count is None else self.params_count

    @property
    def n_tags(self) -> int:
        return len(self.tags_to_write) if self.tags_count is None else self.tags_count

    def keep_counts(self) -> None:
        """The run is written (or will not be): drop the values to write, keep how many —
        a pass holds every run's line until its report is printed."""
        self.params_count, self.tags_count = self.n_params, self.n_tags
        self.params_to_write, self.tags_to_write = {}, {}


class VersionLine(BaseModel):
    """One source registry version and where it lands."""

    source_id: str
    source_version: str  # "v3", "3": as the source numbers it
    dest_version: str | None = None  # known once created (or mapped earlier)
    action: Literal["create", "unchanged"] = "create"
    bytes_new: int = 0  # content to transfer (0 when a copy already exists)
    note: str | None = None  # out-of-scope run, numbering that cannot line up ...


class AliasLine(BaseModel):
    alias: str
    source_version: str | None  # where the source has it (None: removed at the source)
    dest_from: str | None  # destination version it is on now
    dest_to: str | None  # destination version it will be on
    # set/delete: in the destination; back/back-delete: at the source (--two-way)
    action: Literal["set", "delete", "conflict", "kept", "illegal", "back", "back-delete"] = "set"
    source_to: str | None = None  # for back: the source version (source id) it moves to
    note: str | None = None


class ModelPlan(BaseModel):
    """One registered model / registry collection: versions to create, aliases to move."""

    source_id: str
    name: str  # the source's name
    dest_name: str
    action: Literal["create", "update", "unchanged", "conflict", "skip"] = "unchanged"
    versions: list[VersionLine] = Field(default_factory=list)  # only those to create
    aliases: list[AliasLine] = Field(default_factory=list)  # only changes and problems
    conflicts: list[Conflict] = Field(default_factory=list)
    resolved: list[Conflict] = Field(default_factory=list)
    warnings: list[Warning_] = Field(default_factory=list)
    outcome: Outcome = "pending"
    error: str | None = None

    @property
    def bytes_new(self) -> int:
        return sum(v.bytes_new for v in self.versions if v.action == "create")


class ItemPlan(BaseModel):
    """One workspace item (a trace, a prompt, an evaluation dataset) and what it gets."""

    kind: str  # "trace", "prompt", "dataset"
    source_id: str
    name: str
    # conflict: the copy was edited in the destination since the bridge wrote it (left
    # untouched); skip: such an edit kept by dest-wins or a "take dest" resolution.
    action: Literal["create", "update", "unchanged", "skip", "conflict"] = "unchanged"
    dest_id: str | None = None
    changes: list[str] = Field(default_factory=list)  # what create/update adds or changes
    conflicts: list[Conflict] = Field(default_factory=list)  # open: left untouched
    resolved: list[Conflict] = Field(default_factory=list)  # settled by policy/resolution
    warnings: list[Warning_] = Field(default_factory=list)
    outcome: Outcome = "pending"
    error: str | None = None


def _as_lines(value: Any) -> RunLines[RunPlan]:
    if isinstance(value, RunLines):
        return value
    return RunLines(RunPlan.model_validate(v) for v in value)


#: ``Plan.runs``: any iterable of lines (or dicts) becomes a :class:`RunLines`; dumped as a list.
Lines = Annotated[
    RunLines[RunPlan],
    PlainValidator(_as_lines),
    PlainSerializer(list, return_type=list[RunPlan]),
]


class Plan(BaseModel):
    model_config = ConfigDict(validate_assignment=True)  # ``plan.runs = [...]``: RunLines

    source: str
    dest: str
    dry_run: bool
    # Finished lines are kept on disk, read back on demand (engine/lines.py).
    runs: Lines = Field(default_factory=RunLines)
    models: list[ModelPlan] = Field(default_factory=list)
    items: list[ItemPlan] = Field(default_factory=list)  # only those created/updated/failed
    # Per item kind, how many the source listed and what became of them:
    # {"trace": {"listed": 3, "create": 1, "unchanged": 2, "not-copied": 0}}.
    item_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)  # problems not tied to one run
    # What the adapters reported (their ``notices``) that names no run or model of the plan.
    notices: list[Warning_] = Field(default_factory=list)
    # Set when the cycle did not run at all (another process holds the pair's lock).
    skipped: str | None = None
    # A shard of a sharded pass (bridge/passes.py): "I/N", the pass, and whether this
    # process ran the pass's final step (None: not a sharded pass).
    shard: str | None = None
    pass_id: str | None = None
    final_step: bool | None = None

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
        return (
            [c for r in self.runs for c in r.conflicts]
            + [c for m in self.models for c in m.conflicts]
            + [c for i in self.items for c in i.conflicts]
        )

    @property
    def resolved(self) -> list[Conflict]:
        return (
            [c for r in self.runs for c in r.resolved]
            + [c for m in self.models for c in m.resolved]
            + [c for i in self.items for c in i.resolved]
        )

    @property
    def warnings(self) -> list[Warning_]:
        return (
            [w for r in self.runs for w in r.warnings]
            + [w for m in self.models for w in m.warnings]
            + [w for i in self.items for w in i.warnings]
            + list(self.notices)
        )

    def exit_code(self) -> int:
        """1 if any run or model failed (others still synced), else 3 on conflicts, else 0."""
        outcomes = [r.outcome for r in self.runs] + [m.outcome for m in self.models]
        outcomes += [i.outcome for i in self.items]
        if self.errors or "failed" in outcomes:
            return 1
        if self.conflicts:
            return 3
        return 0
