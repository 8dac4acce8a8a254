"""TensorBoard event files into online W&B (the loopback server): every point lands once,
read back with the real public API; verify is clean; a re-run writes nothing; a grown event
file adds only its new points."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.wandb_server import FakeWandbServer

from bridge import api

pytestmark = pytest.mark.e2e

ENTITY, PROJECT = "acme", "tb"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWandbServer]:
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    with FakeWandbServer() as srv:
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        yield srv


def _write(folder: Path, steps: range) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(folder)) as w:
        for step in steps:
            w.add_scalar("loss", 1.0 / (step + 1), step)
        w.add_hparams({"lr": 0.5}, {"hparam/acc": 0.25}, name="hp", global_step=1)


def _append(folder: Path, steps: range) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    (event_file,) = sorted(folder.glob("events.out.tfevents.*"))
    with open(event_file, "ab") as fh:
        writer = RecordWriter(fh)
        for step in steps:
            value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
            summary = summary_pb2.Summary(value=[value])
            event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
            writer.write(event.SerializeToString())
        writer.flush()


def _server_loss(srv: FakeWandbServer) -> list[tuple[int, float]]:
    import wandb

    wapi = wandb.Api(api_key=srv.api_key, overrides={"base_url": srv.url}, timeout=20)
    runs = {r.name: r for r in wapi.runs(f"{ENTITY}/{PROJECT}")}
    rows = list(runs["run"].scan_history(use_cache=False))
    assert runs["run/hp"].config["lr"] == 0.5
    step_keys = {k for row in rows for k in row if k.endswith("_step") and k != "_step"}
    (step_key,) = step_keys
    return [(int(r[step_key]), r["loss"]) for r in rows if r.get("loss") is not None]


def test_tensorboard_into_online_wandb(tmp_path: Path, server: FakeWandbServer) -> None:
    root = tmp_path / "logs"
    _write(root / "run", range(3000))
    source = f"tensorboard:{root}"
    dest = f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}"
    state = str(tmp_path / "state.db")

    first = api.sync(source, dest, state=state, workers=1)
    assert first.exit_code() == 0, [r.error for r in first.runs]
    assert sum(r.points_written for r in first.runs) == 3000 + 1
    assert api.verify(source, dest, state=state, workers=1).exit_code() == 0

    again = api.sync(source, dest, state=state, workers=1)
    assert sum(r.points_written for r in again.runs) == 0

    _append(root / "run", range(3000, 3100))
    grown = api.sync(source, dest, state=state, workers=1)
    assert grown.exit_code() == 0 and sum(r.points_written for r in grown.runs) == 100
    assert api.verify(source, dest, state=state, workers=1).exit_code() == 0

    loss = _server_loss(server)
    assert [s for s, _ in loss] == list(range(3100))
    assert server.rejected == [] and server.errors == []
