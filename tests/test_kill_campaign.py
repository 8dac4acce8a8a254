"""Kill campaign: `bridge sync` SIGKILLed at named points, re-run, nothing lost or doubled.

Issue 10's proof of crash safety. Two multi-run syncs, each source built once per module:

* W&B offline → MLflow sqlite (the SQL bulk metric path): four runs made by the real
  wandb SDK — one with 21,000 points (two engine flush batches, three bulk transactions),
  a text value (history extras) and a saved file; one logging a dataset artifact and a
  model artifact (an MLflow logged model); two small runs with files.
* MLflow sqlite → an `mlflow server` on 127.0.0.1 (the ``log_batch`` path): a parent run
  with 2,500 points and artifacts, its child, a run in a second experiment, and a
  registered model with two versions and two aliases.

Each case SIGKILLs `bridge sync` at a named point (``BRIDGE_KILL_AT``, bridge/faults.py)
— some kill the recovery once more at a point only a recovery reaches — or after a seeded
random delay, then re-runs it without the hook until it exits 0 (at most twice) and
checks against the source and a fault-free copy: every source run has exactly one
destination run (by ``bridge.source_id``) and no other run exists; every metric point is
there exactly once (sorted (key, step, timestamp, value) of source vs destination, read
with SQL); every file of the fault-free copy is there with the same bytes; each model
object and registry version exists once and is complete, aliases on the right versions;
the state's watermarks equal the destination's counts (a watermark off either way
re-sends or skips points at the next append); `bridge verify` exits 0. A named point that
is not reached fails its case: a point the campaign cannot reach proves nothing.
Every failure message carries the case's kill points or seed (``BRIDGE_KILL_CAMPAIGN_SEED``
replays a random series).

Each `bridge` process is forked from one pre-imported interpreter (a fork server, as
multiprocessing's ``forkserver``), saving the seconds MLflow takes to import per process;
every sync is still a process of its own, killed for real. ``BRIDGE_KILL_CAMPAIGN_EXEC=1``
spawns the `bridge` executable instead. ``BRIDGE_KILL_CAMPAIGN_SUMMARY=FILE`` writes the
campaign's figures (the README's "Reliability" table) as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from conftest import start_mlflow_server, stop_mlflow_server

from tests.sdk_runs import sdk_env

REPO = Path(__file__).resolve().parents[1]
KILLED = -signal.SIGKILL
BASE_SEED = os.environ.get("BRIDGE_KILL_CAMPAIGN_SEED", "20261207")
RANDOM_KILLS = {"wandb": 3, "server": 2}
T0 = 1_650_000_000_000

# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One kill scenario: SIGKILL at each of ``kills`` in turn (each stage a process of
    its own), or after a random delay drawn from ``seed``; then recover and check."""

    scenario: str  # "wandb" (offline → sqlite) or "server" (sqlite → mlflow server)
    kills: tuple[str, ...] = ()
    seed: str | None = None
    prep: str = ""  # "state-lost": a clean sync first, then the state store deleted

    @property
    def id(self) -> str:
        what = "+".join(self.kills) if self.kills else f"seed={self.seed}"
        return f"{self.scenario}:{self.prep + ':' if self.prep else ''}{what}"


def _named(scenario: str, *points: str, prep: str = "") -> Case:
    return Case(scenario=scenario, kills=points, prep=prep)


WANDB_CASES = [
    _named("wandb", "plan.listed"),
    _named("wandb", "plan.run#2"),
    _named("wandb", "plan.done"),
    _named("wandb", "apply.create.after_create_run", "plan.adopt"),
    _named("wandb", "apply.create.after_state#3"),
    _named("wandb", "apply.metadata.after_write"),
    _named("wandb", "apply.metadata.after_state", "apply.update.after_state"),
    _named("wandb", "mlflow.bulk.before_send"),
    _named("wandb", "mlflow.bulk.mid_transaction"),
    _named("wandb", "mlflow.bulk.after_send#2"),
    _named("wandb", "apply.history.batch.before_flush"),
    _named("wandb", "apply.history.batch.after_flush"),
    _named("wandb", "apply.history.batch.after_watermark"),
    _named("wandb", "apply.history.final.before_flush#2"),
    _named("wandb", "apply.history.final.after_flush"),
    _named("wandb", "apply.history.final.after_watermark#3"),
    _named("wandb", "apply.history.after_extras"),
    _named("wandb", "apply.results.after_write#2"),
    _named("wandb", "apply.file.before_put#2"),
    _named("wandb", "apply.file.after_put"),
    _named("wandb", "apply.object.after_state"),
    _named("wandb", "apply.model.before_put"),
    _named("wandb", "mlflow.model.after_create"),
    _named("wandb", "mlflow.model.before_finalize"),
    _named("wandb", "apply.model.after_put"),
    _named("wandb", "apply.finish.before#2"),
    _named("wandb", "mlflow.finish.after_status"),
    _named("wandb", "mlflow.finish.after_fingerprint#3"),
    _named("wandb", "apply.finish.after_complete"),
    _named("wandb", "plan.relink.before_state", prep="state-lost"),
    _named("wandb", "plan.relink.between#2", prep="state-lost"),
]
SERVER_CASES = [
    _named("server", "apply.create.after_create_run", "plan.adopt"),
    _named("server", "mlflow.log_batch.before#2"),
    _named("server", "mlflow.log_batch.after"),
    _named("server", "apply.history.final.after_flush"),
    _named("server", "apply.file.after_put#3"),
    _named("server", "registry.model.after_ensure"),
    _named("server", "registry.version.after_create"),
    _named("server", "registry.version.after_create#2"),
    _named("server", "registry.version.after_state"),
    _named("server", "registry.alias.after_set"),
]
RANDOM_CASES = [
    Case(scenario=scenario, seed=f"{BASE_SEED}-{scenario}-{i}")
    for scenario, count in RANDOM_KILLS.items()
    for i in range(count)
]
CASES = WANDB_CASES + SERVER_CASES + RANDOM_CASES

# --------------------------------------------------------------------------- processes


@dataclass
class Result:
    rc: int | None  # None: timed out (and killed)
    stdout: str
    stderr: str


_ZYGOTE = r"""
import json, os, signal, sys, time
import bridge.cli
for name in ("bridge.api", "bridge.engine.sync", "bridge.engine.verify",
             "bridge.adapters.mlflow.writer", "bridge.adapters.mlflow.reader",
             "bridge.adapters.mlflow.bulk", "bridge.adapters.wandb.offline_reader",
             "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.tracking.rest_store",
             "mlflow.store.model_registry.sqlalchemy_store",
             "mlflow.store.model_registry.rest_store", "mlflow.store.db.utils",
             "alembic.command", "alembic.config", "sqlalchemy.dialects.sqlite",
             "multiprocessing.synchronize"):
    __import__(name)
print("ready", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.dup2(os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            os.chdir(req["cwd"])
            os.environ.update(req["env"])
            sys.argv = ["bridge", *req["argv"]]
            try:
                bridge.cli.main(args=req["argv"], prog_name="bridge")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + req["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            rc = None
            break
        time.sleep(0.01)
    print(json.dumps({"rc": rc}), flush=True)
"""


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_KILL")}
    env.update(CI="1", OPENBLAS_NUM_THREADS="1", MLFLOW_TRUNCATE_LONG_VALUES="false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class BridgeRunner:
    """Runs ``bridge ARGS`` as a process of its own: forked from a pre-imported zygote,
    or (``BRIDGE_KILL_CAMPAIGN_EXEC=1``) the installed executable."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0
        self.zygote: subprocess.Popen[str] | None = None
        if os.environ.get("BRIDGE_KILL_CAMPAIGN_EXEC") != "1":
            self.zygote = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=_base_env(),
                cwd=workdir,
            )
            assert self.zygote.stdout is not None
            ready = self.zygote.stdout.readline().strip()
            assert ready == "ready", f"the fork server did not start: {ready!r}"

    def run(
        self, args: list[str], env: dict[str, str] | None = None, timeout: float = 300
    ) -> Result:
        self.count += 1
        out = self.workdir / f"p{self.count}.out"
        err = self.workdir / f"p{self.count}.err"
        if self.zygote is None:
            rc: int | None
            with open(out, "wb") as o, open(err, "wb") as e:
                try:
                    proc = subprocess.run(
                        [str(Path(sys.executable).with_name("bridge")), *args],
                        env={**_base_env(), **(env or {})},
                        stdout=o,
                        stderr=e,
                        timeout=timeout,
                        cwd=self.workdir,
                    )
                    rc = proc.returncode
                except subprocess.TimeoutExpired:
                    rc = None
        else:
            assert self.zygote.stdin is not None and self.zygote.stdout is not None
            request = {
                "argv": args,
                "env": env or {},
                "cwd": str(self.workdir),
                "stdout": str(out),
                "stderr": str(err),
                "timeout": timeout,
            }
            self.zygote.stdin.write(json.dumps(request) + "\n")
            self.zygote.stdin.flush()
            rc = json.loads(self.zygote.stdout.readline())["rc"]
        return Result(rc, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        if self.zygote is not None:
            assert self.zygote.stdin is not None
            self.zygote.stdin.close()
            try:
                self.zygote.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.zygote.kill()


# --------------------------------------------------------------------------- snapshots


@dataclass
class Snapshot:
    """What a destination holds for one scenario, keyed so copies of different cases
    compare: runs by source key; models by source identity; registry by version order."""

    runs: dict[str, list[str]] = field(default_factory=dict)  # key -> dest run ids
    sids: dict[str, str] = field(default_factory=dict)  # key -> source identity
    untagged_runs: int = 0
    points: dict[str, list[tuple]] = field(default_factory=dict)  # key -> sorted points
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> path -> digest
    models: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    versions: list[tuple[str, str]] = field(default_factory=list)  # (dest no., source no.)
    aliases: dict[str, str] = field(default_factory=dict)


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def _point(key: str, step: int, ts: int, value: float, is_nan: Any) -> tuple:
    return (key, int(step), int(ts), "nan" if is_nan else float(value))


def _tree(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under ``folder`` (empty if it is absent).
    Manifests name the destination's own model ids: compared by presence only. MLflow's
    local artifact store stages each upload as a reserved ``.artifact.uploading.*`` file
    and renames it into place; a SIGKILL in between leaves the stage file behind, which
    MLflow's own listing hides and no client can write or read, so it is skipped here."""
    from mlflow.store.artifact.local_artifact_repo import _TEMP_ARTIFACT_PREFIX

    out: dict[str, str] = {}
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.name.startswith(_TEMP_ARTIFACT_PREFIX):
                continue
            rel = path.relative_to(folder).as_posix()
            out[rel] = "" if rel.endswith("manifest.json") else _sha(path)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _local(uri: str, artifact_root: Path | None) -> Path:
    """A run's or model's artifact URI as a local folder (file:// or the server's root)."""
    if uri.startswith("mlflow-artifacts:"):
        assert artifact_root is not None
        return artifact_root / urlparse(uri).path.lstrip("/")
    return Path(unquote(urlparse(uri).path))


def snapshot(
    db: Path,
    key_of: Any,
    experiments: list[str] | None = None,
    model_name: str | None = None,
    artifact_root: Path | None = None,
) -> Snapshot:
    """Read a destination MLflow sqlite store (or a server's backend) with plain SQL."""
    snap = Snapshot()
    with _connect(db) as con:
        exp_ids = [
            str(r[0])
            for r in con.execute("SELECT experiment_id, name FROM experiments")
            if experiments is None or r[1] in experiments
        ]
        marks = ",".join("?" * len(exp_ids)) or "NULL"
        runs = con.execute(
            "SELECT r.run_uuid, r.artifact_uri, t.value FROM runs r LEFT JOIN tags t "
            f"ON t.run_uuid = r.run_uuid AND t.key = 'bridge.source_id' "
            f"WHERE r.experiment_id IN ({marks})",
            exp_ids,
        ).fetchall()
        for run_id, artifact_uri, sid in runs:
            if sid is None:
                snap.untagged_runs += 1
                continue
            key = key_of(sid)
            snap.runs.setdefault(key, []).append(run_id)
            snap.sids[key] = sid
            snap.points.setdefault(key, []).extend(
                _point(*row)
                for row in con.execute(
                    "SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ?",
                    (run_id,),
                )
            )
            snap.files.setdefault(key, {}).update(_tree(_local(artifact_uri, artifact_root)))
        for points in snap.points.values():
            points.sort()
        models = con.execute(
            "SELECT m.model_id, m.status, m.artifact_location, t.tag_value FROM logged_models m "
            "JOIN logged_model_tags t ON t.model_id = m.model_id AND t.tag_key = 'bridge.source_id' "
            f"WHERE m.experiment_id IN ({marks})",
            exp_ids,
        ).fetchall()
        for _, status, location, sid in models:
            files = _tree(_local(location, artifact_root))
            snap.models.setdefault(key_of(sid), []).append((int(status), files))
        if model_name is not None:
            snap.versions = sorted(
                (str(v), str(s))
                for v, s in con.execute(
                    "SELECT version, value FROM model_version_tags "
                    "WHERE name = ? AND key = 'bridge.source_version'",
                    (model_name,),
                )
            )
            count = con.execute(
                "SELECT COUNT(*) FROM model_versions WHERE name = ?", (model_name,)
            ).fetchone()[0]
            if count != len(snap.versions):
                snap.versions.append(("untagged", str(count - len(snap.versions))))
            snap.aliases = {
                a: str(v)
                for a, v in con.execute(
                    "SELECT alias, version FROM registered_model_aliases WHERE name = ?",
                    (model_name,),
                )
            }
    return snap


# --------------------------------------------------------------------------- scenarios


_SDK_SCRIPT = """
import os, wandb
ENTITY, PROJECT = "acme", "kills"
# 5 metrics x 4,200 steps = 21,000 points: two engine flush batches (every 20,000 points
# on stores that dedupe) and three bulk transactions (10,000 rows); a text value goes to
# the history extras; a saved file
run = wandb.init(entity=ENTITY, project=PROJECT, id="long", config={"lr": 0.01, "depth": 3})
open("notes.txt", "w").write("long run notes\\n")
run.save("notes.txt", policy="now")
for step in range(4200):
    row = {f"m{i}": step * (i + 1) * 0.5 for i in range(5)}
    if step == 7:
        row["phase"] = "warmup"
    run.log(row, step=step)
run.finish()
run = wandb.init(entity=ENTITY, project=PROJECT, id="arts", job_type="train")
os.makedirs("data", exist_ok=True)
open("data/train.csv", "w").write("x,y\\n1,2\\n3,4\\n")
open("data/readme.txt", "w").write("tiny dataset\\n")
ds = wandb.Artifact("tiny-data", type="dataset")
ds.add_file("data/train.csv")
ds.add_file("data/readme.txt", name="docs/readme.txt")
run.log_artifact(ds)
open("weights.bin", "wb").write(bytes(range(256)) * 64)
model = wandb.Artifact("clf", type="model", description="a classifier")
model.add_file("weights.bin")
run.log_artifact(model, aliases=["candidate"])
for step in range(300):
    run.log({"acc": step / 300, "loss": 1.0 / (step + 1)})
run.finish()
for rid in ("small-a", "small-b"):
    run = wandb.init(entity=ENTITY, project=PROJECT, id=rid, config={"seed": len(rid)})
    with open(os.path.join(run.dir, "result.json"), "w") as fh:
        fh.write('{"ok": true}\\n')
    for step in range(200):
        run.log({"loss": 1.0 / (step + 1), "lr": 0.1 * 0.99 ** step})
    run.finish()
"""


class Scenario:
    """A source built once, a fault-free reference copy, and per-case copies to kill."""

    name = ""

    def __init__(self, root: Path, runner: BridgeRunner) -> None:
        self.root = root
        self.runner = runner
        self.cases = 0
        self.reference = Snapshot()
        self.source_points: dict[str, list[tuple]] = {}
        self.warm_seconds: float | None = None

    def prepare(self, case_dir: Path) -> tuple[str, str]:
        """(source URI, destination URI) for a fresh case."""
        raise NotImplementedError

    def take(self, case_dir: Path) -> Snapshot:
        raise NotImplementedError

    def start(self) -> None:
        """The fault-free copy every case is compared with."""
        case_dir = self.root / "reference"
        case_dir.mkdir()
        src, dest = self.prepare(case_dir)
        res = self.runner.run(["sync", src, dest, "--state", str(case_dir / "state.db")])
        assert res.rc == 0, f"fault-free sync failed: {res.stdout}\n{res.stderr[-3000:]}"
        self.reference = self.take(case_dir)
        assert self.reference.points == self.source_points, "fault-free copy differs"
        assert set(self.reference.runs) == set(self.source_points)
        assert all(len(ids) == 1 for ids in self.reference.runs.values())

    def kill_window(self) -> float:
        """Seconds a warm fault-free sync takes, measured once on a fresh copy: random
        kill delays are drawn within it (the reference sync ran cold, with the first
        requests of a fresh server and the imports a process makes once)."""
        if self.warm_seconds is None:
            case_dir = self.new_case()
            src, dest = self.prepare(case_dir)
            began = time.monotonic()
            res = self.runner.run(["sync", src, dest, "--state", str(case_dir / "state.db")])
            self.warm_seconds = time.monotonic() - began
            assert res.rc == 0, f"fault-free sync failed: {res.stdout}\n{res.stderr[-3000:]}"
        return self.warm_seconds

    def new_case(self) -> Path:
        self.cases += 1
        case_dir = self.root / f"k{self.cases:02d}"
        case_dir.mkdir()
        return case_dir


class WandbScenario(Scenario):
    """SDK-made offline runs → a fresh MLflow sqlite store per case."""

    name = "wandb"

    def __init__(self, root: Path, runner: BridgeRunner) -> None:
        super().__init__(root, runner)
        sdk = root / "sdk"
        (sdk / "work").mkdir(parents=True)
        subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_SDK_SCRIPT)],
            cwd=sdk / "work",
            env=sdk_env(sdk),
            check=True,
            timeout=300,
            capture_output=True,
        )
        self.source_dir = sdk / "wandb"
        self.source_points = self._read_source()
        # An empty, migrated MLflow store, copied per case (creating one costs seconds).
        self.template = root / "template.db"
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{self.template}").search_experiments()
        self.start()

    def _read_source(self) -> dict[str, list[tuple]]:
        """Every metric point of every run, as the bridge's offline reader yields them."""
        from bridge.adapters.wandb.offline_reader import WandbOfflineReader
        from bridge.schema import MetricChunk

        reader = WandbOfflineReader(str(self.source_dir))
        out: dict[str, list[tuple]] = {}
        for header in reader.list_runs():
            points = out.setdefault(header.source_id, [])
            for item in reader.iter_history(reader.read_run(header)):
                if isinstance(item, MetricChunk):
                    points.extend(
                        _point(item.key, s, t, v, v != v)
                        for s, t, v in zip(item.steps, item.timestamps, item.values, strict=True)
                    )
            points.sort()
        assert len(out) == 4 and len(out["wandb:acme/kills/long"]) > 21_000
        return out

    def prepare(self, case_dir: Path) -> tuple[str, str]:
        shutil.copy(self.template, case_dir / "mlflow.db")
        return f"wandb-offline:{self.source_dir}", f"mlflow:sqlite:///{case_dir / 'mlflow.db'}"

    def take(self, case_dir: Path) -> Snapshot:
        return snapshot(case_dir / "mlflow.db", key_of=lambda sid: sid)


class ServerScenario(Scenario):
    """An MLflow sqlite source, renamed per case (experiments, registered model), → one
    `mlflow server`; source run ids stay the same in every copy, so they key the runs."""

    name = "server"

    def __init__(self, root: Path, runner: BridgeRunner) -> None:
        super().__init__(root, runner)
        self.server_dir = root / "server"
        self.url, self.proc = start_mlflow_server(self.server_dir)
        self.source_db = root / "source.db"
        self.source_aliases = self._make_source()
        self.source_points = self._read_source()
        self.start()

    def _make_source(self) -> dict[str, str]:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{self.source_db}")
        art = self.root / "source-artifacts"
        vision = client.create_experiment("vision", artifact_location=str(art / "vision"))
        nlp = client.create_experiment("nlp", artifact_location=str(art / "nlp"))
        parent = client.create_run(vision, start_time=T0, run_name="sweep").info.run_id
        metrics = [Metric("loss", 1.0 / (i + 1), T0 + i * 10, i) for i in range(2000)]
        metrics += [Metric("acc", i / 500, T0 + i * 10, i) for i in range(500)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(
                parent, metrics=metrics[i : i + 1000], params=[] if i else [Param("lr", "0.01")]
            )
        child = client.create_run(
            vision, start_time=T0 + 1, run_name="trial-1", tags={"mlflow.parentRunId": parent}
        ).info.run_id
        client.log_batch(
            child, metrics=[Metric("loss", 0.5 - i / 100, T0 + i, i) for i in range(40)]
        )
        lone = client.create_run(nlp, start_time=T0 + 2, run_name="bert").info.run_id
        client.log_param(lone, "layers", "12")
        client.log_metric(lone, "f1", float("nan"), timestamp=T0 + 3, step=0)
        client.log_metric(lone, "f1", 0.75, timestamp=T0 + 4, step=1)
        for i, run_id in enumerate((parent, lone)):
            folder = self.root / f"model-{i}"
            (folder / "model").mkdir(parents=True)
            (folder / "model" / "weights.bin").write_bytes(bytes([i]) * 5000)
            (folder / "model" / "MLmodel").write_text(f"flavors: {{}}\nrun: {i}\n")
            (folder / "notes.txt").write_text(f"run {i}\n")
            client.log_artifacts(run_id, str(folder))
        for run_id in (parent, child, lone):
            client.set_terminated(run_id, "FINISHED", end_time=T0 + 60_000)
        client.create_registered_model("clf", description="classifier")
        client.create_model_version("clf", f"runs:/{parent}/model", run_id=parent)
        client.create_model_version("clf", f"runs:/{lone}/model", run_id=lone)
        client.set_registered_model_alias("clf", "staging", "1")
        client.set_registered_model_alias("clf", "prod", "2")
        return {"staging": "1", "prod": "2"}

    def _read_source(self) -> dict[str, list[tuple]]:
        out: dict[str, list[tuple]] = {}
        with _connect(self.source_db) as con:
            for run_id, *point in con.execute(
                "SELECT run_uuid, key, step, timestamp, value, is_nan FROM metrics"
            ):
                out.setdefault(run_id, []).append(_point(*point))
        for points in out.values():
            points.sort()
        return out

    def prepare(self, case_dir: Path) -> tuple[str, str]:
        """A copy of the source whose experiments and model carry the case's name, so
        each case writes experiments and a registered model of its own on the server."""
        from mlflow.tracking import MlflowClient

        db = case_dir / "src.db"
        shutil.copy(self.source_db, db)
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        for exp in client.search_experiments():
            if exp.name != "Default":
                client.rename_experiment(exp.experiment_id, f"{case_dir.name}-{exp.name}")
        client.rename_registered_model("clf", f"{case_dir.name}-clf")
        return f"mlflow:sqlite:///{db}", f"mlflow:{self.url}"

    def take(self, case_dir: Path) -> Snapshot:
        snap = snapshot(
            self.server_dir / "server.db",
            key_of=lambda sid: sid.rsplit("#", 1)[1],
            experiments=[f"{case_dir.name}-vision", f"{case_dir.name}-nlp"],
            model_name=f"{case_dir.name}-clf",
            artifact_root=self.server_dir / "server-artifacts",
        )
        return snap

    def close(self) -> None:
        stop_mlflow_server(self.proc)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Tally:
    kills: int = 0
    named_points: set[str] = field(default_factory=set)
    random_kills: int = 0
    random_missed: list[str] = field(default_factory=list)  # seeds whose delay came late
    cases: int = 0
    runs_checked: int = 0
    points_checked: int = 0
    losses: int = 0


TALLY = Tally()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeRunner]:
    r = BridgeRunner(tmp_path_factory.mktemp("kill-procs"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def scenarios(
    tmp_path_factory: pytest.TempPathFactory, runner: BridgeRunner, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """Scenarios are built on first use (a server case alone does not make SDK runs)."""
    made: dict[str, Scenario] = {}

    def get(name: str) -> Scenario:
        if name not in made:
            root = tmp_path_factory.mktemp(f"kill-{name}")
            made[name] = (WandbScenario if name == "wandb" else ServerScenario)(root, runner)
        return made[name]

    yield {"get": get}
    for scenario in made.values():
        if isinstance(scenario, ServerScenario):
            scenario.close()
    _report(request)


def _report(request: pytest.FixtureRequest) -> None:
    t = TALLY
    line = (
        f"kill campaign: {t.kills} SIGKILLs survived ({len(t.named_points)} named kill points, "
        f"{t.random_kills} seeded random delays, {len(t.random_missed)} delays past the end), "
        f"{t.cases} cases, {t.runs_checked} runs and {t.points_checked} points checked, "
        f"{t.losses} losses or duplicates found"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    out = os.environ.get("BRIDGE_KILL_CAMPAIGN_SUMMARY")
    if out:
        figures = {k: v for k, v in vars(t).items() if k != "named_points"}
        figures["named_points"] = sorted(t.named_points)
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")


# --------------------------------------------------------------------------- the campaign


def _sync(runner: BridgeRunner, src: str, dest: str, state: Path, **env: str) -> Result:
    return runner.run(["sync", src, dest, "--state", str(state), "--json"], env=env or None)


def _kill_stage(
    case: Case, runner: BridgeRunner, src: str, dest: str, state: Path, point: str
) -> None:
    res = _sync(runner, src, dest, state, BRIDGE_KILL_AT=point)
    marker = f"bridge.faults: SIGKILL at {point if '#' in point else point + '#1'}"
    assert res.rc == KILLED and marker in res.stderr, (
        f"[{case.id}] kill point {point!r} was not reached (exit {res.rc}): a kill point the "
        f"campaign cannot reach is a defect of the campaign\n{res.stderr[-3000:]}"
    )
    TALLY.kills += 1
    TALLY.named_points.add(point.partition("#")[0])


def _random_stage(
    case: Case, scenario: Scenario, runner: BridgeRunner, src: str, dest: str, state: Path
) -> None:
    bound_ms = max(200.0, scenario.kill_window() * 1000 * 0.9)
    res = _sync(
        runner,
        src,
        dest,
        state,
        BRIDGE_KILL_AFTER_MS=f"{bound_ms:.0f}",
        BRIDGE_KILL_SEED=str(case.seed),
    )
    if res.rc == 0:  # the delay fell after the end of the sync: still checked, not a kill
        TALLY.random_missed.append(str(case.seed))
        return
    assert res.rc == KILLED and "bridge.faults: SIGKILL after" in res.stderr, (
        f"[{case.id}] seed {case.seed}: unexpected exit {res.rc}\n{res.stderr[-3000:]}"
    )
    TALLY.kills += 1
    TALLY.random_kills += 1


def _recover(case: Case, runner: BridgeRunner, src: str, dest: str, state: Path) -> dict[str, Any]:
    """Re-run without the hook until it exits 0 (at most twice); its JSON report."""
    res = _sync(runner, src, dest, state)
    if res.rc != 0:
        res = _sync(runner, src, dest, state)
    assert res.rc == 0, (
        f"[{case.id}] the sync after the kill did not complete in two runs (exit {res.rc})\n"
        f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    report: dict[str, Any] = json.loads(res.stdout)
    return report


def _problems(scenario: Scenario, snap: Snapshot, state: Path, dest_uri: str) -> list[str]:
    """Every way the recovered copy differs from its source and the fault-free copy."""
    ref = scenario.reference
    out: list[str] = []
    doubled = {k: ids for k, ids in snap.runs.items() if len(ids) != 1}
    if doubled:
        out.append(f"source runs without exactly one destination run: {doubled}")
    if set(snap.runs) != set(ref.runs):
        out.append(f"runs: {sorted(snap.runs)} != {sorted(ref.runs)}")
    if snap.untagged_runs:
        out.append(f"{snap.untagged_runs} destination runs without an identity tag")
    for key, want in scenario.source_points.items():
        have = snap.points.get(key, [])
        if have != want:
            dup = sum((Counter(have) - Counter(want)).values())
            lost = sum((Counter(want) - Counter(have)).values())
            out.append(f"{key}: {lost} points missing, {dup} duplicated or extra")
    for key, files in ref.files.items():
        if snap.files.get(key) != files:
            have = snap.files.get(key, {})
            diff = sorted(set(files.items()) ^ set(have.items()))
            out.append(f"{key}: files differ from the fault-free copy: {diff[:6]}")
    for sid, models in ref.models.items():
        have_models = snap.models.get(sid, [])
        if have_models != models:
            out.append(f"model {sid}: {have_models} != fault-free {models}")
    if set(snap.models) != set(ref.models):
        out.append(f"models: {sorted(snap.models)} != {sorted(ref.models)}")
    if snap.versions != ref.versions or snap.aliases != ref.aliases:
        out.append(f"registry: {snap.versions} {snap.aliases} != {ref.versions} {ref.aliases}")
    out.extend(_watermark_problems(snap, state, dest_uri))
    return out


def _watermark_problems(snap: Snapshot, state: Path, dest_uri: str) -> list[str]:
    """The state's per-stream watermarks must equal the destination's point counts."""
    from bridge.state import StateStore

    store = StateStore(str(state), read_only=True)
    out: list[str] = []
    try:
        for key, points in snap.points.items():
            counts = dict(Counter(p[0] for p in points))
            marks = store.get_watermarks(dest_uri, snap.sids[key])
            if marks != counts:
                out.append(f"{key}: state watermarks {marks} != destination counts {counts}")
    finally:
        store.close()
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sigkill_then_rerun_loses_and_doubles_nothing(
    case: Case, scenarios: dict[str, Any], runner: BridgeRunner
) -> None:
    scenario: Scenario = scenarios["get"](case.scenario)
    case_dir = scenario.new_case()
    src, dest = scenario.prepare(case_dir)
    state = case_dir / "state.db"
    if case.prep == "state-lost":
        assert _sync(runner, src, dest, state).rc == 0
        state.unlink()
    for point in case.kills:
        _kill_stage(case, runner, src, dest, state, point)
    if case.seed is not None:
        _random_stage(case, scenario, runner, src, dest, state)
    report = _recover(case, runner, src, dest, state)
    verify = runner.run(["verify", src, dest, "--state", str(state)])
    snap = scenario.take(case_dir)
    problems = _problems(scenario, snap, state, report["dest"])
    if verify.rc != 0:
        problems.append(f"bridge verify exited {verify.rc}:\n{verify.stdout[-3000:]}")
    TALLY.cases += 1
    TALLY.runs_checked += len(snap.runs)
    TALLY.points_checked += sum(len(p) for p in snap.points.values())
    TALLY.losses += len(problems)
    assert not problems, f"[{case.id}] seed={case.seed} kills={case.kills}:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the hooks


def _hook(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_KILL")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**base, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


_THREE_HITS = """
from bridge.faults import kill_point
for i in range(3):
    kill_point("a")
    print("passed", i + 1, flush=True)
kill_point("b")
print("end", flush=True)
"""


@pytest.mark.e2e
def test_a_kill_point_that_is_not_reached_fails_its_case(
    runner: BridgeRunner, tmp_path: Path
) -> None:
    """The campaign's own guard: a sync that does not die at the named point fails."""
    (tmp_path / "empty").mkdir()
    src, dest = f"wandb-offline:{tmp_path / 'empty'}", f"mlflow:sqlite:///{tmp_path / 'm.db'}"
    case = _named("wandb", "apply.finish.before")
    with pytest.raises(AssertionError, match="'apply.finish.before' was not reached"):
        _kill_stage(case, runner, src, dest, tmp_path / "state.db", "apply.finish.before")


def test_kill_point_kills_at_its_nth_hit_and_only_there() -> None:
    killed = _hook(_THREE_HITS, BRIDGE_KILL_AT="a#2")
    assert killed.returncode == KILLED
    assert killed.stdout.split("\n")[:1] == ["passed 1"] and "passed 2" not in killed.stdout
    assert "bridge.faults: SIGKILL at a#2" in killed.stderr
    first = _hook(_THREE_HITS, BRIDGE_KILL_AT="b")
    assert first.returncode == KILLED and "passed 3" in first.stdout and "end" not in first.stdout


@pytest.mark.parametrize("env", [{}, {"BRIDGE_KILL_AT": "c"}, {"BRIDGE_KILL_AT": "a#4"}])
def test_kill_point_not_named_or_not_reached_is_harmless(env: dict[str, str]) -> None:
    done = _hook(_THREE_HITS, **env)
    assert done.returncode == 0 and done.stdout.endswith("end\n") and not done.stderr


def test_random_delay_kill_is_seeded() -> None:
    from bridge.faults import kill_delay_ms, parse_target

    delays = {kill_delay_ms(1000, f"s{i}") for i in range(20)}
    assert len(delays) == 20 and all(0 <= d <= 1000 for d in delays)
    assert kill_delay_ms(1000, "s3") == kill_delay_ms(1000, "s3")
    assert kill_delay_ms(250, None) == 250
    assert parse_target("x.y#3") == ("x.y", 3) and parse_target("x") == ("x", 1)
    with pytest.raises(ValueError):
        parse_target("x#0")
    code = """
    import time
    from bridge.faults import kill_point
    kill_point("armed")
    time.sleep(20)
    print("survived")
    """
    killed = _hook(code, BRIDGE_KILL_AFTER_MS="300", BRIDGE_KILL_SEED="7")
    want = random.Random("7").uniform(0, 300)
    assert killed.returncode == KILLED and "survived" not in killed.stdout
    assert f"SIGKILL after {want:.0f} ms (seed 7)" in killed.stderr
