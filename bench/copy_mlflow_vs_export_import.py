"""Bench: copy one MLflow experiment with the bridge and with mlflow-export-import.

Source: a sqlite store with one experiment of R runs × 20 params × 5 metrics × S steps and a
few small artifacts per run. Each tool copies it into an empty `mlflow server` (sqlite
backend) of its own; wall time of each, their ratio, then a fidelity table: start times
kept, runs after a second run of the same copy (duplicates). mlflow-export-import is not a
dependency of the project: `pip install mlflow-export-import tabulate` first.

    python bench/copy_mlflow_vs_export_import.py [--runs 50] [--steps 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
EXPERIMENT = "bench-copy"


def make_source(uri: str, runs: int, steps: int, tmp: Path) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(EXPERIMENT)
    art = tmp / "art"
    (art / "sub").mkdir(parents=True)
    (art / "notes.txt").write_text("small artifact\n")
    (art / "sub" / "table.csv").write_text("a,b\n" + "1,2\n" * 100)
    t0 = 1_600_000_000_000
    for r in range(runs):
        start = t0 + r * 3_600_000
        run_id = client.create_run(exp, start_time=start, run_name=f"run-{r}").info.run_id
        client.log_batch(run_id, params=[Param(f"p{i}", str(i * r)) for i in range(20)])
        batch: list[Metric] = []
        for s in range(steps):
            for m in range(5):
                batch.append(Metric(f"m{m}", (s * (m + 1)) / 1000, start + s * 100, s))
            if len(batch) >= 1000:
                client.log_batch(run_id, metrics=batch)
                batch = []
        if batch:
            client.log_batch(run_id, metrics=batch)
        client.log_artifacts(run_id, str(art))
        client.set_terminated(run_id, "FINISHED", end_time=start + steps * 100)


def snapshot(uri: str) -> tuple[int, dict[str, int]]:
    """Number of runs, and start time per run name (first seen)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return 0, {}
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    starts: dict[str, int] = {}
    for run in runs:
        starts.setdefault(run.info.run_name, run.info.start_time)
    return len(runs), starts


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode not in (0,):
        raise SystemExit(f"{cmd[0]} failed ({out.returncode}): {out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    if not (bindir / "export-experiment").exists():
        raise SystemExit("pip install mlflow-export-import tabulate  (needed for the comparison)")
    from conftest import start_mlflow_server

    env = dict(os.environ, MLFLOW_LOGGING_LEVEL="WARNING", CI="true")
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp_s:
        tmp = Path(tmp_s)
        src = f"sqlite:///{tmp / 'src.db'}"
        t0 = time.perf_counter()
        make_source(src, args.runs, args.steps, tmp)
        points = args.runs * args.steps * 5
        print(
            f"source: {args.runs} runs, {points:,} points, made in {time.perf_counter() - t0:.0f} s"
        )
        servers = []
        try:
            bridge_url, proc = start_mlflow_server(tmp / "dest-bridge")
            servers.append(proc)
            exim_url, proc = start_mlflow_server(tmp / "dest-exim")
            servers.append(proc)

            state = str(tmp / "state.db")
            bridge_cmd = [
                sys.executable,
                "-m",
                "bridge.cli",
                "sync",
                f"mlflow:{src}",
                f"mlflow:{bridge_url}",
                "--state",
                state,
                "--json",
            ]
            bridge_s = timed(bridge_cmd, env)
            bridge_again_s = timed(bridge_cmd, env)

            export_dir = tmp / "export"
            ex_env = dict(env, MLFLOW_TRACKING_URI=src)
            im_env = dict(env, MLFLOW_TRACKING_URI=exim_url)
            export_cmd = [
                str(bindir / "export-experiment"),
                "--experiment",
                EXPERIMENT,
                "--output-dir",
                str(export_dir),
            ]
            import_cmd = [
                str(bindir / "import-experiment"),
                "--experiment-name",
                EXPERIMENT,
                "--input-dir",
                str(export_dir),
            ]
            exim_s = timed(export_cmd, ex_env) + timed(import_cmd, im_env)
            exim_again_s = timed(import_cmd, im_env)

            n_src, src_starts = snapshot(src)
            n_bridge, bridge_starts = snapshot(bridge_url)
            n_exim, exim_starts = snapshot(exim_url)
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(timeout=15)

    def kept(starts: dict[str, int]) -> str:
        same = sum(1 for k, v in src_starts.items() if starts.get(k) == v)
        return f"{same}/{len(src_starts)}"

    print(f"bridge sync:           {bridge_s:6.1f} s ({points / bridge_s:,.0f} points/s)")
    print(f"export + import:       {exim_s:6.1f} s ({points / exim_s:,.0f} points/s)")
    print(f"ratio export-import/bridge time: {exim_s / bridge_s:.2f}")
    print(f"second run:            bridge {bridge_again_s:.1f} s, import {exim_again_s:.1f} s")
    print()
    print("| fidelity | bridge | mlflow-export-import |")
    print("|---|---|---|")
    print(f"| start times kept | {kept(bridge_starts)} | {kept(exim_starts)} |")
    print(f"| runs after a second run (source has {n_src}) | {n_bridge} | {n_exim} |")


if __name__ == "__main__":
    main()
