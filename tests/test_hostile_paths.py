"""Issue 11, hostile input — paths and references: nothing a source or server names makes
the bridge write outside its own temp and destination folders, or read a local file the
operator did not allow.

Hostile inputs, each made the way it would reach a user:
1. a W&B offline log (written by the real SDK, then records rewritten) whose artifact
   manifest names ``../escape.txt`` and an absolute path, and whose history names a media
   file ``../../secret.png``;
2. ``file://`` references in an offline log: one under ``--reference-root``, one outside,
   one through a symlink under the root that points outside;
3. a W&B server (the loopback fake, read by the real ``wandb.Api``) sending run files,
   manifest entries and media paths with ``..`` and absolute paths, plus a ``file://``
   reference to a file on this machine;
4. an MLflow server (a real ``mlflow server`` behind a loopback proxy that adds entries to
   its list-artifacts answers) listing ``../../etc/x`` and an absolute path.

Each is a loss under "nothing lost": the run is ``failed`` (exit 1) naming what was
refused, everything else in the run is written, the refused names are never recorded as
copied (the next sync reports them again), and the file system outside the destination
is untouched (a sentinel folder stays empty; the secret's bytes never reach the copy).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.txlog import TxlogReader
from bridge.cli import main
from bridge.config_file import load_config
from bridge.paths import PathRefused, check_reference_target, path_problem, within
from tests.sdk_runs import sdk_env
from tests.test_txlog import encode

SECRET = b"top secret: must never be copied\n"

# ------------------------------------------------------------------------- unit: guard


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "\\\\server\\share\\x",
        "C:\\Windows\\x",
        "c:x",
        "..",
        "../escape.txt",
        "a/../../b",
        "a\\..\\..\\b",
        "a/./b",
        "a//b",
        "a/",
        "files//abs/x",
        "nul\0byte",
    ],
)
def test_guard_refuses(path: str) -> None:
    assert path_problem(path) is not None
    with pytest.raises(PathRefused, match="refusing"):
        within("/tmp", path)


@pytest.mark.parametrize(
    "path", ["a.txt", "files/media/images/x.png", "..a/b..", "a b/c:d", "dir/back\\slash-name"]
)
def test_guard_accepts(path: str) -> None:
    assert path_problem(path) is None


def test_within_refuses_a_symlink_planted_below_the_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PathRefused, match="resolves outside"):
        within(tmp_path / "root", "link/x.txt")
    assert within(tmp_path / "root", "ok/x.txt") == (tmp_path / "root").resolve() / "ok/x.txt"


def test_reference_targets(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "in.txt").write_text("x")
    (outside / "s.txt").write_text("x")
    (root / "link.txt").symlink_to(outside / "s.txt")
    inside = check_reference_target(f"file://{root}/in.txt", [str(root)])
    assert inside == (root / "in.txt").resolve()
    cases = {
        f"file://{outside}/s.txt": "outside every --reference-root",
        f"file://{root}/link.txt": "outside every --reference-root",  # symlink resolved
        f"file://{root}/../outside/s.txt": "outside every --reference-root",
        f"file://{root}/%2e%2e/outside/s.txt": "outside every --reference-root",
        f"file://otherhost{root}/in.txt": "names host",
    }
    for uri, why in cases.items():
        with pytest.raises(PathRefused, match=why):
            check_reference_target(uri, [str(root)])
    with pytest.raises(PathRefused, match="none was given"):
        check_reference_target(f"file://{root}/in.txt", [])
    with pytest.raises(PathRefused, match="sent by a server is never read"):
        check_reference_target(f"file://{root}/in.txt", None)


def test_config_reference_roots_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "bridge.toml"
    conf.parent.mkdir()
    conf.write_text(
        textwrap.dedent(
            """
            [[pair]]
            source = "wandb-offline:runs"
            dest = "mlflow:sqlite:///m.db"
            filters = { download_references = true, reference_roots = ["shared", "/abs/data"] }
            """
        )
    )
    opts = load_config(conf).pairs[0].reader_options()
    assert opts.download_references
    assert opts.reference_roots == [str((conf.parent / "shared").resolve()), "/abs/data"]


# ------------------------------------------------------------ helpers: files and logs


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, bytes]:
    """Every file under ``root`` (not following links) except those under ``skip``."""
    out: dict[str, bytes] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            if any(p.is_relative_to(s) for s in skip) or p.is_symlink():
                continue
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _holding(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` whose content contains ``needle``."""
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]


def _rewrite_log(folder: Path, edit: Callable[[Any], None]) -> None:
    """Decode every record of the folder's ``.wandb`` log, let ``edit`` change it, re-encode."""
    (log,) = folder.glob("*.wandb")
    records = []
    for _, rec in TxlogReader(log).records():
        edit(rec)
        records.append(rec.SerializeToString())
    log.write_bytes(encode(records))


def _mlflow_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_mlflow_files(client, run_id, item.path) if item.is_dir else [item.path])
    return out


def _refused(plan: Any) -> list[str]:
    return [w.message for w in plan.warnings if w.code == "refused"]


# ------------------------------------------------------------ 1 + 2: W&B offline logs

_SCRIPT = """
import os, sys, numpy as np, wandb
root, outside = sys.argv[1], sys.argv[2]
run = wandb.init(entity="acme", project="hostile", id="hostile", config={"lr": 0.1})
for step in range(6):
    row = {"loss": 1.0 / (step + 1)}
    if step == 2:
        row["sample"] = wandb.Image(np.zeros((4, 4, 3), dtype=np.uint8))
    run.log(row, step=step)
for name in ("a.txt", "b.txt", "c.txt", "good.txt"):
    open(name, "w").write(name.upper() * 3)
hostile = wandb.Artifact("hostile", type="dataset")
for name in ("a.txt", "b.txt", "c.txt"):
    hostile.add_file(name)
run.log_artifact(hostile)
good = wandb.Artifact("good", type="dataset")
good.add_file("good.txt")
run.log_artifact(good)
refs = wandb.Artifact("refs", type="dataset")
refs.add_reference("file://" + os.path.join(root, "inside.txt"))
refs.add_reference("file://" + os.path.join(outside, "secret.txt"))
refs.add_reference("file://" + os.path.join(root, "link.txt"))
run.log_artifact(refs)
run.finish()
"""


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One SDK-made offline run: history with an image, artifacts ``hostile`` (a, b, c),
    ``good`` and ``refs`` (file:// references: inside the root, outside, a link out)."""
    base = tmp_path_factory.mktemp("hostile-sdk")
    root, outside = base / "refroot", base / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "inside.txt").write_bytes(b"inside the reference root\n")
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "link.txt").symlink_to(outside / "secret.txt")
    work = base / "work"
    work.mkdir()
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), str(root), str(outside)],
        cwd=work,
        env=sdk_env(base),
        check=True,
        timeout=180,
        capture_output=True,
    )
    return {"wandb": base / "wandb", "root": root, "outside": outside}


def _copy_source(offline_run: dict[str, Path], tmp: Path) -> Path:
    src = tmp / "src" / "wandb"
    shutil.copytree(offline_run["wandb"], src, symlinks=True)
    return src


def _make_hostile(src: Path, absolute: Path) -> None:
    """Artifact ``hostile``: a.txt -> ``../escape.txt``, b.txt -> ``absolute``; the image
    in history -> ``../../secret.png`` (a file planted two levels above ``files/``)."""
    (folder,) = [p for p in src.iterdir() if p.name.startswith("offline-run-")]
    (src / "secret.png").write_bytes(SECRET)  # = <run folder>/files/../../secret.png

    def edit(rec: Any) -> None:
        kind = rec.WhichOneof("record_type")
        if kind == "artifact" and rec.artifact.name == "hostile":
            for entry in rec.artifact.manifest.contents:
                if entry.path == "a.txt":
                    entry.path = "../escape.txt"
                elif entry.path == "b.txt":
                    entry.path = str(absolute)
        elif kind == "history":  # wandb 0.31 splits a media dict into nested keys
            for item in rec.history.item:
                if list(item.nested_key) == ["sample", "path"]:
                    item.value_json = json.dumps("../../secret.png")

    _rewrite_log(folder, edit)


def _sync_offline(src: Path, tmp: Path, **options: Any) -> tuple[Any, MlflowClient]:
    db = f"sqlite:///{tmp / 'dest' / 'mlflow.db'}"
    (tmp / "dest").mkdir(exist_ok=True)
    (tmp / "state").mkdir(exist_ok=True)  # the store and its lock files
    plan = api.sync(
        f"wandb-offline:{src}",
        f"mlflow:{db}",
        state=str(tmp / "state" / "state.db"),
        reader_options=ReaderOptions(**options),
    )
    return plan, MlflowClient(tracking_uri=db)


@pytest.mark.e2e
def test_offline_log_with_hostile_paths(offline_run: dict[str, Path], tmp_path: Path) -> None:
    """Before: the first refused path raised out of the writer and ended the run there
    (the ``good`` artifact and the rest of ``hostile`` never copied, nothing named as
    refused); the media path was opened outside the run folder."""
    src = _copy_source(offline_run, tmp_path)
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    _make_hostile(src, sentinel / "abs.txt")
    dest = tmp_path / "dest"
    before = _snapshot(tmp_path, skip=(dest, tmp_path / "state"))

    plan, client = _sync_offline(src, tmp_path)

    [run] = plan.runs
    assert plan.exit_code() == 1 and run.outcome == "failed", (run.outcome, run.error)
    refused = _refused(plan)
    assert any("'../escape.txt'" in m and "'..'" in m for m in refused), refused
    assert any(repr(str(sentinel / "abs.txt")) in m and "absolute" in m for m in refused)
    assert any("files/../../secret.png" in m for m in refused), refused
    assert run.error and "../escape.txt" in run.error
    # the rest of the run is written
    files = _mlflow_files(client, run.dest_id)
    hostile = [f for f in files if f.startswith("artifacts/hostile/")]
    assert sorted(f.rsplit("/", 1)[-1] for f in hostile) == ["c.txt", "manifest.json"]
    good = [f for f in files if f.startswith("artifacts/good/") and f.endswith("/good.txt")]
    assert len(good) == 1
    assert len(client.get_metric_history(run.dest_id, "loss")) == 6
    assert "bridge/history-extras.jsonl" in files  # the image's value, as data
    manifest = next(f for f in hostile if f.endswith("manifest.json"))
    (tmp_path / "dl").mkdir()
    local = client.download_artifacts(run.dest_id, manifest, str(tmp_path / "dl"))
    doc = json.loads(Path(local).read_text())
    assert "../escape.txt" in {e["path"] for e in doc["manifest"]}  # named, as data
    # nothing outside the destination; the secret never copied
    assert not any(sentinel.iterdir())
    assert _snapshot(tmp_path, skip=(dest, tmp_path / "state", tmp_path / "dl")) == before
    assert not _holding(dest, SECRET)
    assert not [p for p in dest.rglob("escape.txt")]

    # never recorded as copied: the next sync reports the same refusals again
    again, _ = _sync_offline(src, tmp_path)
    assert again.exit_code() == 1 and [r.outcome for r in again.runs] == ["failed"]
    assert sorted(_refused(again)) == sorted(refused)


@pytest.mark.e2e
def test_file_references_only_under_reference_roots(
    offline_run: dict[str, Path], tmp_path: Path
) -> None:
    """Before: every file:// target was read — the one outside the root and the link out
    of it were copied into the destination, secret included."""
    src = _copy_source(offline_run, tmp_path)
    root = offline_run["root"]

    def sync(name: str, *extra: str) -> tuple[Any, Path, str]:
        """One CLI sync into a fresh sqlite store (MLflow caches engines per URI)."""
        dest = tmp_path / name
        dest.mkdir()
        db = f"sqlite:///{dest / 'mlflow.db'}"
        state = str(dest / "state.db")
        args = ["sync", f"wandb-offline:{src}", f"mlflow:{db}", "--state", state, "--json"]
        result = CliRunner().invoke(main, [*args, *extra])
        return result, dest, db

    result, dest, db = sync("rooted", "--download-references", "--reference-root", str(root))
    assert result.exit_code == 1, result.output
    out = json.loads(result.output)
    refused = [w["message"] for w in out["warnings"] if w["code"] == "refused"]
    assert len(refused) == 2, refused
    assert any("secret.txt" in m and "outside every --reference-root" in m for m in refused)
    assert any("link.txt" in m and "outside every --reference-root" in m for m in refused)
    assert [r["outcome"] for r in out["runs"]] == ["failed"]
    client = MlflowClient(tracking_uri=db)
    [run_id] = [r["dest_id"] for r in out["runs"]]
    copied = [f for f in _mlflow_files(client, run_id, "artifacts/refs") if "/files/" in f]
    assert [f.rsplit("/", 1)[-1] for f in copied] == ["inside.txt"]
    assert not _holding(dest, SECRET)
    # the rest of the run is there
    assert len(client.get_metric_history(run_id, "loss")) == 6

    # no --reference-root: every file:// target refused, named, nothing read
    result, dest, _ = sync("unrooted", "--download-references")
    assert result.exit_code == 1, result.output
    out = json.loads(result.output)
    refused = [w["message"] for w in out["warnings"] if w["code"] == "refused"]
    assert len(refused) == 3 and all("none was given" in m for m in refused), refused
    assert not _holding(dest, SECRET) and not _holding(dest, b"inside the reference root")

    # without --download-references references stay references: nothing refused, run done
    result, _, _ = sync("kept")
    assert result.exit_code == 0, result.output
    assert not [w for w in json.loads(result.output)["warnings"] if w["code"] == "refused"]


# ------------------------------------------------------------ 3: a W&B server's answers


@pytest.mark.e2e
def test_wandb_server_sending_hostile_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the server's ``../escape.txt`` was downloaded, then refused by the writer
    as an error that ended the run (fine.bin and the rest never copied, nothing named as
    refused), and its ``file://`` reference was read from this machine and copied."""
    from fakes.wandb_server import FakeArtifact, FakeRun, FakeWandbServer
    from fakes.wandb_store import b64md5

    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    sentinel, local = tmp_path / "sentinel", tmp_path / "local"
    sentinel.mkdir()
    local.mkdir()
    (local / "secret.txt").write_bytes(SECRET)
    absolute = str(sentinel / "abs.txt")
    now = time.time()
    image = {"_type": "image-file", "path": "../../media.png", "size": 4, "sha256": "0" * 64}
    run = FakeRun(
        name="evil",
        entity="acme",
        project="hostile",
        config={"lr": 0.1},
        created_at=now - 60,
        heartbeat_at=now - 10,
        history=[
            {"_step": s, "_timestamp": now - 50 + s, "_runtime": float(s), "loss": 1.0 / (s + 1)}
            | ({"img": image} if s == 1 else {})
            for s in range(4)
        ],
        files={"output.log": b"hello\n", "../escape.txt": b"ESCAPE", absolute: b"ABS"},
        logged_artifacts=[
            FakeArtifact(
                name="ds",
                type="dataset",
                files={"../evil.bin": b"EVIL", "fine.bin": b"FINE"},
                references={
                    "r.txt": {
                        "ref": f"file://{local / 'secret.txt'}",
                        "digest": b64md5(SECRET),
                        "size": len(SECRET),
                    }
                },
            )
        ],
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    db = f"sqlite:///{dest / 'mlflow.db'}"
    with FakeWandbServer() as srv:
        srv.add_run(run)
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        plan = api.sync(
            f"wandb:acme/hostile?base_url={srv.url}",
            f"mlflow:{db}",
            state=str(tmp_path / "state.db"),
            workers=1,
            # even under a named root: a server's file:// reference is never read
            reader_options=ReaderOptions(download_references=True, reference_roots=[str(local)]),
        )
    [out] = plan.runs
    assert plan.exit_code() == 1 and out.outcome == "failed", (out.outcome, out.error)
    refused = _refused(plan)
    expect = {
        "'files/../escape.txt'": "'..'",
        f"'files/{absolute}'": "not normalized",
        "'files/../../media.png'": "'..'",
        "'../evil.bin'": "'..'",
        "secret.txt": "sent by a server is never read",
    }
    for name, why in expect.items():
        assert any(name in m and why in m for m in refused), (name, refused)
    assert len(refused) == len(expect), refused
    client = MlflowClient(tracking_uri=db)
    files = _mlflow_files(client, out.dest_id)
    assert "files/output.log" in files
    assert [f for f in files if f.endswith("/files/fine.bin")]
    assert len(client.get_metric_history(out.dest_id, "loss")) == 4
    assert not any(sentinel.iterdir())
    assert not _holding(dest, SECRET)
    assert not _holding(dest, b"ESCAPE") and not _holding(dest, b"EVIL")
    assert not list(tmp_path.rglob("escape.txt")) and not list(tmp_path.rglob("evil.bin"))


# ------------------------------------------------------------ 4: MLflow artifacts on S3


@pytest.mark.e2e
def test_mlflow_artifact_store_naming_paths_outside_the_run(s3: Any, tmp_path: Path) -> None:
    """An object key ``<run>/artifacts/../../etc/x`` planted in the bucket: MLflow's S3
    listing turns it into a folder ``..`` of the run. Before: the reader followed it out of
    the run's artifacts, met ``../../etc/x`` and ended the run with an error (the run's
    real artifact, listed after it, never copied; nothing named as refused)."""
    src_db = f"sqlite:///{tmp_path / 'src.db'}"
    source = MlflowClient(tracking_uri=src_db)
    exp = source.create_experiment("hostile", artifact_location="s3://artifacts/mlruns")
    run_id = source.create_run(exp, run_name="victim").info.run_id
    for step in range(5):
        source.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "model.txt").write_text("weights")
    source.log_artifact(run_id, str(tmp_path / "up" / "model.txt"), "model")
    source.set_terminated(run_id)
    prefix = source.get_run(run_id).info.artifact_uri.removeprefix("s3://artifacts/")
    s3.put_object(Bucket="artifacts", Key=f"{prefix}/../../etc/x", Body=SECRET)
    assert ("..", True) in [(f.path, f.is_dir) for f in source.list_artifacts(run_id)]

    dest = tmp_path / "dest"
    dest.mkdir()
    db = f"sqlite:///{dest / 'mlflow.db'}"
    plan = api.sync(f"mlflow:{src_db}", f"mlflow:{db}", state=str(tmp_path / "state.db"))
    [out] = plan.runs
    assert plan.exit_code() == 1 and out.outcome == "failed", (out.outcome, out.error)
    refused = _refused(plan)
    assert len(refused) == 1 and "'..'" in refused[0], refused
    assert out.error and "refusing" in out.error and "'..'" in out.error
    client = MlflowClient(tracking_uri=db)
    assert "model/model.txt" in _mlflow_files(client, out.dest_id)
    assert len(client.get_metric_history(out.dest_id, "loss")) == 5
    assert not _holding(dest, SECRET) and not _holding(tmp_path, SECRET)
    assert not list(tmp_path.rglob("etc"))
