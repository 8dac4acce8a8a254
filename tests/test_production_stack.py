"""The production stack (issue 15): an ``mlflow server`` on PostgreSQL with its artifacts in
an S3-compatible store (moto's server on loopback), in both access modes:

- ``proxied``: ``--serve-artifacts --artifacts-destination s3://…`` (the bridge talks HTTP to
  the server only; it needs no S3 credentials);
- ``direct``: ``--no-serve-artifacts --default-artifact-root s3://…`` (the bridge writes to and
  reads from the bucket itself, with ``AWS_*`` and ``MLFLOW_S3_ENDPOINT_URL``).

One server at a time (a module-scoped fixture parametrized by mode). Into it: a W&B offline
run made by the real SDK (files, an artifact, an ``s3://`` reference into the moto bucket,
fetched with ``--download-references``) and an MLflow sqlite run; every file is then found in
the bucket with its bytes, ``verify`` is clean, a re-sync writes nothing. Out of it: the
same runs into a sqlite store, artifacts read from S3. A ≥ 200 MB file goes through each
mode as a multipart upload, with the ``bridge sync`` process's peak RSS far below its size.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest
from conftest import fresh_pg_database, running_mlflow_server
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import ReaderOptions
from tests.sdk_runs import sdk_env

pytestmark = pytest.mark.e2e

BUCKET = "stack"
SECRET = "moto-secret-never-printed-7f3a"  # the secret key: must appear in no output
REF_KEY = "refdata/part-0000.csv"
REF_BYTES = b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(500))
BIG = 256 << 20  # the large file: 256 MiB, sparse on disk
BIG_PART = 10 << 20  # MLflow's default MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")

_SDK_SCRIPT = """
import os, sys, wandb
run = wandb.init(entity="acme", project="stack", id="stackrun", name="stack-run")
for step in range(20):
    run.log({"loss": 1.0 / (step + 1)}, step=step)
with open(os.path.join(run.dir, "notes.txt"), "w") as fh:
    fh.write("run file kept with the run\\n")
os.makedirs("data", exist_ok=True)
with open("data/train.csv", "w") as fh:
    fh.write("x,y\\n" + "".join(f"{i},{2 * i}\\n" for i in range(300)))
art = wandb.Artifact("train-data", type="dataset")
art.add_file("data/train.csv")
run.log_artifact(art)
refs = wandb.Artifact("raw", type="dataset")
refs.add_reference(sys.argv[1], name="raw/part-0000.csv", checksum=False)
run.log_artifact(refs)
run.finish()
"""

SQLITE_FILES = {
    "model.txt": b"weights " * 100,
    "nested/deep/data.csv": b"a,b\n1,2\n3,4\n",
    "eval/report.json": b'{"acc": 0.93}',
}
WANDB_FILES = {
    "notes.txt": b"run file kept with the run\n",
    "train.csv": b"x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(300)).encode(),
}


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def moto() -> Iterator[dict[str, Any]]:
    """moto's S3 server on loopback, its environment set for this process (and the servers
    and bridge processes it starts); the reference object in place."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing-key",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": url,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        # only MLflow's own endpoint variable: the reference fetch must honour it too
        for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            mp.delenv(key, raising=False)
        client = boto3.client("s3", endpoint_url=url)
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=REF_KEY, Body=REF_BYTES)
        yield {"client": client, "url": url, "env": env}
    server.stop()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, moto: dict[str, Any]) -> dict[str, Any]:
    """A W&B offline run (real SDK) and an MLflow sqlite store with one run."""
    root = tmp_path_factory.mktemp("stack-sources")
    work = root / "work"
    work.mkdir()
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SDK_SCRIPT), f"s3://{BUCKET}/{REF_KEY}"],
        cwd=work,
        env=sdk_env(root),
        check=True,
        timeout=240,
        capture_output=True,
    )
    db = f"sqlite:///{root / 'src.db'}"
    client = MlflowClient(tracking_uri=db)
    exp = client.create_experiment("tabular", artifact_location=str(root / "src-artifacts"))
    run = client.create_run(exp, run_name="sqlite-run")
    rid = run.info.run_id
    client.log_param(rid, "depth", "6")
    for step in range(10):
        client.log_metric(rid, "rmse", 10.0 - step, step=step)
    folder = root / "art"
    for rel, data in SQLITE_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    client.log_artifacts(rid, str(folder))
    client.set_terminated(rid)
    return {"wandb": root / "wandb", "sqlite": db, "root": root}


def _database() -> Iterator[str]:
    with fresh_pg_database("bridge_stack_") as url:
        yield url


@pytest.fixture(scope="module", params=["proxied", "direct"])
def stack(
    request: pytest.FixtureRequest, moto: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """An ``mlflow server`` on a fresh PostgreSQL database, artifacts under
    ``s3://stack/<mode>``; one mode at a time."""
    mode = request.param
    if mode == "proxied":
        artifacts = ["--serve-artifacts", "--default-artifact-root", "mlflow-artifacts:/"]
        artifacts += ["--artifacts-destination", f"s3://{BUCKET}/{mode}"]
    else:
        artifacts = ["--no-serve-artifacts", "--default-artifact-root", f"s3://{BUCKET}/{mode}"]
    work = tmp_path_factory.mktemp(f"stack-{mode}")
    for backend in _database():
        with running_mlflow_server(work, backend, artifacts=artifacts, env=moto["env"]) as url:
            yield {"mode": mode, "url": url, "prefix": f"{mode}/", "work": work}


def _objects(client: Any, prefix: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj
    return out


def _object_md5(client: Any, key: str) -> tuple[str, int]:
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    md5, size = hashlib.md5(), 0
    while chunk := body.read(1 << 20):
        md5.update(chunk)
        size += len(chunk)
    return md5.hexdigest(), size


def _bridge_env(stack: dict[str, Any], moto: dict[str, Any]) -> dict[str, str]:
    """The bridge process's environment: proxied needs no S3 settings at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3_"))}
    env.update(WANDB_SILENT="true", WANDB_MODE="offline", WANDB_DISABLE_GIT="true")
    if stack["mode"] == "direct":
        env.update(moto["env"])
    return env


def _run_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_run_files(client, run_id, item.path) if item.is_dir else [item.path])
    return out


def _sync_into(
    stack: dict[str, Any], sources: dict[str, Any], tmp: Path
) -> tuple[str, dict[str, Any]]:
    dest = f"mlflow:{stack['url']}"
    state = str(tmp / "state.db")
    plans = {
        "wandb": api.sync(
            f"wandb-offline:{sources['wandb']}",
            dest,
            state=state,
            reader_options=ReaderOptions(download_references=True),
        ),
        "sqlite": api.sync(f"mlflow:{sources['sqlite']}", dest, state=state),
    }
    return state, plans


@pytest.fixture(scope="module")
def synced(
    stack: dict[str, Any], sources: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp(f"synced-{stack['mode']}")
    state, plans = _sync_into(stack, sources, tmp)
    return {"state": state, "plans": plans, "tmp": tmp}


def test_sync_into_the_stack(
    stack: dict[str, Any], sources: dict[str, Any], synced: dict[str, Any], moto: dict[str, Any]
) -> None:
    plans = synced["plans"]
    for name, plan in plans.items():
        assert plan.exit_code() == 0, (name, [(r.source_id, r.error) for r in plan.runs])
        assert plan.counts() == {"create": 1}, name
        assert not plan.warnings, (name, [w.message for w in plan.warnings])
    s3 = moto["client"]
    objects = _objects(s3, stack["prefix"])
    by_name: dict[str, set[str]] = {}
    for key in objects:
        md5, _ = _object_md5(s3, key)
        by_name.setdefault(key.rsplit("/", 1)[-1], set()).add(md5)
    expected = {**SQLITE_FILES, **WANDB_FILES, "part-0000.csv": REF_BYTES}
    for rel, data in expected.items():
        assert _md5(data) in by_name.get(rel.rsplit("/", 1)[-1], set()), (rel, sorted(by_name))
    # the referenced bytes landed under the W&B run's artifact copy, read from the bucket
    client = MlflowClient(tracking_uri=stack["url"])
    [wb] = plans["wandb"].runs
    raw = [f for f in _run_files(client, wb.dest_id) if f.endswith("/files/raw/part-0000.csv")]
    assert len(raw) == 1, _run_files(client, wb.dest_id)
    local = client.download_artifacts(wb.dest_id, raw[0], str(synced["tmp"] / "dl"))
    assert Path(local).read_bytes() == REF_BYTES

    for src in (f"wandb-offline:{sources['wandb']}", f"mlflow:{sources['sqlite']}"):
        report = api.verify(src, f"mlflow:{stack['url']}", state=synced["state"], digests=True)
        assert report.exit_code() == 0, (src, report.model_dump())

    etags = {k: v["ETag"] for k, v in _objects(s3, stack["prefix"]).items()}
    _, again = _sync_into(stack, sources, synced["tmp"])
    for name, plan in again.items():
        assert plan.counts() == {"unchanged": 1}, name
        assert sum(r.points_written for r in plan.runs) == 0
    assert {k: v["ETag"] for k, v in _objects(s3, stack["prefix"]).items()} == etags


def test_stack_as_source(
    stack: dict[str, Any], synced: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The stack's runs into a sqlite store: artifacts read back from S3."""
    tmp = tmp_path_factory.mktemp(f"from-{stack['mode']}")
    dest = f"sqlite:///{tmp / 'dst.db'}"
    state = str(tmp / "state.db")
    plan = api.sync(f"mlflow:{stack['url']}", f"mlflow:{dest}", state=state)
    assert plan.exit_code() == 0, [(r.source_id, r.error) for r in plan.runs]
    assert plan.counts() == {"create": 2}
    client = MlflowClient(tracking_uri=dest)
    got: dict[str, bytes] = {}
    for line in plan.runs:
        for rel in _run_files(client, line.dest_id):
            local = client.download_artifacts(line.dest_id, rel, str(tmp / "dl"))
            got[rel] = Path(local).read_bytes()
    for rel, data in SQLITE_FILES.items():
        assert got.get(rel) == data, rel
    names = {rel.rsplit("/", 1)[-1]: data for rel, data in got.items()}
    for rel, data in {**WANDB_FILES, "part-0000.csv": REF_BYTES}.items():
        assert names.get(rel) == data, (rel, sorted(got))
    report = api.verify(f"mlflow:{stack['url']}", f"mlflow:{dest}", state=state, digests=True)
    assert report.exit_code() == 0, report.model_dump()


def _big_source(root: Path, size: int, name: str) -> tuple[str, str]:
    """A sqlite store whose one run holds a ``size``-byte file written in place (sparse: up
    to 3 MiB of data at three offsets, the rest holes), and the file's MD5."""
    db = f"sqlite:///{root / 'big.db'}"
    client = MlflowClient(tracking_uri=db)
    exp = client.create_experiment("big", artifact_location=str(root / "big-artifacts"))
    run = client.create_run(exp, run_name=name)
    folder = Path(client.get_run(run.info.run_id).info.artifact_uri)
    folder.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(b"bridge").digest() * (1 << 15)  # 1 MiB of non-zero bytes
    with open(folder / "weights.bin", "wb") as fh:
        fh.truncate(size)
        for offset in sorted({0, size // 3, size - len(block)}):
            fh.seek(offset)
            fh.write(block)
    client.set_terminated(run.info.run_id)
    md5 = hashlib.md5()
    with open(folder / "weights.bin", "rb") as fh:
        while chunk := fh.read(1 << 20):
            md5.update(chunk)
    return db, md5.hexdigest()


def _peak_rss_sync(src: str, dest: str, env: dict[str, str], tmp: Path, *args: str) -> int:
    """``bridge sync`` of ``src`` into ``dest`` in its own process: its peak RSS (bytes)."""
    bridge = str(Path(sys.executable).with_name("bridge"))
    cmd = ["/usr/bin/time", "-v", bridge, "sync", f"mlflow:{src}", f"mlflow:{dest}"]
    cmd += ["--state", str(tmp / "state.db"), "--json", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert found is not None, done.stderr[-2000:]
    return int(found[1]) * 1024


def test_large_file_multipart_in_bounded_memory(
    stack: dict[str, Any], moto: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = _bridge_env(stack, moto)
    if stack["mode"] == "proxied":
        # the client's multipart path (presigned part URLs from the server) in parts of the
        # default size: MLflow reads one part per upload thread into memory, so the peak
        # grows with MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE
        env["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "true"
        env["MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE"] = str(64 << 20)  # default 500 MiB
    small_tmp = tmp_path_factory.mktemp(f"small-{stack['mode']}")
    small_src = _big_source(small_tmp, 1 << 20, "small-run")[0]
    base = _peak_rss_sync(small_src, stack["url"], env, small_tmp)
    tmp = tmp_path_factory.mktemp(f"big-{stack['mode']}")
    src, md5 = _big_source(tmp, BIG, "big-run")
    peak = _peak_rss_sync(src, stack["url"], env, tmp)
    print(f"{stack['mode']}: bridge sync peak RSS {peak >> 20} MiB with a {BIG >> 20} MiB file,")
    print(f"  {base >> 20} MiB with a 1 MiB file (the same run otherwise)")
    # the file adds far less than its size to the process (bounded parts, not the file)
    assert peak - base < BIG / 4, f"peak RSS {peak >> 20} MiB, {base >> 20} MiB for 1 MiB"

    s3 = moto["client"]
    [key] = [
        k
        for k in _objects(s3, stack["prefix"])
        if k.endswith("/weights.bin")
        and s3.head_object(Bucket=BUCKET, Key=k)["ContentLength"] == BIG
    ]
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    parts = re.fullmatch(r"[0-9a-f]{32}-(\d+)", etag)
    assert parts is not None, f"not a multipart upload: ETag {etag}"
    if stack["mode"] == "proxied":
        assert int(parts[1]) == -(-BIG // BIG_PART)  # the client's parts, not the server's
    assert _object_md5(s3, key) == (md5, BIG)

    # and back out of the stack into sqlite: downloaded from S3 in bounded memory too
    client = MlflowClient(tracking_uri=stack["url"])
    [exp] = [e for e in client.search_experiments() if e.name == "big"]
    ids = {r.info.run_name: r.info.run_id for r in client.search_runs([exp.experiment_id])}
    out = tmp_path_factory.mktemp(f"big-out-{stack['mode']}")
    dest = f"sqlite:///{out / 'dst.db'}"
    read: dict[str, int] = {}
    for name in ("small-run", "big-run"):
        read[name] = _peak_rss_sync(stack["url"], dest, env, out, "--runs", ids[name])
    print(f"  read back: {read['big-run'] >> 20} MiB, {read['small-run'] >> 20} MiB for 1 MiB")
    # proxied: MLflow's presigned multipart download, in the parts the bridge bounds
    assert read["big-run"] - read["small-run"] < BIG / 3
    copy = MlflowClient(tracking_uri=dest)
    [run] = [
        r
        for r in copy.search_runs([copy.get_experiment_by_name("big").experiment_id])
        if r.info.run_name == "big-run"
    ]
    local = Path(url2pathname(urlsplit(run.info.artifact_uri).path)) / "weights.bin"
    got = hashlib.md5()
    with open(local, "rb") as fh:
        while chunk := fh.read(1 << 20):
            got.update(chunk)
    assert (got.hexdigest(), local.stat().st_size) == (md5, BIG)
    shutil.rmtree(out)  # the copy is not sparse: keep the test's disk use down


def test_references_stay_references_without_the_flag(
    sources: dict[str, Any], tmp_path: Path
) -> None:
    dest = f"sqlite:///{tmp_path / 'dst.db'}"
    plan = api.sync(
        f"wandb-offline:{sources['wandb']}", f"mlflow:{dest}", state=str(tmp_path / "s")
    )
    assert plan.exit_code() == 0 and not plan.warnings
    [run] = plan.runs
    files = _run_files(MlflowClient(tracking_uri=dest), run.dest_id)
    raw = [f for f in files if "/raw/" in f]
    assert [f.rsplit("/", 1)[-1] for f in raw] == ["manifest.json"]


def _cli_sync(
    sources: dict[str, Any], tmp: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    bridge = str(Path(sys.executable).with_name("bridge"))
    cmd = [bridge, "sync", f"wandb-offline:{sources['wandb']}", f"mlflow:sqlite:///{tmp / 'd.db'}"]
    cmd += ["--state", str(tmp / "state.db"), "--download-references"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_reference_missing_or_without_credentials_is_named(
    sources: dict[str, Any], moto: dict[str, Any], tmp_path: Path
) -> None:
    url = f"s3://{BUCKET}/{REF_KEY}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3_"))}
    base.update(WANDB_SILENT="true", WANDB_MODE="offline")
    s3 = moto["client"]
    s3.delete_object(Bucket=BUCKET, Key=REF_KEY)
    try:
        gone = _cli_sync(sources, tmp_path / "gone", {**base, **moto["env"]})
    finally:
        s3.put_object(Bucket=BUCKET, Key=REF_KEY, Body=REF_BYTES)
    # no credentials anywhere (no files, no instance metadata)
    nocreds = {
        **base,
        "MLFLOW_S3_ENDPOINT_URL": moto["url"],
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    bare = _cli_sync(sources, tmp_path / "bare", nocreds)
    for result, why in ((gone, "NoSuchKey"), (bare, "credentials")):
        out = result.stdout + result.stderr
        assert SECRET not in out
        lines = [line for line in out.splitlines() if url in line]
        assert lines, out[-3000:]
        assert any(why in line for line in lines), lines
        assert result.returncode == 0, out[-3000:]  # the rest of the run still synced
