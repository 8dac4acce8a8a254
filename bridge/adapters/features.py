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


# --------------------------------------------------------------------------- writers


class MetricReadBack(ABC):
    """Writer feature: stored points can be read back, so a stream whose source changed
    inside its watermark (a point logged late) is merged exactly."""

    @abstractmethod
    def read_metric_points(self, dest_id: str, keys: Collection[str]) -> Iterator[MetricChunk]:
        """The stored points of these keys (named as the engine gave them to the sink)."""


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
