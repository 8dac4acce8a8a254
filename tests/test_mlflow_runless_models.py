"""End to end: MLflow logged models no run made (``initialize_logged_model`` outside a
run) copied MLflow → MLflow as workspace items of kind ``model`` (issue 13): every field
(name, params, tags, status, model type, files, model-metric rows with their run, step,
time and dataset), a trace linked to such a model linked to the copy, a second sync
unchanged, later changes followed, ``bridge verify`` clean. Corpus: tests/runless_corpus.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from sdk_logged_models import snapshot

from bridge import api

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000


def _corpus(uri: str, folder: Path, *more: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "tests.runless_corpus", uri, str(folder), *more],
        check=True,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    ids: dict[str, str] = json.loads((folder / "ids.json").read_text())
    return ids


def _sync(src: str, dst: str, tmp: Path) -> Any:
    plan = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=str(tmp / "state.db"))
    assert plan.exit_code() == 0, (plan.errors, [(i.name, i.error) for i in plan.items])
    return plan


def _same(src: str, dst: str, tmp: Path, n: int) -> dict[str, dict[str, Any]]:
    a, b = snapshot(src, tmp / f"a{n}"), snapshot(dst, tmp / f"b{n}")
    assert set(a) == set(b)
    for name in a:
        for field in a[name]:
            assert b[name][field] == a[name][field], (name, field)
    return b


def _verify(src: str, dst: str, tmp: Path) -> Any:
    report = api.verify(f"mlflow:{src}", f"mlflow:{dst}", state=str(tmp / "state.db"))
    assert report.item_counts["model"]["listed"] == 2
    assert report.item_counts["model"]["copies"] == 2
    assert not [i for i in report.items if i.status != "ok"], report.items
    return report


def _check(src: str, dst: str, tmp: Path) -> None:
    ids = _corpus(src, tmp / "corpus")
    plan = _sync(src, dst, tmp)
    assert plan.item_counts["model"]["create"] == 2
    assert not [w for w in plan.notices if w.code == "logged-model-not-copied"]
    snap = _same(src, dst, tmp, 1)
    solo = snap["solo"]
    assert solo["params"] == {"k": "v", "lr": "0.01"}
    assert solo["tags"]["made"] == "by hand"
    assert (solo["status"], solo["model_type"], solo["source_run"]) == ("READY", "agent", None)
    assert solo["files"] == {
        "weights.bin": bytes(range(256)) * 3,
        "sub/config.json": b'{"layers": 2}\n',
    }
    rows = [(m[0], m[1], m[2], m[3], m[4], m[6]) for m in solo["metrics"]]
    assert rows == [
        ("latency", 0, T0 + 2, 12.0, None, "judge"),
        ("score", 1, T0 + 1, 0.5, "ev", "judge"),
    ]
    assert solo["metrics"][1][5]  # the dataset digest kept
    assert (snap["draft"]["status"], snap["draft"]["files"]) == ("PENDING", {})
    # the copies are the destination's own models, found by their identity
    d = MlflowClient(tracking_uri=dst)
    exps = [e.experiment_id for e in d.search_experiments()]
    copies = {m.name: m.model_id for m in d.search_logged_models(exps)}
    assert sorted(copies) == ["draft", "solo"] and copies["solo"] != ids["solo"]
    # the trace linked to the model links to the copy
    (trace,) = d.search_traces(locations=exps)
    assert trace.info.trace_metadata["mlflow.modelId"] == copies["solo"]
    _verify(src, dst, tmp)
    # a second sync writes nothing
    again = _sync(src, dst, tmp)
    assert again.item_counts["model"]["unchanged"] == 2 and again.items == []
    before = [(m.name, m.last_updated_timestamp) for m in d.search_logged_models(exps)]
    # changes at the source follow: a tag, a status reached, a file added
    _corpus(src, tmp / "corpus", "--more")
    plan = _sync(src, dst, tmp)
    assert plan.item_counts["model"]["update"] == 2, plan.items
    lines = {i.name: i.changes for i in plan.items}
    assert lines["solo"] == ["tag made: by hand -> by hand, reviewed"]
    assert lines["draft"] == ["status PENDING -> FAILED", "+file note.txt"]
    snap = _same(src, dst, tmp, 2)
    assert (snap["draft"]["status"], snap["draft"]["files"]) == (
        "FAILED",
        {"note.txt": b"late file\n"},
    )
    after = {m.name: m.model_id for m in d.search_logged_models(exps)}
    assert after == copies and len(before) == 2  # updated in place, nothing duplicated
    again = _sync(src, dst, tmp)
    assert again.item_counts["model"]["unchanged"] == 2 and again.items == []
    _verify(src, dst, tmp)


def test_sqlite_to_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}", tmp_path)


def test_sqlite_to_postgresql_uri(tmp_path: Path, pg_database: str) -> None:
    _check(f"sqlite:///{tmp_path / 'src.db'}", pg_database, tmp_path)


def test_rows_of_a_run_not_copied_yet(tmp_path: Path) -> None:
    """A metric row for the model logged by a run outside the experiments in scope: the
    copy is made without it and says so; once that run is copied, a ``--full`` pass
    writes exactly that row."""
    from bridge.adapters.base import ReaderOptions

    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    ids = _corpus(src, tmp_path / "corpus")
    c = MlflowClient(tracking_uri=src)
    other = c.create_experiment("other", artifact_location=(tmp_path / "other").as_uri())
    outsider = c.create_run(other, run_name="outsider").info.run_id
    c.log_metric(outsider, "xscore", 0.25, timestamp=T0 + 9, step=4, model_id=ids["solo"])
    c.set_terminated(outsider)
    only = ReaderOptions(experiments=["runless"])
    plan = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=str(tmp_path / "state.db"),
                    reader_options=only)  # fmt: skip
    assert plan.exit_code() == 0, plan.errors
    (line,) = [i for i in plan.items if i.name == "solo"]
    assert any("1 metric row(s) of runs not copied yet" in w.message for w in line.warnings)
    d = MlflowClient(tracking_uri=dst)
    exps = [e.experiment_id for e in d.search_experiments()]
    (solo,) = [m for m in d.search_logged_models(exps) if m.name == "solo"]
    assert len(d.get_logged_model(solo.model_id).metrics) == 2
    _sync(src, dst, tmp_path)  # the outsider run copied
    plan = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=str(tmp_path / "state.db"), full=True)
    assert plan.exit_code() == 0, plan.errors
    assert [i.changes for i in plan.items if i.name == "solo"] == [["+1 metric rows"]]
    _same(src, dst, tmp_path, 3)


def test_copies_never_come_back_into_their_store(tmp_path: Path) -> None:
    """A -> B, then B -> A (two-way): B's copies read with their origin in A; nothing is
    written into A, no model duplicated there."""
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    ids = _corpus(a, tmp_path / "corpus")
    _sync(a, b, tmp_path)
    back = api.sync(f"mlflow:{b}", f"mlflow:{a}", state=str(tmp_path / "back.db"))
    assert back.exit_code() == 0, back.errors
    assert back.item_counts["model"] == {**back.item_counts["model"], "listed": 2, "unchanged": 2}
    c = MlflowClient(tracking_uri=a)
    exps = [e.experiment_id for e in c.search_experiments()]
    assert sorted(m.model_id for m in c.search_logged_models(exps)) == sorted(
        [ids["solo"], ids["draft"]]
    )
