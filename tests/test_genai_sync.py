"""Issue 13's proof, end to end: one MLflow 3 store holding every workspace object kind
(traces with assessments, a prompt with versions and an alias, an evaluation dataset, a
logged model with a metric) synced by ``bridge sync`` into a sqlite URI, a PostgreSQL URI
and an ``mlflow server`` on PostgreSQL: every field identical (span times to the ns, ids
kept), ``bridge verify`` clean, a second sync writes nothing, and one new trace, one new
assessment and one new prompt version at the source write exactly that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import running_mlflow_server
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.schema_items import Item, Prompt, Trace, item_digest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def _corpus(uri: str, cwd: Path, *more: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cwd.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "tests.genai_corpus", uri, *more],
        check=True,
        cwd=cwd,
        env=env,
        capture_output=True,
    )


def _items(uri: str) -> dict[tuple[str, str], Item]:
    """Every workspace item of a store, read as the bridge reads a source (a copy reads
    under its own identity, without the bridge's bookkeeping): keyed by kind and name."""
    reader = MlflowReader(uri)
    try:
        return {
            (kind, h.name): reader.read_item(h)
            for kind in sorted(reader.item_kinds())
            for h in reader.list_items(kind)
        }
    finally:
        reader.close()


def _models(uri: str) -> dict[str, dict[str, Any]]:
    client = MlflowClient(uri)
    out: dict[str, dict[str, Any]] = {}
    for exp in client.search_experiments():
        for m in client.search_logged_models(experiment_ids=[exp.experiment_id]):
            run = client.get_run(m.source_run_id) if m.source_run_id else None
            out[m.name] = {
                "params": m.params,
                "tags": {k: v for k, v in m.tags.items() if not k.startswith("bridge.")},
                "status": str(m.status),
                "run": run.info.run_name if run else None,
                "metrics": sorted((x.key, x.value, x.step) for x in m.metrics or []),
            }
    return out


def _named_links(uri: str, item: Item) -> Item:
    """A prompt's linked experiments by name: each store names them by its own identity."""
    if not isinstance(item, Prompt):
        return item
    client = MlflowClient(uri)
    names = [client.get_experiment(p.rsplit(":", 1)[1]).name for p in item.linked_projects]
    return item.model_copy(update={"linked_projects": names})


def _same(src_uri: str, dst_uri: str) -> None:
    src, dst = _items(src_uri), _items(dst_uri)
    assert dst.keys() == src.keys()
    assert sum(k == "trace" for k, _ in src) >= 3
    for key, item in src.items():
        item, copy = _named_links(src_uri, item), _named_links(dst_uri, dst[key])
        assert item_digest(copy) == item_digest(item), key
        if isinstance(item, Trace):
            assert isinstance(copy, Trace)
            assert copy.trace_id == item.trace_id
            assert [(s.span_id, s.parent_id, s.start_ns, s.end_ns) for s in copy.spans] == [
                (s.span_id, s.parent_id, s.start_ns, s.end_ns) for s in item.spans
            ]
            assert copy.spans and all(s.start_ns for s in copy.spans)


@pytest.fixture(params=["sqlite", "postgresql", "server-on-postgresql"])
def dest_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dst.db'}"
        return
    pg = request.getfixturevalue("pg_database")
    if request.param == "postgresql":
        yield pg
        return
    with running_mlflow_server(tmp_path / "server", backend_uri=pg) as url:
        yield url


def test_every_object_kind_copied_exactly_then_incrementally(tmp_path: Path, dest_uri: str) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _corpus(src, tmp_path / "made")
    state = str(tmp_path / "state.db")
    pair = (f"mlflow:{src}", f"mlflow:{dest_uri}")

    plan = api.sync(*pair, state=state)
    assert plan.exit_code() == 0, (plan.errors, [(i.source_id, i.error) for i in plan.items])
    created = {k: c["create"] for k, c in plan.item_counts.items()}
    assert created == {"trace": 3, "prompt": 1, "dataset": 1} | (
        {"model": 0} if "model" in created else {}
    )
    _same(src, dest_uri)
    assert _models(dest_uri) == _models(src)
    assert _models(src)["qa-model"]["metrics"] == [("accuracy", 0.91, 1)]
    report = api.verify(*pair, state=state)
    assert report.exit_code() == 0, [(i.source_id, i.findings) for i in report.items]

    again = api.sync(*pair, state=state)
    assert again.exit_code() == 0
    assert again.items == []  # no line: nothing created, updated or failed
    assert all(c["unchanged"] == c["listed"] for c in again.item_counts.values())
    assert again.counts() == {"unchanged": 1}
    assert sum(r.points_written for r in again.runs) == 0

    _corpus(src, tmp_path / "more", "--more")
    third = api.sync(*pair, state=state)
    assert third.exit_code() == 0
    lines = sorted((i.kind, i.action, tuple(i.changes)) for i in third.items)
    assert lines == [
        ("prompt", "update", ("+1 version",)),
        ("trace", "create", lines[1][2]),
        ("trace", "update", ("+1 assessments",)),
    ]
    assert third.item_counts["dataset"]["unchanged"] == 1
    _same(src, dest_uri)
    assert api.verify(*pair, state=state).exit_code() == 0
