"""Regenerate ``examples/wandb/``: two small W&B offline runs made by the real SDK.

    python examples/make_example.py

Runs the installed ``wandb`` in offline mode in a throw-away WANDB_DIR, then copies the
run folders (the ``.wandb`` log and ``files/``; not the SDK's debug logs) here. The result
is what ``wandb-offline:examples/wandb`` reads: 100 steps of 3 metrics, config, tags, a
media image, summary values, and a second run that crashed (exit code 1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "wandb"

TRAIN = """
import math
import numpy as np
import wandb
run = wandb.init(entity="acme", project="example", id="example-train", name="example-train",
                 config={"lr": 0.01, "epochs": 10, "model": {"depth": 4, "width": 64}},
                 tags=["example", "offline"], notes="a small run for trying the bridge",
                 group="examples", job_type="train")
for step in range(100):
    row = {"loss": math.exp(-step / 30), "acc": 1 - math.exp(-step / 25),
           "lr": 0.01 * 0.97 ** step}
    if step == 50:
        gradient = np.linspace(0, 255, 8 * 8 * 3).astype(np.uint8).reshape(8, 8, 3)
        row["sample"] = wandb.Image(gradient, caption="an 8x8 gradient")
    run.log(row, step=step)
run.summary["best_acc"] = 0.98
run.summary["comment"] = "converged"
print("training done")
run.finish()
"""

CRASH = """
import wandb
run = wandb.init(entity="acme", project="example", id="example-crash", tags=["example"])
for step in range(20):
    run.log({"loss": 1.0 / (step + 1)})
raise RuntimeError("out of patience")
"""


def _run(script: str, work: Path, expect_ok: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(work),
        WANDB_DATA_DIR=str(work / "data"),
        WANDB_CACHE_DIR=str(work / "cache"),
        WANDB_CONFIG_DIR=str(work / "config"),
        WANDB_DISABLE_GIT="true",
        WANDB_DISABLE_CODE="true",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True
    )
    if (proc.returncode == 0) != expect_ok:
        raise SystemExit(f"SDK run failed ({proc.returncode}): {proc.stderr[-2000:]}")


def main() -> None:
    """Make both runs and replace ``examples/wandb/`` with them."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _run(TRAIN, work, expect_ok=True)
        _run(CRASH, work, expect_ok=False)
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        for folder in sorted((work / "wandb").glob("offline-run-*")):
            dest = OUT / folder.name
            dest.mkdir()
            for log in folder.glob("*.wandb"):
                shutil.copy2(log, dest / log.name)
            shutil.copytree(folder / "files", dest / "files")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
