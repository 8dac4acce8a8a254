"""Registered models against the destination's registry: every version has its copy and
every alias sits on the version it maps to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.adapters.features import ModelRegistry, RegistrySource
from bridge.engine.verify.report import Mismatch, RunVerify

if TYPE_CHECKING:
    from bridge.adapters.base import Writer
    from bridge.state import StateStore


def models_not_copied(reader: RegistrySource, writer: Writer) -> list[RunVerify]:
    """A destination without a model registry: every source registered model is listed
    as not copied (the sync reports each one so; it is not a finding)."""
    return [
        RunVerify(
            source_id=model.source_id,
            name=model.name,
            project="(registry)",
            status="not-copied",
            reason=(
                f"{writer.display_uri} has no model registry "
                f"({len(model.versions)} versions not copied)"
            ),
        )
        for model in reader.list_registered_models()
    ]


def verify_models(
    reader: RegistrySource, registry: ModelRegistry, state: StateStore, dest_uri: str
) -> list[RunVerify]:
    """Every source registered model: its versions exist in the destination (by the version
    map or identity tag) and each alias is on the version it maps to. A model or version
    without a copy is a finding; an alias the destination cannot hold (the sync's
    alias-not-copied) is listed in the model's notes and is not."""
    out: list[RunVerify] = []
    for model in reader.list_registered_models():
        name = registry.registered_model_name(model)
        rv = RunVerify(source_id=model.source_id, name=model.name, project="(registry)")
        dest = registry.get_registered_model(name)
        if dest is None:  # a finding, like a run without a copy
            rv.status = "unsynced"
            rv.notes.append(f"no registered model {name!r} in the destination; run `bridge sync`")
            out.append(rv)
            continue
        rv.dest_id = name
        labels = {v.version for v in dest.versions}
        by_identity = {v.source_id: v.version for v in dest.versions if v.source_id}
        mapped: dict[str, str] = {}
        for version in model.versions:
            rv.tags_checked += 1
            known = state.get_version(dest_uri, version.source_id)
            label = known[1] if known and known[1] in labels else by_identity.get(version.source_id)
            if label is None:
                rv.mismatches.append(
                    Mismatch(
                        source_id=model.source_id,
                        field=f"version:{version.artifact.version or version.index}",
                        source_value=version.source_id,
                        dest_value=None,
                        detail=f"no version of {name!r} is its copy",
                    )
                )
                continue
            mapped[version.source_id] = label
        for version in model.versions:
            for alias in version.aliases:
                why = registry.alias_problem(alias)
                if why:  # reported by the sync as alias-not-copied: listed, not a finding
                    rv.notes.append(f"alias {alias!r} not copied: {why}")
                    continue
                rv.tags_checked += 1
                want, have = mapped.get(version.source_id), dest.aliases.get(alias)
                if (
                    want is not None
                    and want != have
                    and _kept_dest(state, dest_uri, model.source_id, alias, version.source_id, have)
                ):
                    rv.notes.append(f"alias {alias!r} kept on {have} in the destination (settled)")
                    continue
                if want is not None and want != have:
                    rv.mismatches.append(
                        Mismatch(
                            source_id=model.source_id,
                            field=f"alias:{alias}",
                            source_value=want,
                            dest_value=have,
                            detail=f"source alias on {version.artifact.version or version.index}",
                        )
                    )
        if rv.mismatches:
            rv.status = "mismatch"
        out.append(rv)
    return out


def _kept_dest(
    state: StateStore,
    dest_uri: str,
    model_source_id: str,
    alias: str,
    held: str,
    have: str | None,
) -> bool:
    """True when a settled "take dest" keeps this alias where the destination has it: the
    sync's baseline is (this source version, the kept destination version) and the latest
    settlement of the alias chose the destination's value. The sync leaves it there until
    one side moves, so verify does not report it as a mismatch."""
    if have is None or state.get_aliases(dest_uri, model_source_id).get(alias) != (held, have):
        return False
    settled = state.resolutions(dest_uri, model_source_id).get(f"alias:{alias}")
    return settled is not None and settled.choice == "dest" and settled.dest_value == have
