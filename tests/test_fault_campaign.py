"""Fault campaign: MLflow sqlite → `mlflow server` through a fault-injecting proxy, and a
W&B server whose reads keep failing.

Per fault kind (503, 503 with Retry-After, reset before forwarding, response dropped after
the server committed, response slower than the client's timeout) and once mixed at a seeded
~15% rate on every request, ``bridge sync`` is re-run until it exits 0 (bounded), then the
destination is compared with a fault-free sync of the same source into a second server:
exactly one run per source run, every point exactly once, params/tags/files equal, registry
versions, aliases and logged models equal, ``bridge verify`` clean. Runs whose faults never
stop are ``failed`` (exit 1), never ``skipped`` or ``unchanged``, and the next fault-free
sync completes them. The seed is printed on failure (``BRIDGE_FAULT_SEED`` replays one).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import start_mlflow_server, stop_mlflow_server
from fakes.fault_proxy import KINDS, FaultProxy, FaultRule
from mlflow.entities import LoggedModelStatus, Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import ReaderOptions
from bridge.cli import main as cli_main
from bridge.schema import ArtifactVersion, ModelVersion, Project, RegisteredModel, Run, RunHeader

pytestmark = pytest.mark.e2e

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SEED = int(os.environ.get("BRIDGE_FAULT_SEED", "20261"))
T0 = 1_650_000_000_000
#: Calls whose lost answer can duplicate something, plus the history writes.
WRITES = (
    "experiments/create",
    "runs/create",
    "runs/log-batch",
    "registered-models/create",
    "model-versions/create",
    "logged-models",
)
CASES = (*KINDS, "mixed")
DOOMED_KEY = "doomed_metric"
MAX_SYNCS = 8  # re-runs of a faulty sync before the campaign gives up
#: What the campaign did, printed at the end (the README's Reliability row).
FIGURES: Counter[str] = Counter()


def _client_env() -> dict[str, str]:
    """MLflow's client retries kept short so a campaign takes seconds: 2 retries, no
    backoff factor, 2 s timeout (the proxy's slow answers take 3 s)."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
    }


# ----------------------------------------------------------------------------- source


def _make_case(client: MlflowClient, uri: str, case: str, tmp: Path) -> None:
    """Experiment ``fc-<case>``: two runs with history over several log_batch calls, params,
    tags and a file; registered model ``fc-<case>-clf`` with version 1 from run files and
    version 2 from a logged model; aliases staging → 1, prod → 2."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    exp = client.create_experiment(f"fc-{case}", artifact_location=str(tmp / f"art-{case}"))
    run_ids = []
    for i in range(2):
        run = client.create_run(exp, start_time=T0 + i, run_name=f"r{i}", tags={"team": "cv"})
        rid = run.info.run_id
        client.log_batch(
            rid,
            params=[Param("lr", str(0.1 / (i + 1))), Param("opt", "adam")],
            tags=[RunTag("mlflow.note.content", f"run {i}")],
        )
        points = [Metric("loss", 1.0 / (s + 1), T0 + s * 10, s) for s in range(1100)]
        points += [Metric("acc", math.nan if s == 7 else s / 700, T0 + s, s) for s in range(700)]
        if case == "doomed" and i == 0:  # the key the never-ending faults single out
            points += [Metric(DOOMED_KEY, float(s), T0 + s, s) for s in range(50)]
        for n in range(0, len(points), 400):  # several log_batch calls, as a training loop
            client.log_batch(rid, metrics=points[n : n + 400])
        folder = tmp / f"{case}-{i}"
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "weights.bin").write_bytes(bytes(range(256)) * (i + 3))
        (folder / "model" / "MLmodel").write_text(f"flavors: {{}}\nrun: {i}\n")
        (folder / "notes.txt").write_text(f"case {case} run {i}\n")
        client.log_artifacts(rid, str(folder))
        client.set_terminated(rid, "FINISHED", end_time=T0 + 60_000 + i)
        run_ids.append(rid)
    name = f"fc-{case}-clf"
    client.create_registered_model(name, tags={"team": "cv"}, description="classifier")
    client.create_model_version(name, f"runs:/{run_ids[0]}/model", run_id=run_ids[0])
    model = client.create_logged_model(
        exp, name="clf-lm", source_run_id=run_ids[1], params={"depth": "3"}
    )
    client.log_model_artifacts(model.model_id, str(tmp / f"{case}-1" / "model"))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    with _use_tracking_uri(uri):  # a direct SQL store resolves models:/ through it
        client.create_model_version(
            name, f"models:/{model.model_id}", run_id=run_ids[1], model_id=model.model_id
        )
    client.set_registered_model_alias(name, "staging", "1")
    client.set_registered_model_alias(name, "prod", "2")


@dataclass
class Campaign:
    """The source store, the fault-free reference server and the faulty server's proxy."""

    src: str
    reference: str
    dest: str  # the faulty server itself, for reading back (the sync goes through the proxy)
    proxy: FaultProxy
    tmp: Path
    refs_done: set[str] = field(default_factory=set)

    def options(self, case: str) -> ReaderOptions:
        return ReaderOptions(experiments=[f"fc-{case}"], registries=[f"fc-{case}-clf"])

    def sync(self, dest: str, case: str, state: str) -> Any:
        return api.sync(
            f"mlflow:{self.src}",
            f"mlflow:{dest}",
            state=state,
            workers=1,
            reader_options=self.options(case),
        )

    def reference_sync(self, case: str) -> None:
        if case in self.refs_done:
            return
        plan = self.sync(self.reference, case, str(self.tmp / f"ref-{case}.db"))
        assert plan.exit_code() == 0, [(r.source_id, r.error) for r in plan.runs]
        self.refs_done.add(case)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    tmp = tmp_path_factory.mktemp("fault-campaign")
    src = f"sqlite:///{tmp / 'src.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no job workers: lighter
        with ThreadPoolExecutor(2) as pool:  # both servers boot while the source is made
            booting = [pool.submit(_boot, tmp / n) for n in ("reference", "faulty")]
            made = False
            try:
                client = MlflowClient(tracking_uri=src)
                for case in (*CASES, "doomed"):
                    _make_case(client, src, case, tmp)
                made = True
            finally:
                booted = [f.result() for f in booting if f.exception() is None]
                if not made or len(booted) < len(booting):
                    _stop(p for _, p in booted)
                    for f in booting:
                        f.result()  # raises why a server did not come up
        (ref_url, ref_proc), (dest_url, dest_proc) = booted
        for key, value in _client_env().items():
            mp.setenv(key, value)
        with FaultProxy(dest_url, seed=SEED, slow_s=3.0, lifetime_s=900) as proxy:
            yield Campaign(src=src, reference=ref_url, dest=dest_url, proxy=proxy, tmp=tmp)
    _stop((ref_proc, dest_proc))


@pytest.fixture(scope="module", autouse=True)
def print_figures() -> Iterator[None]:
    """The campaign's figures (the README's Reliability row), printed once at the end."""
    yield
    figures = ", ".join(f"{k} {v}" for k, v in sorted(FIGURES.items()))
    print(f"\nfault campaign figures (seed {SEED}): {figures}")


def _boot(workdir: Path) -> tuple[str, subprocess.Popen]:
    """An `mlflow server`; a second try when the first does not answer in time (a shared,
    loaded machine can take longer than conftest's wait)."""
    try:
        return start_mlflow_server(workdir)
    except RuntimeError:  # killed mid-start: a fresh folder, not its half-made database
        return start_mlflow_server(workdir / "retry")


def _stop(procs: Iterable[subprocess.Popen]) -> None:
    for proc in procs:
        stop_mlflow_server(proc)


# ----------------------------------------------------------------------------- snapshot


def _files(client: MlflowClient, list_fn: Any, download: Any, tmp: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    stack = [""]
    while stack:
        for f in list_fn(stack.pop() or None):
            if f.is_dir:
                stack.append(f.path)
            else:
                out[f.path] = Path(download(f.path, str(tmp))).read_bytes()
    return out


def runs_by_source(client: MlflowClient, exp_id: str, tmp: Path) -> dict[str, list[dict]]:
    """Every run of the experiment (deleted ones too) by its ``bridge.source_id``, with
    every metric row as stored: a duplicate run or point stays visible."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for run in client.search_runs([exp_id], run_view_type=ViewType.ALL, max_results=1000):
        rid = run.info.run_id
        by_source.setdefault(run.data.tags.get("bridge.source_id", "?"), []).append(
            {
                "name": run.info.run_name,
                "stage": run.info.lifecycle_stage,
                "status": run.info.status,
                "start": run.info.start_time,
                "end": run.info.end_time,
                "params": dict(run.data.params),
                "tags": dict(run.data.tags),
                "metrics": {
                    k: sorted(
                        (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                        for m in client.get_metric_history(rid, k)
                    )
                    for k in run.data.metrics
                },
                "files": _files(
                    client,
                    lambda p, rid=rid: client.list_artifacts(rid, p),
                    lambda p, d, rid=rid: client.download_artifacts(rid, p, d),
                    tmp,
                ),
            }
        )
    return by_source


def snapshot(uri: str, case: str, tmp: Path) -> dict[str, Any]:
    """Everything a copy promises for one case: runs by source identity, logged models,
    registry versions (with the name of their run), aliases, the registered model."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"fc-{case}")
    assert exp is not None, f"experiment fc-{case} missing in {uri}"
    by_source = runs_by_source(client, exp.experiment_id, tmp)
    names = {
        r.info.run_id: r.info.run_name
        for r in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    }
    models = client.search_logged_models(experiment_ids=[exp.experiment_id], max_results=100)
    logged = sorted(
        (
            m.tags.get("bridge.source_id"),
            m.name,
            getattr(m.status, "name", str(m.status)),
            tuple(sorted(m.params.items())),
            tuple(sorted(_model_files(client, m, tmp).items())),
        )
        for m in models
    )
    name = f"fc-{case}-clf"
    rm = client.get_registered_model(name)
    versions = sorted(
        (
            int(v.version),
            v.tags.get("bridge.source_id"),
            names.get(v.run_id or "", None),
            v.source.startswith("models:/"),
        )
        for v in client.search_model_versions(f"name='{name}'")
    )
    return {
        "runs": by_source,
        "logged_models": logged,
        "versions": versions,
        "aliases": {k: str(v) for k, v in rm.aliases.items()},
        "registered": (rm.description, dict(rm.tags)),
    }


def _model_files(client: MlflowClient, model: Any, tmp: Path) -> dict[str, bytes]:
    """A logged model's files; its manifest without ``location`` (the destination's own
    model id, different in every store)."""
    from mlflow.artifacts import download_artifacts

    root = str(model.artifact_location).rstrip("/")
    files = _files(
        client,
        lambda p: client.list_logged_model_artifacts(model.model_id, p),
        lambda p, d: download_artifacts(
            artifact_uri=f"{root}/{p}",
            dst_path=d,
            tracking_uri=client._tracking_client.tracking_uri,
        ),
        tmp,
    )
    if "bridge/manifest.json" in files:
        doc = json.loads(files["bridge/manifest.json"])
        assert str(doc.pop("location")).startswith("models:/")
        files["bridge/manifest.json"] = json.dumps(doc, sort_keys=True).encode()
    return files


def source_metrics(src: str, case: str) -> dict[str, dict[str, list[Any]]]:
    """Run name → metric key → every stored row (step, timestamp, value), from the source."""
    client = MlflowClient(tracking_uri=src)
    exp = client.get_experiment_by_name(f"fc-{case}")
    assert exp is not None
    return {
        run.info.run_name: {
            k: sorted(
                (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                for m in client.get_metric_history(run.info.run_id, k)
            )
            for k in run.data.metrics
        }
        for run in client.search_runs([exp.experiment_id])
    }


# ----------------------------------------------------------------------------- driving


def _rules(case: str) -> list[FaultRule]:
    if case == "mixed":  # every request, every kind, ~15%
        return [FaultRule(kinds=KINDS, rate=0.15, max_faults=40)]
    cap = 4 if case == "slow" else 8  # each slow answer costs a client timeout
    return [FaultRule(kinds=(case,), rate=0.5, paths=WRITES, max_faults=cap)]


def _check_outcomes(plan: Any, failed_before: set[str]) -> None:
    """A run is done, failed or (already complete) unchanged; never skipped; a run that
    failed earlier and is not complete yet is never unchanged."""
    for run in plan.runs:
        assert run.outcome != "skipped", f"{run.source_id} skipped: {run.error}"
        if run.source_id in failed_before:
            assert run.outcome in ("done", "failed"), (run.source_id, run.outcome)
    for model in plan.models:
        assert model.outcome != "skipped", (model.source_id, model.outcome)


def sync_until_clean(c: Campaign, case: str, state: str) -> int:
    """Re-run the faulty sync until it exits 0 (at most MAX_SYNCS times); syncs run."""
    from bridge.errors import BridgeError

    failed: set[str] = set()
    for attempt in range(1, MAX_SYNCS + 1):
        try:
            plan = c.sync(c.proxy.url, case, state)
        except BridgeError:  # the store check itself met a fault: exit 2, as documented
            FIGURES["syncs refused at the store check"] += 1
            continue
        _check_outcomes(plan, failed)
        failed |= {r.source_id for r in plan.runs if r.outcome == "failed"}
        failed -= {r.source_id for r in plan.runs if r.outcome == "done"}
        FIGURES["runs failed then retried"] += sum(r.outcome == "failed" for r in plan.runs)
        if plan.exit_code() == 0:
            assert not failed, f"exit 0 with runs still failed: {failed}"
            return attempt
        assert plan.exit_code() == 1, (plan.exit_code(), plan.errors)
    raise AssertionError(f"{case}: still failing after {MAX_SYNCS} syncs")


def compare(c: Campaign, dest: str, case: str, state: str) -> None:
    """The faulty copy equals the fault-free one; every source point exactly once."""
    c.reference_sync(case)
    got = snapshot(dest, case, c.tmp / f"got-{case}")
    want = snapshot(c.reference, case, c.tmp / f"want-{case}")
    duplicates = {sid: len(runs) for sid, runs in got["runs"].items() if len(runs) != 1}
    FIGURES["duplicate runs found"] += sum(n - 1 for n in duplicates.values())
    FIGURES["points lost or duplicated"] += _point_difference(got, source_metrics(c.src, case))
    assert not duplicates, f"source runs with more than one copy: {duplicates}"
    assert set(got["runs"]) == set(want["runs"])
    for sid, (run,) in got["runs"].items():
        (ref,) = want["runs"][sid]
        for key in ("stage", "status", "start", "end", "params", "tags", "files"):
            assert run[key] == ref[key], f"{sid}: {key} differs from the fault-free copy"
    expected = source_metrics(c.src, case)
    points = 0
    for (run,) in got["runs"].values():
        assert run["metrics"] == expected[run["name"]], f"{run['name']}: points differ"
        points += sum(len(rows) for rows in run["metrics"].values())
    for key in ("logged_models", "versions", "aliases", "registered"):
        assert got[key] == want[key], f"{key} differs from the fault-free copy"
    report = api.verify(
        f"mlflow:{c.src}", f"mlflow:{c.proxy.url}", state=state, reader_options=c.options(case)
    )
    assert report.exit_code() == 0, [(r.source_id, r.status) for r in report.runs]
    FIGURES["runs checked"] += len(got["runs"])
    FIGURES["points checked"] += points
    FIGURES["registry versions checked"] += len(got["versions"])
    FIGURES["logged models checked"] += len(got["logged_models"])


def _point_difference(got: dict[str, Any], expected: dict[str, dict[str, list]]) -> int:
    """Rows missing from the copy plus rows it has too many of (multisets, per run/key)."""
    diff = 0
    for runs in got["runs"].values():
        for run in runs:
            want = expected.get(run["name"], {})
            for key in set(want) | set(run["metrics"]):
                a, b = Counter(run["metrics"].get(key, [])), Counter(want.get(key, []))
                diff += sum(((a - b) + (b - a)).values())
    return diff


@contextmanager
def seed_on_failure(case: str, seed: int) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(
            f"[fault campaign case {case!r} seed {seed}; replay: BRIDGE_FAULT_SEED={SEED}] {exc}"
        ) from exc


# ----------------------------------------------------------------------------- cases


@pytest.mark.parametrize("case", CASES)
def test_faulty_sync_ends_identical_to_a_fault_free_one(campaign: Campaign, case: str) -> None:
    seed = SEED + CASES.index(case)
    state = str(campaign.tmp / f"state-{case}.db")
    with seed_on_failure(case, seed):
        before = campaign.proxy.log.total_faults
        campaign.proxy.set_rules(*_rules(case), seed=seed)
        try:
            syncs = sync_until_clean(campaign, case, state)
        finally:
            campaign.proxy.set_rules()
        injected = campaign.proxy.log.total_faults - before
        assert injected > 0, "no fault was injected"
        FIGURES["faults injected"] += injected
        FIGURES["syncs"] += syncs
        compare(campaign, campaign.dest, case, state)


def test_faults_that_never_stop_fail_the_run_until_a_clean_sync_completes_it(
    campaign: Campaign,
) -> None:
    """100% 503 on the history writes of one run: that run is ``failed`` (exit 1) sync
    after sync — never ``skipped``, never ``unchanged`` —, the other run is done, the pair's
    last cycle shows as failed; the first fault-free sync completes it exactly."""
    case, seed = "doomed", SEED + 100
    state = str(campaign.tmp / "state-doomed.db")
    doomed = {"r0": "failed", "r1": "done"}
    with seed_on_failure(case, seed):
        rule = FaultRule(
            kinds=("503",), rate=1.0, paths=("runs/log-batch",), match=f'"{DOOMED_KEY}"'.encode()
        )
        before = campaign.proxy.log.total_faults
        campaign.proxy.set_rules(rule, seed=seed)
        try:
            for attempt, expect in enumerate((doomed, {"r0": "failed", "r1": "unchanged"})):
                plan = campaign.sync(campaign.proxy.url, case, state)
                outcomes = {r.name: r.outcome for r in plan.runs}
                assert outcomes == expect, (attempt, outcomes, [r.error for r in plan.runs])
                assert plan.exit_code() == 1
                (failed,) = [r for r in plan.runs if r.outcome == "failed"]
                assert failed.error, "a failed run names its error"
        finally:
            campaign.proxy.set_rules()
        injected = campaign.proxy.log.total_faults - before
        assert injected >= 2 * 3, "every attempt (the client's retries too) met the fault"
        # Destination reads while planning fail too: the unfinished run is failed, not skipped.
        rule = FaultRule(kinds=("503",), rate=1.0, paths=("runs/get", "runs/search"))
        campaign.proxy.set_rules(rule, seed=seed)
        try:
            plan = campaign.sync(campaign.proxy.url, case, state)
        finally:
            campaign.proxy.set_rules()
        outcomes = {r.name: r.outcome for r in plan.runs}
        assert outcomes["r0"] == "failed" and outcomes["r1"] in ("unchanged", "failed"), outcomes
        assert plan.exit_code() == 1
        FIGURES["faults injected"] += campaign.proxy.log.total_faults - before
        result = CliRunner().invoke(cli_main, ["status", "--state", state, "--json"])
        assert result.exit_code == 0, result.output
        (pair,) = json.loads(result.output)
        assert pair["last_cycle"]["result"] == 1, pair
        assert pair["last_success_at"] is None, pair
        plan = campaign.sync(campaign.proxy.url, case, state)
        assert {r.name: r.outcome for r in plan.runs} == {"r0": "done", "r1": "unchanged"}
        assert plan.exit_code() == 0
        compare(campaign, campaign.dest, case, state)


@pytest.mark.parametrize("kind", ["drop", "slow"])
def test_a_create_whose_answer_is_lost_commits_once(campaign: Campaign, kind: str) -> None:
    """Run, logged model and registry version creation with the first answer lost after
    the server committed: one object each (MLflow's own client retry made two)."""
    from bridge.adapters.mlflow.writer import MlflowWriter

    writer = MlflowWriter(campaign.proxy.url)
    client = MlflowClient(tracking_uri=campaign.dest)
    project = Project(source_id=f"test:lost-{kind}", name=f"lost-{kind}")
    exp_id = writer.ensure_project(project)
    header = RunHeader(
        source_id=f"test:lost-{kind}/r", native_id="r", project=project, fingerprint="f"
    )
    run = Run(header=header, name="lost", start_time_ms=T0)
    model = RegisteredModel(source_id=f"test:lost-{kind}/m", name=f"lost-{kind}")
    art = ArtifactVersion(name="lm", type="model", source_id=f"test:lost-{kind}/lm")
    version = ModelVersion(source_id=f"test:lost-{kind}/m/1", index=1, artifact=art)
    seed = SEED + 200 + KINDS.index(kind)
    with seed_on_failure(f"lost-{kind}", seed):
        for path in ("runs/create", "logged-models", "model-versions/create"):
            rule = FaultRule(kinds=(kind,), rate=1.0, paths=(path,), max_faults=1)
            hit = (kind, f"/api/2.0/mlflow/{path}")
            before = campaign.proxy.log.faults[hit]
            campaign.proxy.set_rules(rule, seed=seed)
            try:
                if path == "runs/create":
                    dest_id = writer.create_run(exp_id, run, writer.render(run))
                elif path == "logged-models":
                    location = writer.put_model(exp_id, dest_id, art, [])
                else:
                    writer.ensure_registered_model(model.name, model)
                    label = writer.create_model_version(model.name, version, location, dest_id)
            finally:
                campaign.proxy.set_rules()
            assert campaign.proxy.log.faults[hit] == before + 1, f"no {kind} on {path}"
        runs = client.search_runs([exp_id], run_view_type=ViewType.ALL)
        assert [r.info.run_id for r in runs] == [dest_id]
        models = client.search_logged_models(experiment_ids=[exp_id])
        assert [f"models:/{m.model_id}" for m in models] == [location]
        versions = client.search_model_versions(f"name='{model.name}'")
        assert [v.version for v in versions] == [label] == ["1"]
        FIGURES["lost create answers survived"] += 3
    writer.close()


# ----------------------------------------------------------------------------- W&B source


@pytest.fixture(scope="module")
def wandb_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small runs made by the real SDK offline (project ``fc``)."""
    from sdk_runs import make_big_run

    root = tmp_path_factory.mktemp("fc-wandb")
    return {
        rid: make_big_run(root, 60, n_metrics=3, run_id=rid, project="fc")
        for rid in ("steady", "flaky")
    }


@pytest.fixture
def quick_wandb_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """wandb-core's GraphQL retries and the reader's backoff kept short (a 503 that never
    stops would otherwise be retried for many minutes). The SDK reads its settings once per
    process, so the process-wide settings object is set, and restored after the test."""
    from wandb.sdk import wandb_setup

    from bridge.adapters.wandb.api_reader import WandbApiReader

    settings = wandb_setup.singleton().settings
    monkeypatch.setattr(settings, "x_graphql_retry_max", 1)
    monkeypatch.setattr(settings, "x_graphql_retry_wait_min_seconds", 0.1)
    monkeypatch.setattr(settings, "x_graphql_retry_wait_max_seconds", 0.3)
    init = WandbApiReader.__init__

    def quick(self: WandbApiReader, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.base_delay, self.max_delay = 0.05, 0.2  # same attempts, shorter sleeps

    monkeypatch.setattr(WandbApiReader, "__init__", quick)


def test_wandb_reads_that_keep_failing_fail_the_run(
    wandb_runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    quick_wandb_retries: None,
) -> None:
    """The loopback W&B server answers every history page of one run 429/503: that run
    is ``failed`` (exit 1) — twice, never ``skipped`` or ``unchanged`` —, the other run is
    copied, ``bridge status`` shows the cycle failed; once the faults stop the next sync
    completes it, identical to a fault-free copy."""
    from fakes.wandb_server import FakeWandbServer

    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    state = str(tmp_path / "state.db")
    dest = f"sqlite:///{tmp_path / 'faulty.db'}"
    seed = SEED + 300
    with FakeWandbServer() as srv, seed_on_failure("wandb", seed):
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        srv.load_offline_run(wandb_runs["steady"])  # history from its parquet export
        srv.load_offline_run(wandb_runs["flaky"], exported_rows=0)  # history pages only
        source = f"wandb:acme/fc?base_url={srv.url}"
        srv.set_faults(1.0, seed=seed, ops=("HistoryPage",))
        expected = ({"steady": "done", "flaky": "failed"}, {"steady": "unchanged"})
        for attempt, expect in enumerate(expected):
            # --full reads the history while planning (to count new points): the same
            # failure then hits the planner, which must fail the run, not skip it.
            plan = api.sync(source, f"mlflow:{dest}", state=state, workers=2, full=attempt > 0)
            outcomes = {r.native_id: r.outcome for r in plan.runs}
            assert outcomes == {"flaky": "failed", **expect}, (attempt, outcomes)
            assert plan.exit_code() == 1
            (failed,) = [r for r in plan.runs if r.outcome == "failed"]
            assert failed.error and "flaky" in failed.error
        assert sum(srv.faults.values()) >= 2, srv.faults
        FIGURES["W&B faults injected"] += sum(srv.faults.values())
        result = CliRunner().invoke(cli_main, ["status", "--state", state])
        assert result.exit_code == 0, result.output
        assert "exit 1" in result.output and "error: wandb:acme/fc/flaky" in result.output
        srv.set_faults(0.0)
        plan = api.sync(source, f"mlflow:{dest}", state=state, workers=2)
        assert {r.native_id: r.outcome for r in plan.runs} == {
            "steady": "unchanged",
            "flaky": "done",
        }
        assert plan.exit_code() == 0
        reference = f"sqlite:///{tmp_path / 'reference.db'}"
        plan = api.sync(source, f"mlflow:{reference}", state=str(tmp_path / "ref-state.db"))
        assert plan.exit_code() == 0
        got, want = (
            runs_by_source(
                MlflowClient(tracking_uri=uri),
                MlflowClient(tracking_uri=uri).get_experiment_by_name("fc").experiment_id,
                tmp_path / name,
            )
            for uri, name in ((dest, "got"), (reference, "want"))
        )
        assert got == want
        assert all(len(runs) == 1 for runs in got.values()) and len(got) == 2
        report = api.verify(source, f"mlflow:{dest}", state=state)
        assert report.exit_code() == 0, [(r.source_id, r.status) for r in report.runs]
        FIGURES["W&B runs checked"] += len(got)
