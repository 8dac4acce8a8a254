"""End to end: the same SDK-made runs synced from offline folders and from a W&B server.

The loopback server (tests/fakes) serves runs loaded from offline folders made by the real
SDK; the real `wandb.Api` reads them. Both paths must give the same MLflow content, a run
arriving both ways must never duplicate, and injected 429/503 faults must not change a thing.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeWandbServer
from mlflow.tracking import MlflowClient
from sdk_runs import make_offline_corpus

from bridge import api

pytestmark = pytest.mark.e2e

ENTITY, PROJECT = "acme", "demo"
ROLES = ("basic", "artifact", "crashed", "bigconfig")  # one folder each
# Tags that name where a run was read from, or that only one path can know:
# - bridge.source_uri / bridge.fingerprint: the source URI and its fingerprint differ by design;
# - wandb.exit_code: the server reports a state, not the process exit code;
PATH_TAGS = {"bridge.source_uri", "bridge.fingerprint", "wandb.exit_code"}
# - wandb.cli_version / wandb.resumed_parts: read from the offline log's telemetry and parts;
# - bridge.status_reason: offline, the reason is the exit record; online, the state says it.
OFFLINE_ONLY_PREFIXES = ("wandb.cli_version", "wandb.resumed_parts", "bridge.status_reason")
# wandb-core writes wandb-metadata.json when it uploads a run; an offline folder has none
# (its content is in the log's environment record, mapped to the same tags).
SERVER_ONLY_FILES = {"files/wandb-metadata.json"}


@pytest.fixture(scope="module")
def wandb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    runs = make_offline_corpus(root, entity=ENTITY, project=PROJECT)
    only = tmp_path_factory.mktemp("selected") / "wandb"
    only.mkdir()
    for role in ROLES:
        shutil.copytree(runs[role], only / runs[role].name)
    return only


@pytest.fixture
def server(
    wandb_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeWandbServer]:
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    with FakeWandbServer() as srv:
        for folder in sorted(wandb_dir.iterdir()):
            srv.load_offline_run(folder)
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        monkeypatch.delenv("WANDB_BASE_URL", raising=False)
        yield srv


def _content(uri: str) -> dict[str, dict[str, Any]]:
    """Everything the mapping promises, per source identity."""
    client = MlflowClient(tracking_uri=uri)
    out: dict[str, dict[str, Any]] = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            sid = run.data.tags["bridge.source_id"]
            assert sid not in out, f"duplicate run for {sid}"
            metrics = {}
            for key in run.data.metrics:
                points = client.get_metric_history(run.info.run_id, key)
                metrics[key] = sorted(
                    (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value) for m in points
                )
            artifacts: list[str] = []
            stack = [""]
            while stack:
                for info in client.list_artifacts(run.info.run_id, stack.pop() or None):
                    if info.is_dir:
                        stack.append(info.path)
                    elif info.path not in SERVER_ONLY_FILES:
                        artifacts.append(info.path)
            tags = {
                k: v
                for k, v in run.data.tags.items()
                if k not in PATH_TAGS
                and not k.startswith(OFFLINE_ONLY_PREFIXES)
                and not k.startswith("mlflow.log-model")
            }
            out[sid] = {
                "experiment": exp.name,
                "name": run.info.run_name,
                "status": run.info.status,
                "start_s": (run.info.start_time or 0) // 1000,
                "params": dict(run.data.params),
                "tags": tags,
                "metrics": metrics,
                "artifacts": sorted(artifacts),
            }
    return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    problems = []
    assert set(a) == set(b), set(a) ^ set(b)
    for sid in a:
        for field in a[sid]:
            if a[sid][field] != b[sid][field]:
                if field == "metrics":
                    for key in set(a[sid][field]) | set(b[sid][field]):
                        if a[sid][field].get(key) != b[sid][field].get(key):
                            problems.append(f"{sid} metric {key}")
                elif isinstance(a[sid][field], dict):
                    keys = set(a[sid][field]) | set(b[sid][field])
                    for k in sorted(keys):
                        if a[sid][field].get(k) != b[sid][field].get(k):
                            problems.append(
                                f"{sid} {field}[{k}]: {a[sid][field].get(k)!r} != "
                                f"{b[sid][field].get(k)!r}"
                            )
                else:
                    problems.append(f"{sid} {field}: {a[sid][field]!r} != {b[sid][field]!r}")
    return problems


def test_offline_and_server_give_identical_mlflow_content(
    tmp_path: Path, wandb_dir: Path, server: FakeWandbServer
) -> None:
    offline_uri = f"sqlite:///{tmp_path / 'offline.db'}"
    online_uri = f"sqlite:///{tmp_path / 'online.db'}"
    a = api.sync(
        f"wandb-offline:{wandb_dir}", f"mlflow:{offline_uri}", state=str(tmp_path / "a.db")
    )
    assert a.exit_code() == 0, [(r.source_id, r.error) for r in a.runs]
    b = api.sync(
        f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}",
        f"mlflow:{online_uri}",
        state=str(tmp_path / "b.db"),
    )
    assert b.exit_code() == 0, [(r.source_id, r.error) for r in b.runs]
    offline, online = _content(offline_uri), _content(online_uri)
    assert len(offline) == len(ROLES)
    assert sum(len(pts) for run in offline.values() for pts in run["metrics"].values()) > 100
    problems = _diff(offline, online)
    assert problems == [], "\n".join(problems)


def test_source_switch_writes_no_new_runs(
    tmp_path: Path, wandb_dir: Path, server: FakeWandbServer
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = str(tmp_path / "state.db")
    first = api.sync(f"wandb-offline:{wandb_dir}", f"mlflow:{uri}", state=state)
    assert first.exit_code() == 0
    before = _content(uri)
    second = api.sync(
        f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}", f"mlflow:{uri}", state=state
    )
    assert second.exit_code() == 0, [(r.source_id, r.error, r.conflicts) for r in second.runs]
    assert all(r.action != "create" for r in second.runs)
    assert sum(r.points_written for r in second.runs) == 0
    after = _content(uri)
    assert set(after) == set(before)
    # the same state store lost: the server copy still re-links to the same runs
    third = api.sync(
        f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}",
        f"mlflow:{uri}",
        state=str(tmp_path / "fresh.db"),
    )
    assert all(r.action != "create" for r in third.runs)
    assert set(_content(uri)) == set(before)


def test_faults_give_the_fault_free_result(tmp_path: Path, server: FakeWandbServer) -> None:
    clean_uri = f"sqlite:///{tmp_path / 'clean.db'}"
    faulty_uri = f"sqlite:///{tmp_path / 'faulty.db'}"
    source = f"wandb:{ENTITY}/{PROJECT}?base_url={server.url}"
    assert api.sync(source, f"mlflow:{clean_uri}", state=str(tmp_path / "a.db")).exit_code() == 0
    server.set_faults(0.10, seed=7)
    faulty = api.sync(source, f"mlflow:{faulty_uri}", state=str(tmp_path / "b.db"))
    assert faulty.exit_code() == 0, [(r.source_id, r.error) for r in faulty.runs]
    assert sum(server.faults.values()) > 0, "no fault was injected"
    assert _diff(_content(clean_uri), _content(faulty_uri)) == []
