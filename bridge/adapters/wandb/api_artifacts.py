"""Artifact versions read from a W&B server: manifests, content downloads (eager for
versions a run logged, entry by entry otherwise) and the producing run."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import IO, Any

from bridge.adapters.wandb.api_base import ApiAccess, parse_time
from bridge.adapters.wandb.ids import artifact_source_id, run_source_id
from bridge.paths import check_relpath, path_problem
from bridge.schema import (
    ArtifactVersion,
    ManifestEntry,
)

_VERSION_LABEL = re.compile(r"^v(\d+)$")


def version_index(label: str | None) -> int | None:
    m = _VERSION_LABEL.match(label or "")
    return int(m.group(1)) if m else None


def real_aliases(aliases: list[str]) -> list[str]:
    """Real aliases only: the ``vN`` labels are version numbers, not aliases."""
    return [a for a in aliases if not _VERSION_LABEL.match(a)]


class ApiArtifacts(ApiAccess):
    """Artifact versions as their source collection knows them."""

    def _artifacts(self, r: Any, warnings: list[str]) -> list[ArtifactVersion]:
        out: list[ArtifactVersion] = []
        for direction in ("logged", "used"):
            pager = r.logged_artifacts() if direction == "logged" else r.used_artifacts()
            items: list[Any] = []
            seen: set[Any] = set()
            while self._next_page("artifacts", pager, seen):
                items.extend(pager.objects)
                pager.objects = []
            for art in items:
                out.append(self._artifact(art, direction, warnings))
        return out

    def _artifact_root(self, artifact_id: str) -> Path:
        """Where one version's content is downloaded (eagerly by read_run or lazily)."""
        return self._cache() / "artifacts" / hashlib.sha1(artifact_id.encode()).hexdigest()[:16]

    def _artifact(
        self, art: Any, direction: str, warnings: list[str], *, download: bool | None = None
    ) -> ArtifactVersion:
        """One version as its *source* collection knows it (name, ``vN``, aliases,
        producing run), content-addressed by the source project and the digest.

        Content is downloaded now for versions a run logged (``download`` overrides that);
        the rest is fetched entry by entry by :meth:`open_artifact_entry`."""
        manifest = self._retry("manifest", lambda: art.manifest)
        root: Path | None = None
        fetch = direction == "logged" if download is None else download
        # A manifest naming a path that is absolute or climbs out (``..``) is not fetched
        # whole: its other entries come one by one, the bad one is refused by the engine.
        hostile = any(path_problem(p) is not None for p in manifest.entries)
        if fetch and not hostile and any(not e.ref for e in manifest.entries.values()):
            root = self._artifact_root(str(art.id))
            try:
                self._retry(
                    "artifact download", lambda: art.download(root=str(root), skip_cache=True)
                )
            except Exception as exc:
                warnings.append(f"artifact {art.name}: download failed: {exc}")
                root = None
        entries: list[ManifestEntry] = []
        for p, e in sorted(manifest.entries.items()):
            local = None
            if root is not None and not e.ref and path_problem(p) is None and (root / p).is_file():
                local = str(root / p)
            extra: dict[str, Any] = {}
            if getattr(e, "birth_artifact_id", None):
                extra["birth_artifact_id"] = e.birth_artifact_id
            entries.append(
                ManifestEntry(
                    path=p,
                    digest=e.digest or None,
                    size=e.size,
                    ref=e.ref or None,
                    local_path=local,
                    extra=extra,
                )
            )
        meta = art.metadata
        name = str(art.source_name).split(":")[0]
        version = str(art.source_version)
        digest = art.digest or None
        source_id = None
        if digest and art.source_entity and art.source_project:
            source_id = artifact_source_id(art.source_entity, art.source_project, name, digest)
        return ArtifactVersion(
            name=name,
            type=art.type,
            version=version,
            version_index=version_index(version),
            digest=digest,
            description=art.description or None,
            aliases=real_aliases(list(art.aliases)),
            metadata=meta if isinstance(meta, dict) else {"value": meta},
            manifest=entries,
            direction="logged" if direction == "logged" else "used",
            source_id=source_id,
            producer_source_id=self._producer(art, warnings),
            created_at_ms=parse_time(art.created_at),
            locator={"id": str(art.id), "path": str(art.source_qualified_name)},
        )

    def _producer(self, art: Any, warnings: list[str]) -> str | None:
        """Source identity of the run that logged the version (``Artifact.logged_by``)."""
        aid = str(art.id)
        with self._lock:
            if aid in self._producers:
                return self._producers[aid]
        try:
            run = self._retry("logged_by", art.logged_by)
        except Exception as exc:
            warnings.append(f"artifact {art.name}: producing run unknown: {exc}")
            return None
        sid = run_source_id(run.entity, run.project, run.id) if run is not None else None
        with self._lock:
            self._producers[aid] = sid
        return sid

    def open_artifact_entry(self, art: ArtifactVersion, entry: ManifestEntry) -> IO[bytes]:
        """The entry's content: the copy read_run downloaded, else downloaded now (once,
        into the reader's cache) through the version's source path."""
        if entry.ref:
            raise FileNotFoundError(
                f"artifact {art.name}: {entry.path!r} is a reference to {entry.ref}"
            )
        if entry.local_path and Path(entry.local_path).is_file():
            return open(entry.local_path, "rb")
        path, aid = art.locator.get("path"), art.locator.get("id")
        if not path or not aid:
            raise FileNotFoundError(f"artifact {art.name}: no content for {entry.path!r}")
        root = self._artifact_root(str(aid))
        target = root / check_relpath(entry.path, f"artifact {art.name} entry path")
        with self._lock:
            lock = self._download_locks.setdefault(str(target), threading.Lock())
        with lock:
            if not target.is_file():
                try:
                    api_art = self._retry("artifact", lambda: self._client().artifact(str(path)))
                    self._retry(
                        "artifact entry download",
                        lambda: api_art.download(
                            root=str(root), skip_cache=True, path_prefix=entry.path
                        ),
                    )
                except Exception as exc:
                    raise FileNotFoundError(
                        f"artifact {path}: {entry.path!r} not downloadable: {exc}"
                    ) from exc
        if not target.is_file():
            raise FileNotFoundError(f"artifact {path}: {entry.path!r} is not in its content")
        return open(target, "rb")
