"""MLflow prompt registry, write side: a source prompt copied version by version, in order.

The copy has the source's name and carries ``bridge.source_id`` (found again without
state); each copied version carries ``bridge.source_version`` (the version map, kept like
registered models': the same numbers when nothing was deleted at the source, a warning
naming the numbers that differ otherwise) and ``bridge.source_created_ms``. Versions are
immutable in MLflow: an update only appends new versions, moves aliases and brings prompt
tags, version tags, description and experiment links in line with the source.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG, KindWriter
from bridge.adapters.mlflow.prompts_read import (
    EXPERIMENT_IDS_TAG,
    IS_PROMPT_TAG,
    experiment_ids,
    prompt_models,
    prompt_versions,
    registry_client,
    user_tags,
    version_record,
)
from bridge.errors import RunError
from bridge.schema_items import Item, ItemHeader, Prompt

SOURCE_VERSION_TAG = "bridge.source_version"
SOURCE_CREATED_TAG = "bridge.source_created_ms"


def _source_number(v: Any) -> int:
    raw = str(dict(v.tags or {}).get(SOURCE_VERSION_TAG) or "")
    return int(raw) if raw.isdigit() else int(v.version)


def _tag_lines(prefix: str, have: dict[str, str], want: dict[str, str]) -> list[str]:
    """One line per differing tag; MLflow's experiment links as one line of their own."""
    lines = []
    if have.get(EXPERIMENT_IDS_TAG) != want.get(EXPERIMENT_IDS_TAG):
        was, now = (experiment_ids(t) for t in (have, want))
        lines.append(
            f"linked experiments: {','.join(was) or '(none)'} -> {','.join(now) or '(none)'}"
        )
    for key in sorted((set(have) | set(want)) - {EXPERIMENT_IDS_TAG}):
        if have.get(key) != want.get(key):
            lines.append(
                f"{prefix}tag {key}: {have.get(key, '(none)')} -> {want.get(key, '(removed)')}"
            )
    return lines


def _renumbering(item: Prompt, new: list[int], predicted: dict[int, int]) -> list[str]:
    """The warning when copied versions cannot keep their source numbers."""
    moved = [f"source {n} -> {predicted[n]}" for n in new if predicted[n] != n]
    if not moved:
        return []
    have = {v.version for v in item.versions}
    gaps = [n for n in range(1, max(have) + 1) if n not in have] if have else []
    why = f" (deleted at the source: {', '.join(map(str, gaps))})" if gaps else ""
    return [f"prompt {item.name}: version numbers differ in the copy: {', '.join(moved)}{why}"]


class PromptWriter(KindWriter):
    """Prompts into the destination store (``store`` is the MlflowWriter)."""

    @property
    def client(self) -> Any:
        return self.store.client

    def _tagged(self, name: str) -> str | None:
        prompt = self.client.get_prompt(name)
        return None if prompt is None else str(prompt.tags.get(ITEM_SOURCE_TAG) or "")

    def find(self, header: ItemHeader, links: ItemLinks) -> str | None:
        if self._tagged(header.name) == header.source_id:
            return header.name
        for rm in prompt_models(self.client):
            if dict(rm.tags or {}).get(ITEM_SOURCE_TAG) == header.source_id:
                return str(rm.name)
        return None

    # ------------------------------------------------------------------ plan

    def _linked_ids(self, item: Prompt, links: ItemLinks, warnings: list[str]) -> list[str]:
        ids = []
        for source_id in item.linked_projects:
            dest = links.project(source_id)
            if dest is None:
                warnings.append(f"prompt {item.name}: linked experiment {source_id} has no copy")
            else:
                ids.append(dest)
        return ids

    def _wanted_tags(self, item: Prompt, links: ItemLinks, warnings: list[str]) -> dict[str, str]:
        tags = dict(item.tags)
        tags[ITEM_SOURCE_TAG] = item.header.source_id
        ids = self._linked_ids(item, links, warnings)
        if ids:
            tags[EXPERIMENT_IDS_TAG] = "," + ",".join(sorted(set(ids), key=_id_key)) + ","
        return tags

    def plan(self, item: Item, dest_id: str | None, links: ItemLinks) -> ItemChange:
        assert isinstance(item, Prompt)
        warnings: list[str] = []
        want_tags = self._wanted_tags(item, links, warnings)
        if dest_id is None:
            return self._plan_create(item, want_tags, warnings)
        rm = next((m for m in prompt_models(self.client, dest_id) if m.name == dest_id), None)
        if rm is None:
            return self._plan_create(item, want_tags, warnings)
        changes: list[str] = []
        dest_versions = prompt_versions(self.client, dest_id)
        by_source = {_source_number(v): v for v in dest_versions}
        source_numbers = {v.version for v in item.versions}
        for n, v in sorted(by_source.items()):
            if n not in source_numbers:
                warnings.append(
                    f"prompt {item.name}: source version {n} was deleted at the source; "
                    f"its copy (version {v.version}) is kept"
                )
        new = [v.version for v in item.versions if v.version not in by_source]
        nxt = max((int(v.version) for v in dest_versions), default=0) + 1
        predicted = {n: nxt + i for i, n in enumerate(new)}
        if new:
            changes.append(f"+{len(new)} version{'s' if len(new) != 1 else ''}")
            warnings.extend(_renumbering(item, new, predicted))
        dest_map = {n: int(v.version) for n, v in by_source.items()} | predicted
        back = {int(v.version): n for n, v in by_source.items()}
        have_tags = {k: str(v) for k, v in dict(rm.tags or {}).items() if k != IS_PROMPT_TAG}
        set_tags = {k: v for k, v in want_tags.items() if have_tags.get(k) != v}
        del_tags = [k for k in have_tags if k not in want_tags and not k.startswith("bridge.")]
        changes += _tag_lines(
            "",
            {k: have_tags[k] for k in [*set_tags, *del_tags] if k in have_tags},
            {k: want_tags[k] for k in set_tags},
        )
        description = item.description or None
        if (rm.description or None) != description:
            changes.append("description changed")
        version_tags: dict[str, dict[str, Any]] = {}
        for sv in item.versions:
            dv = by_source.get(sv.version)
            if dv is None:
                continue
            have = user_tags(dv.tags)
            if have != sv.tags:
                version_tags[str(dv.version)] = {
                    "set": {k: v for k, v in sv.tags.items() if have.get(k) != v},
                    "delete": [k for k in have if k not in sv.tags],
                }
                changes += _tag_lines(f"version {sv.version} ", have, sv.tags)
        have_aliases = {str(a): int(n) for a, n in (rm.aliases or {}).items()}
        set_aliases: dict[str, int] = {}
        for alias, n in sorted(item.aliases.items()):
            target = dest_map.get(n)
            if target is None:
                warnings.append(f"prompt {item.name}: alias {alias} names missing version {n}")
            elif have_aliases.get(alias) != target:
                was = have_aliases.get(alias)
                shown = "(none)" if was is None else str(back.get(was, f"{was} here"))
                changes.append(f"alias {alias}: {shown} -> {n}")
                set_aliases[alias] = target
        del_aliases = sorted(a for a in have_aliases if a not in item.aliases)
        changes += [
            f"alias {a}: {back.get(have_aliases[a], '?')} -> (removed)" for a in del_aliases
        ]
        payload = {
            "name": dest_id,
            "create": False,
            "new": new,
            "set_tags": set_tags,
            "del_tags": del_tags,
            "description": description if (rm.description or None) != description else None,
            "set_description": (rm.description or None) != description,
            "version_tags": version_tags,
            "set_aliases": {a: n for a, n in item.aliases.items() if a in set_aliases},
            "del_aliases": del_aliases,
        }
        return ItemChange(
            action="update" if changes else "unchanged",
            dest_id=dest_id,
            changes=changes,
            warnings=warnings,
            payload=payload,
        )

    def _plan_create(
        self, item: Prompt, want_tags: dict[str, str], warnings: list[str]
    ) -> ItemChange:
        if self._tagged(item.name) is not None:
            raise RunError(
                f"prompt {item.name}: the destination has a prompt of that name that is not "
                f"a copy of {item.header.source_id}; not copied"
            )
        new = [v.version for v in item.versions]
        warnings.extend(_renumbering(item, new, {n: i + 1 for i, n in enumerate(new)}))
        changes = [f"+{len(new)} version{'s' if len(new) != 1 else ''}"]
        changes += [f"alias {a}: (none) -> {n}" for a, n in sorted(item.aliases.items())]
        changes += _tag_lines(
            "", {}, {k: v for k, v in want_tags.items() if not k.startswith("bridge.")}
        )
        payload = {
            "name": item.name,
            "create": True,
            "tags": want_tags,
            "new": new,
            "set_aliases": dict(item.aliases),
            "del_aliases": [],
        }
        return ItemChange(action="create", changes=changes, warnings=warnings, payload=payload)

    # ------------------------------------------------------------------ apply

    def apply(self, item: Item, change: ItemChange, links: ItemLinks) -> str:
        assert isinstance(item, Prompt)
        p = change.payload
        name = str(p.get("name") or change.dest_id or item.name)
        if change.action == "unchanged":
            return name
        client = self.client
        if p.get("create"):
            self._create(item, name, dict(p["tags"]))
        reg = registry_client(client)
        if p.get("set_description"):
            reg.update_registered_model(name, p.get("description") or "")
        for key, value in dict(p.get("set_tags") or {}).items():
            client.set_prompt_tag(name, key, value)
        for key in p.get("del_tags") or []:
            client.delete_prompt_tag(name, key)
        for dest_version, edit in dict(p.get("version_tags") or {}).items():
            for key, value in edit["set"].items():
                client.set_prompt_version_tag(name, dest_version, key, value)
            for key in edit["delete"]:
                client.delete_prompt_version_tag(name, dest_version, key)
        dest_map = {_source_number(v): int(v.version) for v in prompt_versions(client, name)}
        wanted = set(p.get("new") or [])
        for sv in item.versions:
            if sv.version in wanted and sv.version not in dest_map:
                dest_map[sv.version] = self._create_version(name, sv)
        for alias, n in dict(p.get("set_aliases") or {}).items():
            client.set_prompt_alias(name, alias, dest_map[int(n)])
        for alias in p.get("del_aliases") or []:
            client.delete_prompt_alias(name, alias)
        return name

    def _create(self, item: Prompt, name: str, tags: dict[str, str]) -> None:
        """The prompt with its identity tag from the start; one left by a crash is ours."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_prompt(name, description=item.description, tags=tags)
        except MlflowException as exc:
            if self._tagged(name) != item.header.source_id:
                raise RunError(
                    f"prompt {name}: cannot be created at the destination ({exc.message})"
                ) from exc

    def _create_version(self, name: str, sv: Any) -> int:
        tags = dict(sv.tags)
        tags[SOURCE_VERSION_TAG] = str(sv.version)
        if sv.created_at_ms is not None:
            tags[SOURCE_CREATED_TAG] = str(sv.created_at_ms)
        made = self.client.create_prompt_version(
            name,
            template=sv.template,
            description=sv.commit_message,
            tags=tags,
            response_format=sv.response_format,
            model_config=sv.generation_config,
        )
        return int(made.version)

    # ------------------------------------------------------------------ read back

    def read_back(self, dest_id: str) -> Item | None:
        client = self.client
        rm = next((m for m in prompt_models(client, dest_id) if m.name == dest_id), None)
        if rm is None:
            return None
        tags = dict(rm.tags or {})
        display = self.store.display_uri
        source_id = tags.get(ITEM_SOURCE_TAG) or object_source_id(display, f"prompt/{dest_id}")
        versions = []
        back: dict[int, int] = {}
        for v in prompt_versions(client, dest_id):
            record = version_record(v)
            number = _source_number(v)
            back[int(v.version)] = number
            created = str(dict(v.tags or {}).get(SOURCE_CREATED_TAG) or "")
            record.version = number
            record.created_at_ms = int(created) if created.isdigit() else record.created_at_ms
            versions.append(record)
        header = ItemHeader(kind="prompt", source_id=source_id, name=dest_id, fingerprint="")
        return Prompt(
            header=header,
            name=dest_id,
            description=rm.description or None,
            tags=user_tags(tags),
            versions=versions,
            aliases={
                str(a): back.get(int(n), int(n)) for a, n in sorted((rm.aliases or {}).items())
            },
            linked_projects=sorted(self._experiment_source_id(i) for i in experiment_ids(tags)),
        )

    def _experiment_source_id(self, exp_id: str) -> str:
        """The source identity of a destination experiment (its ``bridge.source_id`` tag),
        else its own identity in this store."""
        try:
            exp = self.client.get_experiment(exp_id)
            tag = dict(exp.tags or {}).get(ITEM_SOURCE_TAG)
        except Exception:  # a linked experiment deleted for good: named by its own id
            tag = None
        return str(tag or object_source_id(self.store.display_uri, f"experiment:{exp_id}"))


def _id_key(exp_id: str) -> tuple[int, str]:
    return (int(exp_id), "") if exp_id.isdigit() else (0, exp_id)
