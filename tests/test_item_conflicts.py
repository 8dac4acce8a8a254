"""Item copies edited in the destination since the bridge wrote them are conflicts, never
overwritten (issue 13 follow-up): the digest of the copy as written is recorded beside its
fingerprint; a source change over an edited copy is left untouched and reported (exit 3),
recorded for ``bridge conflicts``, settled by a resolution or ``--on-conflict``; ``fail``
writes nothing. The engine is tested with the fake items of tests/items_fakes.py, then one
real MLflow prompt case (sqlite source and destination)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from items_fakes import T0, Pair, sid
from mlflow import MlflowClient

from bridge import api
from bridge.cli import main
from bridge.engine.verify import verify
from bridge.reporting import render
from bridge.reporting.items import counts_text
from bridge.schema_items import Prompt, PromptVersion, Trace, item_digest


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    assert p.sync().exit_code() == 0
    yield p
    p.close()


def _edit_copy_and_source(pair: Pair) -> Prompt:
    """The prompt's copy gets tag team=b in the destination; the source gets a version 2.
    Returns the copy (in the fake destination)."""
    mark = pair.state().get_item(pair.writer.display_uri, sid("prompt", "p"))
    assert mark is not None and mark.digest is not None
    copy = pair.dest.copies[mark.dest_id]
    assert isinstance(copy, Prompt) and item_digest(copy) == mark.digest
    copy.tags["team"] = "b"
    prompt = pair.src.items[sid("prompt", "p")]
    assert isinstance(prompt, Prompt)
    prompt.versions.append(PromptVersion(version=2, template="Hello {{name}}"))
    prompt.header.fingerprint = "p2"
    return copy


def test_an_edited_copy_is_a_conflict_left_untouched(pair: Pair) -> None:
    copy = _edit_copy_and_source(pair)
    writes = len(pair.dest.writes)
    plan = pair.sync()
    assert plan.exit_code() == 3
    [line] = plan.items
    assert (line.action, line.outcome, line.changes) == (
        "conflict",
        "skipped",
        ["+1 versions", "tag team: b -> a"],
    )
    [c] = plan.conflicts
    assert c.field == "item" and c.source_id == sid("prompt", "p")
    assert "edited in the destination" in c.reason and "tags" in c.reason
    assert "+1 versions" in c.reason
    assert (copy.tags["team"], len(copy.versions)) == ("b", 1)
    assert len(pair.dest.writes) == writes
    assert plan.item_counts["prompt"]["conflict"] == 1
    mark = pair.state().get_item(pair.writer.display_uri, sid("prompt", "p"))
    assert mark is not None and mark.fingerprint == "p1"  # planned again next pass
    [row] = pair.state().open_conflicts()
    assert (row["field"], row["source_id"]) == ("item", sid("prompt", "p"))
    for fmt in ("text", "markdown", "html"):
        assert "edited in the destination" in render(plan, fmt)
    again = pair.sync()  # reported again, recorded once
    assert again.exit_code() == 3 and len(pair.state().open_conflicts()) == 1


def test_resolve_take_source_writes_the_next_pass(pair: Pair) -> None:
    copy = _edit_copy_and_source(pair)
    pair.sync()
    [row] = pair.state().open_conflicts()
    done = api.resolve_conflict(row["id"], "source", pair.state().url, by="tester")
    assert "writes the source's item" in done["effect"]
    plan = pair.sync()
    assert plan.exit_code() == 0
    [line] = plan.items
    assert (line.action, line.outcome) == ("update", "done")
    assert line.resolved and "resolution #" in (line.resolved[0].resolution or "")
    copy = pair.dest.copies[line.dest_id or ""]  # type: ignore[assignment]
    assert (copy.tags["team"], len(copy.versions)) == ("a", 2)
    assert pair.state().open_conflicts() == []


def test_source_wins_writes_and_records_the_settlement(pair: Pair) -> None:
    _edit_copy_and_source(pair)
    plan = pair.sync(on_conflict="source-wins")
    assert plan.exit_code() == 0 and plan.conflicts == []
    [line] = plan.items
    assert (line.action, line.outcome) == ("update", "done")
    [c] = plan.resolved
    assert c.resolution and c.resolution.startswith("source-wins")
    copy = pair.dest.copies[line.dest_id or ""]
    assert isinstance(copy, Prompt) and copy.tags["team"] == "a"
    assert pair.state().open_conflicts() == []
    [res] = pair.state().resolutions(pair.writer.display_uri, sid("prompt", "p")).values()
    assert (res.field, res.choice, res.resolved_by) == ("item", "source", "policy:source-wins")


def test_dest_wins_keeps_the_copy_until_the_source_changes_again(pair: Pair) -> None:
    copy = _edit_copy_and_source(pair)
    plan = pair.sync(on_conflict="dest-wins")
    assert plan.exit_code() == 0
    [line] = plan.items
    assert (line.action, line.outcome) == ("skip", "skipped")
    assert (copy.tags["team"], len(copy.versions)) == ("b", 1)
    mark = pair.state().get_item(pair.writer.display_uri, sid("prompt", "p"))
    assert mark is not None and (mark.fingerprint, mark.digest) == ("p2", item_digest(copy))
    quiet = pair.sync()
    assert quiet.items == [] and pair.src.reads == []
    prompt = pair.src.items[sid("prompt", "p")]
    assert isinstance(prompt, Prompt)
    prompt.versions.append(PromptVersion(version=3, template="Hey {{name}}"))
    prompt.header.fingerprint = "p3"
    moved = pair.sync()  # the kept copy is the baseline: the new source change applies
    assert moved.exit_code() == 0
    [line] = moved.items
    assert (line.action, line.outcome) == ("update", "done")
    assert len(pair.dest.copies[line.dest_id or ""].versions) == 3  # type: ignore[union-attr]


def test_fail_writes_nothing_when_an_item_copy_was_edited(pair: Pair) -> None:
    copy = _edit_copy_and_source(pair)
    trace = pair.src.items[sid("trace", "tr-2")]
    assert isinstance(trace, Trace)
    trace.tags["new"] = "tag"
    trace.header.fingerprint = "t2b"
    client = MlflowClient(tracking_uri=f"sqlite:///{pair.tmp / 'src.db'}")
    exp = client.get_experiment_by_name("e")
    new_run = client.create_run(exp.experiment_id, start_time=T0 + 5, run_name="r1")
    client.set_terminated(new_run.info.run_id, "FINISHED", end_time=T0 + 9)
    writes = len(pair.dest.writes)
    plan = pair.sync(on_conflict="fail")
    assert plan.exit_code() == 3
    assert [(i.name, i.action) for i in plan.items] == [("p", "conflict")]
    assert len(pair.dest.writes) == writes and (copy.tags["team"], len(copy.versions)) == ("b", 1)
    [held] = [w for w in plan.notices if w.code == "items-not-written"]
    assert "none written (--on-conflict fail and conflicts were found)" in held.message
    [run_line] = [r for r in plan.runs if r.name == "r1"]  # runs wait too
    assert run_line.outcome == "skipped" and "--on-conflict fail" in (run_line.reason or "")
    assert pair.state().get_run(pair.writer.display_uri, run_line.source_id) is None
    assert len(pair.state().open_conflicts()) == 1


def test_fail_stopped_by_run_conflicts_says_items_were_not_written(pair: Pair) -> None:
    src = MlflowClient(tracking_uri=f"sqlite:///{pair.tmp / 'src.db'}")
    dst = MlflowClient(tracking_uri=pair.dest_uri)
    [run] = src.search_runs([src.get_experiment_by_name("e").experiment_id])
    src.set_tag(run.info.run_id, "team", "a")
    assert pair.sync().exit_code() == 0
    [copy] = dst.search_runs([dst.get_experiment_by_name("e").experiment_id])
    dst.set_tag(copy.info.run_id, "team", "edited")
    src.set_tag(run.info.run_id, "team", "c")
    plan = pair.sync(on_conflict="fail")
    assert plan.exit_code() == 3 and [c.field for c in plan.conflicts] == ["tag:team"]
    [held] = [w for w in plan.notices if w.code == "items-not-written"]
    assert held.message.startswith("items-not-written: 4 workspace items listed, none written")
    assert plan.items == [] and pair.src.reads == []


def test_no_recorded_digest_applies_as_before(pair: Pair) -> None:
    state, dest = pair.state(), pair.writer.display_uri
    mark = state.get_item(dest, sid("prompt", "p"))
    assert mark is not None
    state.put_item(dest, sid("prompt", "p"), "prompt", mark.dest_id, mark.fingerprint)  # older
    edited = pair.dest.copies[mark.dest_id]
    assert isinstance(edited, Prompt)
    edited.tags["team"] = "b"
    prompt = pair.src.items[sid("prompt", "p")]
    prompt.header.fingerprint = "p2"
    plan = pair.sync()
    assert plan.exit_code() == 0 and [i.action for i in plan.items] == ["update"]
    after = state.get_item(dest, sid("prompt", "p"))
    assert after is not None and after.digest == item_digest(prompt)  # protected from now on


def test_dry_run_reports_the_conflict_and_records_nothing(pair: Pair) -> None:
    _edit_copy_and_source(pair)
    plan = pair.sync(dry_run=True)
    assert plan.exit_code() == 3 and [i.action for i in plan.items] == ["conflict"]
    assert pair.state().open_conflicts() == []


def test_verify_counts_read_in_the_singular_and_empty_kinds_get_no_line(pair: Pair) -> None:
    assert counts_text({"listed": 1, "copies": 1, "ok": 1}) == "1 listed, 1 copy, 1 ok"
    assert counts_text({"listed": 2, "copies": 2, "ok": 2}) == "2 listed, 2 copies, 2 ok"
    del pair.src.items[sid("dataset", "ds")]
    report = verify(pair.reader, pair.writer, pair.state())
    text = render(report, "text")
    assert "prompts: 1 listed, 1 copy, 1 ok" in text
    assert "datasets:" not in text and "dataset" not in render(report, "markdown").lower()


# --------------------------------------------------------------------------- real MLflow

PROMPTS = textwrap.dedent(
    """
    import sys
    import mlflow
    uri, mode = sys.argv[1], sys.argv[2]
    mlflow.set_tracking_uri(uri)
    if mode == "base":
        mlflow.genai.register_prompt(name="greet", template="Hi {{name}}", tags={"team": "a"})
        mlflow.MlflowClient().set_prompt_tag("greet", "team", "search")
    else:
        mlflow.genai.register_prompt(name="greet", template="Hello {{name}}!")
    """
)


def _prompts(uri: str, mode: str) -> None:
    subprocess.run([sys.executable, "-c", PROMPTS, uri, mode], check=True, capture_output=True)


def test_mlflow_prompt_edited_in_the_destination(tmp_path: Path) -> None:
    src_uri = f"sqlite:///{tmp_path / 'src.db'}"
    dst_uri = f"sqlite:///{tmp_path / 'dst.db'}"
    state = str(tmp_path / "state.db")
    _prompts(src_uri, "base")
    first = api.sync(f"mlflow:{src_uri}", f"mlflow:{dst_uri}", state=state)
    assert first.exit_code() == 0 and first.item_counts["prompt"]["create"] == 1
    dst = MlflowClient(tracking_uri=dst_uri)
    dst.set_prompt_tag("greet", "team", "edited-in-dest")
    _prompts(src_uri, "more")
    pair = [f"mlflow:{src_uri}", f"mlflow:{dst_uri}", "--state", state]
    done = CliRunner().invoke(main, ["sync", *pair, "--json"], catch_exceptions=False)
    assert done.exit_code == 3, done.output
    [c] = json.loads(done.output)["conflicts"]
    assert c["field"] == "item" and "edited in the destination" in c["reason"]
    assert "tags" in c["reason"] and "+1 version" in c["reason"]
    assert len(dst.search_prompt_versions("greet")) == 1  # nothing written
    assert dst.get_prompt("greet").tags["team"] == "edited-in-dest"
    listed = CliRunner().invoke(main, ["conflicts", "--state", state], catch_exceptions=False)
    assert f"{c['source_id']} item: source=" in listed.output
    won = api.sync(f"mlflow:{src_uri}", f"mlflow:{dst_uri}", state=state, on_conflict="source-wins")
    assert won.exit_code() == 0 and [r.field for r in won.resolved] == ["item"]
    assert len(dst.search_prompt_versions("greet")) == 2
    assert dst.get_prompt("greet").tags["team"] == "search"
    assert api.conflicts(state) == []
    assert api.sync(f"mlflow:{src_uri}", f"mlflow:{dst_uri}", state=state).items == []
