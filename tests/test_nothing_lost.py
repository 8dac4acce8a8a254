"""Issue 10's silent losses: each one copies correctly or fails loudly, and a re-sync
finishes what an earlier one could not.

Real wandb SDK offline runs (one process each, as users run them) into a real MLflow
sqlite store:
1. a file rewritten with the same size is copied again (content digests, not sizes);
2. artifact content missing at sync time leaves the run incomplete and failed (exit 1),
   is retried by the next sync, and can be accepted as manifest-only by a person;
3. content not matching its manifest is never recorded as copied (exit 1, retried);
5. a field conflict concerns that field only: the resumed run's new history and files
   are written, the conflict is reported on every sync until it is settled;
6. a backend error while planning a run fails that run (exit 1), never "skipped".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.engine.sync import run_sync
from bridge.errors import RunError
from bridge.schema import Run, RunHeader
from bridge.state import StateStore
from bridge.uris import open_writer
from tests.sdk_runs import append_to_run, run_folders, sdk_env

pytestmark = pytest.mark.e2e

_SCRIPT = """
import os, sys, wandb
run = wandb.init(entity="acme", project="lost", id=sys.argv[1], config={"phase": 0})
open("best.txt", "w").write("epoch-01\\n")
run.save("best.txt", policy="now")
os.makedirs("data", exist_ok=True)
open("data/train.csv", "w").write("x,y\\n1,2\\n")
ds = wandb.Artifact("train-data", type="dataset")
ds.add_file("data/train.csv")
run.log_artifact(ds)
open("weights.bin", "wb").write(bytes(range(256)) * 8)
model = wandb.Artifact("clf", type="model")
model.add_file("weights.bin")
run.log_artifact(model)
for step in range(5):
    run.log({"loss": 1.0 / (step + 1)})
run.finish()
"""
CSV = b"x,y\n1,2\n"
WEIGHTS = bytes(range(256)) * 8


def _make_run(root: Path, run_id: str) -> dict[str, Any]:
    work = root / "work"
    work.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), run_id],
        cwd=work,
        env=sdk_env(root),
        check=True,
        timeout=180,
        capture_output=True,
    )
    staged = {
        p.read_bytes(): p for p in (root / "data").rglob("*") if p.is_file() and p.stat().st_size
    }
    return {
        "wandb": root / "wandb",
        "work": work,
        "csv": staged[CSV],
        "weights": staged[WEIGHTS],
    }


@pytest.fixture()
def lost_run(tmp_path: Path) -> dict[str, Any]:
    """A fresh SDK-made run per test: tests here change its files and staging copies."""
    return _make_run(tmp_path / "sdk", "lost")


def _sync(src: Path, tmp: Path, **kw: Any) -> tuple[Any, MlflowClient]:
    db = f"sqlite:///{tmp / 'mlflow.db'}"
    plan = api.sync(f"wandb-offline:{src}", f"mlflow:{db}", state=str(tmp / "state.db"), **kw)
    return plan, MlflowClient(tracking_uri=db)


def _verify(src: Path, tmp: Path) -> Any:
    db = f"sqlite:///{tmp / 'mlflow.db'}"
    return api.verify(f"wandb-offline:{src}", f"mlflow:{db}", state=str(tmp / "state.db"))


def _findings(report: Any) -> str:
    return " ".join(f"{m.field} {m.detail}" for r in report.runs for m in r.mismatches)


def _read(client: MlflowClient, run_id: str, path: str, tmp: Path) -> bytes:
    out = tmp / "dl"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    return Path(client.download_artifacts(run_id, path, str(out))).read_bytes()


def _paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return out


def _models(client: MlflowClient, run_id: str) -> list[Any]:
    exp = client.get_run(run_id).info.experiment_id
    return client.search_logged_models(experiment_ids=[exp])


def test_file_rewritten_with_the_same_size_is_copied_again(
    lost_run: dict[str, Any], tmp_path: Path
) -> None:
    plan, client = _sync(lost_run["wandb"], tmp_path)
    assert plan.exit_code() == 0, (plan.errors, [r.error for r in plan.runs])
    [run] = plan.runs
    assert _read(client, run.dest_id, "files/best.txt", tmp_path) == b"epoch-01\n"

    # The training script rewrites its checkpoint marker each epoch: same size, new bytes.
    # `run.save` left a symlink in files/ pointing at it, as the SDK does offline.
    (lost_run["work"] / "best.txt").write_bytes(b"epoch-02\n")
    again, _ = _sync(lost_run["wandb"], tmp_path)
    assert again.exit_code() == 0
    assert again.runs[0].files_written >= 1
    assert _read(client, run.dest_id, "files/best.txt", tmp_path) == b"epoch-02\n"

    # Unchanged content is neither copied nor hashed again, even in a full comparison.
    full, _ = _sync(lost_run["wandb"], tmp_path, full=True)
    assert [r.outcome for r in full.runs] == ["unchanged"]


def test_missing_artifact_content_fails_the_run_and_is_retried(
    lost_run: dict[str, Any], tmp_path: Path
) -> None:
    csv, weights = lost_run["csv"], lost_run["weights"]
    csv.rename(csv.with_name("hidden-csv"))
    weights.rename(weights.with_name("hidden-weights"))
    plan, client = _sync(lost_run["wandb"], tmp_path)
    [run] = plan.runs
    assert plan.exit_code() == 1
    assert run.outcome == "failed"
    assert "train.csv" in (run.error or "") and "weights.bin" in (run.error or "")
    # The rest of the run is written: history, the run's own files.
    history = client.get_metric_history(run.dest_id, "loss")
    assert len(history) == 5
    assert "files/best.txt" in _paths(client, run.dest_id)
    # ... but it is not complete, and the missing content is not recorded as copied.
    assert client.get_run(run.dest_id).data.tags.get("bridge.complete") != "true"
    assert not [p for p in _paths(client, run.dest_id) if p.endswith("/files/train.csv")]
    assert not [m for m in _models(client, run.dest_id) if m.status == LoggedModelStatus.READY]

    # verify tells the truth: the copy is incomplete and the content is not there.
    report = _verify(lost_run["wandb"], tmp_path)
    assert report.exit_code() == 1
    assert "train.csv" in _findings(report) and "model:clf" in _findings(report)

    # Every later sync tries again: still missing → still failed (not "unchanged").
    again, _ = _sync(lost_run["wandb"], tmp_path)
    assert again.exit_code() == 1 and again.runs[0].outcome == "failed"

    # The content is back (e.g. the staging folder restored): the next sync finishes.
    csv.with_name("hidden-csv").rename(csv)
    weights.with_name("hidden-weights").rename(weights)
    done, _ = _sync(lost_run["wandb"], tmp_path)
    assert done.exit_code() == 0, [r.error for r in done.runs]
    assert done.runs[0].outcome == "done"
    [path] = [p for p in _paths(client, run.dest_id) if p.endswith("/files/train.csv")]
    assert _read(client, run.dest_id, path, tmp_path) == CSV
    [model] = _models(client, run.dest_id)
    assert model.status == LoggedModelStatus.READY
    assert client.get_run(run.dest_id).data.tags.get("bridge.complete") == "true"
    assert len(client.get_metric_history(run.dest_id, "loss")) == 5  # no point twice
    final, _ = _sync(lost_run["wandb"], tmp_path)
    assert [r.outcome for r in final.runs] == ["unchanged"]
    assert _verify(lost_run["wandb"], tmp_path).exit_code() == 0


def test_content_gone_for_good_is_accepted_as_manifest_only(
    lost_run: dict[str, Any], tmp_path: Path
) -> None:
    lost_run["csv"].unlink()  # `wandb sync` deleted the staging copy
    plan, client = _sync(lost_run["wandb"], tmp_path, accept_missing_content=True)
    assert plan.exit_code() == 0, [r.error for r in plan.runs]
    [run] = plan.runs
    accepted = [w for w in run.warnings if w.code == "manifest-only"]
    assert len(accepted) == 1 and "train.csv" in accepted[0].message
    manifests = [p for p in _paths(client, run.dest_id) if "train-data" in p]
    assert manifests and all(p.endswith("manifest.json") for p in manifests)
    # Settled once: later syncs (without the flag) neither fail nor report it again.
    (lost_run["work"] / "best.txt").write_bytes(b"epoch-02\n")  # something else changed
    again, _ = _sync(lost_run["wandb"], tmp_path)
    assert again.exit_code() == 0, [r.error for r in again.runs]
    assert not [w for w in again.warnings if w.code in ("manifest-only", "missing-file")]
    report = _verify(lost_run["wandb"], tmp_path)
    assert report.exit_code() == 0, _findings(report)
    assert any("manifest-only" in n and "train.csv" in n for n in report.runs[0].notes)


def test_content_not_matching_its_manifest_is_never_recorded(
    lost_run: dict[str, Any], tmp_path: Path
) -> None:
    csv, weights = lost_run["csv"], lost_run["weights"]
    csv.write_bytes(b"x,y\n9,9\n")  # same size, other bytes
    weights.write_bytes(b"\0" * len(WEIGHTS))
    plan, client = _sync(lost_run["wandb"], tmp_path)
    [run] = plan.runs
    assert plan.exit_code() == 1 and run.outcome == "failed"
    bad = {w.message for w in run.warnings if w.code == "checksum-mismatch"}
    assert any("train.csv" in m and "MD5" in m for m in bad), bad
    assert any("weights.bin" in m for m in bad), bad
    # The bad bytes never landed as a copy, nor as a finished model.
    assert not [p for p in _paths(client, run.dest_id) if p.endswith("/files/train.csv")]
    assert not [m for m in _models(client, run.dest_id) if m.status == LoggedModelStatus.READY]

    again, _ = _sync(lost_run["wandb"], tmp_path)
    assert again.exit_code() == 1  # retried, still wrong, still loud
    assert "train.csv" in _findings(_verify(lost_run["wandb"], tmp_path))

    csv.write_bytes(CSV)
    weights.write_bytes(WEIGHTS)
    fixed, _ = _sync(lost_run["wandb"], tmp_path)
    assert fixed.exit_code() == 0, [r.error for r in fixed.runs]
    [path] = [p for p in _paths(client, run.dest_id) if p.endswith("/files/train.csv")]
    assert _read(client, run.dest_id, path, tmp_path) == CSV
    [model] = _models(client, run.dest_id)
    assert model.status == LoggedModelStatus.READY


def test_a_field_conflict_does_not_block_the_rest_of_the_run(
    lost_run: dict[str, Any], tmp_path: Path
) -> None:
    plan, client = _sync(lost_run["wandb"], tmp_path)
    assert plan.exit_code() == 0
    dest_id = plan.runs[0].dest_id
    assert client.get_run(dest_id).data.params["phase"] == "0"

    # The run is resumed with a changed config value and logs more history.
    append_to_run(lost_run["wandb"], "lost", "acme", "lost", steps=3, config={"phase": 1})
    plan, _ = _sync(lost_run["wandb"], tmp_path)
    [run] = plan.runs
    assert plan.exit_code() == 3
    assert [c.field for c in run.conflicts] == ["param:phase"]
    assert run.outcome == "done" and run.points_written >= 3
    assert len(client.get_metric_history(dest_id, "loss")) == 8  # the new points arrived
    assert client.get_run(dest_id).data.params["phase"] == "0"  # the field is left alone

    # Reported on every later sync (the run is read again, not taken as unchanged).
    again, _ = _sync(lost_run["wandb"], tmp_path)
    assert again.exit_code() == 3
    assert again.runs[0].action == "conflict" and again.runs[0].points_written == 0
    [open_conflict] = api.conflicts(state=str(tmp_path / "state.db"))
    assert open_conflict["field"] == "param:phase"

    # Settled by a person: carried out by the next sync, then quiet.
    api.resolve_conflict(open_conflict["id"], "source", state=str(tmp_path / "state.db"))
    settled, _ = _sync(lost_run["wandb"], tmp_path)
    assert settled.exit_code() == 0
    assert client.get_run(dest_id).data.tags["bridge.param_override.phase"] == "1"
    quiet, _ = _sync(lost_run["wandb"], tmp_path)
    assert [r.outcome for r in quiet.runs] == ["unchanged"] and quiet.exit_code() == 0
    assert len(client.get_metric_history(dest_id, "loss")) == 8


def test_fail_policy_still_writes_nothing_on_a_conflict(
    lost_run: dict[str, Any], tmp_path: Path
) -> None:
    plan, client = _sync(lost_run["wandb"], tmp_path)
    dest_id = plan.runs[0].dest_id
    append_to_run(lost_run["wandb"], "lost", "acme", "lost", steps=3, config={"phase": 1})
    plan, _ = _sync(lost_run["wandb"], tmp_path, on_conflict="fail")
    assert plan.exit_code() == 3 and plan.runs[0].outcome == "skipped"
    assert len(client.get_metric_history(dest_id, "loss")) == 5


class _FlakyReader(WandbOfflineReader):
    """The offline reader, with one run whose body read fails the way the W&B server
    reader reports a backend error after its retries (a RunError wrapping a 5xx): the
    error must fail that run, not skip it."""

    def read_run(self, header: RunHeader) -> Run:
        if header.native_id == "flaky":
            raise RunError(f"{header.source_id}: cannot read: HTTP 503 after 5 retries")
        return super().read_run(header)

    def read_run_deferring_results(self, header: RunHeader) -> Run | None:
        # a new copy's plan reads the body this way (engine/plan.py): it fails the same
        if header.native_id == "flaky":
            raise RunError(f"{header.source_id}: cannot read: HTTP 503 after 5 retries")
        return super().read_run_deferring_results(header)


@pytest.fixture()
def two_runs(tmp_path: Path) -> Iterator[Path]:
    src = tmp_path / "two"
    a = _make_run(tmp_path / "a", "steady")
    b = _make_run(tmp_path / "b", "flaky")
    src.mkdir()
    for made, rid in ((a, "steady"), (b, "flaky")):
        for folder in run_folders(made["wandb"], rid):
            shutil.copytree(folder, src / folder.name, symlinks=True)
    yield src


def test_a_read_failure_while_planning_fails_the_run(two_runs: Path, tmp_path: Path) -> None:
    reader = _FlakyReader(str(two_runs), ReaderOptions())
    writer = open_writer(f"mlflow:sqlite:///{tmp_path / 'm.db'}")
    state = StateStore(str(tmp_path / "s.db"))
    try:
        writer.source_uri = reader.display_uri
        plan = run_sync(reader, writer, state)
    finally:
        reader.close()
        writer.close()
        state.close()
    outcomes = {r.native_id: r.outcome for r in plan.runs}
    assert outcomes == {"steady": "done", "flaky": "failed"}
    [flaky] = [r for r in plan.runs if r.native_id == "flaky"]
    assert "HTTP 503" in (flaky.error or "")
    assert plan.exit_code() == 1


_BIG_RECORD = """
import sys, wandb
run = wandb.init(entity="acme", project="lost", id="bigrec")
for step in range(4):
    run.log({"loss": 1.0 / (step + 1)})
run.log({"note": "x" * (3 * 1024 * 1024)})  # one history record of ~3 MiB
run.log({"loss": 0.1})
run.finish()
"""


def test_a_record_over_the_size_cap_is_a_named_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "sdk"
    (root / "work").mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_BIG_RECORD)],
        cwd=root / "work",
        env=sdk_env(root),
        check=True,
        timeout=180,
        capture_output=True,
    )
    monkeypatch.setenv("BRIDGE_MAX_RECORD_MB", "1")
    plan, client = _sync(root / "wandb", tmp_path)
    [run] = plan.runs
    assert plan.exit_code() == 1 and run.outcome == "failed"
    refused = [w.message for w in run.warnings if w.code == "refused"]
    assert refused and "BRIDGE_MAX_RECORD_MB" in refused[0]
    assert "BRIDGE_MAX_RECORD_MB" in (run.error or "")
    # The rest of the run is written: every loss point around the refused record.
    assert len(client.get_metric_history(run.dest_id, "loss")) == 5

    monkeypatch.setenv("BRIDGE_MAX_RECORD_MB", "64")  # the operator raises the cap
    again, _ = _sync(root / "wandb", tmp_path)
    assert again.exit_code() == 0, [r.error for r in again.runs]
    assert len(client.get_metric_history(run.dest_id, "loss")) == 5
