"""The neutral schema every adapter reads into and writes from.

Readers produce these records; writers consume them; the engine only ever sees these
types, never a backend's own objects. Metric history travels as columnar chunks
(:class:`MetricChunk`), one chunk per key with up to a few thousand points, so memory
never grows with the length of a history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


@dataclass(frozen=True)
class SourceId:
    """A recorded source identity: the kind of backend an object came from and its path
    there, e.g. ``wandb:ENTITY/PROJECT/RUN``, ``mlflow:URI#RUN``, ``tensorboard:/LOGDIR#RUN``.

    Records carry the serialized form (``str(SourceId(...))``, ``KIND:PATH``): it is what
    destinations and the state store record (the ``bridge.source_id`` tag, W&B config
    ``_bridge.*``, state keys), so its spelling never changes. Adapters build and parse
    identities here only, and decide by :attr:`kind`, never by string prefixes.
    """

    kind: str  # the adapter kind that read the object: "wandb", "mlflow", "tensorboard"...
    path: str  # the object's place in that backend, in the adapter's own spelling

    @classmethod
    def parse(cls, text: str | None) -> SourceId:
        """The identity a serialized source id spells; kind "" when it names none."""
        if not text or ":" not in text:
            return cls("", text or "")
        kind, _, path = text.partition(":")
        return cls(kind, path)

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.kind else self.path


def source_kind(source_id: str | None) -> str:
    """The kind a serialized source id records ("" when none): ``SourceId.parse(..).kind``."""
    return SourceId.parse(source_id).kind


RunStatus = Literal["FINISHED", "FAILED", "KILLED", "RUNNING"]
"""How a run ended (or that it is still running). The spelling is MLflow's, and it stays:
it is serialized — W&B config ``_bridge.status``, the state store — and a re-sync of a
pair synced before must find it byte-identical."""

#: The W&B-named ``Run`` keywords of before the neutral schema, and where each now lives
#: (``Run``'s compatibility validator): the W&B extras, or the neutral field.
_LEGACY_WANDB_EXTRAS = ("group", "job_type", "exit_code")
_LEGACY_RENAMED = {"summary": "results"}


class Project(BaseModel):
    """The container a tracker groups runs in (a project, an experiment, a log dir)."""

    source_id: str  # e.g. "wandb:ENTITY/PROJECT"
    name: str
    entity: str | None = None
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class RunHeader(BaseModel):
    """What a reader lists cheaply: enough to decide whether a run needs reading at all."""

    source_id: str  # "wandb:ENTITY/PROJECT/RUN_ID" — stable across offline and online readers
    native_id: str  # the source's own run id (e.g. W&B run id, MLflow run uuid)
    project: Project
    name: str | None = None
    # Changes whenever anything about the run changes (new history, new files, edited
    # metadata). Equal fingerprints mean "nothing to do"; the engine never reads the body.
    fingerprint: str
    # Reader-private locator (folders, offsets, API handles); opaque to the engine.
    locator: dict[str, Any] = Field(default_factory=dict)


class FileRef(BaseModel):
    """A file belonging to a run, opened lazily through ``Reader.open_file``."""

    path: str  # destination-relative path, "/"-separated, e.g. "files/output.log"
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None  # base64 MD5 (W&B's form), when the source states one
    # A cheap identity of this version of the content (e.g. "path, size, mtime" of a local
    # file), for files that come without a digest: the content's MD5 is cached under it so
    # an unchanged file is not hashed again. None: no cheap identity (hashed on --full).
    stat_key: str | None = None
    locator: dict[str, Any] = Field(default_factory=dict)


class ManifestEntry(BaseModel):
    path: str
    digest: str | None = None  # W&B md5 digest (base64) or other algorithm-prefixed digest
    size: int | None = None
    ref: str | None = None  # reference URI (s3://, file://, https://...) if a reference entry
    local_path: str | None = None  # where the content sits locally (offline staging), if known
    extra: dict[str, Any] = Field(default_factory=dict)


class ArtifactVersion(BaseModel):
    """One artifact version logged or used by a run, or held by a registry version.

    ``source_id`` is content-addressed (``wandb:ENTITY/PROJECT/artifact/NAME@DIGEST``;
    ``mlflow:URI#model/MODEL_ID``) so the same version read offline (where the server's
    ``vN`` is unknown) and online maps to one destination copy.
    """

    name: str  # collection name, e.g. "my-dataset"
    type: str
    version: str | None = None  # "v3" when the source knows it
    version_index: int | None = None  # 3 for "v3"
    digest: str | None = None
    description: str | None = None
    aliases: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    manifest: list[ManifestEntry] = Field(default_factory=list)
    direction: Literal["logged", "used"] = "logged"
    source_id: str | None = None
    producer_source_id: str | None = None  # the run that logged it (source identity)
    # Set when the content IS a folder of the producing run's files (the path inside that
    # run, e.g. from MLflow's ``runs:/ID/PATH`` sources): once that run is copied, the copy
    # of this folder is the content (no upload).
    run_path: str | None = None
    created_at_ms: int | None = None
    # Reader-private (API handles, download roots); opaque to the engine.
    locator: dict[str, Any] = Field(default_factory=dict)


class ModelVersion(BaseModel):
    """One version of a registered model / registry collection, in source numbering."""

    source_id: str  # e.g. "wandb:ENTITY/wandb-registry-model/COLL:v3", "mlflow:URI#NAME/3"
    index: int  # the source's own version number (e.g. W&B vN -> N; MLflow version M -> M)
    artifact: ArtifactVersion  # content + manifest (entries opened by Reader.open_artifact_entry)
    run_source_id: str | None = None  # the producing run's source identity, if any
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    created_at_ms: int | None = None


class RegisteredModel(BaseModel):
    """A named, versioned model in a source's registry (e.g. a W&B Registry collection or
    legacy portfolio, an MLflow registered model), with every version in source order."""

    source_id: str  # "wandb:ENTITY/wandb-registry-model/COLL", "mlflow:URI#registered-model/N"
    name: str  # the source's own name (collection / portfolio / registered model)
    registry: str | None = None  # W&B registry ("model"), "model-registry" (legacy), None
    entity: str | None = None
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    versions: list[ModelVersion] = Field(default_factory=list)
    # The source's first version number (W&B v0 -> 0, MLflow -> 1): version ``index`` lines
    # up with destination number ``index - first_index + 1`` when nothing was deleted.
    first_index: int = 0


class Run(BaseModel):
    """A full run body: everything but the metric history and file content."""

    header: RunHeader
    name: str | None = None
    user: str | None = None
    notes: str | None = None
    tags: list[str] = Field(default_factory=list)
    host: str | None = None
    git_remote: str | None = None
    git_commit: str | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    status: RunStatus = "FINISHED"
    status_reason: str | None = None  # why a status was inferred (e.g. "no exit record")
    config: dict[str, Any] = Field(default_factory=dict)  # nested, raw JSON-able values
    # The values a run reports as its outcome (W&B's run summary; the last value of each
    # metric plus whatever else the run set there): nested, raw JSON-able values.
    results: dict[str, Any] = Field(default_factory=dict)
    # True while ``results`` is still to come from the history pass: a reader that folds
    # them there (Reader.read_run_deferring_results) sets them before its last item.
    results_pending: bool = False
    metric_definitions: list[dict[str, Any]] = Field(default_factory=list)  # define_metric
    files: list[FileRef] = Field(default_factory=list)
    artifacts: list[ArtifactVersion] = Field(default_factory=list)
    # Parent run (nested runs): the reader names the parent by source identity; the engine
    # hands the writer the parent's destination id (``Writer.render``), never the record.
    parent_source_id: str | None = None
    # Extra backend-level tags the reader wants preserved verbatim (already namespaced).
    extra_tags: dict[str, str] = Field(default_factory=dict)
    # Set when the source is damaged (truncated log ...): imported as far as it is intact.
    incomplete_reason: str | None = None
    # Reader-side problems found while reading (missing staging files, skipped logs ...).
    warnings: list[str] = Field(default_factory=list)
    # What the reader refused to read (a record over the size cap ...), one line each with
    # the fix: a loss — the rest of the run is written and the run fails, naming it.
    refused: list[str] = Field(default_factory=list)
    # Backend-specific fields, namespaced by the kind of the adapter that made them and in
    # its words: ``{"wandb": {"group": ..., "job_type": ..., "exit_code": ...}}``,
    # ``{"tensorboard": {"group": ...}}``. Where backends share a notion they share the
    # key (a run "group"), so a writer may take it from the source's namespace. Read with
    # :meth:`extra`.
    extras: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def extra(self, key: str, *kinds: str) -> Any:
        """``key``'s value in the first of the ``kinds`` namespaces that has one, else None."""
        for kind in kinds:
            value = self.extras.get(kind, {}).get(key)
            if value is not None:
                return value
        return None

    def set_extra(self, kind: str, key: str, value: Any) -> None:
        """Record ``key`` in ``kind``'s namespace; None removes it (an unset field)."""
        space = self.extras.setdefault(kind, {})
        if value is None:
            space.pop(key, None)
            if not space:
                del self.extras[kind]
        else:
            space[key] = value

    # -- compatibility aliases: the W&B-named fields of before the neutral schema. Only
    # -- tests written against that schema use them; no bridge code does.
    @model_validator(mode="before")
    @classmethod
    def _legacy_keywords(cls, data: Any) -> Any:
        """``Run(group=, job_type=, exit_code=, summary=)`` as before: the W&B fields go to
        ``extras["wandb"]``, ``summary`` to ``results``."""
        if not isinstance(data, dict) or not (
            set(data) & {*_LEGACY_WANDB_EXTRAS, *_LEGACY_RENAMED}
        ):
            return data
        data = dict(data)
        extras = {k: dict(v) for k, v in (data.get("extras") or {}).items()}
        for key in _LEGACY_WANDB_EXTRAS:
            value = data.pop(key, None)
            if value is not None:
                extras.setdefault("wandb", {})[key] = value
        for old, new in _LEGACY_RENAMED.items():
            if old in data:
                data[new] = data.pop(old)
        data["extras"] = extras
        return data

    @property
    def group(self) -> str | None:
        """Compatibility alias (tests only): ``extra("group", "wandb")``."""
        return self.extra("group", "wandb")  # type: ignore[no-any-return]

    @property
    def job_type(self) -> str | None:
        """Compatibility alias (tests only): ``extra("job_type", "wandb")``."""
        return self.extra("job_type", "wandb")  # type: ignore[no-any-return]

    @property
    def exit_code(self) -> int | None:
        """Compatibility alias (tests only): ``extra("exit_code", "wandb")``."""
        return self.extra("exit_code", "wandb")  # type: ignore[no-any-return]

    @property
    def summary(self) -> dict[str, Any]:
        """Compatibility alias (tests only): :attr:`results`."""
        return self.results


class MetricChunk(BaseModel):
    """Consecutive points of one metric stream, columnar.

    ``timestamps`` are epoch milliseconds. ``values`` may hold NaN and ±inf: what a
    destination cannot store faithfully is the writer's to map and report.
    """

    key: str
    steps: list[int]
    timestamps: list[int]
    values: list[float]

    def __len__(self) -> int:
        return len(self.steps)


class ExtraValue(BaseModel):
    """A history value that is not a plain number: media, tables, histograms, strings."""

    key: str
    step: int
    timestamp: int  # epoch ms
    value_json: str  # the raw JSON the source logged
    # The source's own label for the value's type, in its words (e.g. W&B's "_type":
    # image-file, table-file, histogram ...), else "string"/"object"; copied, not interpreted.
    kind: str
    file: FileRef | None = None  # the media file, when the value points at one


HistoryItem = MetricChunk | ExtraValue


class Warning_(BaseModel):
    """One report line about something that could not be mapped as-is."""

    source_id: str
    code: str  # "truncated", "sanitized-key", "non-finite", "missing-file", "incomplete" ...
    message: str


class Editable(BaseModel):
    """Metadata people edit by hand on either side: what ``--two-way`` carries both ways.

    ``holds`` names the kinds of field this side can store ("notes", "tags", "labels");
    only kinds both sides hold are compared. ``labels`` are free key/value tags (MLflow
    run tags that are not system or bridge tags); ``tags`` are W&B-style tag lists.
    """

    holds: set[str] = Field(default_factory=set)
    notes: str | None = None
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    def fields(self, kinds: set[str]) -> dict[str, str | None]:
        """Flat field -> value for ``kinds``: "notes", "tags" (sorted JSON), "label:<key>"."""
        import json

        out: dict[str, str | None] = {}
        if "notes" in kinds:
            out["notes"] = self.notes or None
        if "tags" in kinds:
            out["tags"] = json.dumps(sorted(set(self.tags)))
        if "labels" in kinds:
            out.update({f"label:{k}": v for k, v in self.labels.items()})
        return out
