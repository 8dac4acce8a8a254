"""Bench: W&B offline run → sqlite MLflow, bridge vs a plain MlflowClient.log_batch loop.

Makes one W&B offline run of N points (default 1,000,000 across 5 metrics) with the real
SDK, syncs it with `bridge sync` (a subprocess, so its peak RSS is its own), then writes
the same points with a plain log_batch loop (1000 metrics per call) into a fresh sqlite
store, and prints points/s of each, their ratio and the bridge's peak RSS. With --rss-check
it also syncs a run a tenth the size, to show RSS does not grow with history length.
Both sides are timed as whole processes (imports and opening a fresh store included).

    python bench/sync_offline_to_mlflow.py [--points 1000000] [--metrics 5] [--rss-check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure  # noqa: E402


def make_run(root: Path, points: int, metrics: int) -> Path:
    from sdk_runs import make_big_run

    t0 = time.perf_counter()
    folder = make_big_run(root, points, n_metrics=metrics)
    print(f"made W&B offline run: {points:,} points in {time.perf_counter() - t0:.1f} s")
    return folder


def bridge_sync(folder: Path, db: Path, state: Path) -> tuple[float, float, int]:
    """Seconds, peak RSS (MiB) of the bridge process, points written."""
    cmd = [sys.executable, "-m", "bridge.cli", "sync", f"wandb-offline:{folder}"]
    cmd += [f"mlflow:sqlite:///{db}", "--state", str(state), "--json"]
    seconds, rss, out = measure(cmd, "bridge sync")
    return seconds, rss, int(json.loads(out)["points_written"])


def plain_log_batch(db: Path, points: int, metrics: int) -> float:
    """A plain MlflowClient.log_batch loop, as its own process from start to finish (like
    the bridge's): import, open the store, create a run, write the same number of points."""
    cmd = [sys.executable, __file__, "--plain-worker", str(db), str(points), str(metrics)]
    return measure(cmd, "plain loop")[0]


def plain_worker(db: str, points: int, metrics: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    run_id = client.create_run(client.create_experiment("plain")).info.run_id
    now = int(time.time() * 1000)
    batch: list[Metric] = []
    for step in range(points // metrics):
        for m in range(metrics):
            batch.append(Metric(f"metric_{m}", step * 0.001 + m, now + step, step))
        if len(batch) >= 1000:
            client.log_batch(run_id, metrics=batch[:1000])
            batch = batch[1000:]
    if batch:
        client.log_batch(run_id, metrics=batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--rss-check", action="store_true", help="also sync a run N/10 long")
    parser.add_argument("--plain-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if args.plain_worker:
        db, points, metrics = args.plain_worker
        plain_worker(db, int(points), int(metrics))
        return

    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        work = Path(tmp)
        folder = make_run(work / "wandb-big", args.points, args.metrics)
        secs, rss, written = bridge_sync(folder, work / "bridge.db", work / "state.db")
        base = plain_log_batch(work / "plain.db", args.points, args.metrics)
        bridge_rate, plain_rate = written / secs, args.points / base
        print(
            f"bridge sync:        {written:,} points in {secs:.1f} s = {bridge_rate:,.0f} points/s"
        )
        print(
            f"plain log_batch:    {args.points:,} points in {base:.1f} s = {plain_rate:,.0f} points/s"
        )
        print(f"ratio bridge/plain: {bridge_rate / plain_rate:.2f}")
        print(f"bridge peak RSS:    {rss:.0f} MiB at {args.points:,} points")
        if args.rss_check:
            small_n = args.points // 10
            small = make_run(work / "wandb-small", small_n, args.metrics)
            _, small_rss, _ = bridge_sync(small, work / "small.db", work / "small-state.db")
            print(f"bridge peak RSS:    {small_rss:.0f} MiB at {small_n:,} points")


if __name__ == "__main__":
    main()
