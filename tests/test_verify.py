"""`verify`: SDK-made W&B offline runs synced into a real sqlite MLflow store, then checked;
then the destination is tampered with (a metric point, an artifact file, a tag, a deleted
run) and verify must name exactly what changed."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from sdk_runs import make_offline_corpus

from bridge import api
from bridge.adapters.base import ReaderOptions
from bridge.adapters.features import ModelRegistry
from bridge.cli import main
from bridge.engine.verify import (
    StreamStats,
    VerifyReport,
    history_stats,
    normalize_value,
)
from bridge.engine.verify import verify as run_verify
from bridge.reporting import render, verify_as_dict
from bridge.schema import MetricChunk
from bridge.state import StateStore
from bridge.uris import open_reader, open_writer

ENTITY, PROJECT = "acme", "demo"
BASIC = f"wandb:{ENTITY}/{PROJECT}/basic"


# ---------------------------------------------------------------------------- units


def _chunk(key: str, points: list[tuple[int, int, float]]) -> MetricChunk:
    return MetricChunk(
        key=key,
        steps=[p[0] for p in points],
        timestamps=[p[1] for p in points],
        values=[p[2] for p in points],
    )


def test_checksum_ignores_order_and_mlflow_infinity_nan() -> None:
    pts = [(0, 10, 1.0), (1, 11, float("nan")), (2, 12, math.inf), (3, 13, -math.inf)]
    # What MLflow gives back: ±max float for ±inf, points in another order, in two chunks.
    stored = [(3, 13, -sys.float_info.max), (0, 10, 1.0), (2, 12, sys.float_info.max)]
    a = history_stats([_chunk("x", pts)])
    b = history_stats([_chunk("x", stored[:2]), _chunk("x", stored[2:] + [(1, 11, math.nan)])])
    assert (a.streams["x"].count, a.streams["x"].checksum) == (4, b.streams["x"].checksum)
    assert b.streams["x"].count == 4
    assert normalize_value(-0.0) == 0.0 and normalize_value(sys.float_info.max) == math.inf


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ([(0, 10, -1.0)], [(0, 10, -2.0)]),  # hash(-1.0) == hash(-2.0)
        ([(0, 10, 1.0)], [(0, 10, 2.0**61)]),  # hash(1.0) == hash(2.0**61)
        ([(-1, 10, 5.0)], [(-2, 10, 5.0)]),  # hash(-1) == hash(-2)
        ([(0, 10, 3.5), (1, 11, -3.5)], [(0, 10, 1.25), (1, 11, -1.25)]),  # opposite changes
    ],
    ids=["value-minus-one", "value-2**61", "step-minus-one", "opposite-pair"],
)
def test_checksum_tells_apart_points_pythons_hash_confuses(
    one: list[tuple[int, int, float]], other: list[tuple[int, int, float]]
) -> None:
    a, b = history_stats([_chunk("x", one)]), history_stats([_chunk("x", other)])
    assert a.streams["x"].checksum != b.streams["x"].checksum


def test_max_float_is_infinity_only_for_a_destination_without_infinity() -> None:
    """The ±max float rule follows the destination's Capabilities.stores_infinity."""
    for sign in (1, -1):
        inf, big = [(0, 10, sign * math.inf)], [(0, 10, sign * sys.float_info.max)]
        for stores_infinity, equal in ((False, True), (True, False)):
            a = history_stats([_chunk("x", inf)], stores_infinity=stores_infinity)
            b = history_stats([_chunk("x", big)], stores_infinity=stores_infinity)
            assert (a.streams["x"].checksum == b.streams["x"].checksum) is equal
    assert normalize_value(sys.float_info.max, stores_infinity=True) == sys.float_info.max
    assert normalize_value(-0.0, stores_infinity=True) == 0.0


@pytest.mark.parametrize(
    "changed",
    [(1, 11, 2.5), (1, 12, 2.0), (2, 11, 2.0), (1, 11, math.nan)],
    ids=["value", "timestamp", "step", "nan"],
)
def test_checksum_sees_any_field_of_a_point(changed: tuple[int, int, float]) -> None:
    base = [(0, 10, 1.0), (1, 11, 2.0)]
    one, two = StreamStats(), StreamStats()
    one.add(_chunk("k", base))
    two.add(_chunk("k", [base[0], changed]))
    assert one.count == two.count
    assert one.checksum != two.checksum


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify-corpus")
    runs = make_offline_corpus(root, entity=ENTITY, project=PROJECT)
    return next(iter(runs.values())).parent


@pytest.fixture
def synced(tmp_path: Path, corpus: Path) -> tuple[str, str, str, Path]:
    """(source URI, dest URI, state path, sqlite db) after a full sync of the corpus."""
    src_dir = tmp_path / "src"
    shutil.copytree(corpus, src_dir, symlinks=True)
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    source, dest = f"wandb-offline:{src_dir}", f"mlflow:sqlite:///{db}"
    state = str(tmp_path / "state.db")
    plan = api.sync(source, dest, state=state, workers=2)
    assert plan.exit_code() == 0, plan
    assert plan.outcomes().get("done", 0) >= 5
    return source, dest, state, db


def _dest_run_id(db: Path, source_id: str) -> str:
    with sqlite3.connect(db) as con:
        row = con.execute(
            "SELECT run_uuid FROM tags WHERE key = 'bridge.source_id' AND value = ?", (source_id,)
        ).fetchone()
    assert row is not None, source_id
    return str(row[0])


def _artifact_dir(db: Path, run_id: str) -> Path:
    uri = MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(run_id).info.artifact_uri
    assert uri.startswith("file://"), uri
    return Path(uri[len("file://") :])


@pytest.mark.e2e
def test_faithful_copy_verifies_clean(synced: tuple[str, str, str, Path]) -> None:
    source, dest, state, db = synced
    report = api.verify(source, dest, state=state, workers=2)
    assert report.exit_code() == 0, render(report, "text")
    assert report.mismatches == []
    by_id = {r.source_id: r for r in report.runs}
    basic = by_id[BASIC]
    assert basic.status == "ok"
    # 50 steps of loss/acc/lr_now plus the rest: every point and file was actually compared
    assert basic.points_checked >= 150 and basic.metrics_checked >= 3
    assert basic.params_checked >= 5 and basic.tags_checked >= 5 and basic.files_checked >= 2
    assert {r.status for r in report.runs} <= {"ok", "not-copied"}
    # A header-only log (killed before any record): the sync skipped it, nothing importable,
    # so it is listed as not copied, with the reader's reason, and does not fail.
    killed = by_id["wandb:/uncategorized/killed"]
    assert killed.status == "not-copied" and killed.dest_id is None
    assert killed.reason and killed.reason.startswith("nothing importable")
    assert report.scope == "filters of the last sync: none (every source run)"
    # The ±inf points of "acc" are ±max float in MLflow, NaN of "loss" is is_nan: still clean,
    # even without the extras file the reader uses to restore infinities.
    extras = _artifact_dir(db, _dest_run_id(db, BASIC)) / "bridge" / "history-extras.jsonl"
    assert extras.is_file()
    extras.unlink()
    again = api.verify(source, dest, state=state, workers=2)
    assert again.mismatches == [], render(again, "text")
    # Without state, runs are found by their identity tag: same result.
    relinked = api.verify(source, dest, state=str(db.parent / "no-state.db"), workers=1)
    assert relinked.mismatches == []
    assert relinked.counts() == report.counts()


@pytest.mark.e2e
def test_tampered_destination_is_reported_exactly(synced: tuple[str, str, str, Path]) -> None:
    source, dest, state, db = synced
    run_id = _dest_run_id(db, BASIC)
    with sqlite3.connect(db) as con:
        changed = con.execute(
            "UPDATE metrics SET value = 99.0 WHERE run_uuid = ? AND key = 'loss' AND step = 3",
            (run_id,),
        ).rowcount
    assert changed == 1
    (_artifact_dir(db, run_id) / "files" / "output.log").unlink()
    MlflowClient(tracking_uri=f"sqlite:///{db}").set_tag(run_id, "wandb.group", "edited")

    report = api.verify(source, dest, state=state, workers=2)
    assert report.exit_code() == 1
    fields = sorted((m.source_id, m.field) for m in report.mismatches)
    assert fields == [
        (BASIC, "file:files/output.log"),
        (BASIC, "metric:loss"),
        (BASIC, "tag:wandb.group"),
    ], render(report, "text")
    by_field = {m.field: m for m in report.mismatches}
    loss = by_field["metric:loss"]
    assert loss.source_value and loss.source_value.startswith("50 points")
    assert loss.dest_value and loss.dest_value.startswith("50 points")
    assert loss.source_value != loss.dest_value
    assert loss.detail and "value 0.25" in loss.detail and "value 99.0" in loss.detail
    assert by_field["file:files/output.log"].dest_value is None
    assert by_field["tag:wandb.group"].source_value == "exp-group"
    assert by_field["tag:wandb.group"].dest_value == "edited"
    # a plot sample for the mismatched stream, both sides, the tampered point included
    (sample,) = report.samples
    assert (sample.source_id, sample.key) == (BASIC, "loss")
    assert (3.0, 99.0) in sample.dest and (3.0, 0.25) in sample.source
    assert len(sample.source) == 49  # 50 points minus the NaN one (not plottable)
    others = [r for r in report.runs if r.source_id != BASIC]
    assert all(r.status in ("ok", "not-copied") for r in others)
    # text lines and JSON carry the same mismatches
    text = render(report, "text")
    assert f"{BASIC} metric:loss: source='50 points" in text
    assert verify_as_dict(report)["exit_code"] == 1
    assert len(verify_as_dict(report)["mismatches"]) == 3


@pytest.mark.e2e
def test_extra_point_and_deleted_run(synced: tuple[str, str, str, Path]) -> None:
    source, dest, state, db = synced
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    basic_id = _dest_run_id(db, BASIC)
    client.log_metric(basic_id, "lr_now", 5.0, timestamp=1, step=1000)
    crashed_id = _dest_run_id(db, f"wandb:{ENTITY}/{PROJECT}/crashed")
    client.delete_run(crashed_id)

    report: VerifyReport = api.verify(source, dest, state=state, workers=2)
    fields = sorted((m.source_id, m.field) for m in report.mismatches)
    assert fields == [
        (BASIC, "metric:lr_now"),
        (f"wandb:{ENTITY}/{PROJECT}/crashed", "run"),
    ], render(report, "text")
    lr = next(m for m in report.mismatches if m.field == "metric:lr_now")
    assert lr.source_value and lr.source_value.startswith("50 points")
    assert lr.dest_value and lr.dest_value.startswith("51 points")
    assert lr.detail and "1 only at the destination" in lr.detail and "step 1000" in lr.detail


@pytest.mark.e2e
def test_mlflow_to_wandb_offline_verifies_clean(
    tmp_path: Path, synced: tuple[str, str, str, Path]
) -> None:
    """The other direction: the MLflow copy as a source, a W&B offline folder as the
    destination (read back through the offline reader)."""
    _, mlflow_uri, _, _ = synced
    dest = f"wandb-offline:{tmp_path / 'wdest'}"
    state = str(tmp_path / "w-state.db")
    plan = api.sync(mlflow_uri, dest, state=state, workers=2)
    assert plan.exit_code() == 0 and plan.outcomes().get("done", 0) >= 5
    report = api.verify(mlflow_uri, dest, state=state, workers=2)
    assert report.mismatches == [], render(report, "text")
    assert report.exit_code() == 0
    basic = next(r for r in report.runs if r.name == "basic-run")
    assert basic.status == "ok" and basic.points_checked >= 150 and basic.params_checked >= 5


# ---------------------------------------------------------------------------- scope, runs
# without a copy, runs left out on purpose (MLflow sqlite → MLflow sqlite: fast, real)

T0 = 1_650_000_000_000


class MlflowPair:
    """A source sqlite MLflow store with runs ``a``, ``b``, ``c`` (a param and 5 points
    each) in one experiment, an empty destination store and a state store. The two stores
    are copies of ``template`` (made once: creating an MLflow schema takes seconds)."""

    def __init__(self, tmp: Path, template: Path) -> None:
        for name in ("src.db", "dst.db"):
            shutil.copyfile(template / name, tmp / name)
        self.src_uri = f"sqlite:///{tmp / 'src.db'}"
        self.dst_uri = f"sqlite:///{tmp / 'dst.db'}"
        self.source, self.dest = f"mlflow:{self.src_uri}", f"mlflow:{self.dst_uri}"
        self.state = str(tmp / "state.db")
        self.client = MlflowClient(tracking_uri=self.src_uri)
        self.exp = self.client.get_experiment_by_name("scope").experiment_id
        runs = self.client.search_runs([self.exp])
        self.ids = {r.info.run_name: r.info.run_id for r in runs}

    @classmethod
    def template(cls, folder: Path) -> None:
        """Make ``folder/src.db`` (the runs) and ``folder/dst.db`` (an empty store)."""
        client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'src.db'}")
        exp = client.create_experiment("scope", artifact_location=str(folder / "src-art"))
        maker = cls.__new__(cls)
        maker.client, maker.exp = client, exp
        for name in ("a", "b", "c"):
            maker.add_run(name)
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'dst.db'}").search_experiments()

    def add_run(self, name: str) -> str:
        run_id = self.client.create_run(self.exp, start_time=T0, run_name=name).info.run_id
        self.client.log_param(run_id, "lr", "0.1")
        for step in range(5):
            self.client.log_metric(run_id, "loss", 1.0 / (step + 1), timestamp=T0 + step, step=step)
        self.client.set_terminated(run_id, "FINISHED", end_time=T0 + 100)
        return run_id

    def sid(self, name: str) -> str:
        return f"{self.source}#{self.ids[name]}"

    def sync(self, **kw: Any) -> Any:
        plan = api.sync(self.source, self.dest, state=self.state, workers=2, **kw)
        assert plan.exit_code() == 0, plan
        return plan

    def verify(self, options: ReaderOptions | None = None) -> VerifyReport:
        return api.verify(self.source, self.dest, state=self.state, reader_options=options)

    def dest_id(self, name: str) -> str:
        st = StateStore(self.state)
        try:
            row = st.get_run(self.dest, self.sid(name))
        finally:
            st.close()
        assert row is not None, name
        return row.dest_id


def _statuses(report: VerifyReport) -> dict[str, str]:
    return {r.source_id: r.status for r in report.runs}


@pytest.fixture(scope="module")
def pair_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("verify-pair")
    MlflowPair.template(folder)
    return folder


@pytest.fixture
def pair(tmp_path: Path, pair_template: Path) -> MlflowPair:
    return MlflowPair(tmp_path, pair_template)


@pytest.mark.e2e
def test_source_run_without_copy_is_a_finding(pair: MlflowPair) -> None:
    """A run created at the source after the sync has no copy: verify names it, exit 1
    (before: `2 ok, 1 unsynced … 0 mismatches`, exit 0)."""
    pair.sync()
    assert pair.verify().exit_code() == 0
    pair.ids["late"] = pair.add_run("late")

    report = pair.verify()
    assert _statuses(report) == {
        pair.sid("a"): "ok",
        pair.sid("b"): "ok",
        pair.sid("c"): "ok",
        pair.sid("late"): "unsynced",
    }
    assert report.mismatches == [] and report.exit_code() == 1
    text = render(report, "text")
    assert f"unsynced   {pair.sid('late')} (late)" in text
    assert "summary: 3 ok, 1 unsynced, 0 not copied;" in text and text.endswith("0 mismatches\n")
    # the CLI exits 1 with the same line
    out = CliRunner().invoke(main, ["verify", pair.source, pair.dest, "--state", pair.state])
    assert out.exit_code == 1, out.output
    assert pair.sid("late") in out.output


@pytest.mark.e2e
def test_scope_is_the_last_sync_filters_unless_given(pair: MlflowPair) -> None:
    pair.sync(reader_options=ReaderOptions(run_ids=[pair.ids["a"]]))

    remembered = pair.verify()  # no filters: those of the last sync (--runs a)
    assert _statuses(remembered) == {pair.sid("a"): "ok"}
    assert remembered.exit_code() == 0
    assert remembered.scope == f"filters of the last sync: --runs {pair.ids['a']}"
    assert f"scope: filters of the last sync: --runs {pair.ids['a']}" in render(remembered, "text")

    everything = pair.verify(ReaderOptions())  # explicit filters override: every run
    assert _statuses(everything) == {
        pair.sid("a"): "ok",
        pair.sid("b"): "unsynced",
        pair.sid("c"): "unsynced",
    }
    assert everything.exit_code() == 1
    assert everything.scope == "filters given: none (every source run)"

    # The CLI: --runs given on the command line is the scope.
    out = CliRunner().invoke(
        main,
        [
            "verify",
            pair.source,
            pair.dest,
            "--state",
            pair.state,
            "--runs",
            pair.ids["b"],
            "--json",
        ],
    )
    assert out.exit_code == 1, out.output
    data = json.loads(out.output)
    assert [(r["source_id"], r["status"]) for r in data["runs"]] == [(pair.sid("b"), "unsynced")]
    assert data["filters"]["run_ids"] == [pair.ids["b"]]

    # A later unfiltered sync widens the remembered scope.
    pair.sync()
    assert set(_statuses(pair.verify()).values()) == {"ok"} and len(pair.verify().runs) == 3


@pytest.mark.e2e
def test_deletion_settled_dest_wins_is_not_copied(pair: MlflowPair) -> None:
    pair.sync()
    MlflowClient(tracking_uri=pair.dst_uri).delete_run(pair.dest_id("b"))
    open_conflict = pair.verify()  # deleted, nothing settled yet: a finding
    assert _statuses(open_conflict)[pair.sid("b")] == "mismatch"
    assert open_conflict.exit_code() == 1

    # a full pass sees the deletion (an unchanged source is otherwise not compared)
    settled = api.sync(pair.source, pair.dest, state=pair.state, on_conflict="dest-wins", full=True)
    assert settled.exit_code() == 0, settled
    report = pair.verify()
    assert _statuses(report) == {
        pair.sid("a"): "ok",
        pair.sid("b"): "not-copied",
        pair.sid("c"): "ok",
    }
    assert report.exit_code() == 0
    b = next(r for r in report.runs if r.source_id == pair.sid("b"))
    assert b.reason and "kept deleted" in b.reason and "policy:dest-wins" in b.reason
    assert report.counts_line() == "2 ok, 0 unsynced, 1 not copied"
    # (d) every format carries the status and the reason
    data = verify_as_dict(report)
    assert data["exit_code"] == 0 and data["counts"] == {"ok": 2, "not-copied": 1}
    row = next(r for r in data["runs"] if r["source_id"] == pair.sid("b"))
    assert row["status"] == "not-copied" and row["reason"] == b.reason
    assert json.loads(render(report, "json"))["runs"] == json.loads(json.dumps(data["runs"]))
    assert f"| `{pair.sid('b')}` | not-copied |" in render(report, "markdown")
    page = render(report, "html")
    assert "<span class='tag not-copied'>not-copied</span>" in page and "kept deleted" in page


@pytest.mark.e2e
def test_settled_by_hand_dest_excuses_source_does_not(pair: MlflowPair) -> None:
    """`conflicts resolve --take dest` keeps a deleted copy deleted: not copied. `--take
    source` means "write it again": until the next sync does, its absence is a finding."""
    pair.sync()
    dst = MlflowClient(tracking_uri=pair.dst_uri)
    dst.delete_run(pair.dest_id("b"))
    dst.delete_run(pair.dest_id("c"))
    assert api.sync(pair.source, pair.dest, state=pair.state, full=True).exit_code() == 3
    by_run = {c["source_id"]: c["id"] for c in api.conflicts(pair.state)}
    api.resolve_conflict(by_run[pair.sid("b")], "dest", pair.state, by="alice@host")
    api.resolve_conflict(by_run[pair.sid("c")], "source", pair.state, by="alice@host")

    before = pair.verify()
    assert _statuses(before) == {
        pair.sid("a"): "ok",
        pair.sid("b"): "not-copied",
        pair.sid("c"): "unsynced",
    }
    assert before.exit_code() == 1
    b = next(r for r in before.runs if r.source_id == pair.sid("b"))
    assert b.reason == "deleted in the destination; kept deleted (settled by alice@host)"
    pair.sync()  # writes c again, keeps b deleted
    after = pair.verify()
    assert _statuses(after)[pair.sid("c")] == "ok" and after.exit_code() == 0


@pytest.mark.e2e
def test_run_deleted_at_source_under_on_delete_is_not_copied(pair: MlflowPair) -> None:
    pair.sync()
    pair.client.delete_run(pair.ids["c"])  # MLflow's trash: deleted for a default listing
    pair.sync(on_delete="delete")  # the copy goes too
    assert pair.verify().exit_code() == 0  # the last sync's scope no longer lists it
    with_trash = pair.verify(ReaderOptions(include_deleted=True))
    assert _statuses(with_trash) == {
        pair.sid("a"): "ok",
        pair.sid("b"): "ok",
        pair.sid("c"): "not-copied",
    }
    c = next(r for r in with_trash.runs if r.source_id == pair.sid("c"))
    assert c.reason and "deleted at the source" in c.reason
    assert with_trash.exit_code() == 0


@pytest.mark.e2e
def test_registered_model_without_copy_is_a_finding(pair: MlflowPair, tmp_path: Path) -> None:
    pair.client.create_registered_model("clf")
    pair.sync(reader_options=ReaderOptions(registry=False))
    assert pair.verify().exit_code() == 0  # the last sync's scope: no registry
    everything = pair.verify(ReaderOptions())
    [model] = [r for r in everything.runs if r.project == "(registry)"]
    assert model.status == "unsynced" and everything.exit_code() == 1

    # A destination without a registry: the model is listed as not copied, not a finding.
    reader = open_reader(pair.source, ReaderOptions(run_ids=["none-such"]))
    writer = open_writer(f"wandb-offline:{tmp_path / 'offline-dest'}")
    store = StateStore(str(tmp_path / "w-state.db"))
    try:
        assert not isinstance(writer, ModelRegistry)
        report = run_verify(reader, writer, store, dest_reader=reader)
    finally:
        reader.close()
        writer.close()
        store.close()
    [model] = report.runs
    assert model.project == "(registry)" and model.name == "clf"
    assert model.status == "not-copied" and model.reason and "no model registry" in model.reason
    assert report.exit_code() == 0, render(report, "text")
