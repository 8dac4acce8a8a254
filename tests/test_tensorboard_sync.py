"""TensorBoard event files end to end through the `bridge` CLI: into MLflow (sqlite) and
into W&B offline folders; `bridge verify` clean after; a re-run writes nothing; a file that
grew adds only its new points; a new event file in a run folder is picked up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tensorboard_reader import (
    HPARAMS,
    LOSS_POINTS,
    loss_at,
    write_tensorboardx_run,
    write_tf2_scalars,
)

pytestmark = pytest.mark.e2e


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        CI="true",
        WANDB_SILENT="true",
        WANDB_MODE="offline",
        WANDB_DISABLE_GIT="true",
    )
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _sync(source: str, dest: str, state: str) -> dict:
    done = _cli("sync", source, dest, "--state", state, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def _verify(source: str, dest: str, state: str) -> dict:
    done = _cli("verify", source, dest, "--state", state, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["mismatches"] == []
    return report


def _append_scalars(event_file: Path, tag: str, steps: range) -> None:
    """More records at the end of an existing event file, as a running writer adds them."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(event_file, "ab") as fh:
        writer = RecordWriter(fh)
        for step in steps:
            value = summary_pb2.Summary.Value(tag=tag, simple_value=loss_at(step))
            event = event_pb2.Event(
                wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value])
            )
            writer.write(event.SerializeToString())
        writer.flush()


def _new_event_file(folder: Path, tag: str, steps: range) -> None:
    from tensorboardX import SummaryWriter

    time.sleep(1.1)  # the new file's name carries the time in seconds: it sorts last
    with SummaryWriter(str(folder)) as w:
        for step in steps:
            w.add_scalar(tag, loss_at(step), step)


def _make_logdir(tmp_path: Path) -> Path:
    root = tmp_path / "tb-logs"
    write_tensorboardx_run(root / "runA")
    write_tf2_scalars(root / "tf2", "eval/acc", [0.5, 0.25, 0.125], start=1_700_000_000.25)
    return root


def _grow_and_resync(root: Path, dest: str, state: str) -> None:
    source = f"tensorboard:{root}"
    again = _sync(source, dest, state)
    assert again["points_written"] == 0
    assert set(again["counts"]) == {"unchanged"}

    (event_file,) = sorted((root / "runA").glob("events.out.tfevents.*"))
    _append_scalars(event_file, "train/loss", range(LOSS_POINTS, LOSS_POINTS + 250))
    grown = _sync(source, dest, state)
    assert grown["points_written"] == 250
    assert [r["action"] for r in grown["runs"] if r["points_written"]] == ["update"]

    _new_event_file(root / "runA", "train/loss", range(LOSS_POINTS + 250, LOSS_POINTS + 300))
    added = _sync(source, dest, state)
    assert added["points_written"] == 50
    report = _verify(source, dest, state)
    assert report["points_checked"] == LOSS_POINTS + 300 + 1 + 4  # loss, accuracy, tf2 tags
    assert _sync(source, dest, state)["points_written"] == 0


def test_tensorboard_into_mlflow_sqlite(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    root = _make_logdir(tmp_path)
    db = tmp_path / "mlflow.db"
    dest, state = f"mlflow:sqlite:///{db}", str(tmp_path / "state.db")
    source = f"tensorboard:{root}"

    first = _sync(source, dest, state)
    assert first["points_written"] == LOSS_POINTS + 1 + 4
    assert {r["name"] for r in first["runs"]} == {"runA", "runA/hp", "tf2"}
    said = " ".join(w["message"] for w in first["warnings"])
    assert "1 images" in said and "1 histograms" in said and "1 text" in said
    _verify(source, dest, state)

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tb-logs")
    assert exp is not None
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"runA", "runA/hp", "tf2"}
    hp = runs["runA/hp"]
    # HParams numbers are doubles in the event file: the int 32 reads as 32.0
    assert hp.data.params == {"lr": "0.01", "batch": "32.0", "optimizer": "adam", "augment": "true"}
    assert set(hp.data.params) == set(HPARAMS)
    assert hp.data.tags["bridge.source_id"] == f"tensorboard:{root}#runA/hp"
    run_a = runs["runA"].info.run_id
    history = client.get_metric_history(run_a, "train/loss")
    assert len(history) == LOSS_POINTS
    media = client.list_artifacts(run_a, "files/media/images/samples/input")
    assert len(media) == 1 and media[0].path.endswith(".png")
    extras = Path(client.download_artifacts(run_a, "bridge/history-extras.jsonl"))
    kinds = {json.loads(line)["kind"] for line in extras.read_text().splitlines()}
    assert kinds == {"text", "histogram", "image-file"}

    _grow_and_resync(root, dest, state)
    assert len(client.get_metric_history(run_a, "train/loss")) == LOSS_POINTS + 300


def test_tensorboard_into_wandb_offline(tmp_path: Path) -> None:
    root = _make_logdir(tmp_path)
    out = tmp_path / "wandb-out"
    dest, state = f"wandb-offline:{out}", str(tmp_path / "state.db")
    source = f"tensorboard:{root}"

    first = _sync(source, dest, state)
    assert first["points_written"] == LOSS_POINTS + 1 + 4
    assert len(list((out / "wandb").glob("offline-run-*"))) == 3
    _verify(source, dest, state)
    _grow_and_resync(root, dest, state)


def test_the_experiment_name_comes_from_the_destination_mapping(tmp_path: Path) -> None:
    """The log dir's folder name is the project; a mapping file (``--mapping`` of
    ``bridge mirror``, ``mapping`` of a config pair) renames it, as for every source."""
    from mlflow import MlflowClient

    from bridge import api

    root = tmp_path / "logs"
    write_tf2_scalars(root / "tf2", "acc", [0.5], start=1_700_000_000.0)
    mapping = tmp_path / "names.toml"
    mapping.write_text('experiment_name = "tensorboard-{project}"\n')
    db = tmp_path / "mlflow.db"
    plan = api.sync(
        f"tensorboard:{root}",
        f"mlflow:sqlite:///{db}",
        state=str(tmp_path / "state.db"),
        workers=1,
        mapping=str(mapping),
    )
    assert plan.exit_code() == 0
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tensorboard-logs")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "tf2"
