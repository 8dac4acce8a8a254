"""Names, notes, tags and error strings from sources and servers are data (issue 11).

Control characters (ESC sequences, BEL, CR, LF, C0/C1) and bidi overrides never reach the
terminal, a log line or a report unescaped; the Markdown report keeps its table shape and
carries no markup from the data; the HTML report escapes and keeps its CSP. Escaping is for
display only: the destination holds every value byte-identical. Lock files are opened
without following links, so a planted link cannot truncate another file.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from bridge.cli import main
from bridge.display import EscapingFilter, escape_logging, for_terminal, md_code, md_text
from bridge.engine.model import Conflict, Plan, RunPlan
from bridge.engine.verify import Mismatch, RunVerify, VerifyReport
from bridge.errors import BridgeError
from bridge.locks import _lock_path, pair_key, pair_lock, store_init_lock
from bridge.reporting import render
from bridge.schema import Warning_
from bridge.state import normalize_state_url

#: Clears the screen, retitles the window, rings the bell, forges a table row, rewinds the
#: line, reverses the text after it, injects HTML, a javascript: link and a code span.
HOSTILE = (
    "\x1b[2J\x1b]0;pwned\x07 a|b\n| forged | row |\r\u202e "
    "<img src=x onerror=alert(1)> [link](javascript:alert(1)) `x` \x9b31m\u2066"
)
#: What a hostile destination answers (it reaches the CLI as the run's error string).
DEST_ERROR = "\x1b]0;owned\x07\x1b[31mrefused\r\u202edetacilpmoc"
#: The bridge keeps an error's first line (a CR ends it too); that much is shown, escaped.
DEST_FIRST_LINE = DEST_ERROR.split("\r")[0]
T0 = 1_650_000_000_000

_BIDI = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _raw_controls(text: str, *, newlines: bool = True) -> list[str]:
    """Every control character or bidi override in ``text`` (LF allowed between lines)."""
    bad = []
    for ch in text:
        code = ord(ch)
        if ch == "\n" and newlines:
            continue
        if code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI:
            bad.append(ch)
    return bad


def _assert_shown_not_obeyed(result: Result) -> None:
    for name, raw in (("stdout", result.stdout_bytes), ("stderr", result.stderr_bytes)):
        text = raw.decode("utf-8")
        assert not _raw_controls(text), (name, text)


# -- the functions -----------------------------------------------------------------------

CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *sorted(_BIDI), 0x2028, 0x2029]


@pytest.mark.parametrize("code", CONTROLS)
def test_every_control_is_shown_visibly_and_reversibly(code: int) -> None:
    shown = for_terminal(f"a{chr(code)}b")
    assert shown.isascii() and shown.isprintable(), repr(shown)
    assert codecs.decode(shown, "unicode_escape") == f"a{chr(code)}b"  # nothing lost


def test_printable_text_is_left_alone() -> None:
    text = "naïve 日本語 שלום 👩\u200d👩\u200d👧 run_1 C:\\tmp 100%"
    assert for_terminal(text) == text
    assert for_terminal("a\tb\nc\rd", multiline=True) == "a\tb\nc\\rd"  # CR always escaped
    assert for_terminal(None) == "" and for_terminal(3) == "3"


def _cells(row: str) -> list[str]:
    """GFM splits a table row at pipes that are not backslash-escaped."""
    assert row.startswith("|") and re.search(r"(?<!\\)(\\\\)*\|$", row), row
    return re.split(r"(?<!\\)(?:\\\\)*\|", row[1:-1])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from("|\\`<>&[]()*_#-!\n\r\x1b\u202e ax:"), max_size=40))
def test_md_cell_keeps_the_table_shape_and_no_markup(value: str) -> None:
    for cell in (md_text(value), md_code(value)):
        row = f"| {cell} | end |"
        assert len(_cells(row)) == 2, row
        assert "<" not in cell and ">" not in cell
        assert not _raw_controls(row, newlines=False)
        assert "](" not in cell.replace("\\](", ""), cell  # no [text](url) link
        if cell.startswith("`"):  # a code span shows the value verbatim and cannot end early
            assert cell.count("`") == 2 and cell[1:-1] == value


def test_markdown_escapes_are_what_a_renderer_undoes() -> None:
    assert md_text("a|b") == "a\\|b" and md_text("a\\|b") == "a\\\\\\|b"
    assert md_text("<b>&") == "&lt;b&gt;&amp;"
    assert md_text("# h") == "\\# h" and md_text("- x") == "\\- x"
    assert md_text("[a](javascript:x)") == "\\[a\\](javascript:x)"
    assert md_code("wandb:e/p/run_1") == "`wandb:e/p/run_1`"
    assert md_code("a`b") == "a\\`b"


def test_log_records_are_escaped_one_line_each() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("bridge.test_display")
    handler = Keep()
    logger.addHandler(handler)
    escape_logging(logger)
    escape_logging(logger)  # idempotent
    assert sum(isinstance(f, EscapingFilter) for f in handler.filters) == 1
    try:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            logger.error("run %s failed", HOSTILE, exc_info=True)
    finally:
        logger.removeHandler(handler)
    [text] = records
    first, *trace = text.split("\n")
    assert first == f"run {for_terminal(HOSTILE)} failed"
    assert trace[0] == "Traceback (most recent call last):"
    assert f"ValueError: {for_terminal(HOSTILE)}" in text
    assert not [line for line in trace if line.startswith("| forged")]  # no forged line
    assert not _raw_controls(text)


def test_the_cli_escapes_its_log_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bridge -v ...` logs through logging.basicConfig's handler, and through handlers a
    library adds later (as mlflow does when first imported): records are escaped."""
    import sys
    import threading

    import bridge.api

    monkeypatch.setattr(logging.root, "handlers", [])  # pytest's own capture handlers
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    old_factory = logging.getLogRecordFactory()  # main() installs process-wide hooks
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    real = bridge.api.status
    late = logging.getLogger("bridge.test_display.late_library")
    monkeypatch.setattr(late, "propagate", False)

    def status_logging(state: Any) -> Any:
        logging.getLogger("bridge.status").warning("saw %s", HOSTILE)
        handler = logging.StreamHandler(sys.stderr)  # made after main() set logging up
        late.addHandler(handler)
        try:
            late.warning("late %s", HOSTILE)
        finally:
            late.removeHandler(handler)
        return real(state)

    monkeypatch.setattr(bridge.api, "status", status_logging)
    try:
        result = CliRunner().invoke(main, ["-v", "status", "--state", str(tmp_path / "s.db")])
    finally:
        logging.setLogRecordFactory(old_factory)
    assert result.exit_code == 0, result.output
    assert f"saw {for_terminal(HOSTILE)}" in result.stderr
    assert f"late {for_terminal(HOSTILE)}" in result.stderr
    _assert_shown_not_obeyed(result)


# -- every renderer on a hostile plan and verify report -----------------------------------


def _hostile_plan() -> Plan:
    plan = Plan(source="mlflow:sqlite:////s.db", dest="mlflow:sqlite:////d.db", dry_run=False)
    run = RunPlan(
        source_id=f"e/{HOSTILE}",
        name=HOSTILE,
        project=HOSTILE,
        action="create",
        outcome="failed",
        error=HOSTILE,
        reason=HOSTILE,
        artifacts_new=[HOSTILE],
    )
    run.conflicts.append(
        Conflict(
            source_id=run.source_id,
            field=f"tag:{HOSTILE}",
            source_value=HOSTILE,
            dest_value=HOSTILE,
            synced_value=HOSTILE,
            reason=HOSTILE,
        )
    )
    run.warnings.append(Warning_(source_id=run.source_id, code=HOSTILE, message=HOSTILE))
    plan.runs = [run]
    plan.errors = [HOSTILE]
    return plan


def _hostile_verify() -> VerifyReport:
    mismatch = Mismatch(
        source_id=HOSTILE, field=HOSTILE, source_value=HOSTILE, dest_value=HOSTILE, detail=HOSTILE
    )
    runs = [
        RunVerify(source_id=HOSTILE, name=HOSTILE, project=HOSTILE, mismatches=[mismatch]),
        RunVerify(
            source_id="e/2", name=HOSTILE, project=HOSTILE, status="unsynced", reason=HOSTILE
        ),
    ]
    return VerifyReport(
        source="mlflow:s", dest="mlflow:d", runs=runs, errors=[HOSTILE], scope=HOSTILE
    )


@pytest.mark.parametrize("which", ["plan", "verify"])
def test_text_reports_show_every_value_on_its_own_line(which: str) -> None:
    report = _hostile_plan() if which == "plan" else _hostile_verify()
    text = render(report, "text")
    assert not _raw_controls(text)
    assert for_terminal(HOSTILE) in text
    assert not [line for line in text.splitlines() if line.startswith("| forged")]


@pytest.mark.parametrize("which", ["plan", "verify"])
def test_markdown_reports_keep_their_tables(which: str) -> None:
    report = _hostile_plan() if which == "plan" else _hostile_verify()
    md = render(report, "markdown")
    assert not _raw_controls(md)
    assert "<" not in md and ">" not in md and "[link](" not in md
    tables = _markdown_tables(md)
    # plan: runs, conflicts, warnings; verify: the unsynced run, the mismatch (header, rule, row)
    assert [len(t) for t in tables] == ([3, 3, 3] if which == "plan" else [3, 3])


@pytest.mark.parametrize("which", ["plan", "verify"])
def test_html_reports_escape_and_keep_their_csp(which: str) -> None:
    report = _hostile_plan() if which == "plan" else _hostile_verify()
    page = render(report, "html")
    assert "<meta http-equiv='Content-Security-Policy'" in page and "default-src 'none'" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script" not in page and "href=" not in page
    assert not _raw_controls(page)


# -- the CLI on hostile source data, MLflow sqlite -> MLflow sqlite ---------------------------


class Stores:
    """A source with a hostile run and a destination whose answer to one run is hostile."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.src_uri = f"sqlite:///{tmp / 'src.db'}"
        self.dst_db = tmp / "dst.db"
        self.dst_uri = f"sqlite:///{self.dst_db}"
        self.src, self.dst = f"mlflow:{self.src_uri}", f"mlflow:{self.dst_uri}"
        self.state = str(tmp / "state.db")
        self.client = MlflowClient(tracking_uri=self.src_uri)
        exp = self.client.create_experiment("exp" + HOSTILE, artifact_location=str(tmp / "art"))
        tags = {"note": HOSTILE, "mlflow.note.content": HOSTILE}
        run = self.client.create_run(exp, start_time=T0, run_name=HOSTILE, tags=tags)
        self.run_id = run.info.run_id
        self.client.log_batch(
            self.run_id,
            params=[Param("p", HOSTILE)],
            metrics=[Metric("loss", 1.0 / (i + 1), T0 + i, i) for i in range(5)],
        )
        self.client.set_terminated(self.run_id, "FINISHED", end_time=T0 + 60_000)
        boom = self.client.create_run(exp, start_time=T0, run_name="boom")
        self.client.log_batch(boom.info.run_id, params=[Param("boom", "1")])
        self.client.set_terminated(boom.info.run_id, "FINISHED", end_time=T0 + 60_000)
        # The destination refuses the param `boom` with a hostile message of its own.
        MlflowClient(tracking_uri=self.dst_uri).search_experiments()  # creates the schema
        with sqlite3.connect(self.dst_db) as conn:
            conn.execute(
                "CREATE TRIGGER hostile BEFORE INSERT ON params WHEN NEW.key = 'boom' "
                f"BEGIN SELECT RAISE(ABORT, '{DEST_ERROR}'); END"
            )

    def cli(self, *args: str) -> Result:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        _assert_shown_not_obeyed(result)
        return result

    def pair(self, command: str, *extra: str) -> Result:
        return self.cli(command, self.src, self.dst, "--state", self.state, *extra)

    def dest_run(self) -> Any:
        client = MlflowClient(tracking_uri=self.dst_uri)
        runs = [
            r
            for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])
            if r.data.tags.get("bridge.source_id", "").endswith(self.run_id)
        ]
        assert len(runs) == 1
        return client, runs[0]


def _markdown_tables(md: str) -> list[list[str]]:
    """The tables of a Markdown document (runs of lines starting with a pipe); every row
    has the header's width, so no value added a cell."""
    tables: list[list[str]] = []
    rows: list[str] = []
    for line in [*md.split("\n"), ""]:
        if line.startswith("|"):
            rows.append(line)
            continue
        if rows:
            assert {len(_cells(r)) for r in rows} == {len(_cells(rows[0]))}, rows
            assert re.fullmatch(r"\|(---\|)+", rows[1]), rows[1]
            tables.append(rows)
        rows = []
    return tables


def _assert_safe_markdown(md: str, runs: int) -> None:
    assert not _raw_controls(md)
    assert "<" not in md and ">" not in md
    assert "[link](" not in md and "\\[link\\](javascript" in md
    tables = _markdown_tables(md)
    assert len(tables[0]) == 2 + runs, tables[0]  # header, rule, one row per run


@pytest.mark.e2e
def test_hostile_source_data_is_shown_escaped_and_copied_verbatim(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    shown = for_terminal(HOSTILE)

    diff = stores.pair("diff")
    assert diff.exit_code == 0 and f"({shown})" in diff.stdout
    for line in diff.stdout.splitlines():  # no line a value started
        assert line.startswith(("dry run", "project ", "  ", "warnings:", "summary:")), line

    md = stores.pair("diff", "--format", "markdown").stdout
    _assert_safe_markdown(md, runs=2)
    assert "\\| forged \\| row \\|" in md and "&lt;img src=x" in md

    page_path = tmp_path / "diff.html"
    assert stores.pair("diff", "--format", "html", "--output", str(page_path)).exit_code == 0
    page = page_path.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not _raw_controls(page)

    report = tmp_path / "sync.md"
    sync = stores.pair("sync", "--report", str(report))
    assert sync.exit_code == 1, sync.stdout  # `boom` refused by the destination
    assert f"({shown})" in sync.stdout and for_terminal(DEST_FIRST_LINE) in sync.stdout
    _assert_safe_markdown(report.read_text(encoding="utf-8"), runs=2)

    # Display only: the destination holds every value byte-identical.
    client, run = stores.dest_run()
    assert run.info.run_name == HOSTILE
    assert run.data.tags["note"] == HOSTILE and run.data.tags["mlflow.note.content"] == HOSTILE
    assert run.data.params["p"] == HOSTILE
    assert client.get_experiment(run.info.experiment_id).name == "exp" + HOSTILE

    status = stores.cli("status", "--state", stores.state)
    assert status.exit_code == 0 and for_terminal(DEST_FIRST_LINE) in status.stdout

    # Both sides edit the note: a conflict whose values are hostile.
    client.set_tag(run.info.run_id, "note", HOSTILE + " dest")
    stores.client.set_tag(stores.run_id, "note", HOSTILE + " source")
    assert stores.pair("sync").exit_code == 1
    listed = stores.cli("conflicts", "--state", stores.state)
    assert listed.exit_code == 0 and "tag:note" in listed.stdout
    assert len(listed.stdout.splitlines()) == 1
    as_json = json.loads(stores.cli("conflicts", "--state", stores.state, "--json").stdout)
    assert as_json[0]["source_value"] == HOSTILE + " source"  # JSON escapes, keeps the value
    md = stores.pair("diff", "--format", "markdown").stdout
    _assert_safe_markdown(md, runs=2)
    [conflicts] = [t for t in _markdown_tables(md) if t[0].startswith("| run | field |")]
    assert len(conflicts) == 3

    verify = stores.pair("verify")
    assert verify.exit_code == 1
    assert f"({shown})" in verify.stdout
    vmd = stores.pair("verify", "--format", "markdown").stdout
    assert not _raw_controls(vmd) and "<" not in vmd
    _markdown_tables(vmd)

    for fmt in ("text", "json"):
        log = stores.cli(
            "mirror", stores.src, stores.dst, "--state", stores.state, "--cycles", "1",
            "--log-format", fmt,
        )  # fmt: skip
        [line] = log.stdout.splitlines()
        assert log.exit_code == 1
        if fmt == "json":  # JSON escapes the controls itself and keeps the value
            assert any(DEST_FIRST_LINE in e for e in json.loads(line)["errors"]), line
        else:
            assert " exit 1; " in line

    # A link planted at the pair's lock file: the victim is untouched, one clear line.
    lock = _lock_path(normalize_state_url(stores.state), pair_key(stores.src, stores.dst))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    refused = stores.pair("sync")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == [
        f"bridge: error: lock file {lock} is a symbolic link; not following it"
    ]
    assert victim.read_text() == "precious"


# -- lock files ---------------------------------------------------------------------------

SRC, DST = "mlflow:sqlite:////nowhere/src.db", "mlflow:sqlite:////nowhere/dst.db"


def _planted(tmp_path: Path) -> tuple[str, Path, Path]:
    state = str(tmp_path / "state.db")
    lock = _lock_path(normalize_state_url(state), pair_key(SRC, DST))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return state, lock, victim


def test_a_symlink_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    state, lock, victim = _planted(tmp_path)
    lock.symlink_to(victim)
    with pytest.raises(BridgeError, match="is a symbolic link; not following it"):
        with pair_lock(state, SRC, DST):
            pass
    assert victim.read_text() == "precious" and lock.is_symlink()


def test_a_hard_link_at_the_lock_path_is_refused(tmp_path: Path) -> None:
    state, lock, victim = _planted(tmp_path)
    os.link(victim, lock)
    with pytest.raises(BridgeError, match="not a regular file of its own"):
        with pair_lock(state, SRC, DST):
            pass
    assert victim.read_text() == "precious"


def test_the_lock_folder_is_private_and_never_a_link(tmp_path: Path) -> None:
    state, lock, _ = _planted(tmp_path)
    assert lock.parent.stat().st_mode & 0o777 == 0o700
    with pair_lock(state, SRC, DST):  # an ordinary lock still works
        assert json.loads(lock.read_text())["pair"] == pair_key(SRC, DST)
    assert lock.read_text() == ""

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = str(tmp_path / "other.db")
    Path(other + ".locks").symlink_to(elsewhere)
    with pytest.raises(BridgeError, match="is not a plain folder"):
        with pair_lock(other, SRC, DST):
            pass
    assert list(elsewhere.iterdir()) == []


def test_the_store_init_lock_does_not_follow_a_link(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    Path(f"{db}.bridge-init.lock").symlink_to(victim)
    with pytest.raises(BridgeError, match="symbolic link"):
        with store_init_lock(f"sqlite:///{db}", "mlflow:test"):
            pass
    assert victim.read_text() == "precious"
