"""End to end: pairs synced by the code from before the issue-12 refactor re-sync as no-ops.

The destinations and state stores are made by the bridge as of commit 0b97970 (the last
commit before the contract/engine/adapter split and the neutral schema), extracted with
``git archive`` and run as a CLI subprocess with ``PYTHONPATH`` pointing at it. Today's code
then re-syncs every pair: each run is "unchanged", no point is written, no destination
run is duplicated, not one file or database row changes, and ``verify`` is clean. This is
the proof that the serialized identities (``bridge.source_id`` tags, W&B config
``_bridge.*``, state keys) stayed byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from sdk_runs import cached_corpus

pytestmark = pytest.mark.e2e

BEFORE_REFACTOR = "0b97970"
REPO = Path(__file__).resolve().parent.parent
T0 = 1_650_000_000_000


@pytest.fixture(scope="module")
def old_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as of BEFORE_REFACTOR, extracted (skips outside a full git checkout)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    known = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{BEFORE_REFACTOR}^{{commit}}"],
        capture_output=True,
    )
    if known.returncode != 0:
        pytest.skip(f"commit {BEFORE_REFACTOR} not in this clone")
    out = tmp_path_factory.mktemp("code-0b97970")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BEFORE_REFACTOR], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def _cli(cwd: Path, *args: str, code: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The bridge CLI in a subprocess: the old code when ``code`` is given, else today's."""
    env = dict(os.environ, CI="true", WANDB_SILENT="true", WANDB_MODE="offline")
    env.pop("PYTHONPATH", None)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    prog = "import runpy, sys, bridge; print(bridge.__file__, file=sys.stderr); "
    prog += "runpy.run_module('bridge.cli', run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", prog, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )
    first = result.stderr.splitlines()[0] if result.stderr else ""
    expected = code if code is not None else REPO
    assert first.startswith(str(expected / "bridge")), (first, result.stderr[-2000:])
    return result


def _make_mlflow_source(uri: str, tmp: Path) -> None:
    """An MLflow store with a parent/nested child, each terminal status and an artifact."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("vision", tags={"team": "cv"})
    parent = client.create_run(exp, start_time=T0, run_name="sweep", tags={"team": "cv"})
    pid = parent.info.run_id
    client.log_batch(
        pid,
        params=[Param("lr", "0.01"), Param("opt", "adam")],
        tags=[RunTag("mlflow.note.content", "the sweep")],
        metrics=[Metric("loss", 1.0 / (i + 1), T0 + i * 10, i) for i in range(300)],
    )
    client.log_metric(pid, "acc", float("inf"), timestamp=T0 + 5, step=5)
    art = tmp / "art"
    art.mkdir()
    (art / "model.txt").write_text("weights")
    client.log_artifacts(pid, str(art))
    client.set_terminated(pid, "FINISHED", end_time=T0 + 60_000)
    child = client.create_run(
        exp, start_time=T0 + 1000, run_name="trial-1", tags={"mlflow.parentRunId": pid}
    )
    client.log_metric(child.info.run_id, "loss", 0.5, timestamp=T0 + 2000, step=3)
    client.set_terminated(child.info.run_id, "FAILED", end_time=T0 + 5000)
    lone = client.create_run(client.create_experiment("nlp"), start_time=T0 + 7, run_name="bert")
    client.log_param(lone.info.run_id, "layers", "12")
    client.set_terminated(lone.info.run_id, "KILLED", end_time=T0 + 9)


def _tree(root: Path, skip: set[Path]) -> dict[str, Any]:
    """Every file under root: sqlite databases as their dump, other files as bytes."""
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(path == s or s in path.parents for s in skip):
            continue
        rel = str(path.relative_to(root))
        if path.suffix == ".db":
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                out[rel] = list(conn.iterdump())
        else:
            out[rel] = path.read_bytes()
    return out


def _mlflow_source_ids(uri: str) -> list[str]:
    client = MlflowClient(tracking_uri=uri)
    return [
        run.data.tags.get("bridge.source_id", "")
        for exp in client.search_experiments()
        for run in client.search_runs([exp.experiment_id], max_results=1000)
    ]


def test_pairs_synced_before_the_refactor_resync_as_no_ops(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, old_code: Path
) -> None:
    corpus = cached_corpus(tmp_path_factory.getbasetemp())
    wandb_dir = {p.parent for p in corpus.values()}.pop()
    work = tmp_path / "work"  # every store and artifact root lives here (the CLI's cwd)
    work.mkdir()
    states = tmp_path / "states"
    states.mkdir()
    source_db = f"sqlite:///{work / 'source.db'}"
    _make_mlflow_source(source_db, tmp_path)
    wb_to_ml = f"sqlite:///{work / 'from-wandb.db'}"
    ml_to_ml = f"sqlite:///{work / 'from-mlflow.db'}"
    pairs = {  # name -> (source, destination)
        "wandb-offline->mlflow": (f"wandb-offline:{wandb_dir}", f"mlflow:{wb_to_ml}"),
        "mlflow->mlflow": (f"mlflow:{source_db}", f"mlflow:{ml_to_ml}"),
        "mlflow->wandb-offline": (f"mlflow:{source_db}", f"wandb-offline:{work / 'wandb-out'}"),
        "round-trip->wandb-offline": (f"mlflow:{wb_to_ml}", f"wandb-offline:{work / 'wb-back'}"),
    }

    first: dict[str, dict[str, str]] = {}
    for name, (src, dest) in pairs.items():
        made = _cli(
            work, "sync", src, dest, "--state", str(states / f"{name}.db"), "--json", code=old_code
        )
        assert made.returncode in (0, 1), (name, made.stdout, made.stderr[-3000:])
        report = json.loads(made.stdout)
        first[name] = {r["source_id"]: r["action"] for r in report["runs"]}
        assert "create" in first[name].values(), (name, report["counts"])

    before = _tree(work, skip=set())
    copies = {uri: sorted(_mlflow_source_ids(uri)) for uri in (wb_to_ml, ml_to_ml)}

    for name, (src, dest) in pairs.items():
        state = str(states / f"{name}.db")
        for extra in ((), ("--full",)):
            again = _cli(work, "sync", src, dest, "--state", state, "--json", *extra)
            assert again.returncode == 0, (name, extra, again.stdout, again.stderr[-3000:])
            report = json.loads(again.stdout)
            assert report["points_written"] == 0, (name, extra, report["counts"])
            actions = {r["source_id"]: r["action"] for r in report["runs"]}
            assert set(actions) == set(first[name]), name
            for sid, action in actions.items():
                # a run the old code copied is unchanged now; one it skipped is skipped again
                wanted = "skip" if first[name][sid] == "skip" else "unchanged"
                assert action == wanted, (name, extra, sid, first[name][sid], action)
        checked = _cli(work, "verify", src, dest, "--state", state, "--json")
        assert checked.returncode == 0, (name, checked.stdout[-3000:], checked.stderr[-3000:])

    assert _tree(work, skip=set()) == before  # not one row, file or byte written anywhere
    for uri, ids in copies.items():
        assert sorted(_mlflow_source_ids(uri)) == ids
        assert len(ids) == len(set(ids)), f"duplicate copies in {uri}"
