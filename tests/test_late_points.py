"""Issue 10 item 4: points that arrive with an earlier timestamp are copied, exactly once.

An MLflow source orders a key's points by timestamp, so a point logged late (another
process, ``log_batch`` with explicit timestamps) lands inside the part of the history a
watermark says is copied. Before per-stream digests the bridge re-sent an old point and
skipped the new one (or, with a fingerprint blind to it, did not look at the run at all).
Real MLflow stores (sqlite, ``mlflow server``), real W&B offline folders and the loopback
W&B server; the merge itself is checked with hypothesis.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import start_mlflow_server, stop_mlflow_server
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.engine.streams import PointDifference, StreamGate, digest_of
from bridge.reporting import as_dict
from bridge.schema import MetricChunk
from bridge.state import StateStore

T0 = 1_700_000_000_000
Point = tuple[int, int, float]  # (step, timestamp, value)


# ---------------------------------------------------------------------------- helpers


def _key(p: Point) -> tuple[int, int, str]:
    """Sortable and NaN-safe: NaN == NaN and -0.0 == 0.0 here, as destinations compare."""
    return (p[0], p[1], "nan" if math.isnan(p[2]) else repr(p[2] + 0.0))


def _sorted(points: list[Point]) -> list[tuple[int, int, str]]:
    return sorted(_key(p) for p in points)


def _chunks(key: str, points: list[Point], size: int) -> Iterator[MetricChunk]:
    for i in range(0, len(points), size):
        part = points[i : i + size]
        yield MetricChunk(
            key=key,
            steps=[p[0] for p in part],
            timestamps=[p[1] for p in part],
            values=[p[2] for p in part],
        )


def _points(chunks: Iterator[MetricChunk] | list[MetricChunk]) -> list[Point]:
    return [
        (s, t, v) for c in chunks for s, t, v in zip(c.steps, c.timestamps, c.values, strict=True)
    ]


class Source:
    """A sqlite MLflow source with one run: ``loss`` (40 points, one per 10 ms) and
    ``acc`` (10 points); :meth:`late` logs points that land inside the copied history."""

    def __init__(self, uri: str, tmp: Path, experiment: str = "late") -> None:
        self.uri = uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=uri)
        art = str(tmp / f"{experiment}-art")
        exp = self.client.create_experiment(experiment, artifact_location=art)
        self.run_id = self.client.create_run(exp, start_time=T0, run_name="r").info.run_id
        loss = [Metric("loss", 1.0 / (i + 1), T0 + 10 * i, i) for i in range(40)]
        acc = [Metric("acc", i / 10, T0 + 10 * i, i) for i in range(10)]
        self.client.log_batch(self.run_id, metrics=loss + acc)
        self.client.set_terminated(self.run_id, "FINISHED", end_time=T0 + 60_000)

    def late(self) -> int:
        """An older timestamp mid-history, a lower step with the newest timestamp (not the
        key's latest: MLflow's latest is the highest step), and a late NaN; returns 3."""
        self.client.log_batch(
            self.run_id,
            metrics=[
                Metric("loss", 42.0, T0 + 15, 1),  # between points #1 and #2
                Metric("loss", 7.0, T0 + 50_000, 3),  # lower step than the latest (39)
                Metric("acc", math.nan, T0 + 5, 0),  # NaN, before point #1
            ],
        )
        return 3

    def history(self, client: MlflowClient, run_id: str, key: str) -> list[Point]:
        return [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]


def _dest_run(dest_uri: str, experiment: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=dest_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    [run] = client.search_runs([exp.experiment_id])
    return client, run.info.run_id


def _assert_same_history(src: Source, dest_uri: str) -> None:
    client, run_id = _dest_run(dest_uri, src.experiment)
    for key in ("loss", "acc"):
        have = _sorted(src.history(client, run_id, key))
        want = _sorted(src.history(src.client, src.run_id, key))
        assert have == want, key  # every point, exactly once (no duplicates, none lost)


def _one_run(plan: Any) -> Any:
    [run] = plan.runs
    return run


def _late_points_round(src: Source, source: str, dest: str, state: str) -> None:
    """First sync, late points, diff, sync: the diff announces them, the sync writes
    exactly them (O(new) writes), the copy equals the source, the next sync is a no-op."""
    first = api.sync(source, dest, state=state)
    assert first.exit_code() == 0, first
    assert _one_run(first).points_written == 50
    added = src.late()

    preview = api.diff(source, dest, state=state)
    assert (_one_run(preview).action, _one_run(preview).points_new) == ("update", added)

    second = api.sync(source, dest, state=state)
    assert second.exit_code() == 0, [(r.source_id, r.error) for r in second.runs]
    run = _one_run(second)
    assert (run.action, run.outcome, run.points_written) == ("update", "done", added)
    assert as_dict(second)["points_written"] == added
    _assert_same_history(src, dest.removeprefix("mlflow:"))

    third = api.sync(source, dest, state=state)
    assert (_one_run(third).action, _one_run(third).points_written) == ("unchanged", 0)


# ---------------------------------------------------------------------------- unit: merge

stream_points = st.lists(
    st.tuples(
        st.integers(0, 50),
        st.integers(0, 10_000),
        st.sampled_from([0.0, -0.0, 1.5, -2.25, math.nan, math.inf, 1e300]),
    ),
    min_size=0,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    written=stream_points,
    inserted=st.lists(
        st.tuples(st.integers(0, 10**6), stream_points.map(lambda x: x[:1])), max_size=8
    ),
    chunk=st.integers(1, 7),
    sort_by_time=st.booleans(),
)
def test_gate_and_merge_write_exactly_what_the_destination_lacks(
    written: list[Point], inserted: list[tuple[int, list[Point]]], chunk: int, sort_by_time: bool
) -> None:
    """A destination holds ``written`` (synced, digest recorded). The source then has more
    points, anywhere in its order: at random positions, or where their timestamp puts them
    (MLflow's order). Appended + merged = exactly the new points; when nothing landed
    inside the copied prefix, nothing is merged and the appended part is just the tail."""
    before = sorted(written, key=lambda p: (p[1], p[0])) if sort_by_time else list(written)
    now = list(before)
    for position, new in inserted:
        now[position % (len(now) + 1) : position % (len(now) + 1)] = new
    if sort_by_time:
        now.sort(key=lambda p: (p[1], p[0]))  # stable: a late point lands among old ones
    gate = StreamGate(
        watermarks={"k": len(before)},
        recorded={"k": (len(before), sum(digest_of(c) for c in _chunks("k", before, 9)) % 2**64)},
        merge_unknown=True,
    )
    appended = _points([p for c in _chunks("k", now, chunk) if (p := gate.admit(c)) is not None])
    merged: list[Point] = []
    if gate.to_merge():
        with PointDifference() as diff:
            for c in _chunks("k", before, 5):
                diff.add_dest(c)
            for c in _chunks("k", now, 5):
                diff.add_source(c)
            merged = _points(list(diff.missing()))
            assert diff.source["k"][0] == len(now)
        assert appended == []  # a merged key is not appended to as well
    assert Counter(_sorted(before + appended + merged)) == Counter(_sorted(now))
    if now[: len(before)] == before:  # nothing landed inside: plain O(new) append
        assert not gate.to_merge() and appended == now[len(before) :]


def test_unknown_digest_merges_only_where_points_can_be_read_back() -> None:
    """A watermark without a recorded digest (older state, or counts rebuilt from the
    destination): merged if the destination reads its points back, else trusted."""
    points = [(i, T0 + i, float(i)) for i in range(10)]
    for readable, merged in ((True, {"k"}), (False, set())):
        gate = StreamGate(watermarks={"k": 6}, recorded={}, merge_unknown=readable)
        out = [gate.admit(c) for c in _chunks("k", points, 4)]
        assert gate.to_merge() == merged
        tail = _points([c for c in out if c is not None])
        assert tail == ([] if readable else points[6:])
    # a digest recorded for another point count than the watermark's is not trusted
    stale = StreamGate(watermarks={"k": 6}, recorded={"k": (5, 123)}, merge_unknown=True)
    for c in _chunks("k", points, 4):
        stale.admit(c)
    assert stale.to_merge() == {"k"}


# ---------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_sqlite_to_sqlite_late_points_arrive_exactly_once(tmp_path: Path) -> None:
    src = Source(f"sqlite:///{tmp_path / 'src.db'}", tmp_path)
    dest = f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    _late_points_round(src, f"mlflow:{src.uri}", dest, str(tmp_path / "state.db"))


@pytest.mark.e2e
def test_lost_state_store_then_late_point_is_merged_from_the_destination(
    tmp_path: Path,
) -> None:
    """The state store is lost: the run is re-linked by its identity tag (watermarks from
    the destination's counts, no digests). A late point then is merged against the
    destination's own points: written once, nothing re-sent."""
    src = Source(f"sqlite:///{tmp_path / 'src.db'}", tmp_path)
    source, dest = f"mlflow:{src.uri}", f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    assert api.sync(source, dest, state=str(tmp_path / "old-state.db")).exit_code() == 0
    state = str(tmp_path / "new-state.db")
    relinked = api.sync(source, dest, state=state)
    assert _one_run(relinked).action == "unchanged"
    added = src.late()
    again = api.sync(source, dest, state=state)
    assert _one_run(again).points_written == added, _one_run(again)
    _assert_same_history(src, dest.removeprefix("mlflow:"))
    store = StateStore(state)
    try:
        sid = f"{source}#{src.run_id}"
        assert store.get_watermarks(dest, sid) == {"loss": 42, "acc": 11}
        assert {k: n for k, (n, _) in store.get_stream_digests(dest, sid).items()} == {
            "loss": 42,
            "acc": 11,
        }
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``mlflow server`` for this module's tests (each uses its own experiment)."""
    url, proc = start_mlflow_server(tmp_path_factory.mktemp("late-server"))
    yield url
    stop_mlflow_server(proc)


@pytest.mark.e2e
def test_sqlite_to_mlflow_server_late_points_arrive_exactly_once(
    tmp_path: Path, server: str
) -> None:
    """The destination is an ``mlflow server``: its points are read back page by page."""
    src = Source(f"sqlite:///{tmp_path / 'src.db'}", tmp_path, "late-into-server")
    _late_points_round(src, f"mlflow:{src.uri}", f"mlflow:{server}", str(tmp_path / "s.db"))


@pytest.mark.e2e
def test_server_source_late_point_is_found_by_full(tmp_path: Path, server: str) -> None:
    """A REST source has no cheap per-key counts: a late point that does not become the
    key's latest leaves the fingerprint as it was (documented); ``--full`` reads the
    history, finds it and merges it exactly."""
    src = Source(server, tmp_path, "late-from-server")
    source = f"mlflow:{server}"
    dest = f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    state = str(tmp_path / "state.db")
    only = ReaderOptions(experiments=["late-from-server"])
    assert api.sync(source, dest, state=state, reader_options=only).exit_code() == 0
    added = src.late()
    assert _one_run(api.sync(source, dest, state=state, reader_options=only)).action == (
        "unchanged"
    )
    preview = api.diff(source, dest, state=state, full=True, reader_options=only)
    assert _one_run(preview).points_new == added
    full = api.sync(source, dest, state=state, full=True, reader_options=only)
    assert full.exit_code() == 0, [(r.source_id, r.error) for r in full.runs]
    assert _one_run(full).points_written == added
    _assert_same_history(src, dest.removeprefix("mlflow:"))


@pytest.mark.e2e
def test_mlflow_to_wandb_offline_late_points_no_duplicates_no_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B keeps every row it is given (no dedupe): the merge reads the offline folders
    back and logs exactly the missing points; the bridge's reader sees the source's."""
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    src = Source(f"sqlite:///{tmp_path / 'src.db'}", tmp_path)
    source, out = f"mlflow:{src.uri}", tmp_path / "out"
    dest, state = f"wandb-offline:{out}", str(tmp_path / "state.db")
    assert api.sync(source, dest, state=state).exit_code() == 0
    added = src.late()
    second = api.sync(source, dest, state=state)
    assert second.exit_code() == 0, [(r.source_id, r.error) for r in second.runs]
    assert _one_run(second).points_written == added
    reader = WandbOfflineReader(str(out), ReaderOptions())
    try:
        [header] = list(reader.list_runs())
        got: dict[str, list[Point]] = {}
        for item in reader.iter_history(reader.read_run(header)):
            if isinstance(item, MetricChunk):
                got.setdefault(item.key, []).extend(_points([item]))
    finally:
        reader.close()
    for key in ("loss", "acc"):
        want = _sorted(src.history(src.client, src.run_id, key))
        assert _sorted(got[key]) == want, key


@pytest.mark.e2e
def test_wandb_server_destination_fails_loudly_instead_of_duplicating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A W&B server neither ignores duplicates nor can be read back reliably (its history
    lags the SDK's uploads): late points fail the run (exit 1) with the streams named, and
    no point is sent again (before: `unchanged`, or with --full one old point re-sent)."""
    from fakes.wandb_server import FakeWandbServer

    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    with FakeWandbServer() as srv:
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        src = Source(f"sqlite:///{tmp_path / 'src.db'}", tmp_path)
        source, state = f"mlflow:{src.uri}", str(tmp_path / "state.db")
        dest = f"wandb:acme/late?base_url={srv.url}"
        assert api.sync(source, dest, state=state, workers=1).exit_code() == 0
        src.late()
        second = api.sync(source, dest, state=state, workers=1)
        run = _one_run(second)
        assert second.exit_code() == 1 and run.outcome == "failed"
        assert run.error and "metric 'acc', 'loss': points arrived inside" in run.error
        assert "can neither read its points back nor ignore duplicates" in run.error
        assert run.points_written == 0  # nothing re-sent: no duplicate reaches the sink

        import wandb

        wapi = wandb.Api(api_key=srv.api_key, overrides={"base_url": srv.url})
        [copy] = list(wapi.runs("acme/late"))
        rows = list(copy.scan_history())
        assert sum(1 for r in rows if r.get("loss") is not None) == 40
        assert sum(1 for r in rows if r.get("acc") is not None) == 10
