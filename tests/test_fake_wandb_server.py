"""The fake W&B server answers the real ``wandb.Api`` (through wandb-core) faithfully."""

from __future__ import annotations

import base64
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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


def _post(srv: FakeWandbServer, query: str, key: str | None = None) -> tuple[int, dict]:
    auth = base64.b64encode(f"api:{key or srv.api_key}".encode()).decode()
    req = urllib.request.Request(
        srv.url + "/graphql",
        data=json.dumps({"query": query}).encode(),
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
    code, body = _post(server, 'query Mystery { project(name: "demo") { bogusField } }')
    assert code == 200
    assert "operation Mystery not implemented" in body["errors"][0]["message"]
    assert "Project.bogusField" in body["errors"][0]["message"]
    server.fail_rate = 0.5
    codes = [_post(server, "query Viewer { viewer { username } }")[0] for _ in range(40)]
    assert {429, 503} <= set(codes) and 200 in codes
    assert sum(server.faults.values()) == sum(c != 200 for c in codes)
