"""Fake workspace items over real MLflow runs, for tests/test_items_engine.py: the MLflow
reader and writer (runs for real) with items from an in-memory source and destination, so
the engine's item pass is tested apart from the MLflow item modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.engine.sync import run_sync
from bridge.schema_items import (
    DatasetRecord,
    EvalDataset,
    Item,
    ItemHeader,
    ItemKind,
    ItemProject,
    Prompt,
    PromptVersion,
    Span,
    Trace,
    item_digest,
)
from bridge.state import StateStore

T0 = 1_650_000_000_000


# --------------------------------------------------------------------------- fakes


class FakeSource:
    """Source items in memory, and what the engine read of them."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.reads: list[str] = []
        self.fail: set[str] = set()


class FakeReader(MlflowReader):
    """The MLflow reader (runs for real) with items from a FakeSource."""

    fake: FakeSource

    def item_kinds(self) -> set[ItemKind]:
        return {"trace", "prompt", "dataset"}

    def list_items(self, kind: ItemKind) -> Iterator[ItemHeader]:
        return iter([i.header for i in self.fake.items.values() if i.header.kind == kind])

    def read_item(self, header: ItemHeader) -> Item:
        self.fake.reads.append(header.source_id)
        if header.source_id in self.fake.fail:
            raise RuntimeError("boom")
        return self.fake.items[header.source_id].model_copy(deep=True)


class FakeDest:
    """A destination's items in memory: copies by id, each knowing its source identity."""

    def __init__(self, kinds: set[ItemKind] | None = None) -> None:
        self.kinds: set[ItemKind] = kinds or {"trace", "prompt", "dataset"}
        self.copies: dict[str, Item] = {}
        self.writes: list[tuple[str, str]] = []  # (action, source id)
        self.finds: list[str] = []
        self.links: dict[str, tuple[str | None, str | None]] = {}  # source id -> (project, run)


def _changes(item: Item, copy: Item | None) -> list[str]:
    if isinstance(item, Prompt):
        have = len(copy.versions) if isinstance(copy, Prompt) else 0
        out = [f"+{len(item.versions) - have} versions"] if len(item.versions) > have else []
        old = copy.tags if isinstance(copy, Prompt) else {}
        out += [f"tag {k}: {old.get(k)} -> {v}" for k, v in item.tags.items() if old.get(k) != v]
        return out
    if isinstance(item, Trace):
        have = len(copy.spans) if isinstance(copy, Trace) else 0
        return [f"+{len(item.spans) - have} spans"]
    have = len(copy.records) if isinstance(copy, EvalDataset) else 0
    return [f"+{len(item.records) - have} records"]


class FakeWriter(MlflowWriter):
    """The MLflow writer (runs for real) storing items in a FakeDest."""

    dest: FakeDest

    def item_kinds(self) -> set[ItemKind]:
        return set(self.dest.kinds)

    def find_item(self, header: ItemHeader, links: ItemLinks) -> str | None:
        self.dest.finds.append(header.source_id)
        for dest_id, copy in self.dest.copies.items():
            if copy.header.source_id == header.source_id:
                return dest_id
        return None

    def plan_item(self, item: Item, dest_id: str | None, links: ItemLinks) -> ItemChange:
        copy = self.dest.copies.get(dest_id) if dest_id else None
        if copy is None:
            return ItemChange(action="create", changes=_changes(item, None))
        if item_digest(copy) == item_digest(item):
            return ItemChange(action="unchanged", dest_id=dest_id)
        return ItemChange(action="update", dest_id=dest_id, changes=_changes(item, copy))

    def apply_item(self, item: Item, change: ItemChange, links: ItemLinks) -> str:
        project = links.project(item.header.projects[0].source_id) if item.header.projects else None
        run = (
            links.run(item.run_source_id)
            if isinstance(item, Trace) and item.run_source_id
            else None
        )
        self.dest.links[item.header.source_id] = (project, run)
        dest_id = change.dest_id or f"d-{len(self.dest.copies) + 1}"
        self.dest.copies[dest_id] = item.model_copy(deep=True)
        self.dest.writes.append((change.action, item.header.source_id))
        self.notices.add(item.header.source_id, "fake-note", "kept as-is")
        return dest_id

    def read_item_back(self, kind: ItemKind, dest_id: str) -> Item | None:
        copy = self.dest.copies.get(dest_id)
        return copy.model_copy(deep=True) if copy is not None else None


# --------------------------------------------------------------------------- corpus


def _runs(tmp_path: Path) -> str:
    """A source MLflow store with one experiment and one run; returns its tracking URI."""
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "src-art"))
    run = client.create_run(exp, start_time=T0, run_name="r0")
    client.log_metric(run.info.run_id, "loss", 0.5, timestamp=T0, step=0)
    client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 10)
    return uri


def _header(kind: ItemKind, name: str, fp: str, project: ItemProject | None) -> ItemHeader:
    return ItemHeader(
        kind=kind,
        source_id=f"fake:src#{kind}/{name}",
        name=name,
        projects=[project] if project else [],
        fingerprint=fp,
    )


def _corpus(reader: MlflowReader) -> FakeSource:
    [run] = list(reader.list_runs())
    project = ItemProject(source_id=run.project.source_id, name=run.project.name)
    src = FakeSource()
    prompt = Prompt(
        header=_header("prompt", "p", "p1", None),
        name="p",
        tags={"team": "a"},
        versions=[PromptVersion(version=1, template="Hi {{name}}")],
        aliases={"prod": 1},
    )
    dataset = EvalDataset(
        header=_header("dataset", "ds", "d1", project),
        name="ds",
        records=[DatasetRecord(inputs={"q": "1+1"}, expectations={"a": 2})],
    )
    spans = [
        Span(span_id="a1", name="root", start_ns=1, end_ns=9),
        Span(span_id="b2", parent_id="a1", name="llm", start_ns=2, end_ns=8),
    ]
    traces = [
        Trace(
            header=_header("trace", f"tr-{i}", f"t{i}", project),
            trace_id=f"tr-{i}",
            request_time_ms=T0,
            run_source_id=run.source_id if i == 1 else None,
            spans=spans,
        )
        for i in (1, 2)
    ]
    for item in (prompt, dataset, *traces):
        src.items[item.header.source_id] = item
    return src


class Pair:
    """A source and destination with fake items, and one state store per name."""

    def __init__(self, tmp_path: Path, kinds: set[ItemKind] | None = None) -> None:
        self.tmp = tmp_path
        self.reader = FakeReader(_runs(tmp_path))
        self.src = _corpus(self.reader)
        self.reader.fake = self.src
        self.dest_uri = f"sqlite:///{tmp_path / 'dst.db'}"
        self.writer = FakeWriter(self.dest_uri)
        self.dest = FakeDest(kinds)
        self.writer.dest = self.dest
        self.states: dict[str, StateStore] = {}

    def state(self, name: str = "state") -> StateStore:
        if name not in self.states:
            self.states[name] = StateStore(str(self.tmp / f"{name}.db"))
        return self.states[name]

    def sync(self, state: str = "state", **kw: Any) -> Any:
        self.src.reads.clear()
        return run_sync(self.reader, self.writer, self.state(state), **kw)

    def close(self) -> None:
        for s in self.states.values():
            s.close()


def sid(kind: str, name: str) -> str:
    """The source id the corpus gives an item."""
    return f"fake:src#{kind}/{name}"
