"""Registered models: plan versions and aliases against the version map, then apply.

Runs are synced first, so a registry version whose producing run is in scope finds that
run's copy of the content (``StateStore.get_object``) and links to the run; a version
whose run is out of scope is still migrated, its content placed in the registry's own
project, with a note. Destinations number versions themselves: the version map (state,
plus an identity tag on every destination version) ties a source's ``vN`` to the
destination's version M.
Versions are created in source order, so numbers line up (M = N + 1) unless something was
deleted on either side — which is reported, never hidden.

Aliases: the state keeps each alias as last synced (source version, destination version).
A source move is written; a destination-only move is left alone and reported (or, with
``--two-way``, carried back through a writer opened on the source URI); a move on both
sides is a conflict, settled by a policy or ``bridge conflicts resolve``.

The destination's registry is its :class:`~bridge.adapters.features.ModelRegistry` feature
(``ctx.features.registry``, checked once when the pass is set up); every name (registered
models, the registry a source model sits in) comes from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from bridge.adapters.base import DestRegisteredModel
from bridge.adapters.features import ModelRegistry
from bridge.engine.context import SyncContext
from bridge.engine.model import AliasLine, ModelPlan
from bridge.engine.models import place_model
from bridge.engine.registry_plan import plan_model, record_intents
from bridge.faults import kill_point
from bridge.schema import Project, RegisteredModel, Warning_

log = logging.getLogger(__name__)


def _registry_project(registry: ModelRegistry, model: RegisteredModel) -> Project:
    """Where content of versions whose run is out of scope goes: a project named after the
    registry the source model sits in, as the destination's registry names it."""
    name = registry.registry_label(model) if model.registry else ""
    scope = model.source_id.rsplit("/", 1)[0]
    return Project(source_id=scope, name=name or "registry", entity=model.entity)


def apply_model(
    ctx: SyncContext,
    registry: ModelRegistry,
    model: RegisteredModel,
    plan: ModelPlan,
    dest: DestRegisteredModel | None,
) -> None:
    """Create missing versions in source order, then move aliases; record the map."""
    state, dest_uri = ctx.state, ctx.dest_uri
    registry.ensure_registered_model(plan.dest_name, model)
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
            project_dest_id = ctx.project_id(_registry_project(registry, model), create=True)
        assert project_dest_id is not None and version.artifact.source_id is not None
        location = None
        links = ctx.features.file_links
        if version.artifact.run_path and run_dest_id is not None and links is not None:
            location = links.file_location(run_dest_id, version.artifact.run_path)
        if location is None:
            location = place_model(ctx, plan, project_dest_id, run_dest_id, version.artifact)
        label = registry.create_model_version(plan.dest_name, version, location, run_dest_id)
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
            _move_back(ctx, model, alias_line)
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
            registry.delete_alias(plan.dest_name, alias_line.alias)
            state.put_alias(dest_uri, model.source_id, alias_line.alias, None, None)
        else:
            registry.set_alias(plan.dest_name, alias_line.alias, target)
            kill_point("registry.alias.after_set")
            holder = next(
                v for v in model.versions if alias_line.alias in v.aliases
            )  # the source version it follows
            state.put_alias(dest_uri, model.source_id, alias_line.alias, holder.source_id, target)
    plan.outcome = "done"


def _move_back(ctx: SyncContext, model: RegisteredModel, line: AliasLine) -> None:
    """Carry an alias moved (or removed) in the destination back to the source, through the
    writer opened on the source URI, naming the source's version in that writer's terms."""
    back = ctx.features.source_registry
    assert back is not None  # "back" is planned only when the source writer has a registry
    if line.source_to is not None:
        name, label = back.version_of(model, line.source_to)
        back.set_alias(name, line.alias, label)
        return
    holder = next((v for v in model.versions if line.alias in v.aliases), None)
    if holder is None:
        return  # no source version holds it any more: nothing to remove
    name, _ = back.version_of(model, holder.source_id)
    back.delete_alias(name, line.alias)


def sync_models(ctx: SyncContext, models: Iterator[RegisteredModel]) -> list[ModelPlan]:
    """Plan every registered model; apply unless dry run. One bad model never stops the
    others: its error is recorded on its plan line. The destination must be a
    :class:`ModelRegistry` (the caller reports models as not copied otherwise)."""
    registry = ctx.features.registry
    if registry is None:
        raise TypeError(f"{ctx.dest_uri} has no model registry")
    out: list[ModelPlan] = []
    for model in models:
        try:
            plan, dest, intents = plan_model(ctx, registry, model)
        except Exception as exc:
            log.debug("planning %s failed", model.source_id, exc_info=True)
            out.append(_failed(model, exc))
            continue
        out.append(plan)
        if not ctx.dry_run:
            record_intents(ctx, model, intents)
            _record(ctx, plan)
        if ctx.dry_run or plan.action in ("unchanged", "conflict", "skip"):
            if plan.action == "conflict":
                plan.outcome = "skipped"
            elif plan.outcome == "pending":
                plan.outcome = "skipped"
            continue
        try:
            apply_model(ctx, registry, model, plan, dest)
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
