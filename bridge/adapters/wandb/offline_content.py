"""What an offline run holds besides records: artifact content (in the SDK staging
dir the manifest names, or a moved copy of it) and the files under ``files/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.adapters.wandb.ids import artifact_source_id
from bridge.adapters.wandb.offline_folders import stat_key
from bridge.adapters.wandb.offline_records import json_value
from bridge.paths import path_problem
from bridge.schema import (
    ArtifactVersion,
    FileRef,
    ManifestEntry,
    RunHeader,
)


def artifact_of(
    a: Any, direction: str, header: RunHeader, staging_dir: str | None, warnings: list[str]
) -> ArtifactVersion:
    """One artifact record as a neutral version (content under the staging dir)."""
    entries: list[ManifestEntry] = []
    for c in a.manifest.contents:
        local = c.local_path or None
        if local and not Path(local).is_file():
            moved = staged(local, staging_dir)
            if moved is not None:
                local = str(moved)
            else:
                warnings.append(
                    f"artifact {a.name}: content of {c.path} missing at {local}"
                    + (f" and under {staging_dir}" if staging_dir else "")
                )
        extra: dict[str, Any] = {}
        if c.mimetype:
            extra["mimetype"] = c.mimetype
        if c.birth_artifact_id:
            extra["birth_artifact_id"] = c.birth_artifact_id
        if len(c.extra):
            extra["extra"] = {e.key: json_value(e.value_json) for e in c.extra}
        entries.append(
            ManifestEntry(
                path=c.path,
                digest=c.digest or None,
                size=int(c.size) if c.size or not c.ref else None,
                ref=c.ref or None,
                local_path=local,
                extra=extra,
            )
        )
    meta = json_value(a.metadata) if a.metadata else {}
    project = header.project
    digest = a.digest or None
    return ArtifactVersion(
        name=a.name,
        type=a.type,
        digest=digest,
        description=a.description or None,
        aliases=list(a.aliases),  # as recorded ("latest" included); no vN offline
        metadata=meta if isinstance(meta, dict) else {"value": meta},
        manifest=entries,
        direction="logged" if direction == "logged" else "used",
        # The same identity the API reader gives this version once it is uploaded.
        source_id=(
            artifact_source_id(project.entity or "", project.name, a.name, digest)
            if digest
            else None
        ),
        producer_source_id=header.source_id if direction == "logged" else None,
    )


def staged(local: str, staging_dir: str | None) -> Path | None:
    """Find a staging file under ``options.staging_dir`` (same layout below the root)."""
    root = staging_dir
    if not root:
        return None
    norm = local.replace("\\", "/")
    marker = "/artifacts/staging/"
    rel = norm.split(marker, 1)[1] if marker in norm else Path(norm).name
    if path_problem(rel) is not None:  # never look outside the named staging folder
        return None
    for cand in (Path(root) / rel, Path(root) / "artifacts" / "staging" / rel):
        if cand.is_file():
            return cand
    return None


def files_of(
    parts: list[dict[str, Any]], record_files: dict[str, Path], warnings: list[str]
) -> list[FileRef]:
    """Everything under each part's ``files/``; later parts win, console logs concatenate."""
    found: dict[str, list[Path]] = {}
    for part in parts:
        files_dir = Path(part["folder"]) / "files"
        if not files_dir.is_dir():
            continue
        for p in sorted(files_dir.rglob("*")):
            if p.is_file():
                rel = p.relative_to(files_dir).as_posix()
                found.setdefault(rel, []).append(p)
    for rel, folder in record_files.items():
        if rel not in found:
            warnings.append(f"file {rel} named by the log is missing in {folder}/files")
    refs: list[FileRef] = []
    for rel, paths in sorted(found.items()):
        if rel == "output.log" and len(paths) > 1:
            stats = [p.stat() for p in paths]
            refs.append(
                FileRef(
                    path=f"files/{rel}",
                    size=sum(st.st_size for st in stats),
                    stat_key=stat_key(paths, stats),
                    locator={"abs_paths": [str(p) for p in paths]},
                )
            )
        else:
            p = paths[-1]
            st = p.stat()
            refs.append(
                FileRef(
                    path=f"files/{rel}",
                    size=st.st_size,
                    stat_key=stat_key([p], [st]),
                    locator={"abs_path": str(p)},
                )
            )
    return refs
