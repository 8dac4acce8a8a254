"""Registered models, planned: which versions to create (in source order) and how each
alias compares at the source, in the destination and as last synced.

Planning reads and decides only: what it finds should be recorded (a version map found
again by its identity tag, alias baselines) travels as :class:`ModelIntents`, recorded by
the sync when it is not a dry run, policy settlements of alias conflicts included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.adapters.base import DestRegisteredModel
from bridge.adapters.features import ModelRegistry
from bridge.engine.artifacts import transfer_bytes
from bridge.engine.context import SyncContext
from bridge.engine.model import AliasLine, Conflict, ModelPlan, VersionLine
from bridge.engine.settle import honoured, settle_choice
from bridge.schema import ModelVersion, RegisteredModel, Warning_


def _label(version: ModelVersion) -> str:
    return version.artifact.version or f"v{version.index}"


@dataclass
class ModelIntents:
    """What planning one model decided to record in state, carried out by
    :func:`record_intents` (real runs only): planning itself writes nothing."""

    #: (version source id, destination model name, destination version label) found by
    #: the identity tag of a destination version (the state had lost it).
    versions: list[tuple[str, str, str]] = field(default_factory=list)
    #: (alias, source version id holding it, destination version holding it) as both
    #: sides now have it.
    aliases: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    #: Alias conflicts the pair's policy settled in this pass, with the side taken.
    resolutions: list[tuple[Conflict, str]] = field(default_factory=list)


def record_intents(ctx: SyncContext, model: RegisteredModel, intents: ModelIntents) -> None:
    """Record what planning decided (the version map found again, alias baselines)."""
    for source_id, name, label in intents.versions:
        ctx.state.put_version(ctx.dest_uri, source_id, name, label)
    for alias, held, dest in intents.aliases:
        ctx.state.put_alias(ctx.dest_uri, model.source_id, alias, held, dest)
    for conflict, choice in intents.resolutions:
        ctx.state.resolve_conflict(
            ctx.dest_uri,
            conflict.source_id,
            conflict.field,
            conflict.source_value,
            conflict.dest_value,
            choice,
            f"policy:{ctx.on_conflict}",
        )


def plan_model(
    ctx: SyncContext, registry: ModelRegistry, model: RegisteredModel
) -> tuple[ModelPlan, DestRegisteredModel | None, ModelIntents]:
    """Versions to create (in source order) and alias changes for one registered model,
    and what to record in state (see :class:`ModelIntents`)."""
    state, dest_uri = ctx.state, ctx.dest_uri
    intents = ModelIntents()
    name = registry.registered_model_name(model)
    plan = ModelPlan(source_id=model.source_id, name=model.name, dest_name=name)
    for w in registry.name_warnings(model):
        plan.warnings.append(Warning_(source_id=model.source_id, code="renamed", message=w))
    dest = registry.get_registered_model(name)
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
            intents.versions.append((version.source_id, name, known[1]))
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
    _plan_aliases(ctx, registry, model, plan, dest, mapped, intents)
    if plan.conflicts:
        plan.action = "conflict"
    elif plan.action == "unchanged" and any(
        a.action in ("set", "delete", "back", "back-delete") for a in plan.aliases
    ):
        plan.action = "update"
    if plan.action == "unchanged":
        plan.outcome = "unchanged"
    return plan, dest, intents


def _plan_aliases(
    ctx: SyncContext,
    registry: ModelRegistry,
    model: RegisteredModel,
    plan: ModelPlan,
    dest: DestRegisteredModel | None,
    mapped: dict[str, str],
    intents: ModelIntents,
) -> None:
    """Compare each alias at the source, in the destination and as last synced; what to
    record goes to ``intents``."""
    remember = intents.aliases
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
        why = registry.alias_problem(alias) if version is not None else None
        if why is not None:
            assert version is not None
            if baseline.get(alias) == (version.source_id, None):
                continue  # reported when it arrived on this version; nothing changed since
            remember.append((alias, version.source_id, None))
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
                remember.append((alias, held, now))
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
        if not source_moved and not dest_moved:
            # The baseline records the destination's value although the source's version
            # maps elsewhere: an earlier "take dest" settled it, and it holds until one
            # side moves again (as a run field's kept value does) or, if a policy settled
            # it, until the pair runs the other policy.
            earlier = settled.get(f"alias:{alias}")
            if earlier is None or earlier.choice != "dest" or honoured(ctx, earlier):
                continue
            conflict = Conflict(
                source_id=model.source_id,
                field=f"alias:{alias}",
                source_value=want,
                dest_value=now,
                synced_value=now,
                reason=f"kept in the destination by {earlier.resolved_by}",
            )
            conflict.resolution = f"{ctx.on_conflict}: the alias follows the source"
            line.note = conflict.resolution
            intents.resolutions.append((conflict, "source"))
            plan.resolved.append(conflict)
            plan.aliases.append(line)
            continue
        back_to_source = ctx.two_way and ctx.features.source_registry is not None
        if dest_moved and not source_moved and back_to_source:
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
            settled_by = settle_choice(ctx, settled, conflict, intents.resolutions)
            choice, by = settled_by if settled_by else (None, "")
            if choice is None:
                line.action = "conflict"
                plan.aliases.append(line)
                plan.conflicts.append(conflict)
                continue
            if choice == "dest":
                conflict.resolution = f"{by}: the destination's alias is kept"
                line.action, line.note = "kept", conflict.resolution
                remember.append((alias, held, now))
            else:
                conflict.resolution = f"{by}: the alias follows the source"
                line.note = conflict.resolution
            plan.resolved.append(conflict)
        plan.aliases.append(line)
