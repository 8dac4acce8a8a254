"""`verify`: SDK-made W&B offline runs synced into a real sqlite MLflow store, then checked;
then the destination is tampered with (a metric point, an artifact file, a tag, a deleted
run) and verify must name exactly what changed."""

from __future__ import annotations

import math
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sdk_runs import make_offline_corpus

from bridge import api
from bridge.engine.report import render, verify_as_dict
from bridge.engine.verify import (
    StreamStats,
    VerifyReport,
    history_stats,
    normalize_value,
)
from bridge.schema import MetricChunk

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
    assert {r.status for r in report.runs} <= {"ok", "unsynced"}
    assert by_id["wandb:/uncategorized/killed"].status == "unsynced"  # never synced: skipped
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
    assert all(r.status in ("ok", "unsynced") for r in others)
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
