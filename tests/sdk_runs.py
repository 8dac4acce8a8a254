"""W&B offline runs made by the real SDK, for reader tests and benchmarks.

Everything here drives the installed ``wandb`` package in offline mode in subprocesses
(one SDK process per run, as users do) with every W&B directory under ``root``. The run ids
are fixed so tests can name them. Public API (used by several test modules, keep stable):

* :func:`make_offline_corpus` — role -> run folder for the roles listed in :data:`ROLES`;
* :func:`make_big_run` — one long run for benchmarks;
* :func:`run_id_of` — the run id a run folder's name carries;
* :data:`BASIC` — what the "basic" run was told, for assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

STARTED_AT = "corpus-started-at.txt"  # in the corpus root: epoch seconds before any SDK ran
ROLES = ("basic", "artifact", "crashed", "resumed", "truncated", "killed", "bigconfig")
RUN_IDS = {role: role for role in ROLES}  # the W&B run id of each role

# What the "basic" run logs; tests compare the reader's output against this.
BASIC: dict[str, Any] = {
    "name": "basic-run",
    "config": {
        "lr": 0.001,
        "batch_size": 32,
        "optimizer": {"name": "adam", "betas": [0.9, 0.999]},
        "layers": [64, 32, 10],
        "use_bn": True,
    },
    "config_update": {"epochs_done": 50},
    "tags": ["baseline", "cpu"],
    "notes": "basic offline run for the bridge tests",
    "group": "exp-group",
    "job_type": "train",
    "git_remote": "https://example.com/acme/demo.git",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "steps": 50,
    "nan_step": 7,  # loss is NaN here
    "inf_step": 9,  # acc is +inf here
    "neginf_step": 11,  # acc is -inf here
    "text_step": 5,  # "phase" = "warmup"
    "nested_step": 20,  # {"grad": {"norm": 1.25}}
    "image_step": 30,  # "sample" = wandb.Image(4x4 RGB)
    "bool_step": 3,  # "flag" = True
    "summary_only": {"best_epoch": 42, "final_note": "done", "score": 0.875},
    "username": "alice",
}


def basic_value(metric: str, step: int) -> float:
    """The value the basic run logged for ``loss``/``acc``/``lr_now`` at ``step``."""
    if metric == "loss":
        return float("nan") if step == BASIC["nan_step"] else 1.0 / (step + 1)
    if metric == "acc":
        if step == BASIC["inf_step"]:
            return float("inf")
        if step == BASIC["neginf_step"]:
            return float("-inf")
        return step / 100
    if metric == "lr_now":
        return 0.001 * (0.5 ** (step // 10))
    raise KeyError(metric)


_PRELUDE = """
import json, math, os, sys, time
import numpy as np
import wandb
ENTITY, PROJECT = sys.argv[1], sys.argv[2]
"""

_BASIC = """
B = json.loads(sys.argv[3])
run = wandb.init(
    entity=ENTITY, project=PROJECT, id="basic", name=B["name"], config=B["config"],
    tags=B["tags"], notes=B["notes"], group=B["group"], job_type=B["job_type"],
    settings=wandb.Settings(git_remote_url=B["git_remote"], git_commit=B["git_commit"]),
)
run.define_metric("epoch")
run.define_metric("val/*", step_metric="epoch", summary="max")
for step in range(B["steps"]):
    row = {
        "loss": float("nan") if step == B["nan_step"] else 1.0 / (step + 1),
        "acc": step / 100,
        "lr_now": 0.001 * (0.5 ** (step // 10)),
    }
    if step == B["inf_step"]:
        row["acc"] = float("inf")
    if step == B["neginf_step"]:
        row["acc"] = float("-inf")
    if step == B["text_step"]:
        row["phase"] = "warmup"
    if step == B["nested_step"]:
        row["grad"] = {"norm": 1.25}
    if step == B["bool_step"]:
        row["flag"] = True
    if step == B["image_step"]:
        pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        row["sample"] = wandb.Image(pixels, caption="tiny")
    if step % 10 == 9:
        row["epoch"] = step // 10
        row["val/acc"] = step / 200
    run.log(row, step=step)
run.config.update(B["config_update"])
for k, v in B["summary_only"].items():
    run.summary[k] = v
print("basic run says hello")
run.finish()
"""

_ARTIFACT = """
data = os.path.join(os.getcwd(), "artifact-src")
os.makedirs(os.path.join(data, "sub"), exist_ok=True)
with open(os.path.join(data, "train.csv"), "w") as f:
    f.write("x,y\\n1,2\\n3,4\\n")
with open(os.path.join(data, "sub", "readme.txt"), "w") as f:
    f.write("tiny dataset\\n")
run = wandb.init(entity=ENTITY, project=PROJECT, id="artifact", job_type="upload")
art = wandb.Artifact("tiny-dataset", type="dataset", description="two small files",
                     metadata={"rows": 2, "source": "sdk_runs"})
art.add_file(os.path.join(data, "train.csv"))
art.add_file(os.path.join(data, "sub", "readme.txt"), name="docs/readme.txt")
run.log_artifact(art, aliases=["best", "candidate"])
run.log({"rows": 2})
run.finish()
"""

_BIGCONFIG = """
# a config value far over one 32 KiB block: the record spans FIRST/MIDDLE/LAST chunks
run = wandb.init(entity=ENTITY, project=PROJECT, id="bigconfig",
                 config={"blob": "x" * 100_000, "small": 1})
run.log({"m": 1.0})
run.finish()
"""

_TRUNCATED = """
run = wandb.init(entity=ENTITY, project=PROJECT, id="truncated")
for step in range(200):
    run.log({"a": float(step), "b": step * 2.0})
run.finish()
"""

_CRASHED = """
run = wandb.init(entity=ENTITY, project=PROJECT, id="crashed")
for step in range(5):
    run.log({"loss": 1.0 / (step + 1)})
raise RuntimeError("simulated training crash")
"""

_RESUMED = """
part = int(sys.argv[3])
run = wandb.init(entity=ENTITY, project=PROJECT, id="resumed",
                 resume="allow" if part == 2 else None, config={"part": part})
for i in range(10):
    run.log({"x": float((part - 1) * 10 + i), "part": part})  # implicit steps
run.finish()
"""

_KILLED = """
run = wandb.init(entity=ENTITY, project=PROJECT, id="killed")
print("ready", flush=True)
time.sleep(120)
"""


def sdk_env(root: Path, wandb_dir: Path | None = None) -> dict[str, str]:
    """Environment for an offline SDK process with every W&B folder under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(wandb_dir or root),
        WANDB_DATA_DIR=str(root / "data"),
        WANDB_CACHE_DIR=str(root / "cache"),
        WANDB_CONFIG_DIR=str(root / "config"),
        WANDB_DISABLE_GIT="true",
        WANDB_USERNAME=BASIC["username"],
        GIT_PYTHON_REFRESH="quiet",
    )
    return env


def _start(
    root: Path, body: str, args: list[str], wandb_dir: Path | None = None, **kw: Any
) -> subprocess.Popen[str]:
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(body), *args],
        cwd=work,
        env=sdk_env(root, wandb_dir),
        text=True,
        stdout=kw.pop("stdout", subprocess.DEVNULL),
        stderr=subprocess.PIPE,
        **kw,
    )


def _wait(proc: subprocess.Popen[str], what: str, expect_fail: bool = False) -> None:
    _, err = proc.communicate(timeout=120)
    if (proc.returncode != 0) != expect_fail:
        raise RuntimeError(f"SDK process for {what} exited {proc.returncode}: {err[-2000:]}")


def run_folders(wandb_dir: Path, run_id: str) -> list[Path]:
    """The run folders of ``run_id`` under a ``wandb/`` dir, oldest first."""
    return sorted(
        p
        for p in wandb_dir.glob(f"*run-*-{run_id}")
        if p.is_dir() and not p.is_symlink() and run_id_of(p) == run_id
    )


def run_id_of(folder: Path) -> str:
    """The run id in a run folder name (``offline-run-<date>_<time>-<id>``)."""
    parts = folder.name.split("-", 3 if folder.name.startswith("offline-") else 2)
    return parts[-1]


def _cut_mid_record(log: Path) -> None:
    """Cut ``log`` in the middle of a history record in its second half (past block 1)."""
    from bridge.adapters.wandb.txlog import TxlogReader

    reader = TxlogReader(log)
    history = [off for off, rec in reader.records() if rec.WhichOneof("record_type") == "history"]
    size = log.stat().st_size
    target = next((o for o in history if o > max(32 * 1024, size // 2)), history[-1])
    with open(log, "r+b") as fh:
        fh.truncate(target + 7 + 20)  # chunk header + a few payload bytes


def make_offline_corpus(root: Path, entity: str = "acme", project: str = "demo") -> dict[str, Path]:
    """Create the offline runs of :data:`ROLES` under ``root/wandb``; role -> run folder.

    For "resumed" the newest of its two folders is returned (both are in ``root/wandb``);
    "truncated" is a copy of a finished run whose log is cut mid-record; "killed" is a run
    whose process was SIGKILLed right after ``wandb.init`` (the SDK leaves a 7-byte log).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / STARTED_AT).write_text(repr(time.time()))  # tests bound start times with it
    wandb_dir = root / "wandb"
    src = root / "_src"  # where the run that becomes "truncated" is made before the copy
    args = [entity, project]
    procs = [
        ("basic", _start(root, _BASIC, [*args, json.dumps(BASIC)]), False),
        ("artifact", _start(root, _ARTIFACT, args), False),
        ("crashed", _start(root, _CRASHED, args), True),
    ]
    resumed1 = _start(root, _RESUMED, [*args, "1"])
    killed = _start(root, _KILLED, args, stdout=subprocess.PIPE)
    for role, proc, fails in procs:
        _wait(proc, role, expect_fail=fails)
    _wait(resumed1, "resumed part 1")
    time.sleep(1.1)  # run folders are named by the second; keep the parts apart
    procs = [
        ("resumed part 2", _start(root, _RESUMED, [*args, "2"]), False),
        ("bigconfig", _start(root, _BIGCONFIG, args), False),
        ("truncated", _start(root, _TRUNCATED, args, wandb_dir=src), False),
    ]
    assert killed.stdout is not None
    line = killed.stdout.readline()
    if line.strip() != "ready":
        killed.kill()
        raise RuntimeError(f"killed-run process did not start: {line!r}")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    for role, proc, fails in procs:
        _wait(proc, role, expect_fail=fails)

    out = {role: run_folders(wandb_dir, RUN_IDS[role])[-1] for role in ROLES if role != "truncated"}
    kill_log = out["killed"] / "run-killed.wandb"
    if kill_log.stat().st_size != 7:  # pragma: no cover - only if the SDK starts flushing early
        with open(kill_log, "r+b") as fh:
            fh.truncate(7)
    (source,) = run_folders(src / "wandb", "truncated")
    copy = wandb_dir / source.name
    shutil.copytree(source, copy)
    _cut_mid_record(copy / "run-truncated.wandb")
    out["truncated"] = copy
    return out


_BIG = """
n_steps, n_metrics = int(sys.argv[3]), int(sys.argv[4])
run = wandb.init(entity=ENTITY, project=PROJECT, id=sys.argv[5])
names = [f"m{i}" for i in range(n_metrics)]
log = run.log
for step in range(n_steps):
    log({name: step * (i + 1) * 0.5 for i, name in enumerate(names)})
run.finish()
"""


def make_big_run(
    root: Path,
    n_points: int,
    n_metrics: int = 5,
    run_id: str = "big",
    entity: str = "acme",
    project: str = "bench",
) -> Path:
    """One offline run with ``n_points`` metric points (``n_points // n_metrics`` steps).

    Metric ``m<i>`` at step ``s`` is ``s * (i + 1) * 0.5``. The SDK logs ~6-7k steps/s
    here, so 1M points (200k steps) take about 35 s.
    """
    root = Path(root)
    n_steps = max(1, n_points // n_metrics)
    proc = _start(root, _BIG, [entity, project, str(n_steps), str(n_metrics), run_id])
    _, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"SDK process for the big run exited {proc.returncode}: {err[-2000:]}")
    return run_folders(root / "wandb", run_id)[-1]


_APPEND = """
keys = json.loads(sys.argv[3])
run = wandb.init(entity=ENTITY, project=PROJECT, id=sys.argv[4], resume="allow")
if len(sys.argv) > 6:
    run.config.update(json.loads(sys.argv[6]), allow_val_change=True)
for i in range(int(sys.argv[5])):
    run.log({k: 1000.0 + i + n for n, k in enumerate(keys)})
run.finish()
"""


def append_to_run(
    wandb_dir: Path,
    run_id: str,
    entity: str = "acme",
    project: str = "demo",
    steps: int = 5,
    config: dict[str, Any] | None = None,
) -> Path:
    """Resume ``run_id`` offline in a new SDK process and log ``steps`` more rows
    (after updating its config with ``config``, when given).

    Every top-level numeric metric the run logged so far gets a value per new row
    (``1000 + i + n`` for the n-th key). Returns the new run folder (a new part).
    """
    from bridge.adapters.wandb.offline_reader import WandbOfflineReader
    from bridge.schema import MetricChunk

    wandb_dir = Path(wandb_dir)
    reader = WandbOfflineReader(str(wandb_dir))
    header = next(h for h in reader.list_runs() if h.native_id == run_id)
    keys: list[str] = []
    for item in reader.iter_history(reader.read_run(header)):
        if isinstance(item, MetricChunk) and not item.key.startswith("system/"):
            if "." not in item.key and item.key not in keys:
                keys.append(item.key)
    before = set(run_folders(wandb_dir, run_id))
    time.sleep(1.1)  # run folders are named by the second
    proc = _start(
        wandb_dir.parent,
        _APPEND,
        [entity, project, json.dumps(keys), run_id, str(steps)]
        + ([json.dumps(config)] if config else []),
        wandb_dir=wandb_dir.parent,
    )
    _wait(proc, f"append to {run_id}")
    (new,) = set(run_folders(wandb_dir, run_id)) - before
    return new


_CACHE: dict[str, dict[str, Path]] = {}


def cached_corpus(base: Path) -> dict[str, Path]:
    """:func:`make_offline_corpus` under ``base/wandb-corpus``, made once per process.

    Test modules wrap this in a session fixture (``tmp_path_factory.getbasetemp()``), so
    the SDK runs once per test session however many modules use the corpus. Tests must
    not modify these folders: copy what they damage.
    """
    key = str(base)
    if key not in _CACHE:
        _CACHE[key] = make_offline_corpus(Path(base) / "wandb-corpus")
    return _CACHE[key]


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/sdk_runs.py DIR
    started = time.time()
    made = make_offline_corpus(Path(sys.argv[1]))
    for role, folder in made.items():
        print(f"{role:10s} {folder}")
    print(f"made in {time.time() - started:.1f}s")
