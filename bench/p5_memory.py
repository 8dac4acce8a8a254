"""Bench (issue 14, P5): peak RSS flat in history length and in run count.

History: W&B offline runs of --small and --big points (default 100k and 10M, 10 metrics per
step) made once with the real SDK into --cache (reused: the 10M-point run takes minutes),
each synced by `bridge sync` into a fresh sqlite MLflow as its own process. Prints time,
points/s and peak RSS of each, and the big/small RSS ratio (goal ≤ 1.2).

Run count: MLflow sqlite sources of --runs N (default 1,000 and 10,000) runs, made in bulk:
one template run (2 params, 3 tags, 10 points) logged with MlflowClient, then its rows
cloned straight into the store's tables (runs, params, tags, metrics, latest_metrics)
under fresh run ids. For each N, as separate processes: listing (reader.list_runs), a
plan (`bridge diff` into an empty sqlite store), the first `bridge sync`, and a no-op
cycle (`bridge sync` again). Prints time and peak RSS of each; RSS at the largest N over
RSS at the smallest (goal: independent of N, ~1.0).

Measured (2 cores shared, load average 20-34): history 100k points 251 MiB, 10M points
252 MiB (ratio 1.00; the 10M sync took 1,674 s at that load). Listing: 1,000 runs 238 MiB,
10,000 runs 247 MiB (1.04; a 1,000-run search page bounds it).

2026-12-08 (quiet, load 1-3): a log of 200,000+ records has its history parsed in a child
process (bridge/adapters/wandb/history_process.py), so the history figure is now the peak
of the *sum* of RSS over the sync and its children (measure(tree=True), /proc every 50 ms):
100k points 244 MiB (no child: under the threshold), 10M points 286 MiB (sync 70.8 s,
141,198 points/s): ratio 1.17.

Run count, `bridge diff` (2026-12-07, load 7-10): before, 1,000 runs 253 MiB, 10,000 runs
335 MiB (1.32; 53 s / 388 s). Kept per run until the report was printed: the header list
of the whole listing (~1.5 KB a run with its locator), each run's ``Planned`` (a dry run
set every run aside, header and plan), its line (RunPlan ~2.4 KB empty, plus the
params/tags values the reports only count), the reader's artifact-URI map, and at render
time ``redact_fields``' copy of the whole plan (+39 MiB at 10,000 runs). Now: the listing
is pickled to a temp file (engine/listing.py; source ids kept), the pipeline returns plan
lines only, a dry run's lines are final when planned, lines keep params/tags counts, the
URI map is an LRU of 4,096, redaction copies only what it changes (reporting/render.py).
Same load: 1,000 runs 253 MiB, 10,000 runs 290 MiB (1.15; 39 s / 165 s; a later run than the
"before" one). RSS while planning 10,000 runs, the two versions side by side over the same
90 s: +21 MiB before, +3 MiB after. Listing 1,000 / 10,000: 238 / 246 MiB
(1.04). What is left, ~2.5 KB a run: the plan lines themselves (pydantic RunPlan, ~1.9 KB
even when empty; Plan.runs is a list every report and caller reads) — flat needs lines
spilled to a file with reports reading them back sorted; and the rendered report itself
(~170 B a run of text). `bridge sync` / no-op at 10,000 runs not measured this session.

Plan lines spilled (issue 15; engine/lines.py: a finished line is pickled to a private temp
file, reports read them back one at a time, sorted holding keys only; state look-ups per run
indexed, tests/test_state_indexes.py). 2026-12-07, load 11-16, `--runs 1000 10000`:
listing 236 / 245 MiB (1.04; 14.6 / 5.8 ms a run), `diff` 250 / 268 MiB (1.07, was 1.15;
138.8 s / 774.8 s: 139 / 77.5 ms a run, time per run 0.56: flat or better — the fixed start-up
weighs on 1,000 runs). These diff figures were taken with the lines redacted on each read
(~9 passes of redaction at render, since made one: 2,000 lines render as text in 11 s vs 8 s
from memory). At 1,000 runs: first `sync` 501.7 s (0.50 s a run) 260 MiB, no-op cycle 28.0 s
(28 ms a run, 5.6% of the sync) 242 MiB. The 10,000-run first sync was not run: at 0.5 s a
run and this load it needs ~85 min. Profile of the 10,000-run `diff` render (py-spy, 120 s):
92% redaction, 62% of it ``redact.known_secrets`` reading ``os.environ`` for every string —
the largest fixed cost per line left; no O(runs²) step (planning, profiled at 10,000 runs
before: per run, reading the run 60%, state look-ups ~7%).

Profile (py-spy, all threads, `bridge diff` of 10,000 runs sqlite → empty sqlite): no
O(runs²) in planning — per run, ``read_run`` 60% (MLflow ``list_artifacts`` through the
client 34% even for local artifact folders, ``get_run`` ORM 26%), counting new points 7%,
state look-ups ~7% (primary-key prefixes), redaction at render 5.5%. Not indexed: the
state's ``conflicts`` and ``resolutions`` tables are looked up per run by (dest_uri,
source_id) with no index (``close_stale_conflicts`` on every compared run of a sync):
O(runs × conflicts); needs an index plus a state migration.

    python bench/p5_memory.py [--small 100000] [--big 10000000] [--runs 1000 10000]
                              [--steps list diff sync no-op] [--no-history] [--no-runs]
                              [--cache /tmp/bench-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure  # noqa: E402

BRIDGE = [sys.executable, "-m", "bridge.cli"]
RUN_TABLES = ("runs", "params", "tags", "metrics", "latest_metrics")


def wandb_run(cache: Path, points: int, metrics: int) -> Path:
    """An offline run of ``points`` points, made once under ``cache``."""
    from sdk_runs import make_big_run

    root = cache / f"wandb-{points}"
    done = root / "done"
    if done.is_file():
        return Path(done.read_text().strip())
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    folder = make_big_run(root, points, n_metrics=metrics)
    done.write_text(str(folder))
    print(f"made W&B offline run: {points:,} points in {time.perf_counter() - t0:.0f} s")
    return folder


def history(cache: Path, small: int, big: int, metrics: int, tmp: Path) -> None:
    rss = {}
    for points in (small, big):
        folder = wandb_run(cache, points, metrics)
        work = Path(tempfile.mkdtemp(dir=tmp))
        cmd = [*BRIDGE, "sync", f"wandb-offline:{folder}", f"mlflow:sqlite:///{work}/m.db"]
        cmd += ["--state", str(work / "state.db"), "--json"]
        seconds, rss[points], out = measure(cmd, "bridge sync", tree=True)
        written = int(json.loads(out)["points_written"])
        print(
            f"history {points:>11,} points: sync {seconds:6.1f} s "
            f"({written / seconds:8,.0f} points/s), peak RSS {rss[points]:5.0f} MiB "
            "(the sync and its history child together)"
        )
        shutil.rmtree(work, ignore_errors=True)
    print(f"history RSS ratio {big:,} / {small:,} points: {rss[big] / rss[small]:.2f} (goal ≤ 1.2)")


def mlflow_source(cache: Path, runs: int) -> Path:
    """A sqlite MLflow store of ``runs`` runs, made once under ``cache`` (see module doc)."""
    db = cache / f"mlflow-{runs}-runs.db"
    if db.is_file():
        return db
    t0 = time.perf_counter()
    part = db.with_suffix(".part")
    part.unlink(missing_ok=True)
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{part}")
    exp = client.create_experiment("p5", artifact_location=str(cache / f"art-{runs}"))
    template = client.create_run(exp, start_time=1_600_000_000_000, run_name="r").info.run_id
    client.log_batch(
        template,
        params=[Param("lr", "0.01"), Param("layers", "4")],
        metrics=[Metric("loss", 1.0 / (s + 1), 1_600_000_000_000 + s, s) for s in range(10)],
        tags=[RunTag("team", "a"), RunTag("kind", "bench")],
    )
    client.set_terminated(template, "FINISHED", end_time=1_600_000_000_100)
    con = sqlite3.connect(part)
    cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")] for t in RUN_TABLES}
    with con:
        for i in range(1, runs):
            new = uuid.uuid4().hex
            for table, names in cols.items():
                select = []
                for c in names:
                    if c == "run_uuid":
                        select.append("?")
                    elif c in ("artifact_uri", "name") and table == "runs":
                        select.append(f"replace({c}, run_uuid, ?)" if c == "artifact_uri" else "?")
                    elif c == "start_time" and table == "runs":
                        select.append(f"{c} + {i}")
                    else:
                        select.append(c)
                args: list[str] = []
                for c in names:
                    if c == "run_uuid":
                        args.append(new)
                    elif table == "runs" and c == "artifact_uri":
                        args.append(new)
                    elif table == "runs" and c == "name":
                        args.append(f"r{i}")
                con.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) "
                    f"SELECT {', '.join(select)} FROM {table} WHERE run_uuid = ?",
                    [*args, template],
                )
            con.execute(
                "UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'mlflow.runName'",
                (f"r{i}", new),
            )
    con.close()
    part.rename(db)
    print(f"made MLflow source: {runs:,} runs in {time.perf_counter() - t0:.0f} s")
    return db


_LIST = (
    "import sys,time;from bridge.uris import open_reader;"
    "r=open_reader(sys.argv[1]);t=time.perf_counter();n=sum(1 for _ in r.list_runs());"
    "print(n, time.perf_counter()-t)"
)


def run_count(cache: Path, counts: list[int], tmp: Path, only: list[str]) -> None:
    rss: dict[str, dict[int, float]] = {}
    took: dict[str, dict[int, float]] = {}
    for runs in counts:
        src = f"mlflow:sqlite:///{mlflow_source(cache, runs)}"
        work = Path(tempfile.mkdtemp(dir=tmp))
        dst = f"mlflow:sqlite:///{work}/dst.db"
        state = ["--state", str(work / "state.db")]
        steps = {
            "list": [sys.executable, "-c", _LIST, src],
            "diff": [*BRIDGE, "diff", src, dst, *state, "--output", str(work / "diff.txt")],
            "sync": [*BRIDGE, "sync", src, dst, *state, "--json"],
            "no-op": [*BRIDGE, "sync", src, dst, *state, "--json"],
        }
        for label, cmd in steps.items():
            if label not in only:
                continue
            seconds, peak, out = measure(cmd, label)
            rss.setdefault(label, {})[runs] = peak
            took.setdefault(label, {})[runs] = seconds
            extra = ""
            if label == "list":
                n, secs = out.split()
                extra = f" ({n} runs listed in {float(secs):.1f} s)"
            elif label in ("sync", "no-op"):
                doc = json.loads(out)
                extra = f" (outcomes {doc.get('outcomes')})"
            print(
                f"{runs:>6,} runs {label:6} {seconds:7.1f} s ({1000 * seconds / runs:6.1f} ms a run)"
                f"  peak RSS {peak:5.0f} MiB{extra}  load {open('/proc/loadavg').read()[:14]}",
                flush=True,
            )
        shutil.rmtree(work, ignore_errors=True)
    lo, hi = min(counts), max(counts)
    for label, by in rss.items():
        per_run = (took[label][hi] / hi) / (took[label][lo] / lo)
        print(
            f"run-count ratio {label:6} {hi:,} / {lo:,} runs: RSS {by[hi] / by[lo]:.2f}, "
            f"time per run {per_run:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=10_000_000)
    ap.add_argument("--metrics", type=int, default=10)
    ap.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--steps", nargs="+", default=["list", "diff", "sync", "no-op"])
    ap.add_argument("--no-history", action="store_true")
    ap.add_argument("--no-runs", action="store_true")
    ap.add_argument("--cache", default="/tmp/bench-cache")
    args = ap.parse_args()
    for k, v in {"WANDB_SILENT": "true", "MLFLOW_LOGGING_LEVEL": "WARNING", "CI": "true"}.items():
        os.environ.setdefault(k, v)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="bench-p5-", dir=cache) as tmp:
        if not args.no_runs:
            run_count(cache, args.runs, Path(tmp), args.steps)
        if not args.no_history:
            history(cache, args.small, args.big, args.metrics, Path(tmp))
    print(f"load average after:  {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
