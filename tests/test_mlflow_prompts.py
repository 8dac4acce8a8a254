"""MLflow prompt registry copied MLflow -> MLflow (issue 13): every version in order with
its template (text and chat), response format, commit message, tags and model config; the
prompt's tags and description; aliases on the mapped versions; the version map and its
warning; incremental plans; and prompts kept out of the registered-model path.

The corpus is made with MLflow's own APIs in a subprocess (its fluent APIs keep global
state and link prompts to the active experiment on a background thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from bridge.adapters.features import ItemLinks
from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.items import ITEM_SOURCE_TAG
from bridge.adapters.mlflow.prompts import PromptReader, PromptWriter
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.schema_items import Prompt, item_digest

CORPUS = textwrap.dedent(
    """
    import sys
    import mlflow
    from mlflow import MlflowClient

    uri, mode = sys.argv[1], sys.argv[2]
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    if mode == "base":
        mlflow.genai.register_prompt(
            name="greet", template="Hi {{name}}", commit_message="first",
            tags={"team": "search", "author": "ann"},
        )
        mlflow.genai.register_prompt(
            name="greet", template="Hello {{name}}!", commit_message="friendlier",
            tags={"author": "bob"},
        )
        mlflow.genai.register_prompt(
            name="qa-chat",
            template=[
                {"role": "system", "content": "You answer as a {{style}} expert."},
                {"role": "user", "content": "{{question}}"},
            ],
            commit_message="chat v1",
            tags={"kind": "chat"},
            response_format={"type": "object", "properties": {"answer": {"type": "string"}}},
            model_config={"model_name": "gpt-4o", "temperature": 0.2, "max_tokens": 256,
                          "seed": 7},
        )
        mlflow.genai.set_prompt_alias("greet", alias="prod", version=1)
        mlflow.genai.set_prompt_alias("greet", alias="beta", version=2)
        client.set_prompt_tag("greet", "owner", "ann")
        client.create_registered_model("real-model", tags={"kind": "model"})
    elif mode == "more":
        mlflow.genai.register_prompt(name="greet", template="Hey {{name}}", commit_message="v3")
        mlflow.genai.set_prompt_alias("greet", alias="prod", version=2)
    elif mode == "gap":
        for text in ("one", "two", "three"):
            mlflow.genai.register_prompt(name="gappy", template=text, commit_message=text)
        client.delete_prompt_version("gappy", "2")
        mlflow.genai.set_prompt_alias("gappy", alias="prod", version=3)
    """
)


def corpus(uri: str, mode: str) -> None:
    subprocess.run([sys.executable, "-c", CORPUS, uri, mode], check=True, capture_output=True)


class Links(ItemLinks):
    """The engine's links, as a dict: source experiment identity -> destination id."""

    def __init__(self, projects: dict[str, str]) -> None:
        self.projects = projects

    def project(self, source_id: str) -> str | None:
        return self.projects.get(source_id)

    def run(self, source_id: str) -> str | None:
        return None

    def model(self, source_id: str) -> str | None:
        return None


def _links(reader: MlflowReader, writer: MlflowWriter) -> Links:
    """The source's default experiment (the prompts' linked one) copied as an experiment
    tagged with its source identity, as the engine's run pass leaves it."""
    source_id = object_source_id(reader.display_uri, "experiment:0")
    dest = writer.client.create_experiment("copied-default", tags={ITEM_SOURCE_TAG: source_id})
    return Links({source_id: dest})


def _sync(reader: MlflowReader, writer: MlflowWriter, links: Links) -> dict[str, list[str]]:
    """One pass as the engine runs it, without state: find, read, plan, apply; the plan's
    change and warning lines by prompt."""
    r, w = PromptReader(reader), PromptWriter(writer)
    out: dict[str, list[str]] = {}
    for header in r.list():
        item = r.read(header)
        change = w.plan(item, w.find(header, links), links)
        out[header.name] = [change.action, *change.changes, *change.warnings]
        w.apply(item, change, links)
    return out


def _source(tmp_path: Path) -> MlflowReader:
    uri = f"sqlite:///{tmp_path / 'source.db'}"
    corpus(uri, "base")
    return MlflowReader(uri)


def _check_copy(reader: MlflowReader, writer: MlflowWriter) -> None:
    r, w = PromptReader(reader), PromptWriter(writer)
    links = _links(reader, writer)
    first = _sync(reader, writer, links)
    assert first["greet"][0] == "create" and "+2 versions" in first["greet"]
    assert "alias prod: (none) -> 1" in first["greet"]
    (linked,) = links.projects.values()
    assert f"linked experiments: (none) -> {linked}" in first["greet"]
    headers = {h.name: h for h in r.list()}
    assert set(headers) == {"greet", "qa-chat"}  # the registered model is no prompt
    assert [p.name for p in headers["greet"].projects] == ["Default"]  # linked, in scope
    for name, header in headers.items():
        source = r.read(header)
        assert isinstance(source, Prompt)
        dest_id = w.find(header, links)
        assert dest_id == name
        copy = w.read_back(dest_id)
        assert isinstance(copy, Prompt)
        assert copy.model_dump(exclude={"header", "versions"}) == source.model_dump(
            exclude={"header", "versions"}
        )
        assert [v.model_dump() for v in copy.versions] == [v.model_dump() for v in source.versions]
        assert item_digest(copy) == item_digest(source)
    greet = r.read(headers["greet"])
    assert isinstance(greet, Prompt)
    assert [v.template for v in greet.versions] == ["Hi {{name}}", "Hello {{name}}!"]
    assert [v.commit_message for v in greet.versions] == ["first", "friendlier"]
    assert greet.versions[0].tags == {"team": "search", "author": "ann"}
    assert greet.aliases == {"prod": 1, "beta": 2}
    assert greet.tags["owner"] == "ann" and greet.description == "first"
    assert greet.linked_projects == [object_source_id(reader.display_uri, "experiment:0")]
    chat = r.read(headers["qa-chat"])
    assert isinstance(chat, Prompt)
    version = chat.versions[0]
    assert isinstance(version.template, list) and version.template[1]["content"] == "{{question}}"
    assert version.response_format == {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
    }
    assert version.generation_config == {
        "model_name": "gpt-4o",
        "temperature": 0.2,
        "max_tokens": 256,
        "seed": 7,
    }
    # The copy's MLflow view: same numbers, aliases, template (what users load).
    loaded = writer.client.get_prompt_version("greet", "prod")
    assert loaded.version == 1 and loaded.template == "Hi {{name}}"
    # Nothing more to do on a second pass.
    second = _sync(reader, writer, links)
    assert second == {"greet": ["unchanged"], "qa-chat": ["unchanged"]}


def test_prompts_copied_into_sqlite(tmp_path: Path) -> None:
    reader = _source(tmp_path)
    _check_copy(reader, MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}"))


def test_prompts_copied_into_postgresql(tmp_path: Path, pg_database: str) -> None:
    reader = _source(tmp_path)
    _check_copy(reader, MlflowWriter(pg_database))


def test_prompts_copied_into_mlflow_server(tmp_path: Path, mlflow_server: str) -> None:
    reader = _source(tmp_path)
    _check_copy(reader, MlflowWriter(mlflow_server))
    # The server as a source reads the same prompts (REST listing, versions and aliases).
    served = PromptReader(MlflowReader(mlflow_server))
    local = PromptReader(reader)
    by_name = {h.name: h for h in local.list()}
    for header in served.list():
        assert header.name in by_name
        copy, source = served.read(header), local.read(by_name[header.name])
        assert isinstance(copy, Prompt) and isinstance(source, Prompt)
        assert len(copy.linked_projects) == len(source.linked_projects) == 1
        copy.linked_projects = source.linked_projects  # experiment identities name each store
        assert item_digest(copy) == item_digest(source)


def test_incremental_changes_and_fingerprints(tmp_path: Path) -> None:
    reader = _source(tmp_path)
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    links = _links(reader, writer)
    _sync(reader, writer, links)
    before = {h.name: h.fingerprint for h in PromptReader(reader).list()}
    corpus(reader.target, "more")
    after = {h.name: h.fingerprint for h in PromptReader(reader).list()}
    assert before["qa-chat"] == after["qa-chat"] and before["greet"] != after["greet"]
    plan = _sync(reader, writer, links)
    assert plan["greet"] == ["update", "+1 version", "alias prod: 1 -> 2"]
    assert plan["qa-chat"] == ["unchanged"]
    copy = PromptWriter(writer).read_back("greet")
    assert isinstance(copy, Prompt)
    assert copy.aliases == {"prod": 2, "beta": 2} and len(copy.versions) == 3
    assert writer.client.get_prompt_version("greet", 3).template == "Hey {{name}}"
    # A prompt tag and a version tag changed at the source: exactly those.
    source = MlflowWriter(reader.target).client
    source.set_prompt_tag("greet", "owner", "bob")
    source.set_prompt_version_tag("greet", 1, "reviewed", "yes")
    assert _sync(reader, writer, links)["greet"] == [
        "update",
        "tag owner: ann -> bob",
        "version 1 tag reviewed: (none) -> yes",
    ]
    assert _sync(reader, writer, links)["greet"] == ["unchanged"]


def test_deleted_source_version_warns_about_numbers(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'source.db'}"
    corpus(uri, "gap")
    reader = MlflowReader(uri)
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    links = _links(reader, writer)
    lines = _sync(reader, writer, links)["gappy"]
    assert (
        "prompt gappy: version numbers differ in the copy: source 3 -> 2 (deleted at the source: 2)"
    ) in lines
    copy = PromptWriter(writer).read_back("gappy")
    assert isinstance(copy, Prompt)
    assert [v.version for v in copy.versions] == [1, 3]  # in source numbers
    assert copy.aliases == {"prod": 3}
    assert writer.client.get_prompt_version("gappy", "prod").version == 2
    assert writer.client.get_prompt_version("gappy", "prod").template == "three"
    source = PromptReader(reader)
    header = next(iter(source.list()))
    assert item_digest(copy) == item_digest(source.read(header))


def test_registered_models_of_the_store_leave_prompts_out(tmp_path: Path) -> None:
    reader = _source(tmp_path)
    names = [m.name for m in reader.registry.list_registered_models()]
    assert names == ["real-model"]


@pytest.mark.parametrize("taken_by", ["prompt", "model"])
def test_a_foreign_name_at_the_destination_is_not_overwritten(
    tmp_path: Path, taken_by: str
) -> None:
    reader = _source(tmp_path)
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    if taken_by == "prompt":
        writer.client.create_prompt("greet", tags={"mine": "yes"})
    else:
        writer.client.create_registered_model("greet")
    r, w = PromptReader(reader), PromptWriter(writer)
    links = _links(reader, writer)
    header = next(h for h in r.list() if h.name == "greet")
    assert w.find(header, links) is None
    with pytest.raises(Exception, match="greet"):
        item = r.read(header)
        w.apply(item, w.plan(item, None, links), links)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CI="true", WANDB_SILENT="true", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _synced(*args: str) -> dict[str, Any]:
    done = _cli("sync", *args, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.e2e
def test_prompts_through_the_cli(tmp_path: Path) -> None:
    src_uri = f"sqlite:///{tmp_path / 'source.db'}"
    dst_uri = f"sqlite:///{tmp_path / 'dest.db'}"
    corpus(src_uri, "base")
    pair = (f"mlflow:{src_uri}", f"mlflow:{dst_uri}", "--state", str(tmp_path / "state.db"))
    first = _synced(*pair)
    assert first["item_counts"]["prompt"]["create"] == 2
    assert [m["name"] for m in first["models"]] == ["real-model"]  # prompts are not models
    assert not [w for w in first["warnings"] if "prompt" in w["source_id"]]
    assert sorted(p.name for p in MlflowClient(dst_uri).search_prompts()) == ["greet", "qa-chat"]
    assert [m.name for m in MlflowClient(dst_uri).search_registered_models()] == ["real-model"]
    verified = _cli("verify", *pair)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "prompts: 2 listed, 2 copies, 2 ok" in verified.stdout
    again = _synced(*pair)
    assert again["item_counts"]["prompt"]["unchanged"] == 2 and again["items"] == []
    corpus(src_uri, "more")
    _synced(*pair, "--no-prompts")
    assert len(MlflowClient(dst_uri).search_prompt_versions("greet")) == 2
    moved = _synced(*pair, "--models", "real*")  # --models leaves prompts alone
    assert [(i["name"], i["changes"]) for i in moved["items"]] == [
        ("greet", ["+1 version", "alias prod: 1 -> 2"])
    ]
    assert MlflowClient(dst_uri).get_prompt_version("greet", "prod").template == "Hello {{name}}!"
    assert _cli("verify", *pair).returncode == 0


def test_a_source_model_named_like_a_destination_prompt_fails_clearly(tmp_path: Path) -> None:
    from bridge.errors import RunError
    from bridge.schema import RegisteredModel

    writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    writer.client.create_prompt("greet")
    model = RegisteredModel(source_id="mlflow:elsewhere#registered-model/greet", name="greet")
    with pytest.raises(RunError, match="the destination has a prompt of that name"):
        writer.ensure_registered_model("greet", model)


def test_a_copy_left_half_way_is_finished_not_duplicated(tmp_path: Path) -> None:
    reader = _source(tmp_path)
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    links = _links(reader, writer)
    r, w = PromptReader(reader), PromptWriter(writer)
    header = next(h for h in r.list() if h.name == "greet")
    item = r.read(header)
    assert isinstance(item, Prompt)
    # A crash after the prompt and its first version were made (identity tags on both).
    writer.client.create_prompt("greet", tags={ITEM_SOURCE_TAG: header.source_id})
    w._create_version("greet", item.versions[0])
    assert w.find(header, links) == "greet"
    change = w.plan(item, "greet", links)
    assert change.action == "update" and "+1 version" in change.changes
    w.apply(item, change, links)
    copy = w.read_back("greet")
    assert isinstance(copy, Prompt) and item_digest(copy) == item_digest(item)
    assert len(writer.client.search_prompt_versions("greet")) == 2


def test_a_version_deleted_at_the_source_after_copying_is_kept_and_said(tmp_path: Path) -> None:
    reader = _source(tmp_path)
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    links = _links(reader, writer)
    _sync(reader, writer, links)
    MlflowWriter(reader.target).client.delete_prompt_version("greet", "1")
    lines = _sync(reader, writer, links)["greet"]
    assert (
        "prompt greet: source version 1 was deleted at the source; its copy (version 1) is kept"
    ) in lines
    assert len(writer.client.search_prompt_versions("greet")) == 2
