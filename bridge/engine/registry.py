"""Registered models: plan versions and aliases against the version map, then apply.

Runs are synced first, so a registry version whose producing run is in scope finds that
run's copy of the content (``StateStore.get_object``) and links to the run; a version
whose run is out of scope is still migrated, its content placed in the registry's own
project, with a note. Destinations number versions themselves: the version map (state,
plus an identity tag on every destination version) ties W&B ``vN`` to MLflow version M.
Versions are created in source order, so numbers line up (M = N + 1) unless something was
deleted on either side — which is reported, never hidden.

Aliases: the state keeps each alias as last synced (source version, destination version).
A source move is written; a destination-only move is left alone and reported; a move on
both sides is a conflict, settled by a policy or ``bridge conflicts resolve``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from bridge.adapters.base import DestRegisteredModel
from bridge.engine.apply import place_model
from bridge.engine.artifacts import transfer_bytes
from bridge.engine.model import AliasLine, Conflict, ModelPlan, VersionLine
from bridge.engine.plan import SyncContext, settle_choice
from bridge.faults import kill_point
from bridge.schema import ModelVersion, Project, RegisteredModel, Warning_

log = logging.getLogger(__name__)


def _label(version: ModelVersion) -> str:
    return version.artifact.version or f"v{version.index}"


def _registry_project(model: RegisteredModel) -> Project:
    """Where content of versions whose run is out of scope goes (W&B: the registry's own
    project, e.g. ``wandb-registry-model``)."""
    name = model.registry and (
        model.registry if model.registry == "model-registry" else f"wandb-registry-{model.registry}"
    )
    scope = model.source_id.rsplit("/", 1)[0]
    return Project(source_id=scope, name=name or "registry", entity=model.entity)


def plan_model(
    ctx: SyncContext, model: RegisteredModel
) -> tuple[ModelPlan, DestRegisteredModel | None]:
    """Versions to create (in source order) and alias changes for one registered model."""
    writer, state, dest_uri = ctx.writer, ctx.state, ctx.dest_uri
    name = writer.registered_model_name(model)
    plan = ModelPlan(source_id=model.source_id, name=model.name, dest_name=name)
    for w in getattr(writer, "name_warnings", {}).get(model.source_id, []):
        plan.warnings.append(Warning_(source_id=model.source_id, code="renamed", message=w))
    dest = writer.get_registered_model(name)
    by_identity = {v.source_id: v.version for v in (dest.versions if dest else []) if v.source_id}
    dest_labels = {v.version for v in dest.versions} if dest else set()
    mapped: dict[str, str] = {}
    for version in model.versions:
        known = state.get_version(dest_uri, version.source_id)
        gone = known is not None and (known[0] != name or known[1] not in dest_labels)
        if gone:
            known = None
        if known is None and version.source_id in by_identity:
            known = (name, by_identity[version.source_id])
            if not ctx.dry_run:
                state.put_version(dest_uri, version.source_id, name, known[1])
        if known is not None:
            mapped[version.source_id] = known[1]
            continue
        line = VersionLine(source_id=version.source_id, source_version=_label(version))
        if gone:
            plan.warnings.append(
                Warning_(
                    source_id=version.source_id,
                    code="version-deleted-in-dest",
                    message=(
                        f"{model.name} {_label(version)} was copied before but its destination "
                        "version is gone; it is created again (under a new number)"
                    ),
                )
            )
        run_mapped = bool(version.run_source_id) and (
            state.get_run(dest_uri, version.run_source_id or "") is not None
        )
        copied = (version.artifact.run_path is not None and run_mapped) or (
            version.artifact.source_id is not None
            and state.get_object(dest_uri, version.artifact.source_id) is not None
        )
        if not copied:
            line.bytes_new = transfer_bytes(version.artifact, ctx.download_references)
        if version.run_source_id and not run_mapped and version.run_source_id not in ctx.listed:
            line.note = (
                f"its run {version.run_source_id} is not in this sync's scope: "
                "migrated without a run link"
            )
        elif version.run_source_id is None:
            line.note = "no producing run at the source: migrated without a run link"
        plan.versions.append(line)
    plan.action = "create" if dest is None else ("update" if plan.versions else "unchanged")
    _plan_aliases(ctx, model, plan, dest, mapped)
    if plan.conflicts:
        plan.action = "conflict"
    elif plan.action == "unchanged" and any(
        a.action in ("set", "delete", "back", "back-delete") for a in plan.aliases
    ):
        plan.action = "update"
    if plan.action == "unchanged":
        plan.outcome = "unchanged"
    return plan, dest


def _plan_aliases(
    ctx: SyncContext,
    model: RegisteredModel,
    plan: ModelPlan,
    dest: DestRegisteredModel | None,
    mapped: dict[str, str],
) -> None:
    """Compare each alias at the source, in the destination and as last synced."""
    problem = getattr(ctx.writer, "alias_problem", None)
    have = dest.aliases if dest else {}
    baseline = ctx.state.get_aliases(ctx.dest_uri, model.source_id)
    settled = ctx.state.resolutions(ctx.dest_uri, model.source_id)
    source_aliases: dict[str, ModelVersion] = {}
    for mv in model.versions:
        for alias in mv.aliases:
            source_aliases[alias] = mv
    for alias in sorted(set(source_aliases) | set(baseline)):
        version = source_aliases.get(alias)
        held = version.source_id if version else None
        why = problem(alias) if (problem is not None and version is not None) else None
        if why is not None:
            assert version is not None
            if baseline.get(alias) == (version.source_id, None):
                continue  # reported when it arrived on this version; nothing changed since
            _remember(ctx, model, alias, version.source_id, None)
            plan.aliases.append(
                AliasLine(
                    alias=alias,
                    source_version=_label(version) if version else None,
                    dest_from=None,
                    dest_to=None,
                    action="illegal",
                    note=why,
                )
            )
            plan.warnings.append(
                Warning_(
                    source_id=model.source_id,
                    code="alias-not-copied",
                    message=f"alias {alias!r} of {model.name}: {why}",
                )
            )
            continue
        # Where the alias should be, in destination terms ("+vN" = a version created now).
        want = None
        if version is not None:
            want = mapped.get(version.source_id) or f"+{_label(version)}"
        now = have.get(alias)
        synced = baseline.get(alias)
        if now == want:
            if synced != (held, now):
                _remember(ctx, model, alias, held, now)
            continue
        line = AliasLine(
            alias=alias,
            source_version=_label(version) if version else None,
            dest_from=now,
            dest_to=want,
            action="set" if want is not None else "delete",
        )
        source_moved = synced is None or synced[0] != held
        dest_moved = synced is not None and now != synced[1]
        if synced is None and now is not None:
            dest_moved = True  # set in the destination by someone else
        if (
            dest_moved
            and not source_moved
            and ctx.two_way
            and hasattr(ctx.reader, "set_model_alias")
        ):
            back = {label: sid for sid, label in mapped.items()}
            if now is None or now in back:
                line.action = "back" if now is not None else "back-delete"
                line.source_to = back.get(now or "")
                line.note = "moved in the destination since the last sync: carried to the source"
                plan.aliases.append(line)
                continue
        if dest_moved and not source_moved:
            line.action, line.note = "kept", "moved in the destination since the last sync"
            plan.aliases.append(line)
            plan.warnings.append(
                Warning_(
                    source_id=model.source_id,
                    code="alias-moved-in-dest",
                    message=(
                        f"alias {alias!r} of {plan.dest_name} was moved in the destination "
                        f"(to {now}) since the last sync; left as is"
                    ),
                )
            )
            continue
        if dest_moved and source_moved:
            conflict = Conflict(
                source_id=model.source_id,
                field=f"alias:{alias}",
                source_value=want,
                dest_value=now,
                synced_value=synced[1] if synced else None,
                reason="alias moved on both sides since the last sync",
            )
            settled_by = settle_choice(ctx, settled, conflict)
            choice, by = settled_by if settled_by else (None, "")
            if choice is None:
                line.action = "conflict"
                plan.aliases.append(line)
                plan.conflicts.append(conflict)
                continue
            if choice == "dest":
                conflict.resolution = f"{by}: the destination's alias is kept"
                line.action, line.note = "kept", conflict.resolution
                _remember(ctx, model, alias, held, now)
            else:
                conflict.resolution = f"{by}: the alias follows the source"
                line.note = conflict.resolution
            plan.resolved.append(conflict)
        plan.aliases.append(line)


def _remember(
    ctx: SyncContext, model: RegisteredModel, alias: str, held: str | None, dest: str | None
) -> None:
    """Record an alias as both sides now have it (not in dry runs)."""
    if not ctx.dry_run:
        ctx.state.put_alias(ctx.dest_uri, model.source_id, alias, held, dest)


def apply_model(
    ctx: SyncContext, model: RegisteredModel, plan: ModelPlan, dest: DestRegisteredModel | None
) -> None:
    """Create missing versions in source order, then move aliases; record the map."""
    writer, state, dest_uri = ctx.writer, ctx.state, ctx.dest_uri
    writer.ensure_registered_model(plan.dest_name, model)
    kill_point("registry.model.after_ensure")
    versions = {v.source_id: v for v in model.versions}
    created: dict[str, str] = {}
    for line in plan.versions:
        version = versions[line.source_id]
        run_dest_id = None
        project_dest_id = None
        if version.run_source_id:
            run = state.get_run(dest_uri, version.run_source_id)
            if run is not None:
                run_dest_id, project_dest_id = run.dest_id, run.project_dest_id
        if project_dest_id is None:
            project_dest_id = ctx.project_id(_registry_project(model), create=True)
        assert project_dest_id is not None and version.artifact.source_id is not None
        location = None
        if version.artifact.run_path and run_dest_id is not None:
            location = writer.file_location(run_dest_id, version.artifact.run_path)
        if location is None:
            location = place_model(ctx, plan, project_dest_id, run_dest_id, version.artifact)
        label = writer.create_model_version(plan.dest_name, version, location, run_dest_id)
        kill_point("registry.version.after_create")
        state.put_version(dest_uri, version.source_id, plan.dest_name, label)
        kill_point("registry.version.after_state")
        line.dest_version = label
        created[f"+{line.source_version}"] = label
        expected = str(version.index - model.first_index + 1)
        if label.isdigit() and label != expected:
            plan.warnings.append(
                Warning_(
                    source_id=version.source_id,
                    code="version-number",
                    message=(
                        f"{model.name} {line.source_version} became {plan.dest_name} version "
                        f"{label}, not {expected}: versions were deleted on one side"
                    ),
                )
            )
    for alias_line in plan.aliases:
        if alias_line.action in ("back", "back-delete"):
            if alias_line.source_to is not None:
                ctx.reader.set_model_alias(model, alias_line.alias, alias_line.source_to)  # type: ignore[attr-defined]
            else:
                ctx.reader.delete_model_alias(model, alias_line.alias)  # type: ignore[attr-defined]
            state.put_alias(
                dest_uri,
                model.source_id,
                alias_line.alias,
                alias_line.source_to,
                alias_line.dest_from,
            )
            continue
        if alias_line.action not in ("set", "delete"):
            continue
        target = alias_line.dest_to
        if target is not None and target.startswith("+"):
            target = created[target]
            alias_line.dest_to = target
        if target is None:
            writer.delete_alias(plan.dest_name, alias_line.alias)
            state.put_alias(dest_uri, model.source_id, alias_line.alias, None, None)
        else:
            writer.set_alias(plan.dest_name, alias_line.alias, target)
            kill_point("registry.alias.after_set")
            holder = next(
                v for v in model.versions if alias_line.alias in v.aliases
            )  # the source version it follows
            state.put_alias(dest_uri, model.source_id, alias_line.alias, holder.source_id, target)
    plan.outcome = "done"


def sync_models(ctx: SyncContext, models: Iterator[RegisteredModel]) -> list[ModelPlan]:
    """Plan every registered model; apply unless dry run. One bad model never stops the
    others: its error is recorded on its plan line."""
    out: list[ModelPlan] = []
    for model in models:
        try:
            plan, dest = plan_model(ctx, model)
        except Exception as exc:
            log.debug("planning %s failed", model.source_id, exc_info=True)
            out.append(_failed(model, exc))
            continue
        out.append(plan)
        if not ctx.dry_run:
            _record(ctx, plan)
        if ctx.dry_run or plan.action in ("unchanged", "conflict", "skip"):
            if plan.action == "conflict":
                plan.outcome = "skipped"
            elif plan.outcome == "pending":
                plan.outcome = "skipped"
            continue
        try:
            apply_model(ctx, model, plan, dest)
        except Exception as exc:
            log.debug("applying %s failed", model.source_id, exc_info=True)
            plan.outcome, plan.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    return out


def _record(ctx: SyncContext, plan: ModelPlan) -> None:
    from bridge.state import conflict_key

    for c in plan.conflicts:
        ctx.state.record_conflict(
            ctx.dest_uri, c.source_id, c.field, c.source_value, c.dest_value, c.synced_value
        )
    current = {conflict_key(c.field, c.source_value, c.dest_value) for c in plan.conflicts}
    ctx.state.close_stale_conflicts(ctx.dest_uri, plan.source_id, current)


def _failed(model: RegisteredModel, exc: BaseException) -> ModelPlan:
    return ModelPlan(
        source_id=model.source_id,
        name=model.name,
        dest_name="?",
        action="skip",
        outcome="failed",
        error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[
            :500
        ],
    )
