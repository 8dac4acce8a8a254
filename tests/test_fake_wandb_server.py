"""The fake W&B server answers the real ``wandb.Api`` (through wandb-core) faithfully."""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeArtifact, FakeRun, FakeWandbServer

os.environ.setdefault("WANDB_SILENT", "true")


def _run(i: int, now: float) -> FakeRun:
    return FakeRun(
        name=f"r{i}",
        display_name=f"run-{i}",
        state=["finished", "failed", "running", "crashed", "killed"][i % 5],
        config={"lr": 0.1 * i, "opt": {"name": "adam"}},
        summary={"loss": 1.0 / (i + 1)},
        tags=["even"] if i % 2 == 0 else ["odd"],
        created_at=now - 1000 + i * 100,
        heartbeat_at=now - 900 + i * 100,
        history=[
            {"_step": s, "_timestamp": now + s, "_runtime": float(s), "loss": float(s)}
            for s in range(8)
        ]
        + [{"_step": 8, "_timestamp": now + 8, "_runtime": 8.0, "loss": math.nan}],
        files={"output.log": f"log of {i}\n".encode()},
        logged_artifacts=[
            FakeArtifact(name=f"ds-{i}", type="dataset", aliases=["latest"], files={"x.txt": b"X"})
        ],
        exported_rows=5,
    )


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWandbServer]:
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    now = time.time()
    with FakeWandbServer() as srv:
        for i in range(5):
            srv.add_run(_run(i, now))
        yield srv


def _api(srv: FakeWandbServer):  # type: ignore[no-untyped-def]
    import wandb

    return wandb.Api(api_key=srv.api_key, overrides={"base_url": srv.url}, timeout=20)


def _post(
    srv: FakeWandbServer,
    query: str,
    key: str | None = None,
    variables: dict[str, Any] | None = None,
) -> tuple[int, dict]:
    auth = base64.b64encode(f"api:{key or srv.api_key}".encode()).decode()
    req = urllib.request.Request(
        srv.url + "/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def test_listing_pages_filters_and_config(server: FakeWandbServer) -> None:
    api = _api(server)
    runs = api.runs("acme/demo", per_page=2)
    assert [r.id for r in runs] == ["r0", "r1", "r2", "r3", "r4"]
    assert server.counts["Runs"] >= 3  # 5 runs at 2 per page
    assert len(runs) == 5
    even = api.runs("acme/demo", filters={"tags": {"$in": ["even"]}})
    assert [r.id for r in even] == ["r0", "r2", "r4"]
    picked = api.runs("acme/demo", filters={"name": {"$in": ["r1", "r3"]}})
    assert [r.id for r in picked] == ["r1", "r3"]
    failed = api.runs("acme/demo", filters={"state": {"$in": ["failed", "crashed"]}})
    assert [r.id for r in failed] == ["r1", "r3"]
    since = server.get_run("acme", "demo", "r3").created_at
    from fakes.wandb_store import iso

    late = api.runs("acme/demo", filters={"createdAt": {"$gte": iso(since)}})
    assert [r.id for r in late] == ["r3", "r4"]
    r2 = api.run("acme/demo/r2")
    assert r2.config == {"lr": pytest.approx(0.2), "opt": {"name": "adam"}}
    assert r2.summary_metrics == {"loss": pytest.approx(1 / 3)}
    assert r2.name == "run-2" and r2.state == "running"
    assert int(r2._attrs["projectId"]) > 0


def test_history_export_live_tail_files_artifacts(server: FakeWandbServer, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    run = _api(server).run("acme/demo/r1")
    res = run.download_history_exports(tmp_path / "exp", require_complete_history=False)
    assert res.contains_live_data
    table = pq.read_table(res.paths[0])
    assert table.column("_step").to_pylist() == [0, 1, 2, 3, 4]
    assert set(table.column_names) == {"_step", "_timestamp", "_runtime", "loss"}
    rows = list(run.scan_history(use_cache=False))
    assert [r["_step"] for r in rows] == list(range(9))  # export + live tail, no duplicates
    assert math.isnan(rows[-1]["loss"])
    assert server.counts["HistoryPage"] >= 1 and server.counts["RunParquetHistory"] >= 1
    files = {f.name: f for f in run.files()}
    assert set(files) == {"output.log"}
    got = files["output.log"].download(root=str(tmp_path / "dl"), replace=True).read()
    assert got == "log of 1\n"
    (art,) = list(run.logged_artifacts())
    assert (art.name, art.type, art.version) == ("ds-1:v0", "dataset", "v0")
    folder = art.download(root=str(tmp_path / "art"))
    assert (Path(folder) / "x.txt").read_bytes() == b"X"


def test_auth_unimplemented_and_faults(server: FakeWandbServer) -> None:
    code, _ = _post(server, "query Viewer { viewer { username } }", key="w" * 40)
    assert code == 401
    # A field of the schema the fake does not answer is an error naming it, never a null.
    code, body = _post(
        server, 'query Mystery { entity(name: "acme") { projects { edges { cursor } } } }'
    )
    assert code == 200
    assert "operation Mystery not implemented" in body["errors"][0]["message"]
    assert "Entity.projects" in body["errors"][0]["message"]
    server.fail_rate = 0.5
    codes = [_post(server, "query Viewer { viewer { username } }")[0] for _ in range(40)]
    assert {429, 503} <= set(codes) and 200 in codes
    assert sum(server.faults.values()) == sum(c != 200 for c in codes)


# ---------------------------------------------------------------- the SDK's write path

SDK_WRITER = textwrap.dedent(
    """
    import json, math, os, sys, wandb
    root, phase = sys.argv[1], sys.argv[2]
    os.chdir(root)
    fast_stats = wandb.Settings(x_stats_sampling_interval=1)
    def row(s):
        return {"loss": math.nan if s == 7 else 1.0 / (s + 1), "acc": s / 40, "lr": 0.001 * s}
    if phase == "first":
        r = wandb.init(entity="acme", project="up", id="w1", name="writer", tags=["t1", "t2"],
                       notes="some notes", group="grp", job_type="train", settings=fast_stats,
                       config={"lr": 0.01, "opt": {"name": "adam", "betas": [0.9, 0.99]}})
        for s in range(30):
            r.log(row(s))
        print("hello from session one")
        with open("notes.txt", "w") as fh:
            fh.write("saved file\\n")
        r.save("notes.txt", policy="now")
        art = wandb.Artifact("ds", type="dataset", description="tiny", metadata={"rows": 2})
        with art.new_file("data.csv") as fh:
            fh.write("a,b\\n1,2\\n")
        r.log_artifact(art, aliases=["best"])
        r.summary["best"] = 0.5
        r.finish()
        r = wandb.init(entity="acme", project="up", id="w2", config={"lr": 1.0})
        r.log({"loss": 1.0})
        r.finish(exit_code=3)
    else:
        # Resume through Settings(base_url=, api_key=) instead of the environment.
        r = wandb.init(entity="acme", project="up", id="w1", resume="allow",
                       settings=wandb.Settings(base_url=os.environ["FAKE_URL"],
                                               api_key=os.environ["FAKE_KEY"]))
        print(json.dumps({"resumed": r.resumed, "step": r.starting_step, "lr": r.config["lr"]}))
        for s in range(30, 40):
            r.log(row(s))
        print("hello from session two")
        used = r.use_artifact("ds:latest")
        assert open(os.path.join(used.download(), "data.csv")).read() == "a,b\\n1,2\\n"
        r.finish()
    """
)


def _sdk_write(srv: FakeWandbServer, root: Path, phase: str) -> str:
    """Run the real SDK online against ``srv`` in a subprocess; returns its stdout."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        WANDB_MODE="online",
        WANDB_SILENT="true",
        WANDB_DIR=str(root),
        WANDB_DATA_DIR=str(root / "data"),
        WANDB_CACHE_DIR=str(root / "cache"),
        WANDB_CONFIG_DIR=str(root / "config"),
        WANDB_DISABLE_GIT="true",
    )
    if phase == "first":
        env.update(WANDB_BASE_URL=srv.url, WANDB_API_KEY=srv.api_key)
    else:
        env.pop("WANDB_BASE_URL", None)
        env.pop("WANDB_API_KEY", None)
        env.update(FAKE_URL=srv.url, FAKE_KEY=srv.api_key)
    proc = subprocess.run(
        [sys.executable, "-c", SDK_WRITER, str(root), phase],
        env=env,
        cwd=root,  # use_artifact().download() writes ./artifacts
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (proc.stderr[-3000:], srv.errors)
    return proc.stdout


def _expected(s: int) -> dict[str, float]:
    return {"loss": math.nan if s == 7 else 1.0 / (s + 1), "acc": s / 40, "lr": 0.001 * s}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


@pytest.mark.e2e
def test_sdk_online_write_resume_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "read-cache"))
    with FakeWandbServer() as srv:
        _sdk_write(srv, tmp_path / "sdk", "first")
        assert srv.errors == []
        # What the SDK sent: config wrapped as {"value": ..}, stored and served that way.
        up = [v for op, _, v in srv.queries if op == "UpsertBucket"]
        assert json.loads(up[0]["config"])["lr"] == {"value": 0.01}
        stored = srv.get_run("acme", "up", "w1")
        assert stored.wrapped_config()["opt"]["value"] == {"name": "adam", "betas": [0.9, 0.99]}

        api = _api(srv)
        run = api.run("acme/up/w1")
        assert (run.name, run.state, run.notes, run.group, run.job_type) == (
            "writer",
            "finished",
            "some notes",
            "grp",
            "train",
        )
        assert run.tags == ["t1", "t2"]
        assert run.config == {"lr": 0.01, "opt": {"name": "adam", "betas": [0.9, 0.99]}}
        summary = run.summary_metrics
        assert summary["best"] == 0.5 and summary["_step"] == 29
        assert summary["loss"] == pytest.approx(1 / 30) and summary["lr"] == pytest.approx(0.029)
        rows = list(run.scan_history(use_cache=False))
        assert [r["_step"] for r in rows] == list(range(30))
        for r in rows:
            want = _expected(r["_step"])
            assert all(_same(r[k], want[k]) for k in want), r
            assert r["_timestamp"] > 1e9 and r["_runtime"] >= 0
        # Finished runs get a parquet export of every row (uploads.export_on_finish).
        exp = run.download_history_exports(tmp_path / "exp1", require_complete_history=False)
        assert not exp.contains_live_data
        assert pq.read_table(exp.paths[0]).column("_step").to_pylist() == list(range(30))
        events = run.history(stream="events", pandas=False)
        assert events and all(e.get("_wandb") is True for e in events)
        assert any(k.startswith("system.") for e in events for k in e)
        assert any(k.startswith("system.") for k in run.system_metrics)
        files = {f.name: f for f in run.files()}
        assert {"notes.txt", "output.log", "wandb-metadata.json", "config.yaml"} <= set(files)
        got = files["notes.txt"].download(root=str(tmp_path / "dl"), replace=True).read()
        assert got == "saved file\n"
        (art,) = list(run.logged_artifacts())
        assert (art.name, art.type, art.description) == ("ds:v0", "dataset", "tiny")
        assert set(art.aliases) >= {"best", "latest"} and art.metadata == {"rows": 2}
        folder = Path(art.download(root=str(tmp_path / "art")))
        assert (folder / "data.csv").read_text() == "a,b\n1,2\n"
        assert api.run("acme/up/w2").state == "failed"  # finish(exit_code=3)
        assert srv.get_run("acme", "up", "w2").exit_code == 3

        # Resume: RunResumeStatus gives the line counts / last step; rows 30..39 follow.
        srv.uploads.export_on_finish = False  # keep the appended rows as the live tail
        out = _sdk_write(srv, tmp_path / "sdk2", "second")
        status = json.loads(out.strip().splitlines()[0])
        assert status == {"resumed": True, "step": 30, "lr": 0.01}
        assert srv.counts["RunResumeStatus"] == 1 and srv.errors == []
        run = _api(srv).run("acme/up/w1")
        assert run.state == "finished" and run.tags == ["t1", "t2"]
        assert run.config["opt"] == {"name": "adam", "betas": [0.9, 0.99]}
        assert run.summary_metrics["_step"] == 39 and run.summary_metrics["best"] == 0.5
        rows = list(run.scan_history(use_cache=False))
        assert [r["_step"] for r in rows] == list(range(40))
        assert all(_same(r["lr"], 0.001 * r["_step"]) for r in rows)
        exp = run.download_history_exports(tmp_path / "exp2", require_complete_history=False)
        assert exp.contains_live_data  # 30 exported rows + 10 live ones
        assert srv.counts["HistoryPage"] >= 1
        assert [a.name for a in run.used_artifacts()] == ["ds:v0"]
        assert srv.counts["UseArtifact"] == 1
        log = files_text(run, "output.log", tmp_path / "dl2")
        assert "hello from session one" in log and "hello from session two" in log

        # The project's own online reader sees every point.
        from bridge.adapters.base import ReaderOptions
        from bridge.adapters.wandb.api_reader import WandbApiReader
        from bridge.schema import MetricChunk

        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        rd = WandbApiReader(f"acme/up?base_url={srv.url}", ReaderOptions(run_ids=["w1"]))
        (head,) = list(rd.list_runs())
        body = rd.read_run(head)
        assert body.status == "FINISHED" and body.tags == ["t1", "t2"]
        points: dict[str, list[tuple[int, float]]] = {}
        for chunk in rd.iter_history(body):
            if isinstance(chunk, MetricChunk):
                points.setdefault(chunk.key, []).extend(zip(chunk.steps, chunk.values, strict=True))
        rd.close()
        for key in ("loss", "acc", "lr"):
            assert [s for s, _ in points[key]] == list(range(40)), key
            assert all(_same(v, _expected(s)[key]) for s, v in points[key]), key


def files_text(run: Any, name: str, root: Path) -> str:
    (f,) = [f for f in run.files() if f.name == name]
    return str(f.download(root=str(root), replace=True).read())


@pytest.mark.e2e
def test_sdk_upload_survives_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "read-cache"))
    with FakeWandbServer() as srv:
        srv.set_faults(0.3, seed=3, ops=("file_stream", "PUT", "UpsertBucket", "CommitArtifact"))
        _sdk_write(srv, tmp_path / "sdk", "first")
        srv.set_faults(0.0)
        faulted = {k.split(":")[0] for k in srv.faults}
        assert "file_stream" in faulted and sum(srv.faults.values()) >= 3, dict(srv.faults)
        run = _api(srv).run("acme/up/w1")
        assert [r["_step"] for r in run.scan_history(use_cache=False)] == list(range(30))
        assert run.state == "finished" and run.tags == ["t1", "t2"]
        assert {"notes.txt", "output.log"} <= {f.name for f in run.files()}
        assert [a.name for a in run.logged_artifacts()] == ["ds:v0"]


def test_upload_endpoints_raw(server: FakeWandbServer) -> None:
    """file_stream / PUT / mutations without the SDK: auth, unknown runs, errors, faults."""

    def call(method: str, path: str, body: bytes, key: str | None = None) -> tuple[int, bytes]:
        auth = base64.b64encode(f"api:{key or server.api_key}".encode()).decode()
        req = urllib.request.Request(
            server.url + path, data=body, method=method, headers={"Authorization": f"Basic {auth}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    line = json.dumps({"_step": 9, "loss": 0.5})
    fs = json.dumps({"files": {"wandb-history.jsonl": {"offset": 9, "content": [line]}}})
    assert call("POST", "/files/acme/demo/r0/file_stream", fs.encode(), "w" * 40)[0] == 401
    assert call("POST", "/files/acme/demo/nope/file_stream", fs.encode())[0] == 404
    gap = fs.replace('"offset": 9', '"offset": 50').encode()
    assert call("POST", "/files/acme/demo/r0/file_stream", gap)[0] == 400
    code, _ = call("POST", "/files/acme/demo/r0/file_stream", fs.encode())
    assert code == 200 and server.get_run("acme", "demo", "r0").history[-1]["_step"] == 9
    done = json.dumps({"complete": True, "exitcode": 1}).encode()
    assert call("POST", "/files/acme/demo/r0/file_stream", done)[0] == 200
    assert _api(server).run("acme/demo/r0").state == "failed"
    assert call("PUT", "/upload/blob/AAAA", b"not matching")[0] == 400
    code, body = _post(server, 'mutation Bogus { undeleteRun(input: {id: "1"}) { success } }')
    assert body == {
        "errors": [
            {
                "message": "Cannot query field 'undeleteRun' on type 'Mutation'."
                " Did you mean 'deleteRun'?",
                "locations": [{"line": 1, "column": 18}],
            }
        ]
    }
    server.set_faults(1.0, codes=(429,), ops=("file_stream",))
    code, _ = call("POST", "/files/acme/demo/r0/file_stream", done)
    assert code == 429 and server.faults["file_stream:429"] == 1
    # A "running" run without heartbeats reads as crashed once crash_after is set.
    server.crash_after = 60.0
    assert _api(server).run("acme/demo/r2").state == "crashed"


# ---------------------------------------------------------------- validation like a real server

#: Documents a spec-compliant GraphQL server refuses before running them, with its message.
INVALID: dict[str, tuple[str, dict[str, Any], str]] = {
    "unused variable": (
        "query BridgeCheck($e: String!) { viewer { username } }",
        {"e": "acme"},
        "Variable '$e' is never used in operation 'BridgeCheck'.",
    ),
    "unknown field": (
        'query Mystery { project(name: "demo") { bogusField } }',
        {},
        "Cannot query field 'bogusField' on type 'Project'.",
    ),
    "undefined variable": (
        'query Q { project(name: $p, entityName: "acme") { id } }',
        {"p": "demo"},
        "Variable '$p' is not defined by operation 'Q'.",
    ),
    "unknown argument": (
        "query Q { viewer(bogus: 1) { username } }",
        {},
        "Unknown argument 'bogus' on field 'Query.viewer'.",
    ),
    "variable of another type": (
        "query Q($n: Int!) { project(name: $n) { id } }",
        {"n": 1},
        "Variable '$n' of type 'Int!' used in position expecting type 'String'.",
    ),
    "required variable missing": (
        "query Q($p: String!) { project(name: $p) { id } }",
        {},
        "Variable '$p' of required type 'String!' was not provided.",
    ),
    "unknown input field": (
        "mutation M($input: AddAliasesInput!) { addAliases(input: $input) { success } }",
        {"input": {"artifactID": "1", "aliases": [], "bogus": 1}},
        "Variable '$input' got invalid value {'artifactID': '1', 'aliases': [], 'bogus': 1}; "
        "Field 'bogus' is not defined by type 'AddAliasesInput'.",
    ),
    "syntax error": (
        "query Q { viewer { username }",
        {},
        "Syntax Error: Expected Name, found <EOF>.",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_documents_are_refused_like_a_spec_server(
    server: FakeWandbServer, case: str
) -> None:
    query, variables, message = INVALID[case]
    code, body = _post(server, query, variables=variables)
    # W&B answers a document it refuses with HTTP 200 and only ``errors`` (no ``data``).
    assert code == 200
    assert list(body) == ["errors"]
    assert [e["message"] for e in body["errors"]] == [message]
    assert all(e["locations"] for e in body["errors"])
    assert [errors for _, errors in server.rejected] == [body["errors"]]


def test_a_refused_mutation_runs_nothing(server: FakeWandbServer) -> None:
    run_id = server.get_run("acme", "demo", "r0").id
    delete = (
        "mutation DeleteRun($id: ID!{}) {{ deleteRun(input: {{id: $id}}) {{ clientMutationId }} }}"
    )
    _, body = _post(server, delete.format(", $keep: Boolean"), variables={"id": run_id})
    assert (
        body["errors"][0]["message"] == "Variable '$keep' is never used in operation 'DeleteRun'."
    )
    assert "r0" in server.projects[("acme", "demo")].runs
    _, body = _post(server, delete.format(""), variables={"id": run_id})
    assert body == {"data": {"deleteRun": {"clientMutationId": None}}}
    assert "r0" not in server.projects[("acme", "demo")].runs


#: Documents of the SDK that use fields the fake does not model (it serves none of them).
UNMODELLED = {
    "core:OrgFeatureFlags": "organization feature flags",
    "core:FetchArtifactDigestAlgorithm": "xxhash artifact digests",
    "core:RunConsoleLogPage": "console log lines",
    "core:RunConsoleLogTail": "console log lines",
    "core:SweepConfig": "sweeps",
    "core:SweepRunsWithHistory": "sweeps",
    "core:SweepWatchedRuns": "sweeps",
    "sdk:GET_AGENT_RUNS_GQL": "sweeps",
    "sdk:GET_SWEEPS_GQL": "sweeps",
    "sdk:GET_SWEEP_AGENTS_GQL": "sweeps",
    "sdk:GET_SWEEP_AGENT_GQL": "sweeps",
    "sdk:GET_SWEEP_GQL": "sweeps",
    "sdk:GET_SWEEP_LEGACY_GQL": "sweeps",
    "sdk:REGISTRY_TEAM_MEMBERS_GQL": "registry members",
    "sdk:REGISTRY_USER_MEMBERS_GQL": "registry members",
    "sdk:CREATE_PROJECT_GQL": "project views",
    "sdk:GET_TEAM_ENTITY_GQL": "team settings",
}


def _root_fields(document: Any) -> set[str]:
    from graphql import FieldNode, OperationDefinitionNode

    return {
        sel.name.value
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        for sel in d.selection_set.selections
        if isinstance(sel, FieldNode)
    }


def test_sdk_documents_validate_against_the_sdl() -> None:
    """The SDL is faithful where it models something: every document the installed SDK
    generates from W&B's real schema (Python side, and the wandb-core binary's) that asks
    the modelled root fields validates, unless listed in UNMODELLED, which must fail."""
    import wandb
    from fakes.gql_schema import core_documents, schema, sdk_documents
    from graphql import parse, validate

    docs = {**sdk_documents(), **core_documents(Path(wandb.__file__).parent / "bin" / "wandb-core")}
    assert set(UNMODELLED) <= set(docs)
    sdl = schema()
    assert sdl.query_type is not None and sdl.mutation_type is not None
    roots = set(sdl.query_type.fields) | set(sdl.mutation_type.fields)
    checked: list[str] = []
    failures: dict[str, list[str]] = {}
    for name, text in sorted(docs.items()):
        document = parse(text)
        if not _root_fields(document) <= roots:
            continue  # an operation the fake does not serve (e.g. deleteArtifact)
        errors = [e.message for e in validate(sdl, document)]
        if name in UNMODELLED:
            assert errors, f"{name} validates now: take it off UNMODELLED"
            continue
        checked.append(name)
        if errors:
            failures[name] = errors
    assert failures == {}
    assert len(checked) >= 60, checked
    assert {"core:UpsertBucket", "core:CreateArtifact", "sdk:RUN_OUTPUT_ARTIFACTS_GQL"} <= set(
        checked
    )
