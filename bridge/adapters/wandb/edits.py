"""``--two-way`` on W&B runs: the hand-edited fields (notes and tags) as a reader lists
them and as a writer stores and changes them."""

from __future__ import annotations

import json
from typing import Any

from bridge.adapters.wandb.layout import NOTES_TAG, TAG_PREFIX
from bridge.schema import Editable

#: Run header locator key: notes and tags as listed (no extra call per run and cycle).
EDITABLE = "editable"


def listed(notes: Any, tags: Any) -> dict[str, Any]:
    """The locator entry for a run's notes and tags as the server answered them."""
    return {"notes": notes or None, "tags": list(tags or [])}


def editable_of(seen: dict[str, Any]) -> Editable:
    return Editable(
        holds={"notes", "tags"},
        notes=seen.get("notes") or None,
        tags=[str(t) for t in seen.get("tags") or []],
    )


def editable_from_tags(tags: dict[str, str]) -> Editable:
    """A written run's notes and tags, from its rendered tags (``wandb.notes``,
    ``wandb.tag.NAME``)."""
    return Editable(
        holds={"notes", "tags"},
        notes=tags.get(NOTES_TAG) or None,
        tags=[k[len(TAG_PREFIX) :] for k in tags if k.startswith(TAG_PREFIX)],
    )


def is_editable_tag(key: str) -> bool:
    return key == NOTES_TAG or key.startswith(TAG_PREFIX)


def apply_edits(api_run: Any, changes: dict[str, str | None]) -> bool:
    """Set "notes" and "tags" (a JSON list) on a public-API run object; False if there is
    nothing to send. Tags kept from before keep their order; new ones follow, sorted."""
    if not changes.keys() & {"notes", "tags"}:
        return False
    if "notes" in changes:
        api_run.notes = changes["notes"] or ""
    if "tags" in changes:
        wanted = {str(t) for t in json.loads(changes["tags"] or "[]")}
        have = [str(t) for t in api_run._attrs.get("tags") or []]
        api_run.tags = [t for t in have if t in wanted] + sorted(wanted - set(have))
    return True
