"""Bench (issue 15): a sharded pass, 1, 2 and 4 shard processes into `mlflow server --workers 4`.

An MLflow sqlite source of --runs runs made in bulk (p5_memory.mlflow_source: one template
run, 2 params, 3 tags, 10 points, its rows cloned), copied by `bridge sync --shard auto/N`
(N processes, ``JOB_COMPLETION_INDEX`` 0..N-1, one pass id, the state in one shared PostgreSQL
database) into a real `mlflow server --workers 4` whose backend is a fresh PostgreSQL
database. For each N: wall time of the pass (first start to last exit), runs/s, speed-up over
N = 1, the load average, the server's and postgres' CPU (% of one core) over the pass. Then
the same 4-shard pass with index 1 SIGKILLed (its whole process group) after --kill-after of
the 4-shard wall time, and started again with the same command (as a Job's retry would).
After each pass: every source run in the destination exactly once (counted by the identity
tag ``bridge.source_id``) and `bridge verify` clean (exit 0).

Measured 2026-12-07 on the shared 2-core machine (load 7-11 from other jobs), 400 runs (not
2,000: at 3.3 runs/s a 2,000-run series with verify takes ~45 min, more than was left), two
bridge workers per process:

    1 shard   121.3 s  3.30 runs/s  speed-up 1.00  server CPU 38%  postgres 10%  load 11.0 -> 8.3
    2 shards   66.5 s  6.02 runs/s  speed-up 1.83  server CPU 59%  postgres 10%  load 8.4 -> 7.0
    4 shards   82.1 s  4.87 runs/s  speed-up 1.48  server CPU 55%  postgres 10%  load 6.8 -> 10.3

Each pass: 400 of 400 runs exactly once, `bridge verify` exit 0. The two cores saturate at 2
shard processes: 4 processes (each importing MLflow, ~2-3 s of CPU) plus the server's 4
workers and postgres on 2 cores are slower than 2; the curve up to 2 is near linear (1.83).

4 shards with index 1 SIGKILLed at 33 s and started again at once with the same command,
three runs: twice clean (400 of 400 exactly once, every index exit 0, `bridge verify` exit 0;
79.7 s and 57.7 s at load 4-8); once NOT clean — the restarted index exited 1, 316 of 400
runs in the destination (each once: no duplicate), `bridge verify`: 314 ok, 2 mismatch, 84
unsynced. That run's shard logs were lost with its temp folder; the bench now prints the
last lines of a failed index's report.

Into the PostgreSQL MLflow URI itself (--direct: the SQL bulk path, no server), 2,000 runs,
4 shard processes, load 2-8:

    4 shards          131.7 s  15.18 runs/s  2,000 of 2,000 exactly once, verify exit 0
    4 shards (kill)   160.8 s  12.44 runs/s  index 1 SIGKILLed at 53 s, restarted: every index
                                             exit 0, 2,000 exactly once, verify exit 0

and with --noop (a plain `bridge sync` of the pair after the shards), load 4-9:

    1,000 runs:  pass 85.8 s (11.65 runs/s); no-op cycle 16.4 s, 16.4 ms a run, peak RSS 250 MiB
    10,000 runs: 10,000 exactly once; no-op cycle 36.2 s, 3.6 ms a run, peak RSS 287 MiB (taken
                 by hand while the bench's verify ran: the bench was stopped for a CI run)

The 1.15 was the ``--json`` summary built as one dict and one string (tracemalloc: +39.7 MiB
for 10,000 lines, +4.0 MiB for 1,000); it is now written one run at a time
(reporting/jsonstream.py: +0.74 / +0.12 MiB). Again, 2026-12-07 evening, ``--shards 4
--direct --noop --no-kill``, a CI run beside it (load 4-8):

    1,000 runs:  pass 81.5 s (12.27 runs/s), exactly once, verify exit 0; no-op cycle 6.6 s,
                 6.6 ms a run, peak RSS 259 MiB
    10,000 runs: pass 537.2 s (18.61 runs/s), 10,000 exactly once, verify exit 0; no-op cycle
                 24.4 s, 2.4 ms a run, peak RSS 269 MiB — 1.04x the 1,000-run figure (flat:
                 the listing alone is 1.04x)

    python bench/shards.py [--runs 2000] [--shards 1 2 4] [--workers 2] [--kill-after 0.4]
                           [--kill-at SECONDS] [--no-kill] [--cache /tmp/bench-cache]
                           [--direct]   # into the PostgreSQL MLflow URI, no server
                           [--noop]     # then a plain `bridge sync` of the pair, timed
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import drop_pg_database, measure, pg_database  # noqa: E402
from p2_rest import Watch  # noqa: E402
from p5_memory import mlflow_source  # noqa: E402

BRIDGE = [sys.executable, "-m", "bridge.cli"]
IDENTITY_TAG = "bridge.source_id"


def _shard(cmd: list[str], index: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "JOB_COMPLETION_INDEX": str(index)}
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def copies(url: str) -> Counter[str]:
    """Identity tag -> how many destination runs carry it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exps = [e.experiment_id for e in client.search_experiments()]
    seen: Counter[str] = Counter()
    token = None
    while True:
        page = client.search_runs(exps, max_results=1000, page_token=token)
        seen.update(r.data.tags.get(IDENTITY_TAG, "?") for r in page)
        token = page.token
        if not token:
            return seen


def one_pass(
    src: str,
    n: int,
    workers: int,
    runs: int,
    work: Path,
    kill_after: float | None,
    direct: bool = False,
    noop: bool = False,
) -> dict[str, float | int | str]:
    """One pass of ``n`` shard processes; ``direct``: into the PostgreSQL MLflow URI itself
    (the SQL bulk path) instead of a server on it."""
    from conftest import start_mlflow_server, stop_mlflow_server

    backend, state = pg_database("shards_mlflow_"), pg_database("shards_state_")
    proc = None
    if direct:
        url = backend
    else:
        url, proc = start_mlflow_server(work / f"server-{n}", backend, workers=4, timeout=300)
    try:
        cmd = [*BRIDGE, "sync", src, f"mlflow:{url}", "--state", state, "--json"]
        cmd += ["--shard", f"auto/{n}", "--pass-id", f"bench-{n}-{time.time():.0f}"]
        cmd += ["--workers", str(workers)]
        load0 = os.getloadavg()[0]
        watch = Watch(proc.pid, int(url.rsplit(":", 1)[1])) if proc is not None else None
        t0 = time.perf_counter()
        procs = {i: _shard(cmd, i, work / f"shard-{n}-{i}.log") for i in range(n)}
        killed = ""
        if kill_after is not None:
            time.sleep(kill_after)
            os.killpg(procs[1].pid, signal.SIGKILL)
            procs[1].wait()
            killed = f"index 1 SIGKILLed at {time.perf_counter() - t0:.0f} s, restarted"
            procs[1] = _shard(cmd, 1, work / f"shard-{n}-1-again.log")
        codes = {i: p.wait() for i, p in procs.items()}
        for i, code in codes.items():  # what a failed index said, its last lines
            if code:
                name = f"shard-{n}-{i}-again.log" if killed and i == 1 else f"shard-{n}-{i}.log"
                tail = (work / name).read_text(errors="replace").strip().splitlines()[-12:]
                print(f"    index {i} exit {code}: " + "\n      ".join(tail), flush=True)
        wall = time.perf_counter() - t0
        server_cpu, pg_cpu = watch.stop() if watch is not None else (0.0, 0.0)
        load1 = os.getloadavg()[0]
        seen = copies(url)
        verify = subprocess.run(
            [*BRIDGE, "verify", src, f"mlflow:{url}", "--state", state],
            capture_output=True,
            text=True,
        )
        noop_line = ""
        if noop:  # a plain sync of the pair after the shards: a no-op cycle, timed
            plain = [*BRIDGE, "sync", src, f"mlflow:{url}", "--state", state, "--json"]
            secs, rss, out = measure([*plain, "--workers", str(workers)], "the no-op cycle")
            counts = json.loads(out).get("counts", {})
            noop_line = (
                f"no-op cycle {secs:.1f} s ({secs / wall:.1%} of the pass), peak RSS "
                f"{rss:.0f} MiB, {1000 * secs / runs:.1f} ms a run, counts {counts}"
            )
    finally:
        if proc is not None:
            stop_mlflow_server(proc)
        drop_pg_database(backend)
        drop_pg_database(state)
    once = sum(1 for v in seen.values() if v == 1)
    return {
        "shards": n,
        "wall": wall,
        "runs_per_s": runs / wall,
        "server_cpu": server_cpu,
        "pg_cpu": pg_cpu,
        "load": f"{load0:.1f} -> {load1:.1f}",
        "exit_codes": json.dumps(codes),
        "dest_runs": sum(seen.values()),
        "exactly_once": once,
        "verify": verify.returncode,
        "verify_tail": verify.stdout.strip().splitlines()[-1] if verify.stdout.strip() else "",
        "killed": killed,
        "noop": noop_line,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--shards", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--workers", type=int, default=2, help="bridge workers per shard process")
    ap.add_argument("--kill-after", type=float, default=0.4, help="of the 4-shard wall time")
    ap.add_argument("--kill-at", type=float, help="seconds (default: --kill-after)")
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument("--cache", default="/tmp/bench-cache")
    ap.add_argument(
        "--direct", action="store_true", help="into the PostgreSQL MLflow URI, no server"
    )
    ap.add_argument("--noop", action="store_true", help="then time a plain no-op sync")
    args = ap.parse_args()
    for k, v in {"WANDB_SILENT": "true", "MLFLOW_LOGGING_LEVEL": "WARNING", "CI": "true"}.items():
        os.environ.setdefault(k, v)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    src = f"mlflow:sqlite:///{mlflow_source(cache, args.runs)}"
    print(f"{args.runs:,} runs; cores {os.cpu_count()}; load before {os.getloadavg()}", flush=True)
    base = None
    walls: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-shards-", dir=cache) as tmp:
        cases = [(n, None) for n in args.shards]
        if not args.no_kill:
            cases.append((4, -1.0))
        for n, kill in cases:
            after = None if kill is None else args.kill_after * walls.get(4, 120.0)
            if kill is not None and args.kill_at is not None:
                after = args.kill_at
            r = one_pass(src, n, args.workers, args.runs, Path(tmp), after, args.direct, args.noop)
            if kill is None:
                walls[n] = float(r["wall"])
                base = base or float(r["wall"])
            speedup = (base or float(r["wall"])) / float(r["wall"])
            print(
                f"{n} shard(s){' (kill)' if kill else ''}: {r['wall']:7.1f} s "
                f"{r['runs_per_s']:6.2f} runs/s  speed-up {speedup:4.2f}  "
                f"server CPU {r['server_cpu']:4.0f}%  postgres CPU {r['pg_cpu']:4.0f}%  "
                f"load {r['load']}  exits {r['exit_codes']}  dest runs {r['dest_runs']} "
                f"(exactly once {r['exactly_once']} of {args.runs})  verify exit {r['verify']}"
                f" {r['killed']}",
                flush=True,
            )
            if r["noop"]:
                print(f"    {r['noop']}", flush=True)
            if r["verify"] != 0:
                print(f"    verify: {r['verify_tail']}", flush=True)


if __name__ == "__main__":
    main()
