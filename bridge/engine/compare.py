"""What a sync would write, counted while planning (dry runs and ``--full`` passes).

Read-only: history is streamed through the same gate the applier uses, files are compared
by digest (hashes computed here are handed back to be recorded, not written).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import IO

from bridge.engine.artifacts import hash_content, transfer_bytes
from bridge.engine.context import Planned, SyncContext
from bridge.engine.marks import MANIFEST_ONLY
from bridge.engine.streams import merge_streams, open_gate
from bridge.schema import FileRef, MetricChunk, Run, Warning_


def file_digest(
    ctx: SyncContext,
    ref: FileRef,
    prior: str | None,
    opener: Callable[[], IO[bytes]],
    hashed: dict[str, str] | None = None,
) -> str | None:
    """The content digest to compare with ``prior`` (what state recorded when the file was
    last copied); None: unknown, copy it and hash it on the way.

    A digest the source states (a SHA-256, or an MD5 with the size) is used as is.
    Otherwise the content is hashed — once per version of the file: the MD5 is cached
    under the reader's cheap identity (``stat_key``: path, size, mtime), so a file
    rewritten with the same size is still found and an unchanged one is not read again.
    A hash made here is put in ``hashed`` (stat key -> MD5) for the caller to record.
    Without a cheap identity (remote stores) the size stands in between ``--full`` passes,
    and in every dry run: a diff never downloads content (:func:`sized_only` says so)."""
    if ref.sha256:
        return f"sha256:{ref.sha256}"
    if ref.md5:
        return f"md5:{ref.md5}:{ref.size}"
    if ref.stat_key:
        cached = ctx.state.get_digest(ref.stat_key)
        if cached is not None:
            return f"md5:{cached}:{ref.size}"
    if prior is None:
        return None
    if ref.stat_key is None and not (ctx.full and not ctx.dry_run):
        same_size = prior.endswith(f":{ref.size}") or prior == f"size:{ref.size}"
        return prior if same_size else None
    md5, size = hash_content(opener)
    if ref.stat_key and not ctx.dry_run and hashed is not None:
        hashed[ref.stat_key] = md5
    return f"md5:{md5}:{size}"


def count_changes(ctx: SyncContext, planned: Planned) -> None:
    """Fill the plan line's counts of new points, files and artifact content."""
    run, plan = planned.run, planned.plan
    assert run is not None
    plan.points_new = count_new_points(ctx, run, planned)
    plan.files_new = sum(1 for f in run.files if _file_changed(ctx, f, planned))
    sized_only(ctx, planned)
    _new_artifacts(ctx, planned)


def sized_only(ctx: SyncContext, planned: Planned) -> None:
    """A ``--full`` dry run compares files without a local copy (a remote artifact store)
    by size, not content, since it downloads nothing: say so on the run's line."""
    run, plan = planned.run, planned.plan
    if not (ctx.full and ctx.dry_run) or run is None:
        return
    sized = [
        f
        for f in run.files
        if f.stat_key is None and not (f.sha256 or f.md5) and f.path in planned.files_done
    ]
    if sized:
        plan.warnings.append(
            Warning_(
                source_id=plan.source_id,
                code="compared-by-size",
                message=(
                    f"{len(sized)} file(s) without a local copy compared by size only: a "
                    "dry run downloads no content (a --full sync compares their content)"
                ),
            )
        )


def _file_changed(ctx: SyncContext, ref: FileRef, planned: Planned) -> bool:
    prior = planned.files_done.get(ref.path)
    opener = partial(ctx.reader.open_file, ref)
    digest = file_digest(ctx, ref, prior, opener, planned.digests)
    return digest is None or prior not in (digest, MANIFEST_ONLY + digest)


def _new_artifacts(ctx: SyncContext, planned: Planned) -> None:
    """Logged artifact versions whose content the destination does not hold yet."""
    run, plan = planned.run, planned.plan
    assert run is not None
    plan.bytes_new = 0
    for art in run.artifacts:
        if art.direction != "logged" or not art.manifest:
            continue
        if art.source_id and ctx.state.get_object(ctx.dest_uri, art.source_id) is not None:
            continue
        size = transfer_bytes(art, ctx.download_references)
        plan.bytes_new += size
        label = art.version or (art.digest or "")[:12]
        refs = sum(1 for e in art.manifest if e.ref)
        kept = f", {refs} references kept" if refs and not ctx.download_references else ""
        plan.artifacts_new.append(f"{art.name}:{label} ({art.type}, {size} bytes{kept})")


def count_new_points(ctx: SyncContext, run: Run, planned: Planned) -> int:
    """The points a sync would write: the history streamed once through the same gate the
    applier uses (points past each watermark whose prefix checks out), plus, for keys
    where points arrived inside the prefix, the source points the destination lacks (read
    back) — or, where it cannot be read back, all points past the watermark."""
    read_back = ctx.features.read_back
    gate = open_gate(ctx.state, ctx.dest_uri, planned.plan.source_id, planned.watermarks, read_back)
    new = 0
    for item in ctx.reader.iter_history(run):
        if isinstance(item, MetricChunk):
            part = gate.admit(item)
            new += len(part) if part is not None else 0
    keys = gate.to_merge()
    dest_id = planned.plan.dest_id
    if not keys or dest_id is None:
        return new
    if read_back is None:
        return new + sum(max(0, gate.seen(k) - planned.watermarks.get(k, 0)) for k in keys)
    missing: list[int] = []
    merge_streams(ctx.reader, run, read_back, dest_id, keys, lambda c: missing.append(len(c)))
    return new + sum(missing)
