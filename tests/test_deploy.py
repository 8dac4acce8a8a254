"""deploy/: the container image and the Kubernetes manifests, tested by running what they say.

No image can be built or pulled here and there is no cluster, so the test does what each part
would: the Dockerfile's ``pip install`` lines run in a fresh venv (its COPY sources copied the
same way); the Job's and the CronJob's container args are expanded the way Kubernetes does
(``$(VAR)`` from the container's env: ConfigMap keys, the downward API, the Secret's keys, and
JOB_COMPLETION_INDEX, which the Job controller adds to every pod of an Indexed Job) and run
against the local stack: N processes at once on a sqlite MLflow source, a PostgreSQL MLflow
destination and a PostgreSQL state store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from conftest import fresh_pg_database

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
UID_LABEL = "batch.kubernetes.io/controller-uid"
SECRET_NAME_HINTS = ("KEY", "PASSWORD", "TOKEN", "SECRET", "PGPASS")


# -- the manifests ------------------------------------------------------------------------


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every YAML document in deploy/, by file name."""
    out = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        out[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return out


def one(kind: str) -> dict[str, Any]:
    found = [d for docs in manifests().values() for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} documents in deploy/"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def the_container(obj: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(obj)["containers"]
    return container


def test_an_index_that_ended_is_not_retried_a_dead_one_is() -> None:
    """An exit code means the index recorded its end (the pass's final step may have run on
    it): FailIndex on 1 and 2, no retry copying runs after that step. A killed pod (no exit
    code of the bridge's) is retried by backoffLimitPerIndex and rejoins the pass."""
    spec = one("Job")["spec"]
    assert spec["backoffLimitPerIndex"] >= 1
    fail = [
        r["onExitCodes"]
        for r in spec["podFailurePolicy"]["rules"]
        if r["action"] == "FailIndex" and "onExitCodes" in r
    ]
    assert len(fail) == 1 and fail[0]["operator"] == "In"
    assert set(fail[0]["values"]) == {1, 2}


# -- what Kubernetes does with them ---------------------------------------------------------


def k8s_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (k8s.io/kubernetes third_party/forked/golang/expansion):
    ``$(NAME)`` → the variable's value, left as written when undefined; ``$$`` → ``$`` (so
    ``$$(NAME)`` is the literal ``$(NAME)``); an unclosed ``$(`` or a ``$`` before anything
    else stays as is. No shell: no quotes, no word splitting, no ``${NAME}``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:close]
                    out.append(env[name] if name in env else f"$({name})")
                    advance = close + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def field_ref(path: str, meta: dict[str, Any]) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(meta[m.group(1)][m.group(2)])
    assert path in ("metadata.name", "metadata.namespace"), f"fieldRef {path} not modelled"
    return str(meta[path.split(".")[1]])


def container_env(
    container: dict[str, Any],
    *,
    configmaps: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
    meta: dict[str, Any],
    controller_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order
    (a ``value`` may refer to variables defined before it), then what the Job controller added
    to the pod template (JOB_COMPLETION_INDEX). A Secret key the test gives no value for is
    left out, as if deleted from the example (its advice for keys not in use)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env.update(secrets[source["secretRef"]["name"]])
        else:
            env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = k8s_expand(str(item["value"]), env)
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            env[item["name"]] = configmaps[r["name"]][r["key"]]
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            if r["key"] in secrets[r["name"]]:
                env[item["name"]] = secrets[r["name"]][r["key"]]
        else:
            env[item["name"]] = field_ref(ref["fieldRef"]["fieldPath"], meta)
    env.update(controller_env or {})
    return env


def command_line(
    container: dict[str, Any], entrypoint: list[str], env: dict[str, str]
) -> list[str]:
    """The process the container runs: ``command`` (else the image's ENTRYPOINT) + args,
    each expanded."""
    command = container.get("command") or entrypoint
    return [k8s_expand(str(a), env) for a in [*command, *container.get("args", [])]]


# -- the Dockerfile -------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instr, _, rest = full.partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


def entrypoint() -> list[str]:
    (ep,) = [json.loads(rest) for instr, rest in dockerfile() if instr == "ENTRYPOINT"]
    assert isinstance(ep, list), "ENTRYPOINT in exec form"
    return ep


# -- fast checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("$(A)", {"A": "x"}, "x"),
        ("pre-$(A)-$(B)", {"A": "1", "B": "2"}, "pre-1-2"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "x"}, "$(A)"),
        ("$$$(A)", {"A": "x"}, "$x"),
        ("$(A", {"A": "x"}, "$(A"),
        ("$A ${A} $", {"A": "x"}, "$A ${A} $"),
        ("a$$b", {}, "a$b"),
        ("$()", {}, "$()"),
    ],
)
def test_k8s_expansion(text: str, env: dict[str, str], want: str) -> None:
    assert k8s_expand(text, env) == want


def test_manifests_parse_and_hold_together() -> None:
    docs = manifests()
    assert {"migration-job.yaml", "mirror-cronjob.yaml", "secret.example.yaml"} <= set(docs)
    job, cron = one("Job"), one("CronJob")
    assert job["apiVersion"] == cron["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    assert spec["backoffLimitPerIndex"] >= 1
    assert 1 <= spec["maxFailedIndexes"] <= spec["completions"]
    assert pod_spec(job)["restartPolicy"] == "Never"  # required by backoffLimitPerIndex
    args = the_container(job)["args"]
    assert args[0] == "sync" and args[args.index("--shard") + 1] == f"auto/{spec['completions']}"
    assert "$(BRIDGE_PASS_ID)" in args and "--json" in args
    (pass_id,) = [e for e in the_container(job)["env"] if e["name"] == "BRIDGE_PASS_ID"]
    assert pass_id["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.labels['{UID_LABEL}']"
    # the mirror: one cycle per schedule, never two at once
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    cargs = the_container(cron)["args"]
    assert cargs[:3] == ["mirror", "--config", "/etc/bridge/bridge.toml"]
    assert cargs[cargs.index("--cycles") + 1] == "1"
    # every image is the one the Dockerfile builds, run as its non-root user
    for obj in (job, cron):
        assert pod_spec(obj)["securityContext"]["runAsNonRoot"] is True
        assert the_container(obj)["resources"]["limits"]["memory"]


@pytest.mark.parametrize("version", ["1.33.0", "1.37.0"])
def test_manifests_valid_for_kubernetes(version: str) -> None:
    """Against the API's own schema (kubernetes-validate, strict: an unknown or misplaced
    field fails), from 1.33 (backoffLimitPerIndex GA) on; the one-off finish-pass pod of
    deploy/README.md too."""
    import kubernetes_validate as kv

    docs = [d for found in manifests().values() for d in found]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bridge-finish"}}
    docs.append(pod | {"spec": {"containers": [_finish_pass_container()]}})
    for doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {exc.path}")


def test_secrets_only_from_the_secret() -> None:
    secret, config = one("Secret"), one("ConfigMap")
    keys = set(secret["stringData"])
    assert {"WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"} <= keys
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= keys
    # the example holds placeholders only
    for key, value in secret["stringData"].items():
        assert re.fullmatch(r"<[^<>]+>", value), f"{key}: not a placeholder"
    # no secret in the ConfigMap: no secret-looking key, no password in a URL
    for key, value in config["data"].items():
        assert not any(h in key.upper() for h in SECRET_NAME_HINTS), key
        assert not re.search(r"://[^/@\s:]+:[^/@\s]+@", value), f"{key}: a password in a URL"
    for obj in (one("Job"), one("CronJob")):
        c = the_container(obj)
        refs = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
        assert refs == [secret["metadata"]["name"]]
        from_secret = set(keys)
        for item in c.get("env", []):
            # no literal value for a secret-looking variable
            if "value" in item:
                assert not any(h in item["name"].upper() for h in SECRET_NAME_HINTS)
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["name"] == secret["metadata"]["name"]
                assert ref["secretKeyRef"]["key"] in keys, item
                from_secret.add(item["name"])
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["name"] == config["metadata"]["name"]
                assert ref["configMapKeyRef"]["key"] in config["data"], item
        # no secret on a command line: args name no variable the Secret fills
        used = {m for a in c["args"] for m in re.findall(r"\$\(([^)]*)\)", str(a))}
        assert not used & from_secret, used & from_secret
        assert used or obj["kind"] == "CronJob"
    # and no secret baked into the image
    for instr, rest in dockerfile():
        if instr in ("ARG", "ENV"):
            assert not any(h in rest.upper() for h in SECRET_NAME_HINTS), rest
    assert entrypoint() == ["bridge"]
    assert any(
        instr == "USER" and not rest.startswith(("0", "root")) for instr, rest in dockerfile()
    )


def test_readme_points_at_the_manifests() -> None:
    """One source of truth: the README links the files; a manifest shown there is the file's."""
    readme = (ROOT / "README.md").read_text()
    assert "deploy/mirror-cronjob.yaml" in readme and "deploy/migration-job.yaml" in readme
    for block in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S):
        docs = [d for d in yaml.safe_load_all(block) if isinstance(d, dict)]
        for doc in docs:
            if doc.get("kind") in ("Job", "CronJob"):
                assert doc == one(doc["kind"]), f"README's {doc['kind']} differs from deploy/"


# -- the image's install, in a fresh venv ---------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_dockerfile_install_lines_in_a_fresh_venv(tmp_path: Path) -> None:
    """FROM python:3.11-slim → a fresh venv of this Python; COPY → the same files into
    a folder standing for the image's root; each ``pip install`` RUN line run there."""
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    image = tmp_path / "image"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    workdir = image
    ran = []
    for instr, rest in steps:
        if instr == "WORKDIR":
            workdir = image / rest.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instr == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
        elif instr == "COPY":
            *sources, dest = shlex.split(rest)
            target = workdir / dest if not dest.startswith("/") else image / dest.lstrip("/")
            for src in sources:
                path = ROOT / src
                into = target / path.name if dest.endswith("/") else target
                if path.is_dir():
                    shutil.copytree(
                        path, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, into)
        elif instr == "RUN" and "pip install" in rest:
            done = subprocess.run(
                ["bash", "-c", rest], cwd=workdir, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            ran.append(rest)
    assert ran, "no pip install line in the Dockerfile"
    bridge = venv / "bin" / entrypoint()[0]
    version = subprocess.run(
        [str(bridge), "--version"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout
    # the drivers the manifests' stores need
    probe = "import psycopg, psycopg2, boto3, bridge.cli; print(bridge.cli.__file__)"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert str(venv) in where.stdout  # the installed copy, not the checkout


# -- the Job's and the CronJob's command lines, against the local stack ---------------------


def _source_corpus(uri: str, artifacts: Path) -> dict[str, str]:
    """Two experiments, 30 runs (4 of them children of another run), params, tags and 20
    steps of two metrics each, made with MLflow's client. Returns run id → run name."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs: dict[str, str] = {}
    for e in range(2):
        exp = client.create_experiment(f"team-{e}", artifact_location=str(artifacts / f"e{e}"))
        parents: list[str] = []
        for r in range(15):
            name = f"e{e}-r{r:02d}"
            tags = {"team": f"t{e}"}
            if r >= 13:  # a child: its parent may well be in another shard
                tags["mlflow.parentRunId"] = parents[r - 13]
            run = client.create_run(exp, run_name=name, tags=tags, start_time=1_700_000_000_000)
            rid = run.info.run_id
            metrics = [
                Metric(k, float(s * (r + 1)), 1_700_000_000_000 + s, s)
                for s in range(20)
                for k in ("loss", "acc")
            ]
            client.log_batch(
                rid, metrics=metrics, params=[Param("lr", str(r / 100))], tags=[RunTag("k", name)]
            )
            client.set_terminated(rid, "FINISHED", end_time=1_700_000_100_000)
            runs[rid] = name
            parents.append(rid)
    return runs


def _fresh_pg_database() -> tuple[str, Any]:
    """A second fresh database, as the ``pg_database`` fixture makes one; (url, drop)."""
    stack = contextlib.ExitStack()
    return stack.enter_context(fresh_pg_database()), stack.close


def _copies(dest_db: str) -> Counter[str]:
    """Active destination runs by their ``bridge.source_id`` tag (None: a run without one)."""
    engine = sa.create_engine(dest_db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT t.value FROM runs r LEFT JOIN tags t ON t.run_uuid = r.run_uuid "
                    "AND t.key = 'bridge.source_id' WHERE r.lifecycle_stage = 'active'"
                )
            ).all()
    finally:
        engine.dispose()
    return Counter(r[0] for r in rows)


def _image_env(pod_home: Path) -> dict[str, str]:
    """What the image gives every container before the pod's env: its ENV lines, a PATH
    with the ``bridge`` entry point (this venv's), HOME (the non-root user's, per pod)."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(pod_home),
        "LANG": "C.UTF-8",
        # the test machine's settings for the SDKs; not part of the image
        "WANDB_SILENT": "true",
        "WANDB_MODE": "offline",
        "WANDB_DISABLE_GIT": "true",
    }
    for instr, rest in dockerfile():
        if instr == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    pod_home.mkdir(parents=True, exist_ok=True)
    return env


class Cluster:
    """What the cluster would do with the manifests, on this machine: the user's ConfigMap
    and Secret applied (local values under the files' keys), the Job's pods started as
    processes with the env and command line the kubelet would give them."""

    def __init__(self, tmp_path: Path, source: str, dest: str, state: str) -> None:
        self.tmp = tmp_path
        self.job, config, secret = one("Job"), one("ConfigMap"), one("Secret")
        data = dict(config["data"]) | {"SOURCE": source, "DEST": dest, "BRIDGE_STATE": state}
        self.configmaps = {config["metadata"]["name"]: data}
        # local PostgreSQL trusts: the password is never checked, but must never be shown
        self.password = "deploy-test-" + uuid.uuid4().hex
        self.secrets = {secret["metadata"]["name"]: {"PGPASSWORD": self.password}}
        self.job_uid = str(uuid.uuid4())
        self.n = int(self.job["spec"]["completions"])
        self.pods = 0

    def start_pod(self, index: int, fault_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Pod ``index`` of the Job (a new one per call, as for a retry)."""
        name = self.job["metadata"]["name"]
        meta = {
            "name": f"{name}-{index}-{self.pods}",
            "namespace": "default",
            "labels": {
                **self.job["spec"]["template"]["metadata"]["labels"],
                UID_LABEL: self.job_uid,
                "controller-uid": self.job_uid,
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
                "batch.kubernetes.io/job-completion-index": str(index),
            },
            "annotations": {INDEX_ANNOTATION: str(index)},
        }
        c = the_container(self.job)
        env = container_env(
            c,
            configmaps=self.configmaps,
            secrets=self.secrets,
            meta=meta,
            controller_env={"JOB_COMPLETION_INDEX": str(index)},
        )
        argv = command_line(c, entrypoint(), env)
        assert not any("$(" in a for a in argv), argv  # every reference resolved
        assert f"--shard auto/{self.n}" in " ".join(argv)
        home = self.tmp / f"pod-{self.pods}" / "home"
        self.pods += 1
        return subprocess.Popen(
            argv,
            cwd=_image_env(home)["HOME"],
            env=_image_env(home) | env | (fault_env or {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
        done = []
        for p in procs:
            out, err = p.communicate(timeout=900)
            assert self.password not in out + err
            done.append((p.returncode, out, err))
        return done

    def status(self, state: str) -> dict[str, Any]:
        got = subprocess.run(
            ["bridge", "status", "--state", state, "--json"],
            env=_image_env(self.tmp / "admin"),
            capture_output=True,
            text=True,
        )
        assert got.returncode == 0, got.stderr
        (pair,) = json.loads(got.stdout)
        return dict(pair)


def _assert_pass_done(state: str, job_uid: str, pair: dict[str, Any], cycles: int = 1) -> None:
    assert pair["last_cycle"]["state"] == "done" and pair["last_cycle"]["result"] == 0, pair
    assert pair["last_cycle"]["errors"] == []
    assert pair["runs_known"] == 30
    (mine,) = [p for p in pair["passes"] if p["pass_id"] == job_uid]
    assert mine["final"] == "done" and mine["incomplete"] is None and mine["not_ended"] == []
    assert mine["ended"] == list(range(mine["shards"]))
    from bridge.state import StateStore

    store = StateStore(state)
    try:
        row = store.get_pass(job_uid)
        assert row is not None and row["final_state"] == "done" and row["incomplete"] is None
        assert len(store.cycles(pair["source"], pair["dest"], limit=50)) == cycles
    finally:
        store.close()


def _assert_each_run_once(dest_db: str, made: dict[str, str]) -> Counter[str]:
    copies = _copies(dest_db)
    assert None not in copies, "a destination run without an identity tag"
    assert sum(copies.values()) == len(made) == 30
    assert all(v == 1 for v in copies.values()), copies.most_common(3)
    assert {sid.rsplit("#", 1)[1] for sid in copies} == set(made)
    return copies


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_job_and_cronjob_command_lines_against_the_local_stack(
    tmp_path: Path, pg_database: str
) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    made = _source_corpus(src, tmp_path / "src-artifacts")
    state, drop_state = _fresh_pg_database()
    try:
        k8s = Cluster(tmp_path, f"mlflow:{src}", f"mlflow:{pg_database}", state)
        # what the Job controller starts: pod i of N, all at once
        ended = k8s.wait([k8s.start_pod(i) for i in range(k8s.n)])
        for i, (code, out, err) in enumerate(ended):
            assert code == 0, f"pod {i}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
        reports = [json.loads(out) for _, out, _ in ended]
        assert {r["pass_id"] for r in reports} == {k8s.job_uid}
        assert sorted(r["shard"] for r in reports) == [f"{i}/{k8s.n}" for i in range(k8s.n)]
        assert [r["final_step"] for r in reports].count(True) == 1

        # every source run exactly once in the destination, and nothing else
        copies = _assert_each_run_once(pg_database, made)
        # the pass is done, recorded once as the pair's cycle
        _assert_pass_done(state, k8s.job_uid, k8s.status(state))

        # then the CronJob's cycle on the same pair: nothing to create
        cron = one("CronJob")
        c = the_container(cron)
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        (volume,) = pod_spec(cron)["volumes"]
        mounted = tmp_path / "cron-pod" / "etc-bridge"
        mounted.mkdir(parents=True)
        for item in volume["configMap"]["items"]:
            text = k8s.configmaps[volume["configMap"]["name"]][item["key"]]
            (mounted / item["path"]).write_text(text)
        meta = {
            "name": "bridge-mirror-1-x",
            "namespace": "default",
            "labels": {},
            "annotations": {},
        }
        env = container_env(c, configmaps=k8s.configmaps, secrets=k8s.secrets, meta=meta)
        argv = command_line(c, entrypoint(), env)
        mount = mounts[volume["name"]]
        argv = [str(mounted) + a[len(mount) :] if a.startswith(mount + "/") else a for a in argv]
        home = tmp_path / "cron-pod" / "home"
        cycle = subprocess.run(
            argv,
            cwd=tmp_path / "cron-pod",
            env=_image_env(home) | env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert cycle.returncode == 0, cycle.stdout[-2000:] + cycle.stderr[-3000:]
        assert k8s.password not in cycle.stdout + cycle.stderr
        lines = [json.loads(x) for x in cycle.stdout.splitlines() if x.startswith("{")]
        lines += [json.loads(x) for x in cycle.stderr.splitlines() if x.startswith("{")]
        (line,) = [x for x in lines if "actions" in x]
        assert line["result"] == 0, line
        assert set(line["actions"]) == {"unchanged"}, line["actions"]
        assert line["points_written"] == 0 and line["files_written"] == 0
        assert _copies(pg_database) == copies
    finally:
        drop_state()


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_job_index_killed_then_retried_completes_the_pass(tmp_path: Path, pg_database: str) -> None:
    """backoffLimitPerIndex at work: index 1's pod is SIGKILLed right after creating its first
    run's copy (the test-only kill hook; with 30 random run ids an index owns none 0.02% of
    the time); the other indices end, the pass waits for index 1 (its
    heartbeat is fresh); the Job controller's new pod for index 1 (same uid, same command
    line) copies what is left and runs the final step. Every run once, the pass done."""
    src = f"sqlite:///{tmp_path / 'src.db'}"
    made = _source_corpus(src, tmp_path / "src-artifacts")
    state, drop_state = _fresh_pg_database()
    try:
        k8s = Cluster(tmp_path, f"mlflow:{src}", f"mlflow:{pg_database}", state)
        kill = {"BRIDGE_KILL_AT": "apply.create.after_create_run#1"}
        pods = [k8s.start_pod(i, kill if i == 1 else None) for i in range(k8s.n)]
        ended = k8s.wait(pods)
        assert ended[1][0] == -9, f"index 1 was not killed: exit {ended[1][0]}"
        for i, (code, out, err) in enumerate(ended):
            if i != 1:
                assert code == 0, f"pod {i}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
                assert json.loads(out)["final_step"] is False  # index 1 has not ended
        ((code, out, err),) = k8s.wait([k8s.start_pod(1)])  # the retry
        assert code == 0, f"retry: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
        report = json.loads(out)
        assert report["pass_id"] == k8s.job_uid and report["final_step"] is True
        _assert_each_run_once(pg_database, made)
        _assert_pass_done(state, k8s.job_uid, k8s.status(state))
    finally:
        drop_state()


def _finish_pass_container() -> dict[str, Any]:
    """The one-off pod deploy/README.md gives for finishing a pass by hand (its
    ``kubectl run --overrides`` JSON)."""
    text = (DEPLOY / "README.md").read_text()
    (overrides,) = re.findall(r"--overrides='(\{.*?\})'", text)
    (container,) = json.loads(overrides)["spec"]["containers"]
    return dict(container)


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_dead_index_finished_by_hand_then_a_new_job_completes(
    tmp_path: Path, pg_database: str
) -> None:
    """deploy/README.md's recovery, step by step: index 1 dies with no retry left; the other
    indices end without a final step; after the lease the documented ``--finish-pass`` pod
    records the pass incomplete (exit 1); the Job applied again (a new uid, a new pass)
    copies what is missing, runs the final step and the pair's last cycle is clean."""
    src = f"sqlite:///{tmp_path / 'src.db'}"
    made = _source_corpus(src, tmp_path / "src-artifacts")
    state, drop_state = _fresh_pg_database()
    try:
        k8s = Cluster(tmp_path, f"mlflow:{src}", f"mlflow:{pg_database}", state)
        kill = {"BRIDGE_KILL_AT": "apply.create.after_create_run#1"}
        ended = k8s.wait([k8s.start_pod(i, kill if i == 1 else None) for i in range(k8s.n)])
        assert ended[1][0] == -9
        assert all(json.loads(out)["final_step"] is False for c, out, _ in ended if c == 0)

        # the documented finish-pass pod; the lease shortened so the test need not wait 300 s
        c = _finish_pass_container()
        meta = {"name": "bridge-finish", "namespace": "default", "labels": {}, "annotations": {}}
        env = container_env(c, configmaps=k8s.configmaps, secrets=k8s.secrets, meta=meta)
        argv = command_line(c, entrypoint(), env)
        argv = [k8s.job_uid if a == "<the Job uid>" else a for a in argv]
        assert "--finish-pass" in argv and k8s.job_uid in argv
        home = tmp_path / "finish" / "home"
        lease = {"BRIDGE_PASS_LEASE": "3"}
        time.sleep(4)
        done = subprocess.run(
            argv, env=_image_env(home) | env | lease, capture_output=True, text=True, timeout=600
        )
        assert k8s.password not in done.stdout + done.stderr
        assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
        pair = k8s.status(state)
        assert pair["last_cycle"]["result"] == 1
        assert any(re.search(r"\b1\b.*died", e) for e in pair["last_cycle"]["errors"]), pair
        (first,) = [p for p in pair["passes"] if p["pass_id"] == k8s.job_uid]
        assert first["final"] == "done" and first["incomplete"] and 1 not in first["ended"]
        assert sum(_copies(pg_database).values()) < len(made)  # index 1's runs are missing

        # kubectl delete job && kubectl apply: a new Job, a new uid, a new pass
        k8s.job_uid = str(uuid.uuid4())
        ended = k8s.wait([k8s.start_pod(i) for i in range(k8s.n)])
        for i, (code, out, err) in enumerate(ended):
            assert code == 0, f"pod {i}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
        assert [json.loads(out)["final_step"] for _, out, _ in ended].count(True) == 1
        _assert_each_run_once(pg_database, made)
        _assert_pass_done(state, k8s.job_uid, k8s.status(state), cycles=2)
    finally:
        drop_state()
