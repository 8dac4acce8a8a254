"""``WandbApiReader`` against the fake server loaded from SDK-made offline runs.

The same folders read by ``WandbOfflineReader`` give the reference: the online reader
must yield the same history point for point (NaN included) and the same run body.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeWandbServer

from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.api_reader import WandbApiReader
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.errors import BridgeError
from bridge.schema import ExtraValue, MetricChunk, Run

SDK_SCRIPT = textwrap.dedent(
    """
    import math, sys, numpy as np, wandb
    root = sys.argv[1]
    r = wandb.init(mode="offline", dir=root, entity="acme", project="demo", id="alpha",
                   name="alpha-run", tags=["base", "x"], notes="first", group="g1",
                   job_type="train", config={"lr": 0.01, "opt": {"name": "adam", "b": [1, 2]}})
    for s in range(30):
        row = {"loss": 1.0 / (s + 1), "acc": {"top1": s / 30}, "flag": s % 2 == 0}
        if s == 3:
            row["loss"] = math.nan
        if s == 4:
            row["loss"] = math.inf
        if s == 5:
            row["img"] = wandb.Image(np.zeros((4, 4, 3), dtype=np.uint8))
            row["note"] = "hello"
        r.log(row)
    r.summary["best"] = 0.5
    art = wandb.Artifact("ds", type="dataset", metadata={"rows": 3})
    with art.new_file("data.txt") as fh:
        fh.write("a,b\\n1,2\\n")
    r.log_artifact(art)
    print("stdout line")
    r.finish()
    r = wandb.init(mode="offline", dir=root, entity="acme", project="demo", id="beta",
                   tags=["other"], config={"lr": 0.1})
    for s in range(5):
        r.log({"loss": float(s)})
    r.finish(exit_code=1)
    """
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sdk")
    env = dict(os.environ, WANDB_SILENT="true", WANDB_MODE="offline", WANDB_DATA_DIR=str(root))
    subprocess.run([sys.executable, "-c", SDK_SCRIPT, str(root)], check=True, env=env, timeout=120)
    folders = sorted((root / "wandb").glob("offline-run-*"))
    return {f.name.rsplit("-", 1)[1]: f for f in folders}


@pytest.fixture
def server(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeWandbServer]:
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    with FakeWandbServer() as srv:
        for folder in corpus.values():
            srv.load_offline_run(folder)
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        monkeypatch.delenv("WANDB_BASE_URL", raising=False)
        yield srv


def _reader(srv: FakeWandbServer, target: str = "acme/demo", **opts: Any) -> WandbApiReader:
    rd = WandbApiReader(f"{target}?base_url={srv.url}", ReaderOptions(**opts))
    rd.base_delay = 0.05  # keep the fault test fast; backoff shape is unchanged
    return rd


def _offline(folder: Path) -> tuple[WandbOfflineReader, Run]:
    rd = WandbOfflineReader(str(folder))
    (h,) = list(rd.list_runs())
    return rd, rd.read_run(h)


def _norm(items: list[Any], summary_keys: set[str]) -> dict[str, Any]:
    """Per key: (step, ts, value) points in order (NaN as a token); extras as tuples."""
    out: dict[str, Any] = {}
    for it in items:
        if isinstance(it, MetricChunk):
            pts = out.setdefault(it.key, [])
            for s, t, v in zip(it.steps, it.timestamps, it.values, strict=True):
                t = (
                    0 if it.key in summary_keys else t
                )  # summary-only: end time (1 s precision online)
                pts.append((s, t, "nan" if math.isnan(v) else v))
        else:
            assert isinstance(it, ExtraValue)
            f = it.file.path if it.file else None
            out.setdefault("extra:" + it.key, []).append(
                # as parsed JSON: wandb-core re-serializes scanned rows (key order differs)
                (it.step, it.timestamp, json.loads(it.value_json), it.kind, f)
            )
    return out


def _history(rd: Any, run: Run) -> dict[str, Any]:
    items = list(rd.iter_history(run))
    summary_only = {
        it.key for it in items if isinstance(it, MetricChunk) and len(it) == 1 and it.key == "best"
    }
    return _norm(items, summary_only)


def test_list_runs_and_filters(server: FakeWandbServer) -> None:
    rd = _reader(server)
    rd.check()
    heads = list(rd.list_runs())
    assert [h.source_id for h in heads] == ["wandb:acme/demo/alpha", "wandb:acme/demo/beta"]
    assert heads[0].project.source_id == "wandb:acme/demo"
    assert [h.native_id for h in _reader(server, run_ids=["beta"]).list_runs()] == ["beta"]
    assert [h.native_id for h in _reader(server, tags=["x"]).list_runs()] == ["alpha"]
    assert [h.native_id for h in _reader(server, states=["FAILED"]).list_runs()] == ["beta"]
    assert list(_reader(server, since="2999-01-01").list_runs()) == []
    assert len(list(_reader(server, target="acme").list_runs())) == 2  # all projects
    # UI edits move the fingerprint even though heartbeatAt does not change.
    before = heads[0].fingerprint
    server.get_run("acme", "demo", "alpha").notes = "edited in the UI"
    assert next(iter(rd.list_runs())).fingerprint != before
    assert srv_key_absent(rd, server)


def srv_key_absent(rd: WandbApiReader, srv: FakeWandbServer) -> bool:
    return srv.api_key not in rd.display_uri and "base_url=" in rd.display_uri


def test_read_run_matches_offline(server: FakeWandbServer, corpus: dict[str, Path]) -> None:
    rd = _reader(server)
    heads = {h.native_id: h for h in rd.list_runs()}
    for rid, folder in corpus.items():
        off_rd, off = _offline(folder)
        on = rd.read_run(heads[rid])
        assert on.header.source_id == off.header.source_id
        for f in ("name", "tags", "notes", "group", "job_type", "config", "summary", "status"):
            assert getattr(on, f) == getattr(off, f), f
        assert abs((on.start_time_ms or 0) - (off.start_time_ms or 0)) < 1000
        # wandb-core uploads wandb-metadata.json when it syncs a run; an offline folder has
        # none (the same facts are in the log's environment record)
        assert {f.path for f in on.files} - {"files/wandb-metadata.json"} == {
            f.path for f in off.files
        }
        for off_ref in off.files:
            ref = next(f for f in on.files if f.path == off_ref.path)
            with rd.open_file(ref) as a, off_rd.open_file(off_ref) as b:
                assert a.read() == b.read(), ref.path
    alpha = rd.read_run(heads["alpha"])
    (art,) = [a for a in alpha.artifacts if a.direction == "logged"]
    assert (art.name, art.type, art.version, art.metadata) == ("ds", "dataset", "v0", {"rows": 3})
    (entry,) = art.manifest
    assert entry.path == "data.txt" and Path(entry.local_path or "").read_text() == "a,b\n1,2\n"
    assert alpha.status == "FINISHED" and rd.read_run(heads["beta"]).status == "FAILED"
    rd.close()


@pytest.mark.parametrize("exported", [None, 12, 0], ids=["all-exported", "live-tail", "no-export"])
def test_history_equals_offline(
    server: FakeWandbServer, corpus: dict[str, Path], exported: int | None
) -> None:
    server.get_run("acme", "demo", "alpha").exported_rows = exported
    rd = _reader(server)
    (head,) = [h for h in rd.list_runs() if h.native_id == "alpha"]
    on = _history(rd, rd.read_run(head))
    off_rd, off_run = _offline(corpus["alpha"])
    off = _history(off_rd, off_run)
    assert on == off
    assert on["loss"][3][2] == "nan" and on["loss"][4][2] == math.inf
    assert "acc.top1" in on and len(on["loss"]) == 30
    (img,) = on["extra:img"]
    assert img[3] == "image-file" and img[4].startswith("files/media/images/")
    if exported == 12:
        assert server.counts["HistoryPage"] >= 1
    media = next(
        it
        for it in rd.iter_history(rd.read_run(head))
        if isinstance(it, ExtraValue) and it.file is not None
    )
    assert media.file is not None
    with rd.open_file(media.file) as fh:
        assert fh.read(8).startswith(b"\x89PNG")


def test_faults_give_identical_output(server: FakeWandbServer) -> None:
    server.get_run("acme", "demo", "alpha").exported_rows = 12
    clean = _reader(server)
    heads = list(clean.list_runs())
    want = [(clean.read_run(h).model_dump(exclude={"files", "artifacts"}), h) for h in heads]
    want_hist = [_history(clean, clean.read_run(h)) for h in heads]
    server.set_faults(0.1, seed=7)
    rd = _reader(server)
    heads2 = list(rd.list_runs())
    assert [h.fingerprint for h in heads2] == [h.fingerprint for _, h in want]
    for (body, _), h, hist in zip(want, heads2, want_hist, strict=True):
        run = rd.read_run(h)
        assert run.model_dump(exclude={"files", "artifacts"}) == body
        assert _history(rd, run) == hist
    assert sum(server.faults.values()) > 0, (dict(server.counts), server.fail_rate)


def test_check_failures_are_one_line(
    server: FakeWandbServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BridgeError, match="not found"):
        _reader(server, target="acme/nope").check()
    monkeypatch.setenv("WANDB_API_KEY", "z" * 40)
    with pytest.raises(BridgeError, match="rejected the API key") as exc:
        _reader(server).check()
    assert "z" * 40 not in str(exc.value) and "\n" not in str(exc.value)
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", "/nonexistent")
    with pytest.raises(BridgeError, match="WANDB_API_KEY"):
        _reader(server).check()
    monkeypatch.setenv("WANDB_API_KEY", server.api_key)
    t0 = time.time()
    with pytest.raises(BridgeError, match="cannot reach"):
        WandbApiReader("acme/demo?base_url=http://127.0.0.1:9").check()
    assert time.time() - t0 < 30


def _check_error(rd: WandbApiReader) -> str:
    with pytest.raises(BridgeError) as exc:
        rd.check()
    return str(exc.value)


def test_check_quotes_a_graphql_error_and_never_blames_the_key(
    server: FakeWandbServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request the server refuses (GraphQL ``errors``) is quoted as the server said it;
    only 401/403 or a viewer-less answer without errors is about the API key."""
    from fakes import wandb_server
    from fakes.wandb_upload import HttpGqlError

    def refuse(self: Any, a: dict[str, Any]) -> Any:
        raise wandb_server.GqlError("viewer lookup\nfailed")

    def refuse_400(self: Any, a: dict[str, Any]) -> Any:
        raise HttpGqlError(400, "bad")

    monkeypatch.setattr(wandb_server._Root, "f_viewer", refuse)
    for target in ("acme", "acme/demo"):
        msg = _check_error(_reader(server, target=target))
        assert msg == (
            f"wandb: {server.url} rejected the request: "
            '"fake server: operation BridgeCheck: viewer lookup failed"'
        )
    monkeypatch.setattr(wandb_server._Root, "f_viewer", refuse_400)
    msg = _check_error(_reader(server, target="acme"))
    assert msg == f'wandb: {server.url} rejected the request (HTTP 400): "bad"'
    monkeypatch.setattr(wandb_server._Root, "f_viewer", lambda self, a: None)
    msg = _check_error(_reader(server, target="acme"))
    assert msg == f"wandb: {server.url} did not accept the API key; set WANDB_API_KEY"
    assert server.api_key not in msg


def test_check_names_an_unknown_entity(server: FakeWandbServer) -> None:
    msg = _check_error(_reader(server, target="nobody"))
    assert msg == f"wandb: entity nobody not found on {server.url}; check the entity name"
    _reader(server, target="acme").check()
    assert server.rejected == []


@pytest.mark.e2e
def test_entity_wide_sync_end_to_end(
    server: FakeWandbServer, corpus: dict[str, Path], tmp_path: Path
) -> None:
    """``bridge sync wandb:ENTITY`` (every project) against a server that validates every
    document as a spec-compliant one does: the check and the listing are accepted."""
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from bridge.cli import main

    server.load_offline_run(corpus["beta"], name="gamma", project="other")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["sync", f"wandb:acme?base_url={server.url}", f"mlflow:{uri}"]
    result = CliRunner().invoke(main, [*args, "--state", str(tmp_path / "state.db")])
    assert result.exit_code == 0, result.output
    assert server.rejected == []
    assert server.counts["BridgeCheck"] == 1
    client = MlflowClient(uri)
    names = {}
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id])
        names[exp.name] = sorted(r.data.tags["bridge.source_id"] for r in runs)
    assert names.get("demo") == ["wandb:acme/demo/alpha", "wandb:acme/demo/beta"]
    assert names.get("other") == ["wandb:acme/other/gamma"]
