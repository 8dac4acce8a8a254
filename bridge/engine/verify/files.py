"""Run files compared: what the sync copies (run files, media named by history, stored
artifact entries), present at the destination with the same size and digest; model
artifacts as the destination's model objects."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bridge.adapters.features import LoggedModels
from bridge.engine.artifacts import artifact_folder
from bridge.engine.plan import MANIFEST_ONLY
from bridge.engine.verify.context import VerifyContext
from bridge.engine.verify.report import Mismatch, RunVerify
from bridge.schema import FileRef, Run

if TYPE_CHECKING:
    from bridge.adapters.base import Reader


def _sha256(stream: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for block in stream:
        h.update(block)
    return h.hexdigest()


def _file_digest(reader: Reader, ref: FileRef) -> str | None:
    try:
        with reader.open_file(ref) as fh:
            return _sha256(iter(lambda: fh.read(1 << 20), b""))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by size/presence
        return None


def expected_files(
    run: Run, media: dict[str, FileRef], model_objects: bool, accepted: set[str]
) -> dict[str, FileRef]:
    """Source files the sync copies: run files, media named by history, and every stored
    artifact entry — also one whose content is missing at the source now (the sync failed
    the run for it; it is a finding until it is copied), except those a person accepted
    as manifest-only (``accepted``). Model artifacts go to model objects when the
    destination has them (``model_objects``; see :func:`compare_models`)."""
    out: dict[str, FileRef] = {}
    for ref in [*run.files, *media.values()]:
        out.setdefault(ref.path, ref)
    for art in run.artifacts:
        if art.direction != "logged" or not art.manifest:
            continue
        if model_objects and art.type == "model" and art.source_id:
            continue
        folder = artifact_folder(art)
        for entry in art.manifest:
            path = f"{folder}/files/{entry.path}"
            if entry.ref is not None or path in accepted:
                continue
            out.setdefault(path, FileRef(path=path, size=entry.size))
    return out


def compare_models(ctx: VerifyContext, models: LoggedModels, rv: RunVerify, run: Run) -> None:
    """Each model artifact the run logged has its model object in the destination."""
    for art in run.artifacts:
        if art.direction != "logged" or art.type != "model" or not art.source_id:
            continue
        if not art.manifest:
            continue
        if ctx.state.get_object(ctx.dest_uri, art.source_id) is not None:
            continue
        if models.find_model(art.source_id) is not None:
            continue
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field=f"model:{art.name}:{art.version or art.digest}",
                source_value=f"{len(art.manifest)} file(s)",
                dest_value=None,
                detail="model content not in the destination (missing or not matching its "
                "manifest at the source when synced)",
            )
        )


def accepted_manifest_only(ctx: VerifyContext, rv: RunVerify) -> set[str]:
    """Files a person accepted as manifest-only (``--accept-missing-content``): listed in
    the run's notes, not findings."""
    done = ctx.state.get_files(ctx.dest_uri, rv.source_id)
    accepted = {path for path, digest in done.items() if digest.startswith(MANIFEST_ONLY)}
    if accepted:
        shown = ", ".join(sorted(accepted)[:5]) + (" ..." if len(accepted) > 5 else "")
        rv.notes.append(f"{len(accepted)} file(s) accepted as manifest-only: {shown}")
    return accepted


def compare_files(
    ctx: VerifyContext, rv: RunVerify, want: dict[str, FileRef], have: list[FileRef]
) -> None:
    dest_files = {f.path: f for f in have}
    for path, src in sorted(want.items()):
        rv.files_checked += 1
        dst = dest_files.get(path)
        field_name = f"file:{path}"
        if dst is None:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=field_name,
                    source_value=f"{src.size} bytes" if src.size is not None else "present",
                    dest_value=None,
                    detail="missing at the destination",
                )
            )
            continue
        if src.size is not None and dst.size is not None and src.size != dst.size:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=field_name,
                    source_value=f"{src.size} bytes",
                    dest_value=f"{dst.size} bytes",
                    detail="size differs",
                )
            )
            continue
        src_sha, dst_sha = src.sha256, dst.sha256
        if ctx.digests:
            if dst_sha is None:
                dst_sha = _file_digest(ctx.dest_reader, dst)
            if src_sha is None:
                src_sha = _file_digest(ctx.reader, src)
        if src_sha and dst_sha and src_sha != dst_sha:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=field_name,
                    source_value=f"sha256:{src_sha}",
                    dest_value=f"sha256:{dst_sha}",
                    detail="content differs",
                )
            )
