"""MLflow's basic-auth app (``mlflow server --app-name basic-auth``) as destination and
source (issue 15): credentials from MLFLOW_TRACKING_USERNAME/PASSWORD; a 401 is one line
(exit 2); an experiment the user may not use fails that experiment's runs (exit 1) while
the pass goes on; when nothing at all is permitted the pass is one line (exit 2).

One server for the module, on the production stack: tracking store and the auth app's
users/permissions both in PostgreSQL, ``default_permission = NO_PERMISSIONS`` so the
per-experiment grants decide. Users: admin; alice (grants per test); bob (DENY on every
experiment: he can neither read nor create one).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import fresh_pg_database, running_mlflow_server
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

ADMIN = ("admin", "admin-BasicAuth-Pw-0193")
ALICE = ("alice", "alice-BasicAuth-Pw-2741")
BOB = ("bob", "bob-BasicAuth-Pw-5518")
WRONG = "wrong-BasicAuth-Pw-9902"
SECRETS = [ADMIN[1], ALICE[1], BOB[1], WRONG]


@dataclass
class Server:
    url: str
    session: requests.Session  # as admin

    def admin_client(self) -> MlflowClient:
        return _as(ADMIN, lambda: MlflowClient(self.url))

    def grant(self, user: str, experiment_id: str, permission: str) -> None:
        r = self.session.post(
            self.url + "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": user,
                "resource_type": "experiment",
                "resource_id": experiment_id,
                "permission": permission,
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text


def _as(creds: tuple[str, str], call: Any) -> Any:
    """Run ``call`` with MLflow's credential variables set to ``creds`` (this process)."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update(dict(zip(names, creds, strict=True)))
    try:
        client = call()
        if isinstance(client, MlflowClient):
            return _Bound(client, creds)
        return client
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


class _Bound:
    """An MlflowClient whose every call runs with one user's credentials."""

    def __init__(self, client: MlflowClient, creds: tuple[str, str]) -> None:
        self._client, self._creds = client, creds

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *a, **k: _as(self._creds, lambda: attr(*a, **k))


def _module_pg_database() -> Iterator[str]:
    with fresh_pg_database("bridge_auth_") as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("basic-auth")
    databases = _module_pg_database()
    backend = next(databases)
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {backend}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        # the app's CSRF protection wants a fixed key
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "basic-auth-test-key",
    }
    try:
        with running_mlflow_server(
            work, backend, extra_args=["--app-name", "basic-auth"], env=env, timeout=300
        ) as url:
            session = requests.Session()
            session.auth = ADMIN
            for name, password in (ALICE, BOB):
                r = session.post(
                    url + "/api/2.0/mlflow/users/create",
                    json={"username": name, "password": password},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
            srv = Server(url, session)
            srv.grant(BOB[0], "*", "DENY")  # bob: no experiment, not even a new one
            yield srv
    finally:
        for _ in databases:  # drop the database
            pass


# ---- helpers ------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


def bridge(tmp: Path, *args: str, creds: tuple[str, str] | None) -> Result:
    """``python -m bridge.cli ARGS`` with only these MLflow credentials in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    if creds is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = creds
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _sync_into(
    server: Server, tmp: Path, source: str, *extra: str, creds: tuple[str, str] | None
) -> Result:
    """``bridge sync SOURCE <server> --state tmp/s.db EXTRA`` as ``creds``."""
    dest = "mlflow:" + server.url
    return bridge(tmp, "sync", source, dest, "--state", str(tmp / "s.db"), *extra, creds=creds)


def _source(tmp: Path, experiments: dict[str, int]) -> str:
    """A sqlite MLflow store: per experiment name, that many finished runs (a param, a
    40-point metric, a file)."""
    uri = f"sqlite:///{tmp / 'source.db'}"
    client = MlflowClient(uri)
    (tmp / "note.txt").write_text("weights\n")
    for name, count in experiments.items():
        exp = client.create_experiment(name)
        for i in range(count):
            run = client.create_run(exp, run_name=f"{name}-run{i}")
            rid = run.info.run_id
            client.log_param(rid, "lr", str(0.1 * (i + 1)))
            for step in range(40):
                client.log_metric(rid, "loss", 1.0 / (step + 1), step=step, timestamp=1000 + step)
            client.log_artifact(rid, str(tmp / "note.txt"))
            client.set_terminated(rid)
    return "mlflow:" + uri


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {k: f"{k}-{tag}" for k in ("A", "B", "C")}


def _runs_in(srv: Server, name: str) -> list[Any]:
    client = srv.admin_client()
    exp = client.get_experiment_by_name(name)
    return [] if exp is None else list(client.search_runs([exp.experiment_id]))


def _leaks(texts: dict[str, str]) -> list[str]:
    needles = {s: s for s in SECRETS}
    for user, password in (ADMIN, ALICE, BOB):
        needles[f"basic auth of {user}"] = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [
        f"{what} in {where}" for where, t in texts.items() for what, n in needles.items() if n in t
    ]


# ---- tests --------------------------------------------------------------------------


def test_destination_with_credentials_copies_verifies_and_leaks_nothing(
    server: Server, tmp_path: Path
) -> None:
    names = _names()
    source = _source(tmp_path, {names["A"]: 2})
    dest = "mlflow:" + server.url
    state = tmp_path / "state.db"
    common = ("--state", str(state))

    first = bridge(
        tmp_path,
        "sync",
        source,
        dest,
        *common,
        "--json",
        "--report",
        str(tmp_path / "report.md"),
        creds=ALICE,
    )
    assert first.code == 0, first.err
    plan = json.loads(first.out)
    assert [r["outcome"] for r in plan["runs"]] == ["done", "done"], plan["runs"]
    copies = _runs_in(server, names["A"])
    assert sorted(r.info.run_name for r in copies) == [f"{names['A']}-run0", f"{names['A']}-run1"]
    # the experiment alice created is hers: she reads it back
    mine = _as(ALICE, lambda: MlflowClient(server.url))
    assert mine.get_experiment_by_name(names["A"]) is not None

    checked = bridge(tmp_path, "verify", source, dest, *common, "--json", creds=ALICE)
    assert checked.code == 0, checked.out + checked.err
    again = bridge(tmp_path, "sync", source, dest, *common, "--json", creds=ALICE)
    assert again.code == 0, again.err
    replan = json.loads(again.out)
    assert {r["outcome"] for r in replan["runs"]} == {"unchanged"}
    assert replan["points_written"] == 0
    text = bridge(tmp_path, "-v", "sync", source, dest, *common, creds=ALICE)  # logs too
    assert text.code == 0, text.err

    conn = sqlite3.connect(state)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert "PermissionDenied" not in dump and len(dump) > 1000  # the state holds the runs
    outputs = {
        f"{i} {stream}": text
        for i, r in enumerate((first, checked, again, text))
        for stream, text in (("stdout", r.out), ("stderr", r.err))
    }
    outputs["report.md"] = (tmp_path / "report.md").read_text()
    outputs["state store"] = dump
    assert _leaks(outputs) == []


@pytest.mark.parametrize("role", ["destination", "source"])
def test_wrong_or_missing_credentials_are_one_line_exit_2(
    server: Server, tmp_path: Path, role: str
) -> None:
    names = _names()
    local = _source(tmp_path, {names["A"]: 1})
    remote = "mlflow:" + server.url
    pair = (local, remote) if role == "destination" else (remote, local)
    state = ("--state", str(tmp_path / "state.db"))
    wrong = bridge(tmp_path, "sync", *pair, *state, creds=(ALICE[0], WRONG))
    missing = bridge(tmp_path, "sync", *pair, *state, creds=None)
    for result, says in (
        (wrong, "refused the credentials of user 'alice'"),
        (missing, "no credentials"),
    ):
        assert result.code == 2, result.err
        assert result.out == ""
        lines = _lines(result.err)
        assert len(lines) == 1, result.err
        line = lines[0]
        assert server.url in line and "HTTP 401" in line and says in line, line
        assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line
    assert _leaks({"wrong": wrong.err, "missing": missing.err}) == []
    assert _runs_in(server, names["A"]) == []  # nothing written anywhere


def test_nothing_permitted_is_one_line_exit_2(server: Server, tmp_path: Path) -> None:
    """bob may neither create nor read an experiment: every run is refused, so the pass is
    one line, exit 2, and nothing is written."""
    names = _names()
    source = _source(tmp_path, {names["A"]: 1, names["B"]: 1})
    done = _sync_into(server, tmp_path, source, creds=BOB)
    assert done.code == 2, done.out + done.err
    lines = _lines(done.err)
    assert len(lines) == 1, done.err
    line = lines[0]
    assert "nothing could be copied" in line and "permission denied (HTTP 403)" in line, line
    assert "user 'bob'" in line and server.url in line and "1 more project" in line, line
    assert BOB[1] not in done.out + done.err
    assert _runs_in(server, names["A"]) == [] and _runs_in(server, names["B"]) == []


def test_experiment_refused_at_destination_fails_its_runs_only(
    server: Server, tmp_path: Path
) -> None:
    """A: alice creates it (hers). B: made by admin, alice may only READ it. C: made by
    admin, no grant (NO_PERMISSIONS). A's runs are copied; B's and C's fail, each with one
    line naming its experiment; exit 1."""
    names = _names()
    source = _source(tmp_path, {names["A"]: 2, names["B"]: 1, names["C"]: 1})
    admin = server.admin_client()
    server.grant(ALICE[0], admin.create_experiment(names["B"]), "READ")
    admin.create_experiment(names["C"])

    done = _sync_into(server, tmp_path, source, "--json", creds=ALICE)
    assert done.code == 1, done.err
    plan = json.loads(done.out)
    by_project: dict[str, list[dict[str, Any]]] = {}
    for line in plan["runs"]:
        by_project.setdefault(line["project"], []).append(line)
    assert [r["outcome"] for r in by_project[names["A"]]] == ["done", "done"]
    assert len(_runs_in(server, names["A"])) == 2
    for key in ("B", "C"):
        (line,) = by_project[names[key]]
        assert line["outcome"] == "failed", line
        error = line["error"]
        assert "\n" not in error
        assert f"experiment '{names[key]}'" in error and "permission denied" in error, error
        assert "user 'alice'" in error and "EDIT" in error, error
        assert _runs_in(server, names[key]) == []
    assert ALICE[1] not in done.out + done.err


def test_experiment_refused_at_source_is_reported_not_dropped(
    server: Server, tmp_path: Path
) -> None:
    """On the server: A (alice READ) and C (no grant), a run each, made by admin. alice
    syncs both by name into sqlite: A's run is copied, C is one failed line naming it
    (exit 1). C alone: nothing can be done, one line, exit 2."""
    names = _names()
    admin = server.admin_client()
    for key in ("A", "C"):
        exp = admin.create_experiment(names[key])
        run = admin.create_run(exp, run_name=f"{key}-run")
        admin.log_metric(run.info.run_id, "loss", 0.5, step=1)
        admin.set_terminated(run.info.run_id)
        if key == "A":
            server.grant(ALICE[0], exp, "READ")
    source = "mlflow:" + server.url
    dest = f"mlflow:sqlite:///{tmp_path / 'dest.db'}"
    state = ("--state", str(tmp_path / "s.db"))
    both = ("--experiment", names["A"], "--experiment", names["C"])

    done = bridge(tmp_path, "sync", source, dest, *state, *both, "--json", creds=ALICE)
    assert done.code == 1, done.err
    plan = json.loads(done.out)
    outcomes = {line["project"]: line for line in plan["runs"]}
    assert outcomes[names["A"]]["outcome"] == "done"
    refused = outcomes[names["C"]]
    assert refused["outcome"] == "failed"
    assert f"experiment '{names['C']}'" in refused["error"], refused
    assert "permission denied" in refused["error"] and "READ" in refused["error"]
    copied = MlflowClient(dest.removeprefix("mlflow:")).get_experiment_by_name(names["A"])
    assert copied is not None

    alone = bridge(tmp_path, "sync", source, dest, *state, "--experiment", names["C"], creds=ALICE)
    assert alone.code == 2, alone.out + alone.err
    lines = _lines(alone.err)
    assert len(lines) == 1 and f"experiment '{names['C']}'" in lines[0], alone.err
    assert "permission denied" in lines[0] and server.url in lines[0]
    assert ALICE[1] not in done.out + done.err + alone.out + alone.err


def _add_point(source: str, name: str) -> None:
    """One more loss point in every run of source experiment ``name``: a re-sync writes."""
    client = MlflowClient(source.removeprefix("mlflow:"))
    exp = client.get_experiment_by_name(name)
    assert exp is not None
    for run in client.search_runs([exp.experiment_id]):
        client.log_metric(run.info.run_id, "loss", 0.01, step=40, timestamp=2000)


def test_later_write_refused_fails_that_experiments_runs_by_name(
    server: Server, tmp_path: Path
) -> None:
    """admin copies A and B (his experiments); alice may EDIT A but only READ B. A new
    point at the source: alice's re-sync updates A's run; B's run fails with one line
    naming B, alice and EDIT (the write to the existing run was refused); exit 1."""
    names = _names()
    source = _source(tmp_path, {names["A"]: 1, names["B"]: 1})
    dest = "mlflow:" + server.url
    state = ("--state", str(tmp_path / "s.db"))
    first = bridge(tmp_path, "sync", source, dest, *state, creds=ADMIN)
    assert first.code == 0, first.err
    admin = server.admin_client()
    for key, permission in (("A", "EDIT"), ("B", "READ")):
        exp = admin.get_experiment_by_name(names[key])
        server.grant(ALICE[0], exp.experiment_id, permission)
    _add_point(source, names["A"])
    _add_point(source, names["B"])

    done = bridge(tmp_path, "sync", source, dest, *state, "--json", creds=ALICE)
    assert done.code == 1, done.out + done.err
    plan = json.loads(done.out)
    outcomes = {line["project"]: line for line in plan["runs"]}
    assert outcomes[names["A"]]["outcome"] == "done", outcomes
    (copy_a,) = _runs_in(server, names["A"])
    history = admin.get_metric_history(copy_a.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(41))  # the new point is there
    refused = outcomes[names["B"]]
    assert refused["outcome"] == "failed", refused
    assert refused["error"] == (
        f"PermissionDenied: experiment '{names['B']}' on {dest}: permission denied (HTTP 403) "
        "for user 'alice'; ask the server's admin for EDIT on it"
    ), refused
    (copy_b,) = _runs_in(server, names["B"])
    assert len(admin.get_metric_history(copy_b.info.run_id, "loss")) == 40  # untouched
    assert _leaks({"stdout": done.out, "stderr": done.err}) == []


def test_each_later_write_refused_names_the_experiment(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write into an existing run of an experiment alice may only READ — metric
    batches (one request at a time and several in flight), tags, files, the update and
    finish marks, deletion — is one PermissionDenied line naming the experiment; the
    first failure of a sink is what its flush raises."""
    from bridge.adapters.mlflow.writer import MlflowWriter
    from bridge.errors import PermissionDenied
    from bridge.schema import MetricChunk

    name = _names()["B"]
    admin = server.admin_client()
    exp = admin.create_experiment(name)
    run_id = admin.create_run(exp, run_name="r").info.run_id
    server.grant(ALICE[0], exp, "READ")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ALICE[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ALICE[1])
    writer = MlflowWriter(server.url)
    (tmp_path / "f.txt").write_text("x")

    def line(need: str) -> str:
        return (
            f"experiment '{name}' on mlflow:{server.url}: permission denied (HTTP 403) for "
            f"user 'alice'; ask the server's admin for {need} on it"
        )

    def metrics(in_flight: int) -> None:
        writer.log_batch_in_flight = in_flight
        sink = writer.metric_sink(run_id)
        sink.add(MetricChunk(key="loss", steps=[1, 2], timestamps=[1, 2], values=[0.5, 0.25]))
        sink.flush()

    def put_file() -> None:
        with (tmp_path / "f.txt").open("rb") as fh:
            writer.put_file(run_id, "f.txt", fh)

    calls = {
        "log_batch": lambda: metrics(1),
        "log_batch in flight": lambda: metrics(4),
        "set_tags": lambda: writer.set_tags(run_id, {"k": "v"}),
        "begin_update": lambda: writer.begin_update(run_id),
        "put_file": put_file,
    }
    try:
        for what, call in calls.items():
            with pytest.raises(PermissionDenied) as caught:
                call()
            assert str(caught.value) == line("EDIT"), what
        with pytest.raises(PermissionDenied) as caught:
            writer.delete_run(run_id)
        assert str(caught.value) == line("MANAGE")
    finally:
        writer.close()
    assert (
        admin.get_run(run_id).data.metrics == {}
        and admin.get_run(run_id).data.tags.get("k") is None
    )
    assert admin.list_artifacts(run_id) == []


def test_registered_model_refused_fails_that_model_only(server: Server, tmp_path: Path) -> None:
    """The source registers M and N, a version each from a run of A. At the destination M
    already exists, admin's, and alice has no permission on it: M is one failed line
    naming it and alice (exit 1); N and the runs are copied."""
    names = _names()
    model, other = f"M-{names['A']}", f"N-{names['A']}"
    source = _source(tmp_path, {names["A"]: 1, names["B"]: 1})
    client = MlflowClient(source.removeprefix("mlflow:"))
    exp = client.get_experiment_by_name(names["A"])
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    rid = run.info.run_id
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    client.log_artifacts(rid, str(tmp_path / "model"), "model")
    for registered in (model, other):
        client.create_registered_model(registered)
        client.create_model_version(registered, f"runs:/{rid}/model", rid)
    server.admin_client().create_registered_model(model)  # admin's: alice may not touch it

    done = _sync_into(server, tmp_path, source, "--json", creds=ALICE)
    assert done.code == 1, done.out + done.err
    plan = json.loads(done.out)
    assert {r["project"]: r["outcome"] for r in plan["runs"]} == {
        names["A"]: "done",
        names["B"]: "done",
    }
    assert len(_runs_in(server, names["A"])) == 1 and len(_runs_in(server, names["B"])) == 1
    lines = {m["name"]: m for m in plan["models"]}
    assert lines[other]["outcome"] == "done", lines[other]
    refused = lines[model]
    assert refused["outcome"] == "failed", refused
    assert refused["error"] == (
        f"PermissionDenied: registered model '{model}' on mlflow:{server.url}: permission "
        "denied (HTTP 403) for user 'alice'; ask the server's admin for EDIT (or the right "
        "to create registered models) on it"
    ), refused
    admin = server.admin_client()
    (copied,) = admin.search_model_versions(f"name='{other}'")
    (run_a,) = _runs_in(server, names["A"])
    assert copied.run_id == run_a.info.run_id  # linked to the run's copy
    assert admin.search_model_versions(f"name='{model}'") == []  # admin's model untouched
    assert _leaks({"stdout": done.out, "stderr": done.err}) == []
