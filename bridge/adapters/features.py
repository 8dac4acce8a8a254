"""Optional features an adapter declares by inheriting them, and the engine checks once.

The core contract (:class:`~bridge.adapters.base.Reader`, :class:`~bridge.adapters.base.Writer`)
is what every backend must do: list, read, stream history, open files; create, write,
finish. Everything else is a feature here: an adapter that has it lists the class among
its bases and implements every abstract method (Python refuses to instantiate it
otherwise), and the engine asks ``isinstance(writer, ModelRegistry)`` once, when a sync is
set up — never ``getattr``/``hasattr`` on a method name. A backend without a feature simply
does not inherit it; the engine then skips that part of the sync and says so.

Readers never write. Edits a sync carries back to the source (``--two-way`` notes/tags,
registry aliases moved in the copy) go through a writer opened on the source URI, using
the ``*_of`` methods below to name the source's own objects in that writer's ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from bridge.adapters.base import DestRegisteredModel, OpenEntry
from bridge.schema import (
    ArtifactVersion,
    Editable,
    ManifestEntry,
    MetricChunk,
    ModelVersion,
    RegisteredModel,
    RunHeader,
)
from bridge.schema_items import Item, ItemHeader, ItemKind

# --------------------------------------------------------------------------- readers


class RegistrySource(ABC):
    """Reader feature: the source has a model registry (registered models / collections)."""

    @abstractmethod
    def list_registered_models(self) -> Iterator[RegisteredModel]:
        """Registered models in scope, each with every version in source order."""


class EditableSource(ABC):
    """Reader feature: the notes/tags/labels people edit by hand, for ``--two-way``."""

    @abstractmethod
    def editable(self, header: RunHeader) -> Editable:
        """The run's editable fields as the source holds them now."""


Presence = Literal["gone", "present", "unknown"]


class SourcePresence(ABC):
    """Reader feature: ask the source about one run a complete listing no longer shows,
    before ``--on-delete tag|delete`` acts on its copy. A listing can look complete and
    still miss runs that exist: a server that hides what the caller may not read (MLflow's
    basic-auth app drops experiments without READ from every search), an experiment whose
    permission was withdrawn since the last pass. Without this feature the listing is
    trusted."""

    @abstractmethod
    def run_presence(self, source_id: str) -> Presence:
        """``gone`` (deleted, or no such run), ``present`` (it exists: the listing did not
        show it) or ``unknown`` (the source would not say: permission, network)."""


class ItemSource(ABC):
    """Reader feature: workspace items beyond runs (traces, prompts, evaluation datasets).

    The reader scopes them as it scopes runs: traces of the experiments in scope (and
    ``options.since``), datasets linked to an experiment in scope, prompts of the whole
    workspace. Which kinds a pass copies is the engine's choice (``--no-traces`` ...)."""

    @abstractmethod
    def item_kinds(self) -> set[ItemKind]:
        """The kinds this source holds and can read."""

    @abstractmethod
    def list_items(self, kind: ItemKind) -> Iterator[ItemHeader]:
        """Items of ``kind`` in scope, cheaply (fingerprints, not bodies)."""

    @abstractmethod
    def read_item(self, header: ItemHeader) -> Item:
        """The whole item (a Trace, Prompt or EvalDataset, as ``header.kind`` says)."""


# --------------------------------------------------------------------------- writers


class MetricReadBack(ABC):
    """Writer feature: stored points can be read back, so a stream whose source changed
    inside its watermark (a point logged late) is merged exactly."""

    @abstractmethod
    def read_metric_points(self, dest_id: str, keys: Collection[str]) -> Iterator[MetricChunk]:
        """The stored points of these keys (named as the engine gave them to the sink)."""


class AcknowledgedMarks(ABC):
    """Metric sink feature: requests stay in flight across the engine's watermark commits.
    ``mark()`` names the points added so far; ``wait_acknowledged(mark)`` returns once the
    destination acknowledged every one of them (points added later may still be in flight)
    and raises the sink's first failure. Only for sinks whose destination ignores a
    re-sent point: after a crash, points past the recorded watermark may be stored."""

    @abstractmethod
    def mark(self) -> object:
        """An opaque token for the points added so far."""

    @abstractmethod
    def wait_acknowledged(self, mark: object) -> None:
        """Send what the mark covers if still buffered; wait until it is acknowledged."""


class FileLinks(ABC):
    """Writer feature: a run file or folder has a URI other objects can point at
    (MLflow ``runs:/<id>/<path>``): registry versions then reuse the run's copy."""

    @abstractmethod
    def file_location(self, dest_id: str, path: str) -> str | None:
        """The URI of a file/folder written by ``put_file``; None if there is none."""


class RunDeletion(ABC):
    """Writer feature: ``--on-delete mark|delete`` for runs deleted at the source."""

    @abstractmethod
    def set_tags(self, dest_id: str, tags: dict[str, str]) -> None:
        """Set run tags (the source-deleted marker)."""

    @abstractmethod
    def delete_run(self, dest_id: str) -> None:
        """Delete the run (the backend's own soft delete where it has one)."""


class ParentLinks(ABC):
    """Writer feature: a nested run's copy linked to its parent's copy after both were
    written (the child was written before the parent's copy existed: another shard, a
    failed parent). Writers that name a parent by its source identity need no link."""

    @abstractmethod
    def link_parent(self, dest_id: str, parent_dest_id: str) -> dict[str, str]:
        """Link the run to its parent's copy; returns the tags written (kept in state)."""


class RunEdits(ABC):
    """Writer feature: hand-edited fields (notes, tags, labels) written both ways by
    ``--two-way``: on its own copies as a destination, on the source's runs as a writer
    opened on the source URI."""

    @abstractmethod
    def editable_from_tags(self, tags: dict[str, str]) -> Editable:
        """A destination run's editable fields, from its tags as listed."""

    @abstractmethod
    def is_editable_tag(self, key: str) -> bool:
        """True for tags people edit by hand (two-way owns them, not the mapping)."""

    @abstractmethod
    def set_editable(self, dest_id: str, changes: dict[str, str | None]) -> None:
        """Write changed fields ("notes", "tags" as a JSON list, "label:<key>")."""

    @abstractmethod
    def run_id_of(self, header: RunHeader) -> str:
        """This writer's id for a run its backend's reader listed (for edits at the source)."""


class LoggedModels(ABC):
    """Writer feature: model-typed artifacts become model objects of their own."""

    @abstractmethod
    def find_model(self, artifact_source_id: str) -> str | None:
        """Location of a model object written earlier for this source artifact, or None."""

    @abstractmethod
    def put_model(
        self,
        project_dest_id: str,
        run_dest_id: str | None,
        art: ArtifactVersion,
        files: Sequence[tuple[ManifestEntry, OpenEntry]],
    ) -> str:
        """Store the artifact as a model object, tagged with its source identity before any
        content is written and finalized last; return its location."""


class ModelRegistry(ABC):
    """Writer feature: registered models, versions and aliases."""

    @abstractmethod
    def registered_model_name(self, model: RegisteredModel) -> str:
        """The destination name the mapping gives a source registered model."""

    @abstractmethod
    def name_warnings(self, model: RegisteredModel) -> list[str]:
        """What naming ``model`` had to bend (renamed, shortened), one line each."""

    @abstractmethod
    def registry_label(self, model: RegisteredModel) -> str:
        """How reports name the registry a source model sits in (for people, not ids)."""

    @abstractmethod
    def get_registered_model(self, name: str) -> DestRegisteredModel | None:
        """The registered model as the destination holds it now, or None."""

    @abstractmethod
    def ensure_registered_model(self, name: str, model: RegisteredModel) -> None:
        """Create it if missing; set description and tags (idempotent)."""

    @abstractmethod
    def create_model_version(
        self, name: str, version: ModelVersion, location: str, run_dest_id: str | None
    ) -> str:
        """Create the next version from ``location``; return the destination's label."""

    @abstractmethod
    def alias_problem(self, alias: str) -> str | None:
        """Why this backend cannot hold the alias as spelled, or None."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    @abstractmethod
    def delete_alias(self, name: str, alias: str) -> None: ...

    @abstractmethod
    def version_of(self, model: RegisteredModel, version_source_id: str) -> tuple[str, str]:
        """(name, version label) in this writer's terms of a version its backend's reader
        listed — for aliases moved back to the source."""


class MappingRules(ABC):
    """Writer feature: user-editable mapping rules (``--mapping FILE``)."""

    @abstractmethod
    def load_mapping(self, path: Path) -> None:
        """Replace the default rules with the file's (raise BridgeError naming the problem)."""


class ItemLinks(ABC):
    """What the engine knows of other objects' copies, for an item that links to them."""

    @abstractmethod
    def project(self, source_id: str) -> str | None:
        """The destination container (experiment) id of a source project, None if none
        exists (in a dry run it is not created)."""

    @abstractmethod
    def run(self, source_id: str) -> str | None:
        """The destination run id of a source run, None if it was not copied (yet)."""

    @abstractmethod
    def model(self, source_id: str) -> str | None:
        """The destination location of a source logged model / model artifact, or None."""


class ItemChange(BaseModel):
    """What writing one item would do to the destination, found by reading it (pure)."""

    action: Literal["create", "update", "unchanged"]
    dest_id: str | None = None  # the copy, when it exists
    # For people: "+20 spans", "tag team: a -> b", "+1 assessment", "alias prod: v1 -> v2".
    changes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # what cannot be kept as-is, by name
    payload: dict[str, Any] = Field(default_factory=dict)  # writer-private, for apply_item


class ItemSink(ABC):
    """Writer feature: stores workspace items; every copy carries its source identity
    (a tag), so it is found again without state and never written twice."""

    @abstractmethod
    def item_kinds(self) -> set[ItemKind]:
        """The kinds this destination can store."""

    def prepare_items(self, kind: ItemKind, headers: list[ItemHeader]) -> None:  # noqa: B027
        """The listed headers of ``kind``, in the order the pass handles them, before its
        first ``find_item``: a writer may look copies up in bulk. Default: nothing."""

    @abstractmethod
    def find_item(self, header: ItemHeader, links: ItemLinks) -> str | None:
        """The copy of this source item written earlier (by its identity tag), or None."""

    @abstractmethod
    def plan_item(self, item: Item, dest_id: str | None, links: ItemLinks) -> ItemChange:
        """Compare the item with its copy (``dest_id``, None: no copy yet); write nothing."""

    @abstractmethod
    def apply_item(self, item: Item, change: ItemChange, links: ItemLinks) -> str:
        """Write what ``change`` found (create or update only that); return the copy's id.
        Idempotent: a crash half-way is finished by the next plan + apply."""

    @abstractmethod
    def read_item_back(self, kind: ItemKind, dest_id: str) -> Item | None:
        """The copy as a neutral item, without this writer's bookkeeping (identity tags),
        links named by source identity where known: what ``bridge verify`` digests."""
