"""Write neutral runs into W&B: ``wandb:ENTITY[/PROJECT][?base_url=URL]`` (a W&B server)
or ``wandb-offline:DIR`` (offline run folders, :class:`WandbOfflineWriter`), both through
the real SDK.

Online, the SDK uploads as it goes (base URL from ``?base_url=`` or ``WANDB_BASE_URL``, key
from ``WANDB_API_KEY`` or netrc; never printed). The run layout is ``layout``'s, the
history rows ``sink``'s, the run lifecycle ``run_writer``'s (all rules also in
``mappings/mlflow-to-wandb.toml``). What a server adds over folders:

* registered models → W&B Registry collections (or legacy portfolios), model versions →
  ``model`` artifacts logged by their run's copy; see ``registry_writer``;
* runs whose source run was deleted (``--on-delete``): ``tag`` adds the W&B run tag
  ``bridge-source-deleted`` (W&B tags are bare labels; ``bridge.source_deleted=true``
  becomes that label, the run's other tags stay); ``delete`` deletes the run
  (``Run.delete()``, its artifacts kept). W&B keeps a deleted run's id taken: a source run
  restored later cannot be copied again under its deterministic id;
* ``--two-way``: notes and tags edited on the runs, here as a destination or — a writer
  opened on a W&B source — on the source's own runs (``run_id_of``), and registry aliases
  moved back to the source's collections (``version_of``).
"""

from __future__ import annotations

import functools
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from bridge.adapters.base import DestRegisteredModel, DestRun, OpenEntry
from bridge.adapters.features import LoggedModels, ModelRegistry, RunDeletion, RunEdits
from bridge.adapters.wandb import edits
from bridge.adapters.wandb.ids import wandb_path
from bridge.adapters.wandb.layout import wandb_label
from bridge.adapters.wandb.mapping import WandbMapping
from bridge.adapters.wandb.offline_writer import WandbOfflineWriter
from bridge.adapters.wandb.registry_writer import (
    WandbRegistryWriter,
    alias_problem,
    registry_project,
)
from bridge.adapters.wandb.retry import retry
from bridge.adapters.wandb.run_writer import WandbRunWriter
from bridge.adapters.wandb.sdk import LiveRun as _Live
from bridge.adapters.wandb.sdk import sdk_settings as _sdk_settings
from bridge.adapters.wandb.server import not_found
from bridge.adapters.wandb.sink import WandbMetricSink
from bridge.errors import BridgeError
from bridge.redact import redact
from bridge.schema import (
    ArtifactVersion,
    Editable,
    ManifestEntry,
    ModelVersion,
    RegisteredModel,
    RunHeader,
)

__all__ = [
    "WandbMetricSink",
    "WandbOfflineWriter",
    "WandbWriter",
    "_Live",
    "_sdk_settings",
    "wandb_label",
]


class WandbWriter(WandbRunWriter, RunDeletion, RunEdits, LoggedModels, ModelRegistry):
    """Writes runs, models and registry collections to a W&B server (``wandb:``)."""

    scheme = "wandb"
    offline = False

    def __init__(self, target: str, mapping: WandbMapping | None = None) -> None:
        super().__init__(target, mapping)
        self._api_obj: Any = None
        self._registry: WandbRegistryWriter | None = None
        #: Runs named by ``run_id_of``: their listed notes/tags follow ``set_editable``.
        self._headers: dict[str, RunHeader] = {}
        self._edit_lock = threading.Lock()
        parts = [p for p in self._path.strip("/").split("/") if p]
        if not parts or len(parts) > 2:
            raise BridgeError(
                f"wandb:{self._path}: expected wandb:ENTITY/PROJECT or wandb:ENTITY "
                "(one project per source project)"
            )
        self._entity = parts[0]
        if len(parts) == 2:
            self._fixed_project = parts[1]

    @property
    def display_uri(self) -> str:
        if self._explicit_url:
            return f"{self.scheme}:{self._path}?base_url={redact(self._explicit_url)}"
        return f"{self.scheme}:{self._path}"

    def _api(self) -> Any:
        with self._lock:
            if self._api_obj is None:
                import wandb

                self._api_obj = wandb.Api(
                    api_key=self._api_key(), overrides={"base_url": self.base_url}, timeout=60
                )
            return self._api_obj

    def check(self) -> None:
        """An API key must be known and the server must answer."""
        self._api_key()
        try:
            with urllib.request.urlopen(self.base_url, timeout=5):  # noqa: S310 - user's server
                pass
        except urllib.error.HTTPError:
            return  # something answers; auth is checked by the first real call
        except Exception as exc:
            reason = getattr(exc, "reason", exc)
            raise BridgeError(
                f"{self.display_uri}: W&B server {self.base_url} unreachable ({reason}); "
                "check WANDB_BASE_URL / ?base_url="
            ) from None

    # ------------------------------------------------------------------ reading back

    def _api_dest_run(self, r: Any, project_dest_id: str) -> DestRun:
        fields = {
            "name": r.name,
            "notes": getattr(r, "notes", None),
            "group": getattr(r, "group", None),
            "job_type": getattr(r, "job_type", None),
            "tags": list(getattr(r, "tags", None) or []),
        }
        return self._dest_run(f"{project_dest_id}/{r.id}", project_dest_id, dict(r.config), fields)

    def find_runs_by_source(self, project_dest_id: str) -> dict[str, DestRun]:
        """Runs of the project whose config carries ``_bridge.source_id``, by source id."""
        found: dict[str, DestRun] = {}
        try:
            runs = list(self._api().runs(project_dest_id, per_page=500))
        except Exception as exc:
            if not_found(exc):
                return found
            raise
        for r in runs:
            dest = self._api_dest_run(r, project_dest_id)
            if dest.source_id:
                found.setdefault(dest.source_id, dest)
        return found

    def _fresh_run(self, dest_id: str) -> Any:
        """The public-API run as the server has it now. ``Api.run`` keeps each run object
        for the life of the ``Api``: edits and deletions made since would not show.
        Raises (``RunNotFoundError``) if there is no such run."""
        from wandb.apis import public

        parts = dest_id.split("/")
        if len(parts) != 3 or not all(parts):
            raise BridgeError(f"{self.display_uri}: {dest_id!r} is not ENTITY/PROJECT/RUN_ID")
        entity, project, run_id = parts
        return public.Run(self._api()._service_api, entity, project, run_id, lazy=False)

    def get_run(self, dest_id: str) -> DestRun | None:
        try:
            r = self._fresh_run(dest_id)  # loads the run: raises if it does not exist
        except Exception as exc:
            if not_found(exc):
                return None
            raise
        return self._api_dest_run(r, dest_id.rpartition("/")[0])

    def metric_counts(self, dest_id: str) -> dict[str, int]:
        """Points per source metric key (every history row except the bridge's step key).
        Never from the SDK's history cache: it keeps a run's parquet copy by run id alone,
        so after an append it still holds the rows from before (the new ones re-sent)."""
        counts: dict[str, int] = {}
        r = self._api().run(dest_id)
        config = r.config
        step_key = self._step_key(config if isinstance(config, dict) else {})
        for row in r.scan_history(use_cache=False):
            for key, value in row.items():
                if value is not None and isinstance(value, (int, float)):
                    self._count(counts, key, step_key)
        return counts

    def _server_next_step(self, dest_id: str) -> int:
        """The step after the last one the server holds. wandb-core starts a resumed run
        at that step too (``starting_step``, from its ``RunResumeStatus`` answer), but
        ``run.step`` answers 0 until a row is logged; counting from it had every appended
        row dropped. Asked of the server as well, so rows never go below what it holds."""
        try:
            return int(self._fresh_run(dest_id).lastHistoryStep) + 1
        except Exception as exc:
            if not_found(exc):
                return 0
            raise

    # ------------------------------------------------------------------ source deletions

    def set_tags(self, dest_id: str, tags: dict[str, str]) -> None:
        """Add ``tags`` to the run as W&B tags (``--on-delete tag``: the label
        ``bridge-source-deleted``), keeping its other tags, with the public API's
        ``Run.update()``: what a W&B user filters runs on. Config, summary and history stay
        as they are (``Run.update()`` sends back the config and summary it loaded)."""
        labels = [wandb_label(k, v) for k, v in tags.items()]
        r = self._fresh_run(dest_id)
        have = [str(t) for t in getattr(r, "tags", None) or []]
        new = [t for t in dict.fromkeys(labels) if t not in have]
        if new:
            r.tags = have + new
            r.update()

    def delete_run(self, dest_id: str) -> None:
        """Delete the run on the server (``Run.delete()``, GraphQL ``DeleteRun``). Artifacts
        it logged stay (a registry link may point at one). A run already gone is no error.
        W&B keeps the id of a deleted run taken: the same id cannot be created again."""
        try:
            r = self._fresh_run(dest_id)
        except Exception as exc:
            if not_found(exc):
                return
            raise
        r.delete(delete_artifacts=False)

    # ------------------------------------------------------------------ two-way edits

    def editable_from_tags(self, tags: dict[str, str]) -> Editable:
        return edits.editable_from_tags(tags)

    def is_editable_tag(self, key: str) -> bool:
        return edits.is_editable_tag(key)

    def run_id_of(self, header: RunHeader) -> str:
        """``ENTITY/PROJECT/RUN_ID`` of a run the W&B API reader listed."""
        rid = str(header.locator.get("path") or wandb_path(header.source_id))
        with self._edit_lock:
            self._headers[rid] = header
        return rid

    def set_editable(self, dest_id: str, changes: dict[str, str | None]) -> None:
        """Write "notes" and "tags" (a JSON list) through the public API (``Run.update``).
        A run named by :meth:`run_id_of` keeps its listed notes/tags current, so the
        reader's ``editable`` answers what the run holds now."""
        r = retry(functools.partial(self._fresh_run, dest_id))
        if not edits.apply_edits(r, changes):
            return
        retry(r.update)
        with self._edit_lock:
            header = self._headers.get(dest_id)
        if header is not None:
            header.locator[edits.EDITABLE] = edits.listed(r.notes, r.tags)

    # ------------------------------------------------------------------ models, registry

    @property
    def registry(self) -> WandbRegistryWriter:
        """The model/registry half, see ``registry_writer``."""
        with self._lock:
            if self._registry is None:
                self._registry = WandbRegistryWriter(self)
            return self._registry

    def find_model(self, artifact_source_id: str) -> str | None:
        return self.registry.find_model(artifact_source_id)

    def put_model(
        self,
        project_dest_id: str,
        run_dest_id: str | None,
        art: ArtifactVersion,
        files: Sequence[tuple[ManifestEntry, OpenEntry]],
    ) -> str:
        return self.registry.put_model(project_dest_id, run_dest_id, art, files)

    def registered_model_name(self, model: RegisteredModel) -> str:
        return self.registry.registered_model_name(model)

    def name_warnings(self, model: RegisteredModel) -> list[str]:
        """What naming ``model`` had to bend (collection name, tags W&B cannot hold)."""
        return list(self.registry.name_warnings.get(model.source_id, []))

    def registry_label(self, model: RegisteredModel) -> str:
        return registry_project(model.registry)

    def get_registered_model(self, name: str) -> DestRegisteredModel | None:
        return self.registry.get_registered_model(name)

    def ensure_registered_model(self, name: str, model: RegisteredModel) -> None:
        self.registry.ensure_registered_model(name, model)

    def create_model_version(
        self, name: str, version: ModelVersion, location: str, run_dest_id: str | None
    ) -> str:
        return self.registry.create_model_version(name, version, location, run_dest_id)

    def alias_problem(self, alias: str) -> str | None:
        return alias_problem(alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.registry.set_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        self.registry.delete_alias(name, alias)

    def version_of(self, model: RegisteredModel, version_source_id: str) -> tuple[str, str]:
        """(collection path, ``vN``) of a version the W&B API reader listed: aliases
        moved back go to the source's own collection, whatever this writer's mapping."""
        path, _, label = wandb_path(version_source_id).rpartition(":")
        return path, label
