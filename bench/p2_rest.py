"""Bench (issue 14, P2): W&B offline → `mlflow server --workers 4` with PostgreSQL behind it:
whole `bridge sync` process vs a single-client sequential `log_batch` loop on the same server.

Per case, a fresh PostgreSQL database and a fresh server; then
1. baseline: one client, `MlflowClient.log_batch` of 1000 metrics per call, one at a time, the
   same points (keys ``m<i>``, one point per key and step, as the SDK run logged them) into
   one run per source run; the points are built before the clock starts (favours the
   baseline: the bridge's time includes reading the `.wandb` logs, imports and planning);
2. `bridge sync` as its own process (whole process), with ``BRIDGE_LOG_BATCH_IN_FLIGHT=1``
   (the sequential sink, for reference) and with the default (4 requests in flight);
and prints points/s, the ratio to the baseline, the CPU the server's process tree and all
`postgres` processes used (as % of one core over the phase), the bridge's peak RSS and the
distinct TCP connections the server saw from its clients (keep-alive: a handful, not one
per request). Cases: one run of N points, and ``--runs`` runs of N/runs points each
(``bridge sync --workers 4``).

    python bench/p2_rest.py [--points 500000] [--metrics 5] [--runs 8]

Conclusions (2026-12-07, 2-core machine shared with ~7 other sessions, load average 17-32
during the runs: every process got a small slice of a core, so these are ratios of
CPU-starved processes; 100k points, 5 keys):
* one run:   plain 723 pts/s; bridge one request at a time 597 (0.83×); bridge 4 in flight
  887 (1.23×); server CPU 12% / 11% / 17% of a core, postgres 14-17% (load 28 → 33).
* 4 runs × 25k, `--workers 4`: plain 698 pts/s; bridge sequential sink 1,492 (2.14×);
  bridge 4 in flight 2,077 (2.98×); server CPU 12% / 26% / 33% (load fell 30 → 17 during
  the case, which flatters the later phases).
* one run again as the load fell (7-15): plain 2,305 pts/s; bridge sequential 2,039 (0.88×);
  bridge 4 in flight 3,247 (1.41×); server CPU 33% / 35% / 56% of a core, postgres 8%.
  The server never saturated the CPUs here: the machine did (others' load). The goal (≥ 2×)
  is reached with several runs, not for one 100k-point run, whose whole-process time also
  pays imports, reading the `.wandb` log and planning (the baseline pays none of it).
* Client CPU per 1000 metrics (load 15): ``Metric`` → protobuf → ``message_to_json`` as
  ``MlflowClient.log_batch`` builds its body 46 ms; the sink's ``json.dumps`` body 4.5 ms.
* Keep-alive: MLflow's ``RestStore`` takes one cached ``requests.Session`` per process
  (``mlflow.utils.request_utils._cached_get_request_session``): measured, the server sees 1
  client connection for the plain loop and 3-12 for the bridge (its pool threads plus the
  engine's own calls), not one per request (100-400 requests per phase).
* A single-client loop leaves the machine idle between requests (client builds a body,
  server parses and inserts, PostgreSQL commits, in turn); with requests in flight the
  server's 4 workers run MLflow's ORM inserts side by side.
* Watermark commits no longer drain the requests in flight (engine/apply_history.py: the
  previous commit's snapshot is recorded once its acknowledged mark is reached; before,
  each commit every 20k points flushed the REST sink). Measured 2026-12-07, load 6-12:
  this bench's one-run case, old tree and new tree interleaved (plain/old/new/plain/new/
  old/plain, fresh server each): plain 1,975 / 2,104 / 1,771 pts/s; old 1,918 and 3,255;
  new 2,655 and 2,693 (1.37× the plain mean, old 1.33×): within the noise. In process
  (100k points, 5 keys, through the sink alone, one server, 18 phases interleaved): drain
  at each commit 5,388 pts/s mean of 7 (3,759-7,577), marks 5,848 mean of 7 (2,958-9,414),
  plain loop 3,629 mean of 4: +8% at most, lost in the noise. Five drains per 100k points
  idle the pipeline for about one request's time each; the gap to 2× in the whole-process
  figure is elsewhere (imports, reading the `.wandb` log, planning, a starved CPU).

Quiet machine (2026-12-07 evening, load 1-3, 500k points, 5 keys, the defaults):
* one run: plain 4,121 pts/s (server CPU 76%, postgres 13%); bridge one request at a time
  3,883 (0.94×); bridge 4 in flight 8,805 (**2.14×**; server 139% of a core, postgres 23%).
* 8 runs × 62,500, `--workers 4`: plain 4,477; sequential sink 7,744 (1.73×); 4 in flight
  8,024 (1.79×), server 139% + postgres 24% + the bridge itself: the 2 cores are saturated,
  so more in flight buys nothing here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import drop_pg_database, measure, pg_database  # noqa: E402


def start_server(work: Path, backend: str, workers: int) -> tuple[str, subprocess.Popen, int]:
    from conftest import free_port, wait_http

    port = free_port()
    art = work / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend, "--workers", str(workers)]
    cmd += ["--default-artifact-root", "mlflow-artifacts:/", "--artifacts-destination", str(art)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(work / "server.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=300)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return url, proc, port


def _procs() -> dict[int, tuple[str, int, float]]:
    """pid → (name, parent pid, CPU seconds), from /proc (no psutil in the venv)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


class Watch:
    """CPU seconds of the server's process tree and of all `postgres` processes over a
    phase (per process, sampled every 0.2 s, so backends that exit meanwhile count up to
    their last sample), and the client ports the server had established connections from
    (sampled from /proc/net/tcp)."""

    def __init__(self, server_pid: int, port: int) -> None:
        self._server = server_pid
        self._port = f"{port:04X}"
        self.peers: set[str] = set()
        self._start = self._cpu()
        self._last = dict(self._start)
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _cpu(self) -> dict[tuple[str, int], float]:
        """("server" | "postgres", pid) → CPU seconds so far."""
        procs = _procs()
        tree, grew = {self._server}, True
        while grew:
            more = {pid for pid, (_, ppid, _) in procs.items() if ppid in tree} - tree
            tree |= more
            grew = bool(more)
        out = {("server", p): procs[p][2] for p in tree if p in procs}
        for pid, (name, _, cpu) in procs.items():
            if name.startswith("postgres"):
                out["postgres", pid] = cpu
        return out

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self._last.update(self._cpu())
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, state = cols[1], cols[2], cols[3]
                if state == "01" and local.endswith(":" + self._port):
                    self.peers.add(remote)

    def stop(self) -> tuple[float, float]:
        """Server and postgres CPU over the phase, in % of one core."""
        self._stop.set()
        self._thread.join()
        self._last.update(self._cpu())
        wall = time.perf_counter() - self._t0
        used = {"server": 0.0, "postgres": 0.0}
        for (what, pid), cpu in self._last.items():
            used[what] += cpu - self._start.get((what, pid), 0.0)
        return 100 * used["server"] / wall, 100 * used["postgres"] / wall


def plain_worker(url: str, runs: int, steps: int, metrics: int) -> None:
    """The baseline: points built first, then timed, one ``log_batch`` at a time."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.create_experiment(f"plain-{uuid.uuid4().hex[:6]}")
    now = int(time.time() * 1000)
    names = [f"m{i}" for i in range(metrics)]
    points = [
        Metric(name, step * (i + 1) * 0.5, now + step, step)
        for step in range(steps)
        for i, name in enumerate(names)
    ]
    run_ids = [client.create_run(exp).info.run_id for _ in range(runs)]
    t0 = time.perf_counter()
    for run_id in run_ids:
        for i in range(0, len(points), 1000):
            client.log_batch(run_id, metrics=points[i : i + 1000], synchronous=True)
    print(json.dumps({"seconds": time.perf_counter() - t0, "points": runs * len(points)}))


def make_runs(root: Path, runs: int, points: int, metrics: int) -> Path:
    from sdk_runs import make_big_run

    t0 = time.perf_counter()
    for i in range(runs):
        make_big_run(root, points, n_metrics=metrics, run_id=f"p2run{i}")
    print(
        f"made {runs} W&B offline run(s) of {points:,} points in {time.perf_counter() - t0:.0f} s"
    )
    return root / "wandb"


def case(work: Path, runs: int, points: int, metrics: int) -> None:
    source = make_runs(work / f"wandb-{runs}", runs, points, metrics)
    steps = max(1, points // metrics)
    print(f"--- {runs} run(s) × {points:,} points, mlflow server --workers 4 + PostgreSQL")
    print(f"    load average before: {open('/proc/loadavg').read().split()[:3]}")
    rates: dict[str, float] = {}
    for phase in ("plain", "bridge-sequential", "bridge"):
        db = pg_database("p2_")
        url, proc, port = start_server(work, db, 4)
        try:
            watch = Watch(proc.pid, port)
            if phase == "plain":
                cmd = [sys.executable, __file__, "--plain-worker", url, str(runs), str(steps)]
                cmd.append(str(metrics))
                _, rss, out = measure(cmd, "plain loop")
                res = json.loads(out.strip().splitlines()[-1])
                seconds, written = res["seconds"], res["points"]
            else:
                state = work / f"state-{phase}-{runs}.db"
                cmd = [sys.executable, "-m", "bridge.cli", "sync", f"wandb-offline:{source}"]
                cmd += [f"mlflow:{url}", "--state", str(state), "--json", "--workers", "4"]
                flight = "1" if phase == "bridge-sequential" else "4"
                os.environ["BRIDGE_LOG_BATCH_IN_FLIGHT"] = flight
                seconds, rss, out = measure(cmd, phase)
                written = int(json.loads(out)["points_written"])
            server_cpu, pg_cpu = watch.stop()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's session: uvicorn workers too
            proc.wait(timeout=30)
            drop_pg_database(db)
        rates[phase] = written / seconds
        ratio = rates[phase] / rates["plain"]
        print(
            f"{phase:18s} {written:>9,} points {seconds:7.1f} s {rates[phase]:>8,.0f} pts/s "
            f"ratio {ratio:4.2f}  server CPU {server_cpu:4.0f}%  postgres CPU {pg_cpu:4.0f}%  "
            f"peak RSS {rss:4.0f} MiB  client connections seen {len(watch.peers)}"
        )
    print(f"    load average after:  {open('/proc/loadavg').read().split()[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500_000)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--runs", type=int, default=8, help="the several-runs case (0: skip)")
    parser.add_argument("--plain-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if args.plain_worker:
        url, runs, steps, metrics = args.plain_worker
        plain_worker(url, int(runs), int(steps), int(metrics))
        return
    with tempfile.TemporaryDirectory(prefix="bridge-p2-") as tmp:
        case(Path(tmp), 1, args.points, args.metrics)
        if args.runs > 1:
            case(Path(tmp), args.runs, args.points // args.runs, args.metrics)


if __name__ == "__main__":
    main()
