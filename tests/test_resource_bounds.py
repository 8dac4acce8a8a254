"""Resource bounds of a sync pass (issue 11).

- Planning and applying hold O(workers) run bodies, not one per run of the pass: counted
  with weak references to every ``Run`` the real MLflow reader returns, across 50 runs with
  ``workers=2`` (skip and fail policies, dry run). Parents are still written before their
  children, whose copies name the parent's copy.
- The scheduler itself (``engine.pipeline``): children after their parents' apply, however
  the listing orders them; a parent cycle still gets applied; never more than ``workers``
  tasks (and bodies) at once.
- A dry run with ``--full`` downloads no artifact content from a remote artifact store: an
  ``mlflow server`` serving ``mlflow-artifacts:``, every request counted by a loopback proxy.
- The watermark commit writes only the keys that changed (its cost: bench/watermark_commit.py).
"""

from __future__ import annotations

import gc
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fakes.fault_proxy import FaultProxy
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.engine.model import RunPlan
from bridge.engine.pipeline import Pipeline
from bridge.engine.plan import Planned
from bridge.schema import Project, Run, RunHeader
from bridge.state import StateStore

T0 = 1_650_000_000_000
WORKERS = 2
BOUND = 2 * WORKERS + 1
FAMILIES, CHILDREN = 10, 4  # 10 parents with 4 children each: 50 runs


# --------------------------------------------------------------------------- bodies held


class Live:
    """Weak references to objects (models are unhashable: no WeakSet): how many live."""

    def __init__(self) -> None:
        self._refs: list[weakref.ref[Any]] = []

    def add(self, obj: object) -> None:
        self._refs = [r for r in self._refs if r() is not None]
        self._refs.append(weakref.ref(obj))

    def __len__(self) -> int:
        return sum(1 for r in self._refs if r() is not None)


class BodyCounter:
    """Every ``Run`` the reader returns, weakly: how many are alive at most, and reads."""

    def __init__(self) -> None:
        self.live = Live()
        self.max_live = 0
        self.reads = 0
        self._lock = threading.Lock()

    def wrap(self, read_run: Callable[..., Run]) -> Callable[..., Run]:
        def counted(reader: Any, header: RunHeader) -> Run:
            run = read_run(reader, header)
            with self._lock:
                self.reads += 1
                self.live.add(run)
                if len(self.live) > BOUND:  # only garbage in a cycle may inflate the count
                    gc.collect()
                self.max_live = max(self.max_live, len(self.live))
            return run

        return counted


def _make_families(uri: str) -> dict[str, str]:
    """50 runs: 10 parents with 4 nested children each. Half the families have children
    that started before their parent (listed on the other side of it). Run name -> id."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("families")
    ids: dict[str, str] = {}
    for f in range(FAMILIES):
        parent_start = T0 + f * 100 + (50 if f % 2 else 0)
        parent = client.create_run(exp, start_time=parent_start, run_name=f"f{f}")
        ids[f"f{f}"] = pid = parent.info.run_id
        client.log_batch(
            pid,
            params=[Param("family", str(f))],
            metrics=[Metric("loss", 1 / (s + 1), T0 + s, s) for s in range(5)],
        )
        client.set_terminated(pid, "FINISHED", end_time=parent_start + 99)
        for c in range(CHILDREN):
            start = T0 + f * 100 + (c if f % 2 else 60 + c)
            child = client.create_run(
                exp, start_time=start, run_name=f"f{f}-c{c}", tags={"mlflow.parentRunId": pid}
            )
            ids[f"f{f}-c{c}"] = cid = child.info.run_id
            client.log_batch(cid, metrics=[Metric("acc", c / 10, T0 + c, c)])
            client.set_terminated(cid, "FINISHED", end_time=start + 1)
    return ids


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('families') / 'src.db'}"
    _make_families(uri)
    return uri


@pytest.fixture
def bodies(monkeypatch: pytest.MonkeyPatch) -> BodyCounter:
    counter = BodyCounter()
    monkeypatch.setattr(MlflowReader, "read_run", counter.wrap(MlflowReader.read_run))
    return counter


def _dest_runs(uri: str) -> dict[str, Any]:
    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_name: r for r in client.search_runs(exps, max_results=1000)}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["skip", "fail", "dry-run"])
def test_a_sync_holds_a_bounded_number_of_run_bodies(
    families: str, bodies: BodyCounter, tmp_path: Path, mode: str
) -> None:
    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    plan = api.sync(
        f"mlflow:{families}",
        f"mlflow:{dest}",
        state=str(tmp_path / "state.db"),
        workers=WORKERS,
        on_conflict="fail" if mode == "fail" else "skip",
        dry_run=mode == "dry-run",
    )
    runs = FAMILIES * (1 + CHILDREN)
    assert len(plan.runs) == runs
    assert bodies.reads >= runs
    # Before: every planned run's body stayed in memory until the apply phase (50 here).
    assert bodies.max_live <= BOUND, f"{bodies.max_live} run bodies alive at once"
    if mode == "dry-run":
        assert {r.outcome for r in plan.runs} == {"skipped"}
        assert {r.action for r in plan.runs} == {"create"}
        return
    assert {r.outcome for r in plan.runs} == {"done"}, [r.error for r in plan.runs if r.error]
    if mode == "fail":  # planned first, bodies dropped, read again to be written
        assert bodies.reads == 2 * runs
    copies = _dest_runs(dest)
    assert len(copies) == runs
    for f in range(FAMILIES):
        parent = copies[f"f{f}"]
        assert parent.data.params == {"family": str(f)}
        for c in range(CHILDREN):
            child = copies[f"f{f}-c{c}"]
            assert child.data.tags.get("mlflow.parentRunId") == parent.info.run_id, (f, c)


# --------------------------------------------------------------------------- the scheduler


@pytest.mark.e2e
def test_a_sync_keeps_no_listed_header_while_runs_are_planned(
    families: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing is kept on disk (engine/listing.py), the pass keeps source ids only:
    no header the listing made is alive while runs are read. Before: all 50 were (the
    pass held ``list(reader.list_runs())`` to its end, ~1.5 KB a run)."""
    listed, alive = Live(), []
    header_of, read_run = MlflowReader.header_of, MlflowReader.read_run

    def counted(reader: Any, *args: Any, **kwargs: Any) -> RunHeader:
        header = header_of(reader, *args, **kwargs)
        listed.add(header)
        return header

    def reading(reader: Any, header: RunHeader) -> Run:
        alive.append(len(listed))
        return read_run(reader, header)

    monkeypatch.setattr(MlflowReader, "header_of", counted)
    monkeypatch.setattr(MlflowReader, "read_run", reading)
    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    plan = api.sync(f"mlflow:{families}", f"mlflow:{dest}", state=str(tmp_path / "state.db"))
    assert {r.outcome for r in plan.runs} == {"done"}
    assert len(alive) >= FAMILIES * (1 + CHILDREN)  # children waiting are read again
    assert max(alive) == 0, f"{max(alive)} listed headers alive while runs were read"


def _header(sid: str) -> RunHeader:
    return RunHeader(
        source_id=sid, native_id=sid, project=Project(source_id="p", name="p"), fingerprint="f"
    )


class Recorder:
    """Plan and apply functions for :class:`Pipeline` with seeded delays, recording the
    order of events, tasks in flight and bodies alive."""

    def __init__(self, parents: dict[str, str | None], seed: int, apply: set[str]) -> None:
        self.parents, self.to_apply = parents, apply
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.in_flight = self.max_in_flight = 0
        self.live = Live()
        self.max_live = 0
        self.reread: list[str] = []

    def _body(self, sid: str) -> Run:
        run = Run(header=_header(sid), parent_source_id=self.parents[sid])
        with self.lock:
            self.live.add(run)
            self.max_live = max(self.max_live, len(self.live))
        return run

    def _task(self, kind: str, sid: str, work: Callable[[], None]) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.events.append((f"{kind}-start", sid))
        time.sleep(self.rng.random() * 0.004)
        work()
        with self.lock:
            self.events.append((f"{kind}-end", sid))
            self.in_flight -= 1

    def plan(self, header: RunHeader) -> Planned:
        out: list[Planned] = []
        sid = header.source_id

        def work() -> None:
            line = RunPlan(source_id=sid, project="p", action="create")
            out.append(Planned(plan=line, header=header, run=self._body(sid)))

        self._task("plan", sid, work)
        return out[0]

    def settle(self, p: Planned) -> bool:
        return p.plan.source_id in self.to_apply

    def apply(self, p: Planned) -> None:
        sid = p.plan.source_id

        def work() -> None:
            if p.run is None:  # dropped while it waited: read again (as sync does)
                self.reread.append(sid)
                p.run = self._body(sid)
            assert p.run.parent_source_id == self.parents[sid]

        self._task("apply", sid, work)

    def index(self, event: str, sid: str) -> int:
        return self.events.index((event, sid))


def _families_listing(seed: int) -> tuple[list[RunHeader], dict[str, str | None]]:
    """Runs of 6 families (parent, 3 children, 1 grandchild each) listed in random order,
    and a pair of runs naming each other as parent (a cycle)."""
    parents: dict[str, str | None] = {}
    for f in range(6):
        parents[f"f{f}"] = None
        for c in range(3):
            parents[f"f{f}-c{c}"] = f"f{f}"
        parents[f"f{f}-c0-g"] = f"f{f}-c0"
    parents["cycle-a"], parents["cycle-b"] = "cycle-b", "cycle-a"
    parents["self"] = "self"
    sids = sorted(parents)
    random.Random(seed).shuffle(sids)
    return [_header(s) for s in sids], parents


@pytest.mark.parametrize("seed", range(6))
def test_the_pipeline_applies_parents_first_with_at_most_workers_bodies(seed: int) -> None:
    headers, parents = _families_listing(seed)
    skipped = {"f1", "f3-c0"}  # planned, nothing to write: their children need not wait
    rec = Recorder(parents, seed, apply=set(parents) - skipped)
    pipeline = Pipeline(3, rec.plan, rec.settle, rec.apply)
    planned, aside = pipeline.run(headers)
    assert [line.source_id for line in planned] == [h.source_id for h in headers]
    assert aside == []
    assert rec.max_in_flight <= 3
    assert rec.max_live <= 3, f"{rec.max_live} bodies alive at once"
    applied = {sid for kind, sid in rec.events if kind == "apply-end"}
    assert applied == set(parents) - skipped  # the cycle and the self-parent included
    for sid, parent in parents.items():
        in_cycle = parent == sid or parents.get(parent or "") == sid
        if sid in applied and parent in applied and not in_cycle:
            assert rec.index("apply-end", parent) < rec.index("apply-start", sid), sid
        if parent in skipped:  # it waited for its parent's planning only
            assert rec.index("plan-end", parent) < rec.index("apply-start", sid)
    assert len(rec.live) == 0  # every body dropped (the pass keeps plan lines only)


def test_the_pipeline_can_plan_everything_first_then_apply_parents_first() -> None:
    """--on-conflict fail: nothing applied while planning; every body dropped; then the
    runs set aside are applied, parents first, each body read again."""
    headers, parents = _families_listing(7)
    rec = Recorder(parents, 7, apply=set(parents))
    all_planned: list[int] = []
    pipeline = Pipeline(2, rec.plan, rec.settle, rec.apply)
    planned, aside = pipeline.run(
        headers, apply_now=False, all_planned=lambda: all_planned.append(len(rec.events))
    )
    assert not any(kind.startswith("apply") for kind, _ in rec.events)
    assert all_planned == [len(rec.events)]  # the plan.done hook: once, after the last plan
    assert {p.plan.source_id for p in aside} == set(parents)
    assert all(p.run is None and p.body_read for p in aside)
    assert len(rec.live) == 0
    again, left = pipeline.run([], later=aside, all_planned=lambda: all_planned.append(-1))
    assert again == [] and left == []
    assert all_planned == [len(headers) * 2, -1]  # no runs to plan: called at once
    assert sorted(rec.reread) == sorted(parents)
    assert rec.max_live <= 2
    for sid, parent in parents.items():
        if parent is not None and parent != sid and parents[parent] != sid:
            assert rec.index("apply-end", parent) < rec.index("apply-start", sid), sid


# --------------------------------------------------------------------------- no downloads


@pytest.fixture
def served_source(mlflow_server: str, tmp_path: Path) -> Iterator[tuple[str, FaultProxy]]:
    """A run whose artifacts the server stores and serves (``mlflow-artifacts:``), read
    through a loopback proxy that counts every request."""
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.create_experiment("served")
    run = client.create_run(exp, start_time=T0, run_name="served")
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "weights.bin").write_bytes(b"w" * 4096)
    (tmp_path / "art" / "notes.txt").write_text("hello")
    client.log_artifacts(run.info.run_id, str(tmp_path / "art"))
    client.log_metric(run.info.run_id, "loss", 0.5, timestamp=T0, step=0)
    client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 10)
    with FaultProxy(mlflow_server, lifetime_s=300) as proxy:
        yield proxy.url, proxy


def _artifact_gets(proxy: FaultProxy) -> list[str]:
    """Artifact content downloads (a listing is ``GET .../artifacts?path=``: not content)."""
    prefix = "GET /api/2.0/mlflow-artifacts/artifacts/"
    return [r for r, n in proxy.log.requests.items() if r.startswith(prefix) for _ in range(n)]


@pytest.mark.e2e
def test_a_full_dry_run_downloads_no_artifact_content(
    served_source: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    source, proxy = served_source
    source, state = f"mlflow:{source}", str(tmp_path / "state.db")
    dest = f"mlflow:sqlite:///{tmp_path / 'dest.db'}"
    first = api.sync(source, dest, state=state, workers=1)
    assert [r.outcome for r in first.runs] == ["done"], first.runs[0].error
    assert len(_artifact_gets(proxy)) == 2  # the copy downloads each file once: counted
    proxy.log.requests.clear()

    plan = api.diff(source, dest, state=state, full=True, workers=1)
    assert _artifact_gets(proxy) == [], "a dry run downloaded artifact content"
    (line,) = plan.runs
    assert line.outcome != "failed", line.error
    assert line.files_new == 0
    notes = [w.message for w in line.warnings if w.code == "compared-by-size"]
    assert notes and notes[0].startswith("2 file(s) without a local copy compared by size")
    assert any(r.startswith("GET ") or r.startswith("POST ") for r in proxy.log.requests)

    # A real --full sync does compare content: it downloads to hash (what the diff skips).
    proxy.log.requests.clear()
    again = api.sync(source, dest, state=state, full=True, workers=1)
    assert [r.outcome for r in again.runs] == ["unchanged"]
    assert len(_artifact_gets(proxy)) == 2


# --------------------------------------------------------------------------- watermarks


class StatementCounter:
    """Rows each INSERT a state store's engine runs writes, per table (an ``executemany``
    is one statement)."""

    def __init__(self, store: StateStore) -> None:
        self.inserts: list[tuple[str, int]] = []
        sa.event.listen(store.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        words = statement.split()
        if words[0].upper() == "INSERT":
            rows = len(params) if isinstance(params, list) else 1
            self.inserts.append((words[2].strip('"'), rows))

    def rows(self, table: str) -> int:
        return sum(n for t, n in self.inserts if t == table)


def test_a_watermark_commit_writes_the_changed_keys_in_one_statement_per_table(
    tmp_path: Path,
) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    dest, sid = "mlflow:d", "run"
    keys = [f"k{i}" for i in range(3000)]
    zero = "0" * 16
    store.set_watermarks(dest, sid, dict.fromkeys(keys, 5), digests={k: (5, zero) for k in keys})
    counter = StatementCounter(store)
    store.set_watermarks(dest, sid, {"k1": 6, "k2": 9, "k3": 1}, digests={"k1": (6, "a" * 16)})
    assert counter.inserts == [("bridge_streams", 3), ("bridge_stream_digests", 1)]
    got = store.get_watermarks(dest, sid)
    assert (got["k1"], got["k2"], got["k3"], got["k4"]) == (6, 9, 5, 5)  # never lowered
    digests = store.get_stream_digests(dest, sid)
    assert (digests["k1"], digests["k2"]) == ((6, "a" * 16), (5, zero))


@pytest.mark.e2e
def test_a_sync_commits_watermarks_of_the_keys_it_wrote_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with 400 metric keys; one new point on one key: the second sync records one
    watermark and one digest (it used to rewrite all 400 watermarks at every commit)."""
    src, dest = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dest.db'}"
    client = MlflowClient(tracking_uri=src)
    run_id = client.create_run(client.create_experiment("wide"), start_time=T0).info.run_id
    points = [Metric(f"layer{k}/norm", k + s, T0 + s, s) for k in range(400) for s in range(2)]
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i : i + 1000])
    stores: list[tuple[StateStore, StatementCounter]] = []

    class CountedStore(StateStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            stores.append((self, StatementCounter(self)))

    monkeypatch.setattr(api, "StateStore", CountedStore)
    state = str(tmp_path / "state.db")
    first = api.sync(f"mlflow:{src}", f"mlflow:{dest}", state=state, workers=1)
    assert [r.outcome for r in first.runs] == ["done"]
    assert stores[-1][1].rows("bridge_streams") == 400

    client.log_metric(run_id, "layer7/norm", 99.0, timestamp=T0 + 5, step=5)
    again = api.sync(f"mlflow:{src}", f"mlflow:{dest}", state=state, workers=1)
    assert [(r.action, r.outcome, r.points_written) for r in again.runs] == [("update", "done", 1)]
    counter = stores[-1][1]
    assert counter.rows("bridge_streams") == 1
    assert counter.rows("bridge_stream_digests") == 1
    marks = StateStore(state).get_watermarks(first.dest, first.runs[0].source_id)
    assert len(marks) == 400
    assert (marks["layer7/norm"], marks["layer8/norm"]) == (3, 2)
