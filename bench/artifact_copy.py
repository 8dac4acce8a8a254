"""Bench: a large artifact (one big file, model-typed, and a dataset copy) → sqlite MLflow.

Makes one W&B offline run with the real SDK that logs a model artifact holding one file of
--mib MiB (random bytes) and a dataset artifact with the same content, then runs
`bridge sync` into a fresh sqlite MLflow (a subprocess, so its peak RSS is its own) and
prints MiB/s and the bridge's peak RSS, then a second sync (nothing to copy). Every byte is
MD5-hashed while it streams; RSS should not grow with the file size (try two sizes).

    python bench/artifact_copy.py [--mib 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure  # noqa: E402

_MAKE = """
import os, sys, wandb
size = int(sys.argv[1]) * 1024 * 1024
with open("big.bin", "wb") as fh:
    for _ in range(size // (1 << 20)):
        fh.write(os.urandom(1 << 20))
run = wandb.init(entity="bench", project="artifacts", id="bigart")
model = wandb.Artifact("big-model", type="model")
model.add_file("big.bin")
run.log_artifact(model)
data = wandb.Artifact("big-data", type="dataset")
data.add_file("big.bin", name="copy.bin")
run.log_artifact(data)
run.log({"x": 1.0})
run.finish()
"""


def make_run(root: Path, mib: int) -> Path:
    from sdk_runs import sdk_env

    work = root / "work"
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MAKE), str(mib)],
        cwd=work,
        env=sdk_env(root),
        check=True,
        capture_output=True,
    )
    (work / "big.bin").unlink()
    print(f"made W&B offline run with a {mib} MiB artifact in {time.perf_counter() - t0:.1f} s")
    return root / "wandb"


def sync(folder: Path, db: Path, state: Path) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "bridge.cli", "sync", f"wandb-offline:{folder}"]
    cmd += [f"mlflow:sqlite:///{db}", "--state", str(state), "--json"]
    seconds, rss, out = measure(cmd, "bridge sync")
    return seconds, rss, json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512)
    args = ap.parse_args()
    os.environ["CI"] = "true"
    with tempfile.TemporaryDirectory(prefix="bench-art-") as tmp:
        root = Path(tmp)
        folder = make_run(root / "src", args.mib)
        db, state = root / "mlflow.db", root / "state.db"
        seconds, rss, report = sync(folder, db, state)
        copied = 2 * args.mib  # the model and the dataset copy
        warnings = [w["code"] for w in report["warnings"]]
        print(
            f"first sync: {copied} MiB copied and verified in {seconds:.1f} s "
            f"({copied / seconds:.1f} MiB/s), peak RSS {rss:.0f} MiB, warnings {warnings}"
        )
        seconds, rss, report = sync(folder, db, state)
        print(
            f"second sync: {seconds:.1f} s, outcomes {report['outcomes']}, peak RSS {rss:.0f} MiB"
        )


if __name__ == "__main__":
    main()
