"""Issue 10: appending to a run that already exists in W&B loses nothing.

A second sync into ``wandb:ENTITY/PROJECT`` resumes the run (``wandb.init(resume=
"allow")``). wandb-core then starts the run's history at the server's last ``_step`` + 1
(from the ``RunResumeStatus`` answer: ``historyLineCount``, ``historyTail``, summary
``_step``) and drops every row logged at a lower step. ``run.step`` answers 0 until the
first row of the session is logged, so a writer counting from it had every appended row
dropped while the sync reported them written (exit 0). Checked here end to end: a real
MLflow sqlite source, the real wandb SDK writing to the loopback W&B server, read back
with the real ``wandb.Api().run(...).scan_history()``; and the offline destination's
``_step`` continuation across run folders.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeWandbServer
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import Notices, ReaderOptions
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.adapters.wandb.txlog import TxlogReader
from bridge.adapters.wandb.writer import WandbMetricSink, WandbWriter, _Live
from bridge.errors import RunError
from bridge.schema import MetricChunk

pytestmark = pytest.mark.e2e

T0 = 1_700_000_000_000
ENTITY, PROJECT = "acme", "proj"
KEYS = ("loss", "acc")
Point = tuple[int, int, float]  # (source step, timestamp ms, value)


class Source:
    """A sqlite MLflow source with one run: ``loss`` at steps 0-9 and ``acc`` at 0-4."""

    def __init__(self, tmp: Path) -> None:
        self.uri = f"sqlite:///{tmp / 'src.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.create_experiment(PROJECT, artifact_location=str(tmp / "src-art"))
        self.run_id = self.client.create_run(exp, start_time=T0, run_name="r").info.run_id
        self.client.log_param(self.run_id, "lr", "0.1")
        self.log("loss", range(10))
        self.log("acc", range(5))

    def log(self, key: str, steps: range) -> int:
        """Points of ``key`` at ``steps``, each 10 ms after the previous step's."""
        metrics = [Metric(key, 1.0 / (s + 2), T0 + 10 * s, s) for s in steps]
        self.client.log_batch(self.run_id, metrics=metrics)
        return len(metrics)

    def more(self) -> int:
        """New points after the copied ones (higher steps, newer timestamps)."""
        return self.log("loss", range(10, 15)) + self.log("acc", range(5, 7))

    def late(self) -> None:
        """A ``loss`` point with an older timestamp and a lower step than the copied ones."""
        self.client.log_batch(self.run_id, metrics=[Metric("loss", 42.0, T0 + 15, 1)])

    def points(self) -> dict[str, Counter[Point]]:
        return {
            key: Counter(
                (m.step, m.timestamp, m.value)
                for m in self.client.get_metric_history(self.run_id, key)
            )
            for key in KEYS
        }


class ServerCopy:
    """The run's copy as the real public API reads it back from the loopback server."""

    def __init__(self, srv: FakeWandbServer) -> None:
        import wandb

        # A fresh Api per read: an Api keeps the run objects it loaded. No cache: the SDK
        # caches a run's parquet history under WANDB_CACHE_DIR by run id alone, so a
        # cached read after an append still shows the rows from before it.
        wapi = wandb.Api(api_key=srv.api_key, overrides={"base_url": srv.url}, timeout=20)
        [self.run] = list(wapi.runs(f"{ENTITY}/{PROJECT}"))
        self.rows = list(self.run.scan_history(use_cache=False))

    def points(self) -> dict[str, Counter[Point]]:
        got: dict[str, Counter[Point]] = {key: Counter() for key in KEYS}
        for row in self.rows:
            for key in KEYS:
                if row.get(key) is not None:
                    at = (int(row["mlflow_step"]), round(row["_timestamp"] * 1000), row[key])
                    got[key][at] += 1
        return got

    def steps(self) -> list[int]:
        return [int(row["_step"]) for row in self.rows]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWandbServer]:
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    with FakeWandbServer() as srv:
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        yield srv


def _sync(src: Source, dest: str, state: Path) -> Any:
    return api.sync(f"mlflow:{src.uri}", dest, state=str(state), workers=1)


def _one(plan: Any) -> Any:
    [run] = plan.runs
    return run


def _assert_copy_is_source(srv: FakeWandbServer, src: Source) -> ServerCopy:
    """Every source point on the server exactly once, rows in one increasing ``_step``
    order with no gap (nothing dropped, reordered or written twice)."""
    copy = ServerCopy(srv)
    assert copy.points() == src.points()
    assert copy.steps() == list(range(len(copy.rows)))
    assert srv.rejected == [] and srv.errors == []
    return copy


def test_online_append_writes_every_new_point_once(tmp_path: Path, server: FakeWandbServer) -> None:
    src = Source(tmp_path)
    dest, state = f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}", tmp_path / "state.db"
    first = _sync(src, dest, state)
    assert first.exit_code() == 0 and _one(first).points_written == 15, first
    _assert_copy_is_source(server, src)

    added = src.more()
    src.client.log_param(src.run_id, "extra", "x")
    src.client.set_tag(src.run_id, "stage", "two")
    src.client.set_terminated(src.run_id, "FINISHED", end_time=T0 + 60_000)
    second = _sync(src, dest, state)
    run = _one(second)
    assert second.exit_code() == 0, (run.error, server.errors)
    assert (run.action, run.outcome, run.points_written) == ("update", "done", added)
    copy = _assert_copy_is_source(server, src)  # before the fix: the 7 new rows were dropped

    # Summary and config written after the resume reached the server too.
    assert copy.run.summary["loss"] == 1.0 / 16 and copy.run.summary["acc"] == 1.0 / 8
    assert copy.run.summary["mlflow_step"] == 14
    config = copy.run.config
    assert (config["lr"], config["extra"]) == ("0.1", "x")
    assert config["mlflow_tags"]["stage"] == "two"
    assert config["_bridge.status"] == "FINISHED" and config["_bridge.complete"] is True
    assert copy.run.state == "finished"

    third = _sync(src, dest, state)
    assert (_one(third).action, _one(third).points_written) == ("unchanged", 0)


def test_lost_state_after_an_append_counts_the_servers_rows_not_a_cached_copy(
    tmp_path: Path, server: FakeWandbServer
) -> None:
    """Without a state row the writer counts the run's points on the server. The SDK's
    default ``scan_history`` reads a cached parquet copy (kept by run id under
    WANDB_CACHE_DIR, across processes): counted from it after an append, the new rows
    looked missing and were sent again."""
    src = Source(tmp_path)
    dest = f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}"
    assert _sync(src, dest, tmp_path / "s1.db").exit_code() == 0
    relinked = _sync(src, dest, tmp_path / "s2.db")  # counts the run: 15 points
    assert (_one(relinked).action, _one(relinked).points_written) == ("unchanged", 0)
    added = src.more()
    assert _one(_sync(src, dest, tmp_path / "s2.db")).points_written == added
    added = src.log("loss", range(15, 17))
    again = _sync(src, dest, tmp_path / "s3.db")  # lost state: counts the run again
    assert again.exit_code() == 0, _one(again).error
    assert (_one(again).action, _one(again).points_written) == ("update", added)
    _assert_copy_is_source(server, src)


def test_online_append_with_a_late_point_fails_and_duplicates_nothing(
    tmp_path: Path, server: FakeWandbServer
) -> None:
    """A late point cannot be merged into a server's history (by design the run fails,
    naming the stream); the new points of the other streams are still appended, once."""
    src = Source(tmp_path)
    dest, state = f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}", tmp_path / "state.db"
    assert _sync(src, dest, state).exit_code() == 0
    src.log("acc", range(5, 8))
    src.late()
    second = _sync(src, dest, state)
    run = _one(second)
    assert second.exit_code() == 1 and run.outcome == "failed"
    assert run.error and "metric 'loss': points arrived inside" in run.error
    assert run.points_written == 3  # the new acc points; loss is not touched

    copy = ServerCopy(server)
    want = src.points()
    assert copy.points()["acc"] == want["acc"]
    assert copy.points()["loss"] == want["loss"] - Counter({(1, T0 + 15, 42.0): 1})
    assert copy.steps() == list(range(len(copy.rows)))


def test_a_row_the_sdk_drops_fails_the_run(tmp_path: Path, server: FakeWandbServer) -> None:
    """The guard behind the fix: should rows ever be logged below the step wandb-core is
    at (what the writer did on every resume), the sink raises instead of counting them."""
    import wandb

    settings = wandb.Settings(
        api_key=server.api_key, base_url=server.url, silent=True, console="off"
    )
    kw: dict[str, Any] = {"project": PROJECT, "entity": ENTITY, "id": "r1", "settings": settings}
    sdk_run = wandb.init(mode="online", reinit="create_new", **kw)
    for i in range(3):
        sdk_run.log({"x": i})
    sdk_run.finish()
    sdk_run = wandb.init(mode="online", reinit="create_new", resume="allow", **kw)
    try:
        assert sdk_run.starting_step == 3
        live = _Live(run=sdk_run, dest_id=f"{ENTITY}/{PROJECT}/r1", source_id="s", next_step=0)
        sink = WandbMetricSink(live, "mlflow_step", lambda k: k, Notices())
        sink.add(MetricChunk(key="y", steps=[0], timestamps=[T0], values=[1.0]))
        with pytest.raises(RunError, match="dropped"):
            sink.flush()
    finally:
        sdk_run.finish(exit_code=1)
    assert [row["_step"] for row in server.get_run(ENTITY, PROJECT, "r1").history] == [0, 1, 2]


def test_resume_starts_at_the_servers_next_step(tmp_path: Path, server: FakeWandbServer) -> None:
    """What the writer counts from after a resume is the step wandb-core accepts next."""
    import wandb

    settings = wandb.Settings(
        api_key=server.api_key, base_url=server.url, silent=True, console="off"
    )
    sdk_run = wandb.init(mode="online", project=PROJECT, entity=ENTITY, id="r2", settings=settings)
    for i in range(4):
        sdk_run.log({"x": i})
    sdk_run.finish()
    writer = WandbWriter(f"{ENTITY}/{PROJECT}?base_url={server.url}")
    try:
        writer.begin_update(f"{ENTITY}/{PROJECT}/r2")
        live = writer._get_live(f"{ENTITY}/{PROJECT}/r2")
        assert live.next_step == 4
    finally:
        writer.close()


def _raw_steps(folder: Path) -> list[int]:
    """``_step`` of every history record in an offline run folder's transaction log."""
    import json

    [log] = folder.glob("*.wandb")
    steps = []
    for _, rec in TxlogReader(log).records():
        if rec.WhichOneof("record_type") == "history":
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                if key == "_step":
                    steps.append(int(json.loads(item.value_json)))
    return steps


def test_offline_append_continues_the_step_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, each sync writes a new folder for the same run id: its rows continue the
    ``_step`` count of the earlier folders (``wandb sync`` uploads one increasing
    history), and the bridge's reader sees every source point exactly once."""
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    src = Source(tmp_path)
    out, state = tmp_path / "out", tmp_path / "state.db"
    assert _sync(src, f"wandb-offline:{out}", state).exit_code() == 0
    added = src.more()
    second = _sync(src, f"wandb-offline:{out}", state)
    assert second.exit_code() == 0 and _one(second).points_written == added

    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    steps = [s for f in folders for s in _raw_steps(f)]
    # 10 rows (acc shares loss's rows at steps 0-4), then 7 (no two new points share one)
    assert steps == list(range(17))

    reader = WandbOfflineReader(str(out), ReaderOptions())
    try:
        [header] = list(reader.list_runs())
        got: dict[str, Counter[Point]] = {key: Counter() for key in KEYS}
        for item in reader.iter_history(reader.read_run(header)):
            if isinstance(item, MetricChunk) and item.key in KEYS:
                for s, t, v in zip(item.steps, item.timestamps, item.values, strict=True):
                    got[item.key][(s, t, v)] += 1
    finally:
        reader.close()
    assert got == src.points()
    assert not any(math.isnan(v) for c in got.values() for _, _, v in c)


def test_fake_server_reports_history_rows_out_of_step_order() -> None:
    """The loopback server is at least as strict as a real one about one increasing
    ``_step`` series: a streamed row at or below the previous step is reported; a chunk
    sent again at its offset (a retry) is not."""
    srv = FakeWandbServer()
    try:
        run, _ = srv.uploads.upsert_run({"name": "r", "modelName": PROJECT, "entityName": ENTITY})

        def stream(offset: int, *steps: int) -> None:
            lines = [f'{{"_step": {s}, "x": 1}}' for s in steps]
            body = {"files": {"wandb-history.jsonl": {"offset": offset, "content": lines}}}
            srv.uploads.file_stream(ENTITY, PROJECT, "r", body)

        stream(0, 0, 1, 2)
        stream(0, 0, 1, 2)  # retried chunk
        stream(3, 3)
        assert srv.errors == []
        stream(4, 1, 4, 4)
        assert srv.errors == [
            "run r: history row with _step 1 after _step 3",
            "run r: history row with _step 4 after _step 4",
        ]
        assert [row["_step"] for row in run.history] == [0, 1, 2, 3, 1, 4, 4]
    finally:
        srv.stop()
