"""MLflow prompt registry, read side: every prompt of the store as a neutral :class:`Prompt`.

MLflow (OSS) keeps a prompt as a registered model tagged ``mlflow.prompt.is_prompt`` and
each version as a model version whose tags hold the template, its type, the response format
and the model config; aliases are the registered model's aliases. Prompts are workspace
level: every prompt of the store is listed (``--experiment`` and ``--models`` do not filter
them). The experiments MLflow links a prompt with (the ``_mlflow_experiment_ids`` tag, what
an experiment's Prompts tab shows) become ``linked_projects`` by source identity, since
their ids mean nothing in another store; those in the reader's scope are also the header's
``projects`` (linked with, as a dataset's are), so the engine can name their copies.
A link to an experiment out of scope (``--experiment``, deleted) is not copied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.item_parts import KindReader
from bridge.schema_items import Item, ItemHeader, ItemProject, Prompt, PromptVersion

IS_PROMPT_TAG = "mlflow.prompt.is_prompt"
EXPERIMENT_IDS_TAG = "_mlflow_experiment_ids"  # ",1,5,": experiments the prompt is linked with
PAGE = 100


def registry_client(client: Any) -> Any:
    """MLflow's registry client behind ``client``: the one place that returns a prompt's
    aliases (``MlflowClient.get_registered_model`` hides prompts, ``search_prompt_versions``
    leaves aliases empty), in one call per page of prompts."""
    return client._get_registry_client()


def prompt_models(client: Any, name: str | None = None) -> Iterator[Any]:
    """Registered-model records of the store's prompts (all, or the one named), paged:
    name, description, tags and aliases in one listing."""
    flt = f"tags.`{IS_PROMPT_TAG}` = 'true'"
    if name is not None:
        flt += " AND name = '{}'".format(name.replace("'", "\\'"))
    token: str | None = None
    while True:
        page = registry_client(client).search_registered_models(
            filter_string=flt, max_results=PAGE, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def prompt_versions(client: Any, name: str) -> list[Any]:
    """Every version of a prompt (MLflow's PromptVersion), in number order."""
    found: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_prompt_versions(name, max_results=PAGE, page_token=token)
        found.extend(page)
        token = getattr(page, "token", None)
        if not token:
            break
    return sorted(found, key=lambda v: int(v.version))


def user_tags(tags: Any) -> dict[str, str]:
    """Tags as a user sees them: without MLflow's prompt marker, its experiment links and
    the bridge's own ``bridge.*`` bookkeeping."""
    return {
        str(k): str(v)
        for k, v in sorted(dict(tags or {}).items())
        if k not in (IS_PROMPT_TAG, EXPERIMENT_IDS_TAG) and not str(k).startswith("bridge.")
    }


def experiment_ids(tags: Any) -> list[str]:
    """The experiment ids of MLflow's ``_mlflow_experiment_ids`` tag (",1,5," -> 1, 5)."""
    raw = str(dict(tags or {}).get(EXPERIMENT_IDS_TAG) or "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def version_record(v: Any) -> PromptVersion:
    """One MLflow prompt version as a neutral record (source number, bookkeeping left out)."""
    template = v.template
    return PromptVersion(
        version=int(v.version),
        template=template if isinstance(template, str) else list(template),
        response_format=v.response_format,
        commit_message=v.commit_message or None,
        tags=user_tags(v.tags),
        generation_config=v.model_config,
        created_at_ms=v.creation_timestamp or None,
    )


def prompt_fingerprint(rm: Any, versions: list[Any]) -> str:
    """Changes with anything a copy holds: description, tags (incl. experiment links),
    aliases, and each version's number, template, format, config, message and tags."""
    body = {
        "description": rm.description or None,
        "tags": dict(rm.tags or {}),
        "aliases": {str(a): str(n) for a, n in (rm.aliases or {}).items()},
        "versions": [version_record(v).model_dump(mode="json") for v in versions],
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class PromptReader(KindReader):
    """Every prompt of the source store (``store`` is the MlflowReader)."""

    def _source_id(self, name: str) -> str:
        return object_source_id(self.store.display_uri, f"prompt/{name}")

    def _scope(self) -> dict[str, ItemProject]:
        """Experiments in the reader's scope, by id, as the projects items are linked with."""
        found = {}
        for exp in self.store.experiments():
            project = self.store.project_of(exp)
            found[str(exp.experiment_id)] = ItemProject(
                source_id=project.source_id, name=project.name
            )
        return found

    def list(self) -> Iterator[ItemHeader]:
        client = self.store.client
        scope = self._scope()
        for rm in sorted(prompt_models(client), key=lambda m: m.name):
            versions = prompt_versions(client, rm.name)
            linked = [scope[i] for i in experiment_ids(rm.tags) if i in scope]
            yield ItemHeader(
                kind="prompt",
                source_id=self._source_id(rm.name),
                name=rm.name,
                projects=sorted(linked, key=lambda p: p.source_id),
                fingerprint=prompt_fingerprint(rm, versions),
                locator={"name": rm.name},
            )

    def read(self, header: ItemHeader) -> Item:
        name = str(header.locator.get("name") or header.name)
        client = self.store.client
        rm = next(iter(prompt_models(client, name)), None)
        if rm is None or rm.name != name:
            raise LookupError(f"prompt {name!r} is no longer in {self.store.display_uri}")
        versions = [version_record(v) for v in prompt_versions(client, name)]
        return Prompt(
            header=header,
            name=name,
            description=rm.description or None,
            tags=user_tags(rm.tags),
            versions=versions,
            aliases={str(a): int(n) for a, n in sorted((rm.aliases or {}).items())},
            linked_projects=sorted(p.source_id for p in header.projects),
        )
