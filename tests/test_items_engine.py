"""The engine's item pass (issue 13): workspace items (prompts, datasets, traces) created,
skipped unchanged without reading, updated on a new fingerprint, planned in a dry run,
found again after a lost state store, failing alone, reported once per kind where the
destination cannot hold them; verify compares digests; CLI flags drop kinds; every report
shows the section.

Runs go through real MLflow stores (sqlite); the items go through fake ItemSource/ItemSink
parts on the MLflow reader and writer, so the engine is tested apart from the MLflow item
modules (tests/test_mlflow_traces.py & co test those)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from items_fakes import Pair, sid
from mlflow.tracking import MlflowClient

from bridge.adapters.wandb.offline_writer import WandbOfflineWriter
from bridge.adapters.wandb.writer import WandbWriter
from bridge.engine.sync import run_sync
from bridge.engine.verify import verify
from bridge.reporting import render
from bridge.schema_items import Prompt, PromptVersion, Trace
from bridge.state import StateStore


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


# --------------------------------------------------------------------------- tests


def test_create_then_unchanged_without_reading(pair: Pair) -> None:
    plan = pair.sync()
    assert plan.exit_code() == 0, plan.errors
    assert {k: (c["listed"], c["create"]) for k, c in plan.item_counts.items()} == {
        "prompt": (1, 1),
        "dataset": (1, 1),
        "trace": (2, 2),
    }
    assert [i.kind for i in plan.items] == ["prompt", "dataset", "trace", "trace"]
    assert all(i.outcome == "done" and i.dest_id for i in plan.items)
    assert plan.items[0].changes == ["+1 versions", "tag team: None -> a"]
    # Traces link to the experiment and run the same pass copied first.
    run_copy = pair.state().get_run(
        pair.writer.display_uri, next(iter(pair.reader.list_runs())).source_id
    )
    assert run_copy is not None
    exp = MlflowClient(tracking_uri=pair.dest_uri).get_experiment_by_name("e")
    assert pair.dest.links[sid("trace", "tr-1")] == (exp.experiment_id, run_copy.dest_id)
    assert pair.dest.links[sid("trace", "tr-2")] == (exp.experiment_id, None)
    # The writer's notice about an item lands on its line.
    assert [w.code for w in plan.items[0].warnings] == ["fake-note"]

    again = pair.sync()
    assert again.exit_code() == 0
    assert pair.src.reads == []  # unchanged fingerprints: no body read
    assert again.items == []
    assert {k: c["unchanged"] for k, c in again.item_counts.items()} == {
        "prompt": 1,
        "dataset": 1,
        "trace": 2,
    }
    assert len(pair.dest.writes) == 4 and len(pair.dest.copies) == 4


def test_changed_fingerprint_updates_only_that_item(pair: Pair) -> None:
    pair.sync()
    prompt = pair.src.items[sid("prompt", "p")]
    assert isinstance(prompt, Prompt)
    prompt.versions.append(PromptVersion(version=2, template="Hello {{name}}"))
    prompt.header.fingerprint = "p2"
    plan = pair.sync()
    assert pair.src.reads == [sid("prompt", "p")]
    [line] = plan.items
    assert (line.kind, line.action, line.outcome, line.changes) == (
        "prompt",
        "update",
        "done",
        ["+1 versions"],
    )
    assert plan.item_counts["prompt"]["update"] == 1
    assert plan.item_counts["trace"]["unchanged"] == 2
    assert pair.state().get_item(pair.writer.display_uri, sid("prompt", "p")).fingerprint == "p2"  # type: ignore[union-attr]
    assert len(pair.dest.copies) == 4


def test_full_pass_reads_every_item_and_writes_nothing_unchanged(pair: Pair) -> None:
    pair.sync()
    plan = pair.sync(full=True)
    assert len(pair.src.reads) == 4 and plan.items == []
    assert len(pair.dest.writes) == 4


def test_dry_run_writes_nothing_and_lists_the_changes(pair: Pair) -> None:
    plan = pair.sync(dry_run=True)
    assert plan.exit_code() == 0
    assert len(plan.items) == 4
    assert {i.action for i in plan.items} == {"create"}
    assert {i.outcome for i in plan.items} == {"pending"}
    assert [i.changes for i in plan.items if i.kind == "trace"] == [["+2 spans"], ["+2 spans"]]
    assert pair.dest.writes == [] and pair.dest.copies == {}
    assert pair.state().item_marks(pair.writer.display_uri, "trace") == {}
    # A dry run looks the experiment up, never creates it.
    assert MlflowClient(tracking_uri=pair.dest_uri).get_experiment_by_name("e") is None
    text = render(plan, "text")
    assert "+2 spans" in text and "traces: 2 listed, 2 create" in text


def test_lost_state_finds_copies_and_duplicates_nothing(pair: Pair) -> None:
    pair.sync()
    pair.dest.finds.clear()
    plan = pair.sync(state="lost")
    assert plan.exit_code() == 0
    assert sorted(pair.dest.finds) == sorted(pair.src.items)  # each found by identity
    assert len(pair.dest.copies) == 4 and len(pair.dest.writes) == 4
    assert {k: c["unchanged"] for k, c in plan.item_counts.items()} == {
        "prompt": 1,
        "dataset": 1,
        "trace": 2,
    }
    marks = pair.state("lost").item_marks(pair.writer.display_uri, "trace")
    assert set(marks) == {sid("trace", "tr-1"), sid("trace", "tr-2")}  # recorded again
    pair.sync(state="lost")
    assert pair.src.reads == []


def test_a_failing_item_fails_alone(pair: Pair) -> None:
    pair.src.fail.add(sid("trace", "tr-1"))
    plan = pair.sync()
    assert plan.exit_code() == 1
    [failed] = [i for i in plan.items if i.outcome == "failed"]
    assert failed.source_id == sid("trace", "tr-1")
    assert failed.error == "RuntimeError: boom"
    assert plan.item_counts["trace"] == {
        "listed": 2,
        "create": 1,
        "update": 0,
        "unchanged": 0,
        "failed": 1,
        "not-copied": 0,
    }
    assert len(pair.dest.copies) == 3
    assert "FAILED" in render(plan, "text")
    pair.src.fail.clear()
    retry = pair.sync()
    assert retry.exit_code() == 0 and [i.name for i in retry.items] == ["tr-1"]


def test_a_destination_without_the_kind_says_so_once(tmp_path: Path) -> None:
    pair = Pair(tmp_path, kinds={"prompt", "dataset"})
    try:
        plan = pair.sync()
        notes = [w for w in plan.notices if w.code.endswith("-not-copied")]
        assert [w.message for w in notes] == [
            f"traces-not-copied: 2 ({pair.writer.display_uri} cannot store traces)"
        ]
        assert plan.item_counts["trace"]["not-copied"] == 2
        assert plan.item_counts["prompt"]["create"] == 1
        assert plan.exit_code() == 0
        assert sid("trace", "tr-1") not in pair.src.reads
        report = verify(pair.reader, pair.writer, pair.state())
        assert report.exit_code() == 0
        [line] = report.items
        assert line.status == "not-copied" and line.findings[0].startswith("traces-not-copied: 2")
    finally:
        pair.close()


def test_wandb_writers_name_weave() -> None:
    for cls in (WandbOfflineWriter, WandbWriter):
        gap = cls.item_gap(object.__new__(cls), "trace")  # type: ignore[arg-type]
        assert gap == "W&B Weave is not supported by this bridge yet"


def test_verify_finds_digest_mismatch_and_missing_copy(pair: Pair) -> None:
    pair.sync()
    clean = verify(pair.reader, pair.writer, pair.state())
    assert clean.exit_code() == 0 and clean.items == []
    assert clean.item_counts["trace"] == {"listed": 2, "copies": 2, "ok": 2}
    mark = pair.state().get_item(pair.writer.display_uri, sid("trace", "tr-1"))
    assert mark is not None
    copy = pair.dest.copies[mark.dest_id]
    assert isinstance(copy, Trace)
    copy.spans[1].end_ns = 7  # one span's end moved by a nanosecond
    prompt_mark = pair.state().get_item(pair.writer.display_uri, sid("prompt", "p"))
    assert prompt_mark is not None
    del pair.dest.copies[prompt_mark.dest_id]
    report = verify(pair.reader, pair.writer, pair.state())
    assert report.exit_code() == 1
    found = {i.source_id: (i.status, i.findings) for i in report.items}
    assert found == {
        sid("trace", "tr-1"): ("mismatch", ["trace tr-1: span tree differs"]),
        sid("prompt", "p"): ("unsynced", ["prompt p: missing"]),
    }
    as_json = json.loads(render(report, "json"))
    assert as_json["item_counts"]["trace"]["mismatch"] == 1
    for fmt in ("text", "markdown", "html"):
        assert "span tree differs" in render(report, fmt)


def test_options_items_drop_kinds(pair: Pair) -> None:
    pair.reader.options.items = ["prompt"]
    plan = pair.sync()
    assert set(plan.item_counts) == {"prompt"}
    assert [i.kind for i in plan.items] == ["prompt"]


def test_cli_flags_remove_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import api
    from bridge.cli import main
    from bridge.engine.model import Plan

    seen: list[list[str]] = []

    def fake_sync(source: str, dest: str, **kw: Any) -> Plan:
        seen.append(kw["reader_options"].items)
        return Plan(source=source, dest=dest, dry_run=True)

    monkeypatch.setattr(api, "sync", fake_sync)
    runner = CliRunner()
    for flags, kinds in (
        ([], ["trace", "prompt", "dataset", "model"]),  # models no run made: always
        (["--no-traces"], ["prompt", "dataset", "model"]),
        (["--no-prompts", "--no-datasets"], ["trace", "model"]),
    ):
        result = runner.invoke(main, ["sync", "mlflow:a", "mlflow:b", "--dry-run", *flags])
        assert result.exit_code == 0, result.output
        assert seen[-1] == kinds
    assert "traces" in runner.invoke(main, ["sync", "--help"]).output.split("--since")[1][:200]


def test_reports_render_the_items_section(pair: Pair) -> None:
    plan = pair.sync()
    text = render(plan, "text")
    assert "workspace items" in text and "prompts: 1 listed, 1 create" in text
    assert "+1 versions; tag team: None -> a" in text
    assert "Workspace items" in render(plan, "markdown")
    html = render(plan, "html")
    assert "Workspace items" in html and "+2 spans" in html
    data = json.loads(render(plan, "json"))
    assert data["item_counts"]["trace"]["create"] == 2
    assert [i["name"] for i in data["items"]] == ["p", "ds", "tr-1", "tr-2"]


def test_an_older_store_gains_the_items_table(tmp_path: Path) -> None:
    golden = Path(__file__).with_name("state_schema_sqlite.sql").read_text()
    old = re.sub(r"-- table bridge_items\n.*?\);\n", "", golden, flags=re.S)
    assert "bridge_items" not in old
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:
        con.executescript(old)
        assert not con.execute("SELECT 1 FROM sqlite_master WHERE name='bridge_items'").fetchall()
    store = StateStore(str(db))
    store.put_item("d", "s", "trace", "x", "fp")
    assert store.get_item("d", "s") is not None
    store.close()


def test_items_state_on_postgresql(pg_database: str) -> None:
    store = StateStore(pg_database)
    try:
        store.put_item("mlflow:d", "fake:src#trace/t", "trace", "tr-1", "f1")
        store.put_item("mlflow:d", "fake:src#trace/t", "trace", "tr-1", "f2")
        mark = store.get_item("mlflow:d", "fake:src#trace/t")
        assert mark is not None and (mark.dest_id, mark.fingerprint) == ("tr-1", "f2")
        assert set(store.item_marks("mlflow:d", "trace")) == {"fake:src#trace/t"}
    finally:
        store.close()


def test_a_writer_without_items_reports_each_kind_once(pair: Pair, tmp_path: Path) -> None:
    """W&B offline has no ItemSink: one notice per kind, naming W&B Weave; runs still copy."""
    writer = WandbOfflineWriter(str(tmp_path / "wb"))
    try:
        plan = run_sync(pair.reader, writer, pair.state("wb"))
    finally:
        writer.close()
    assert plan.exit_code() == 0, plan.errors
    assert [r.outcome for r in plan.runs] == ["done"]
    gap = "W&B Weave is not supported by this bridge yet"
    assert sorted(w.message for w in plan.notices if w.code.endswith("s-not-copied")) == [
        f"datasets-not-copied: 1 ({gap})",
        f"prompts-not-copied: 1 ({gap})",
        f"traces-not-copied: 2 ({gap})",
    ]
    assert pair.src.reads == [] and plan.items == []
