"""Registered models of an MLflow store as neutral records (the reader's RegistrySource side).

Every registered model (or those matching ``ReaderOptions.registries``), versions in number
order, each with its content listed recursively under the version's source
(``models:/<id>``, ``runs:/...`` or a plain artifact URI), opened one file at a time by
:meth:`RegistryReader.open_entry`. A version whose content cannot be listed is a notice on
the reader's channel, never the end of the listing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator
from typing import IO, Any

from bridge.adapters.base import ReaderOptions
from bridge.adapters.mlflow import logged_read
from bridge.adapters.mlflow.files import download_to_temp, local_dir
from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.registry import (
    MANIFEST_PATH,
    PAGE,
    SOURCE_ID_TAG,
    model_id_of,
    runs_uri_run_id,
    safe_entry_path,
    search_versions,
)
from bridge.schema import ArtifactVersion, ManifestEntry, ModelVersion, RegisteredModel


class RegistryReader:
    """Registered models of one MLflow store as neutral records (see the module doc).

    ``store`` is the :class:`MlflowReader` (``client``, ``target``, ``display_uri``).
    """

    def __init__(self, store: Any, options: ReaderOptions) -> None:
        self.store = store
        self.options = options
        #: Content listings by root URI: versions of one logged model are listed once.
        self._listings: dict[str, list[tuple[str, int | None]]] = {}

    @property
    def client(self) -> Any:
        return self.store.client

    def _wanted(self, name: str) -> bool:
        patterns = self.options.registries
        return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def list_registered_models(self) -> Iterator[RegisteredModel]:
        """Every registered model (or those ``options.registries`` names; globs work),
        versions in number order. Nothing when ``options.registry`` is off."""
        if not self.options.registry:
            return
        names: list[str] = []
        token: str | None = None
        while True:
            page = self.client.search_registered_models(max_results=PAGE, page_token=token)
            names.extend(rm.name for rm in page if self._wanted(rm.name))
            token = page.token
            if not token:
                break
        for name in sorted(names):
            yield self.registered_model(name)

    def registered_model(self, name: str) -> RegisteredModel:
        rm = self.client.get_registered_model(name)
        display = self.store.display_uri
        model = RegisteredModel(
            source_id=object_source_id(display, f"registered-model/{name}"),
            name=name,
            description=rm.description or None,
            tags=_user_tags(rm.tags),
            registry=None,
            first_index=1,
        )
        by_version: dict[str, list[str]] = {}
        for alias, number in sorted((rm.aliases or {}).items()):
            by_version.setdefault(str(number), []).append(str(alias))
        for v in search_versions(self.client, name):
            model.versions.append(self._version(model, v, by_version.get(str(v.version), [])))
        return model

    def _version(self, model: RegisteredModel, v: Any, aliases: list[str]) -> ModelVersion:
        number = int(v.version)
        run_source_id = object_source_id(self.store.display_uri, v.run_id) if v.run_id else None
        artifact = self._artifact(model.name, v, number, aliases, run_source_id)
        return ModelVersion(
            source_id=f"{model.source_id}/{number}",
            index=number,
            artifact=artifact,
            run_source_id=run_source_id,
            description=v.description or None,
            tags=_user_tags(v.tags),
            aliases=aliases,
            created_at_ms=v.creation_timestamp,
        )

    def _artifact(
        self, name: str, v: Any, number: int, aliases: list[str], run_source_id: str | None
    ) -> ArtifactVersion:
        display = self.store.display_uri
        source = str(v.source or "")
        model_id = model_id_of(source)
        metadata: dict[str, Any] = {"source": source}
        skip: set[str] = set()
        if model_id is not None:
            source_id = object_source_id(display, f"model/{model_id}")
            metadata["model_id"] = model_id
        else:
            source_id = object_source_id(display, f"version-source/{source}")
        manifest: list[ManifestEntry] = []
        root: str | None = None
        try:
            root, logged = self._root(source)
            if logged is not None:
                if logged.params:
                    metadata["params"] = dict(logged.params)
                metadata[logged_read.RECORD_KEY] = logged_read.record(self.store, logged)
                if SOURCE_ID_TAG in (logged.tags or {}):
                    skip.add(MANIFEST_PATH)  # the bridge's own record of an imported model
            if root not in self._listings:
                self._listings[root] = list(self._walk(root))
            manifest = [
                ManifestEntry(path=path, size=size)
                for path, size in self._listings[root]
                if path not in skip
            ]
        except Exception as exc:  # noqa: BLE001 - one unreadable source never stops a listing
            self.store.notices.add(
                object_source_id(display, f"registered-model/{name}/{number}"),
                "missing-file",
                f"content of {name} version {number} ({source}) not listed: "
                f"{type(exc).__name__}: {self.store._scrub(str(exc))}",
            )
        listing = json.dumps(sorted((e.path, e.size) for e in manifest), separators=(",", ":"))
        return ArtifactVersion(
            name=name,
            type="model",
            version=f"v{number}",
            version_index=number,
            digest=hashlib.sha256(listing.encode()).hexdigest(),
            description=v.description or None,
            aliases=list(aliases),
            metadata=metadata,
            manifest=manifest,
            direction="logged",
            source_id=source_id,
            producer_source_id=run_source_id,
            created_at_ms=v.creation_timestamp,
            locator={"root": root} if root else {},
        )

    def _root(self, source: str, depth: int = 0) -> tuple[str, Any]:
        """The concrete artifact URI a version source names, and its logged model if any."""
        model_id = model_id_of(source)
        if model_id is not None:
            logged = self.client.get_logged_model(model_id)
            return str(logged.artifact_location), logged
        if source.startswith("runs:/"):
            from mlflow.utils.uri import append_to_uri_path

            run_id = runs_uri_run_id(source) or ""
            sub = source[len("runs:/") + len(run_id) :].strip("/")
            base = str(self.client.get_run(run_id).info.artifact_uri)
            return (append_to_uri_path(base, sub) if sub else base), None
        if source.startswith("models:/") and depth < 5:
            rest = source[len("models:/") :]
            if "@" in rest:
                rm_name, alias = rest.split("@", 1)
                number = str(self.client.get_model_version_by_alias(rm_name, alias).version)
            else:
                rm_name, number = rest.rsplit("/", 1)
            inner = self.client.get_model_version(rm_name, number).source
            return self._root(str(inner), depth + 1)
        return source, None

    def _repo(self, root: str) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(root, tracking_uri=self.store.target)

    def _walk(self, root: str) -> Iterator[tuple[str, int | None]]:
        """(path, size) of every file under ``root``, depth first, sorted by path."""
        repo = self._repo(root)

        def walk(path: str | None) -> Iterator[tuple[str, int | None]]:
            for info in sorted(repo.list_artifacts(path), key=lambda f: f.path):
                if info.is_dir:
                    yield from walk(info.path)
                else:
                    yield info.path, info.file_size

        yield from walk(None)

    def open_entry(self, art: ArtifactVersion, entry: ManifestEntry) -> IO[bytes]:
        """One file of a version's content: straight from a local artifact folder, else a
        temp download deleted on close. FileNotFoundError if it cannot be had."""
        root = art.locator.get("root")
        if not root:
            if entry.local_path:
                return open(entry.local_path, "rb")
            raise FileNotFoundError(f"artifact {art.name}: no content for {entry.path!r}")
        path = safe_entry_path(entry.path)
        local = local_dir(str(root))
        if local is not None:
            if not (local / path).is_file():
                raise FileNotFoundError(f"artifact {art.name}: {path!r} is not in {root}")
            return open(local / path, "rb")
        repo = self._repo(str(root))
        return download_to_temp(
            lambda folder: repo.download_artifacts(path, dst_path=folder),
            FileNotFoundError,
            f"artifact {art.name}: {path!r}",
            self.store._scrub,
        )


def _user_tags(tags: Any) -> dict[str, str]:
    """Tags as the source user sees them: without the bridge's own ``bridge.*``."""
    return {str(k): str(v) for k, v in sorted((tags or {}).items()) if not k.startswith("bridge.")}
