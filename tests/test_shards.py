"""Sharded passes (`bridge sync --shard I/N`), the once-per-pass final step, deferred
parent links (issue 15): membership, pass bookkeeping, and end to end with 4 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import fresh_pg_database

from bridge.cli import main
from bridge.engine.shards import ShardSpec, parse_shard, shard_of
from bridge.errors import BridgeError
from bridge.state import StateStore

T0 = 1_650_000_000_000
N = 4


# ------------------------------------------------------------------------------ unit


def test_membership_is_a_stable_balanced_partition() -> None:
    ids = [f"mlflow:{uuid.UUID(int=i).hex}" for i in range(4000)]
    owners = [[s for s in range(N) if ShardSpec(s, N).owns(i)] for i in ids]
    assert all(len(o) == 1 for o in owners)  # every id in exactly one shard
    sizes = Counter(o[0] for o in owners)
    assert set(sizes) == set(range(N))
    assert max(sizes.values()) < 1.15 * min(sizes.values())  # roughly balanced
    # stable: the same answer in another interpreter (hash() is salted per process)
    code = "from bridge.engine.shards import shard_of; print(shard_of('mlflow:abc', 7))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(other.stdout) == shard_of("mlflow:abc", 7) == 4  # pinned


def test_parse_shard() -> None:
    assert parse_shard("2/4") == ShardSpec(2, 4)
    assert parse_shard("auto/3", {"JOB_COMPLETION_INDEX": "1"}) == ShardSpec(1, 3)
    assert str(ShardSpec(0, 5)) == "0/5"
    for bad in ["4/4", "1", "a/2", "1/0", "-1/3", "1/x"]:
        with pytest.raises(BridgeError):
            parse_shard(bad, {})
    with pytest.raises(BridgeError, match="JOB_COMPLETION_INDEX is unset"):
        parse_shard("auto/3", {})
    with pytest.raises(BridgeError, match="JOB_COMPLETION_INDEX is 'x'"):
        parse_shard("auto/3", {"JOB_COMPLETION_INDEX": "x"})


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--shard", "5/4"], {}, "index 5 is not below 4"),
        (["--shard", "auto/4"], {}, "JOB_COMPLETION_INDEX is unset"),
        (["--shard", "x"], {}, "--shard takes I/N"),
        (["--pass-id", "p1"], {}, "--pass-id goes with"),
        (["--finish-pass", "--shard", "0/2"], {}, "--finish-pass takes neither"),
    ],
)
def test_bad_shard_options_exit_2_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    env = {"JOB_COMPLETION_INDEX": "", **env}
    env.pop("JOB_COMPLETION_INDEX") if not env["JOB_COMPLETION_INDEX"] else None
    runner = CliRunner()
    src = f"mlflow:sqlite:///{tmp_path / 'src.db'}"
    dst = f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    old = os.environ.pop("JOB_COMPLETION_INDEX", None)
    try:
        res = runner.invoke(
            main, ["sync", src, dst, "--state", str(tmp_path / "s.db"), *args], env=env
        )
    finally:
        if old is not None:
            os.environ["JOB_COMPLETION_INDEX"] = old
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], res.output


def test_join_pass_opens_one_pass_and_the_final_step_once(tmp_path: Path) -> None:
    url = str(tmp_path / "state.db")
    stores = [StateStore(url) for _ in range(N)]
    ids: list[str] = [""] * N

    def join(i: int) -> None:
        ids[i] = stores[i].join_pass("src", "dst", N, i, f"h{i}")

    threads = [threading.Thread(target=join, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1  # four indices starting at once: one pass
    pid = ids[0]
    for i in range(N):
        stores[i].end_shard(pid, i, f"h{i}", 0, {"actions": {"create": 1}}, [])
    won: list[bool] = [False] * N

    def take(i: int) -> None:
        won[i] = stores[i].take_final(pid, f"h{i}")

    threads = [threading.Thread(target=take, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 1
    # an index that ended in this pass, or a pass whose final step was taken: a new pass
    again = stores[0].join_pass("src", "dst", N, 0, "h0")
    assert again != pid
    assert stores[1].join_pass("src", "dst", N, 1, "h1") == again
    assert stores[1].join_pass("src", "dst", N, 1, "h1b") == again  # not ended: taken over
    assert stores[0].pass_shards(again)[1]["holder"] == "h1b"
    for s in stores:
        s.close()


# ------------------------------------------------------------------------------ e2e


@pytest.fixture
def pg_state() -> Iterator[str]:
    """A second fresh PostgreSQL database (the state store beside the destination's)."""
    with fresh_pg_database() as url:
        yield url


def _make_source(uri: str, tmp: Path, sid: Any) -> dict[str, Any]:
    """40 runs in 2 experiments; 8 children whose parent is in another shard (of 4); a
    registered model with a version."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [client.create_experiment("vision"), client.create_experiment("nlp")]
    parents: list[str] = []
    for i in range(32):
        run = client.create_run(exps[i % 2], start_time=T0 + i, run_name=f"run-{i}")
        client.log_metric(run.info.run_id, "loss", 1.0 / (i + 1), timestamp=T0, step=0)
        client.log_param(run.info.run_id, "i", str(i))
        client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 100)
        parents.append(run.info.run_id)
    children: dict[str, str] = {}
    k = 0
    while len(children) < 8:
        parent = parents[k % len(parents)]
        k += 1
        pshard = shard_of(sid(parent), N)
        run = client.create_run(
            exps[0],
            start_time=T0 + 500 + k,
            run_name=f"child-{k}",
            tags={"mlflow.parentRunId": parent},
        )
        cid = run.info.run_id
        client.set_terminated(cid, "FINISHED", end_time=T0 + 600)
        if shard_of(sid(cid), N) == pshard:
            client.delete_run(cid)  # only children whose parent is in another shard
            continue
        children[cid] = parent
    art = tmp / "weights.txt"
    art.write_text("weights")
    client.log_artifact(parents[0], str(art), "model")
    client.create_registered_model("clf")
    client.create_model_version("clf", f"runs:/{parents[0]}/model", run_id=parents[0])
    return {
        "runs": [sid(r) for r in parents + list(children)],
        "children": {sid(c): sid(p) for c, p in children.items()},
    }


#: `bridge` with every run's apply failing (an index that ends with exit 1).
FAILING = """
import sys
import bridge.engine.sync as s
def broken(*args, **kwargs):
    raise RuntimeError("injected: this index cannot write")
s.apply_run = broken
from bridge.cli import main
main(prog_name="bridge")
"""


def _bridge(*args: str, index: int | None = None, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline", **env}
    if index is not None:
        full["JOB_COMPLETION_INDEX"] = str(index)
    cmd = ["-c", FAILING] if full.pop("FAIL_RUNS", None) else ["-m", "bridge.cli"]
    return subprocess.Popen(
        [sys.executable, *cmd, *args],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _shards(
    src: str, dst: str, state: str, indices: range | list[int], *extra: str, **env: str
) -> dict[int, tuple[int, dict[str, Any], str]]:
    """Run shard processes in parallel: index -> (exit code, --json summary, stderr)."""
    procs = {
        i: _bridge(
            "sync",
            src,
            dst,
            "--state",
            state,
            "--shard",
            f"auto/{N}",
            "--json",
            *extra,
            index=i,
            **env,
        )
        for i in indices
    }
    out = {}
    for i, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        data = json.loads(stdout) if stdout.strip().startswith("{") else {}
        out[i] = (p.returncode, data, stderr)
    return out


def _dest_runs(dst_uri: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=dst_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(exps, max_results=1000))


def _check_copy(src: str, dst: str, state: str, dst_uri: str, source: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    from bridge import api

    runs = _dest_runs(dst_uri)
    by_source = Counter(r.data.tags.get("bridge.source_id") for r in runs)
    expected = set(source["runs"])
    assert {k for k in by_source if k in expected} == expected
    assert all(by_source[k] == 1 for k in expected)  # every run exactly once
    copy = {r.data.tags["bridge.source_id"]: r for r in runs}
    for child, parent in source["children"].items():
        linked = copy[child].data.tags.get("mlflow.parentRunId")
        assert linked == copy[parent].info.run_id, child
    client = MlflowClient(tracking_uri=dst_uri)
    versions = client.search_model_versions("name='clf'")
    assert len(versions) == 1
    assert versions[0].run_id == copy[source["runs"][0]].info.run_id
    from bridge.uris import open_writer

    writer = open_writer(dst)
    dest_display = writer.display_uri
    writer.close()
    store = StateStore(state)
    try:
        assert store.parent_links(dest_display) == []  # nothing left pending
        cycles = store.cycles()
        assert len(cycles) == 1  # the final step ran exactly once
        assert cycles[0]["dest_uri"] == dest_display
    finally:
        store.close()
    assert api.verify(src, dst, state=state).exit_code() == 0
    again = api.sync(src, dst, state=state)  # nothing left to create
    assert "create" not in again.counts() and "update" not in again.counts()
    assert again.exit_code() == 0


def _pair(tmp_path: Path, dst_db: str) -> tuple[str, str, dict[str, Any]]:
    from bridge.adapters.mlflow.ids import object_source_id
    from bridge.uris import open_reader

    src_uri = f"sqlite:///{tmp_path / 'src.db'}"
    reader = open_reader(f"mlflow:{src_uri}")
    display = reader.display_uri
    reader.close()
    source = _make_source(src_uri, tmp_path, lambda r: object_source_id(display, r))
    return f"mlflow:{src_uri}", f"mlflow:{dst_db}", source


@pytest.mark.e2e
def test_four_shards_on_postgres_state(
    tmp_path: Path, pg_database: str, pg_state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns artifact root: here
    src, dst, source = _pair(tmp_path, pg_database)
    results = _shards(src, dst, pg_state, range(N), "--pass-id", "job-uid-1")
    assert all(code == 0 for code, _, _ in results.values()), results
    assert sum(1 for _, data, _ in results.values() if data.get("final_step")) == 1
    assert {data["pass_id"] for _, data, _ in results.values()} == {"job-uid-1"}
    assert sum(len(data["runs"]) for _, data, _ in results.values()) == len(source["runs"])
    _check_copy(src, dst, pg_state, pg_database, source)
    store = StateStore(pg_state)
    try:
        row = store.get_pass("job-uid-1")
        assert row is not None and row["final_state"] == "done" and row["incomplete"] is None
        counts = store.cycles()[-1]["counts"]  # the pass (the plain sync after it: [0])
        assert counts["actions"]["create"] == len(source["runs"])
    finally:
        store.close()
    from bridge import api

    (pair,) = api.status(pg_state)
    (shown,) = pair["passes"]
    assert shown["pass_id"] == "job-uid-1" and shown["ended"] == list(range(N))
    assert shown["final"] == "done" and shown["not_ended"] == [] and not shown["incomplete"]


@pytest.mark.e2e
def test_shard_killed_and_restarted_on_sqlite_state(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns artifact root: here
    src, dst, source = _pair(tmp_path, pg_database)
    state = str(tmp_path / "state.db")
    # index 1 dies (SIGKILL) after its second run is created; the others end meanwhile
    results = _shards(src, dst, state, [0, 2, 3]) | _shards(
        src, dst, state, [1], BRIDGE_KILL_AT="apply.create.after_create_run#2"
    )
    assert results[1][0] == -9, results[1]
    assert all(results[i][0] == 0 for i in (0, 2, 3))
    assert not any(results[i][1].get("final_step") for i in (0, 2, 3))  # index 1 still "runs"
    _status_mid_first_pass(state, results)
    again = _shards(src, dst, state, [1])  # restarted: joins the same pass, ends it
    assert again[1][0] == 0, again
    assert again[1][1]["final_step"] is True
    assert again[1][1]["pass_id"] == results[0][1]["pass_id"]
    _check_copy(src, dst, state, pg_database, source)


def _status_mid_first_pass(state: str, results: dict[int, Any]) -> None:
    """`bridge status` while index 1 is down in the pair's first pass (no cycle record
    yet): the pair, its pass, the indices not ended and the copies completed so far."""
    done = sum(1 for i in (0, 2, 3) for r in results[i][1]["runs"] if r["outcome"] == "done")
    assert done > 0
    out, err = _bridge("status", "--state", state, "--json").communicate(timeout=120)
    assert out.strip().startswith("["), err
    (pair,) = json.loads(out)
    assert pair["last_cycle"] is None and pair["runs_known"] >= done
    (ps,) = pair["passes"]
    assert ps["ended"] == [0, 2, 3] and ps["not_ended"] == [1] and ps["final"] is None
    assert ps["runs_written"] == done, (ps, done)
    text, err = _bridge("status", "--state", state).communicate(timeout=120)
    assert "last cycle: none yet (a sharded pass is under way)" in text, (text, err)
    assert f"3/4 shards ended, not ended [1]; {done} runs written; final step: not yet" in (text), (
        text
    )


@pytest.mark.e2e
def test_failed_index_still_gets_the_final_step(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index whose runs all fail: it ends last and runs the final step itself, once; the
    pass is reported incomplete; a plain sync afterwards copies what it left."""
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns artifact root: here
    src, dst, source = _pair(tmp_path, pg_database)
    state = str(tmp_path / "state.db")
    first = _shards(src, dst, state, [0, 2, 3])
    assert all(code == 0 and not d["final_step"] for code, d, _ in first.values()), first
    failed = _shards(src, dst, state, [1], FAIL_RUNS="1")
    code, data, err = failed[1]
    assert code == 1, err  # its own runs failed (exit 1)
    assert data["final_step"] is True and data["pass_id"] == first[0][1]["pass_id"]
    assert any(w["code"] == "pass-incomplete" for w in data["warnings"]), data["warnings"]
    _incomplete(state, ["shard 1 ended with exit 1"])
    _plain_sync_completes(src, dst, state, pg_database, source)


@pytest.mark.e2e
def test_dead_index_and_finish_pass(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index that dies with no one left to end: --finish-pass runs the final step once
    its lease is over (refused before), reports the pass incomplete (exit 1)."""
    monkeypatch.chdir(tmp_path)
    src, dst, source = _pair(tmp_path, pg_database)
    state = str(tmp_path / "state.db")
    lease = {"BRIDGE_PASS_LEASE": "4"}
    first = _shards(src, dst, state, [0, 1, 3], **lease)
    assert all(code == 0 and not d["final_step"] for code, d, _ in first.values()), first
    killed = _shards(src, dst, state, [2], BRIDGE_KILL_AT="plan.listed", **lease)
    assert killed[2][0] == -9
    early = _bridge("sync", src, dst, "--state", state, "--finish-pass", **lease)
    _, err = early.communicate(timeout=600)
    assert early.returncode == 2 and "shard(s) 2 still running" in err, err
    time.sleep(4.5)
    finish = _bridge("sync", src, dst, "--state", state, "--finish-pass", "--json", **lease)
    out, err = finish.communicate(timeout=600)
    assert finish.returncode == 1, err
    data = json.loads(out)
    assert data["final_step"] is True and data["pass_id"] == first[0][1]["pass_id"]
    assert any("pass incomplete: shard 2 died" in e for e in data["errors"]), data["errors"]
    _incomplete(state, ["shard 2 died"])
    again = _bridge("sync", src, dst, "--state", state, "--finish-pass", **lease)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 2 and "no unfinished sharded pass" in err
    _plain_sync_completes(src, dst, state, pg_database, source)


def _incomplete(state: str, parts: list[str]) -> None:
    """One pass, its final step done once, reported incomplete for these reasons."""
    store = StateStore(state)
    try:
        (row,) = store.passes()
        assert row["final_state"] == "done"
        for part in parts:
            assert part in row["incomplete"], row["incomplete"]
        (cycle,) = store.cycles()
        assert cycle["result"] == 1
        assert any("pass incomplete" in e for e in cycle["errors"])
    finally:
        store.close()


def _plain_sync_completes(
    src: str, dst: str, state: str, dst_db: str, source: dict[str, Any]
) -> None:
    from bridge import api

    plain = api.sync(src, dst, state=state)
    assert plain.exit_code() == 0, plain.errors
    copies = _copies(dst_db, source)
    for child, parent in source["children"].items():
        assert copies[child].data.tags.get("mlflow.parentRunId") == copies[parent].info.run_id
    assert api.verify(src, dst, state=state).exit_code() == 0


def _copies(dst_uri: str, source: dict[str, Any]) -> dict[str, Any]:
    """The destination's copies by source id; each source run copied exactly once."""
    runs = _dest_runs(dst_uri)
    tags = Counter(r.data.tags.get("bridge.source_id") for r in runs)
    for rid in source["runs"]:
        assert tags[rid] == 1, rid
    return {r.data.tags.get("bridge.source_id"): r for r in runs}


@pytest.mark.e2e
def test_child_written_before_its_parent_is_linked_later(tmp_path: Path) -> None:
    """Without shards: a child copied while its parent is filtered out is written without
    the link; the pass that copies the parent links it (the child itself is unchanged,
    so the fingerprint path never reads it again)."""
    from mlflow.tracking import MlflowClient

    from bridge import api
    from bridge.adapters.base import ReaderOptions

    src_uri = f"sqlite:///{tmp_path / 'src.db'}"
    dst_uri = f"sqlite:///{tmp_path / 'dst.db'}"
    client = MlflowClient(tracking_uri=src_uri)
    exp = client.create_experiment("e")
    parent = client.create_run(exp, start_time=T0, run_name="parent").info.run_id
    child = client.create_run(
        exp, start_time=T0 + 1, run_name="child", tags={"mlflow.parentRunId": parent}
    ).info.run_id
    for rid in (parent, child):
        client.set_terminated(rid, "FINISHED", end_time=T0 + 10)
    src, dst, state = f"mlflow:{src_uri}", f"mlflow:{dst_uri}", str(tmp_path / "s.db")
    first = api.sync(src, dst, state=state, reader_options=ReaderOptions(run_ids=[child]))
    assert first.exit_code() == 0 and first.counts() == {"create": 1}
    copies = {r.info.run_name: r for r in _dest_runs(dst_uri)}
    assert "mlflow.parentRunId" not in copies["child"].data.tags
    second = api.sync(src, dst, state=state)
    assert second.counts() == {"create": 1, "unchanged": 1}
    copies = {r.info.run_name: r for r in _dest_runs(dst_uri)}
    assert copies["child"].data.tags["mlflow.parentRunId"] == copies["parent"].info.run_id
    store = StateStore(state)
    try:
        assert all(not store.parent_links(d) for d in {c["dest_uri"] for c in store.cycles()})
    finally:
        store.close()
    third = api.sync(src, dst, state=state)  # the link is the bridge's own: no conflict
    assert third.counts() == {"unchanged": 2} and not third.conflicts
    assert api.verify(src, dst, state=state).exit_code() == 0
    # a dry run with --shard plans only its part: the two parts partition the runs
    parts = [api.sync(src, dst, state=state, dry_run=True, shard=f"{i}/2") for i in (0, 1)]
    ids = [{r.source_id for r in part.runs} for part in parts]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 2
    for i, part in enumerate(parts):
        assert part.shard == f"{i}/2"
        assert all(shard_of(sid, 2) == i for sid in ids[i])


def test_mirror_shard_spreads_pairs() -> None:
    from bridge.config_file import PairConfig
    from bridge.locks import pair_key
    from bridge.mirror import shard_pairs

    pairs = [PairConfig(source=f"mlflow:sqlite:///s{i}.db", dest="mlflow:x") for i in range(9)]
    parts = [shard_pairs(pairs, ShardSpec(i, 3)) for i in range(3)]
    assert sorted(p.source for part in parts for p in part) == sorted(p.source for p in pairs)
    for i, part in enumerate(parts):
        assert all(shard_of(pair_key(p.source, p.dest), 3) == i for p in part)
