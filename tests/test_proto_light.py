"""The offline reader's record messages built without importing the wandb SDK
(proto_light): the same descriptors as the SDK's, the same runs and history read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sdk_runs import cached_corpus

from bridge.adapters.wandb import proto_light

ROOT = Path(__file__).resolve().parents[1]

#: Reads every run of a wandb/ folder in a fresh interpreter; prints whether the SDK got
#: imported and what was read, as JSON (NaN written as NaN on both sides).
_READ = """
import json, sys
from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
reader = WandbOfflineReader(sys.argv[1], ReaderOptions())
out = []
for header in reader.list_runs():
    try:
        run = reader.read_run(header)
    except Exception as exc:
        out.append([header.source_id, type(exc).__name__, str(exc)])
        continue
    items = [item.model_dump(mode="json") for item in reader.iter_history(run)]
    out.append([run.model_dump(mode="json"), items])
print(json.dumps({"sdk_imported": "wandb" in sys.modules, "runs": out}))
"""


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return cached_corpus(tmp_path_factory.getbasetemp())


def _read(folder: Path, **env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _READ, str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_same_descriptors_as_the_sdk() -> None:
    from wandb.proto import wandb_internal_pb2 as sdk

    light = proto_light._light()
    assert light.Record.DESCRIPTOR.file.serialized_pb == sdk.Record.DESCRIPTOR.file.serialized_pb
    for name in ("Record", "HistoryRecord", "SummaryRecord", "RunRecord", "MetricRecord"):
        assert getattr(light, name).DESCRIPTOR.full_name == getattr(sdk, name).DESCRIPTOR.full_name
    assert light.MetricRecord.MetricGoal.Name(1) == sdk.MetricRecord.MetricGoal.Name(1)
    # A record made by the SDK's classes reads the same through the light ones.
    rec = sdk.Record(num=7)
    rec.run.run_id = "r"
    rec.run.start_time.seconds = 12
    back = light.Record.FromString(rec.SerializeToString())
    assert back.WhichOneof("record_type") == "run" and back.run.start_time.seconds == 12
    assert back.SerializeToString() == rec.SerializeToString()


def test_offline_reader_without_the_sdk_reads_the_same(corpus: dict[str, Path]) -> None:
    folder = corpus["basic"].parent
    light = _read(folder)
    sdk = _read(folder, BRIDGE_WANDB_PROTO="sdk")
    assert light["sdk_imported"] is False  # the point: no SDK import to read logs
    assert sdk["sdk_imported"] is True
    assert len(light["runs"]) >= 6  # type: ignore[arg-type]
    assert json.dumps(light["runs"]) == json.dumps(sdk["runs"])  # NaN equal to NaN
