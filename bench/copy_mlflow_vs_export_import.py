"""Bench P3 (issue 14): copy one MLflow experiment, bridge vs mlflow-export-import 1.2.0.

Source: one experiment of R runs × 20 params × 5 metrics × S steps and a few small artifacts
per run (artifacts in a local folder: both tools read them straight from the file system).
Scenarios, measured in ONE run of this script, each tool as its own process (wall time and
peak RSS, bench/measure.py), each into a fresh destination of its own:

* ``server``: ``mlflow server`` → ``mlflow server`` (sqlite behind each, ``--workers 1``, as
  tests/conftest.py starts them). Bridge: ``bridge sync mlflow:http://src mlflow:http://dst``;
  export-import: ``export-experiment`` against the source server, ``import-experiment``
  against its own destination server.
* ``sqlite``: sqlite URI → sqlite URI. mlflow-export-import goes through ``MlflowClient``,
  which accepts a database URI as ``MLFLOW_TRACKING_URI``: its export reads the source
  sqlite URI directly, but its import cannot write one (``set_experiment`` catches only
  ``RestException``; a SQL store raises ``MlflowException`` "already exists" for every run
  after the experiment is made, checked with 1.2.0), so its import goes through an
  ``mlflow server`` on its own destination sqlite file.
* ``pg`` (``--pg``): PostgreSQL URI → PostgreSQL URI (127.0.0.1:5432), the same way (its
  import through a server on its own PostgreSQL database).

Prints the time of each, the ratio export-import/bridge (goals: ≥ 2 through servers, ≥ 5
with SQL URIs), peak RSS, a fidelity line (start times kept, runs after a second run of the
same copy), and ``cat /proc/loadavg``. mlflow-export-import is not a dependency of the
project: ``pip install mlflow-export-import tabulate`` first. ``--profile DIR`` records the
bridge side of each scenario under py-spy (all threads, 200 Hz, raw collapsed stacks) into
DIR and prints the top items.

Servers as a production stack runs them (2026-12-08, quiet, load 1.4-1.9): ``--only server
--server-workers 4 --server-pg`` (each ``mlflow server --workers 4`` on a PostgreSQL
database), 50 runs × 5 × 2,000: export-import 143.1 s, bridge 68.4 s, **2.09**; again 176.6
vs 86.1 s, **2.05**. Server CPU during the bridge's copy: source 26 / 33 s, destination 70 /
88 s (in 68.4 / 86.1 s of wall: the destination's workers use both cores, which a
single-worker server cannot: the ~1.7 ceiling of the sqlite-file setup below); during
export-import's: 25 / 33 and 80 / 93 s. Both copy 500,000/500,000 points; start times kept
50/50 by the bridge, 0/50 by export-import.

    python bench/copy_mlflow_vs_export_import.py [--runs 50] [--steps 2000] [--pg]
        [--only server,sqlite,pg] [--profile DIR] [--again]
        [--server-workers N] [--server-pg]   # the servers' workers and database

Measured 2026-12-07 (after 47c1694), 10 runs × 5 metrics × 1,000 steps = 50,000 points, a
2-core machine shared with other jobs (load average 12-26 during the run, so both sides
waited for CPU most of the time): server → server export-import 160.7 s, bridge 145.7 s
(1.10×; CPU of the servers during the bridge's copy: source 5 s, destination 11 s; during
export-import's: 4 s and 9 s); sqlite URI → URI export-import 113.3 s, bridge 24.0 s (4.73×);
PostgreSQL URI → URI export-import 71.3 s, bridge 21.1 s (3.38×, load 7-22); peak RSS bridge
198 / 250 / 249 MiB, export-import 178 / 233 / 240 MiB. Fidelity: the bridge keeps 10/10
start times, export-import 0/10; both copy 50,000/50,000 points. The goals (≥ 2× through
servers, ≥ 5× with SQL URIs) are not shown reached by these figures.

Profile (py-spy, 200 Hz, all threads, 10 runs × 5 metrics × 1,000 steps, machine loaded by
other jobs, load average ~19; shares inclusive of all samples):

* ``--workers 4`` is the default of ``bridge sync``: the issue's "``--workers 4``, no gain"
  timed the same configuration twice (189 s vs 226 s: noise of a shared machine).
* server → server (7,770 samples): the bridge process mostly waits on the two single-worker
  servers, which share the 2 cores with it: destination ``log_batch`` requests 10.7% (the
  sink, another engineer's), source ``metrics/get-history`` 5.6% (most of it in
  ``SocketIO.readinto``; ``ParseDict`` 1.9%, strict_rest's shape check 0.9%), ``read_run``
  1.6%, ``list_artifacts`` 1.2%, ``get_run`` 0.7%, listing 0.7%; imports ~24% and opening
  the MLflow client in ``MlflowReader.check`` 12.3% are fixed costs. Per run the reader
  made 10 requests: ``get_run`` twice (``read_run``, then again for the history's metric
  keys), ``search_logged_models`` of the experiment once more per run (the listing had
  already searched it), ``list-artifacts`` per folder, ``get-history`` per key. Fixed
  (commit 47c1694): ``get_run`` once, the listing's logged-model search reused — 8.
* sqlite → sqlite (11,611 samples): opening the MLflow clients 36% (imports, and
  ``SqlAlchemyStore.__init__`` 18%), the destination's migrations 9.5% (now created before
  timing, as the servers' stores are), apply 19%; the reader's history query
  (``sql_metric_chunks``, already the SQL path) is small at this size. The metric history is
  read straight from the ``metrics`` table; the per-run bodies still go through
  ``MlflowClient.get_run`` (the ORM).

Quiet machine (2026-12-07 evening, load 1-3; a test run shared the first scenario), the
defaults (50 runs × 5 metrics × 2,000 steps = 500,000 points), ``--pg``:

    | scenario | export-import s | bridge s | ratio | bridge again s | peak RSS exim / bridge |
    | server   | 262.9           | 143.5    | 1.83  | 7.3            | 196 / 211 MiB          |
    | sqlite   | 171.4           |  23.4    | 7.32  | 5.3            | 253 / 280 MiB          |
    | pg       | 179.3           |  18.7    | 9.61  | 4.1            | 260 / 273 MiB          |

Server CPU during the bridge's copy: source 33 s, destination 86 s (one worker on sqlite);
during export-import's: 37 s and 93 s. Again, ``--only server`` alone at load 1: export-import
209.4 s, bridge 149.8 s (1.40); the destination server's CPU during the bridge's copy 123 s
(82% of its wall time; 114 s during export-import's): the copy cannot end before that server
has done its work, so this setup's ceiling is ~209.4 / 123 = 1.7, below the goal of 2.
``--runs 20`` with ``--bridge-args "--workers 1|4|8"`` beside a CI run (too noisy to rank):
bridge 63.6 / 41.7 / 48.5 s; the default 4 is the fastest of the three. Both tools copy 500,000/500,000 points; the bridge
keeps 50/50 start times, export-import 0/50.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure, summarize  # noqa: E402

EXPERIMENT = "bench-copy"


def make_source(uri: str, runs: int, steps: int, tmp: Path) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=str(tmp / "src-artifacts"))
    art = tmp / "art"
    (art / "sub").mkdir(parents=True, exist_ok=True)
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


def snapshot(uri: str) -> tuple[int, dict[str, int], int]:
    """Number of runs, start time per run name (first seen), metric points in all."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return 0, {}, 0
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    starts: dict[str, int] = {}
    points = 0
    for run in runs:
        starts.setdefault(run.info.run_name, run.info.start_time)
        for key in run.data.metrics:
            points += len(client.get_metric_history(run.info.run_id, key))
    return len(runs), starts, points


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    todo, total = [pid], 0.0
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(c for c, (parent, _) in stats.items() if parent == p)
    return total


def env_cmd(env: dict[str, str], cmd: list[str]) -> list[str]:
    """``cmd`` under ``env`` (measure() runs commands with this process's environment)."""
    return ["env", *(f"{k}={v}" for k, v in env.items()), *cmd]


class Scenario:
    """One source → destination pair: the bridge's copy and export-import's, timed."""

    def __init__(
        self, name: str, src: str, bridge_dst: str, exim_src: str, exim_dst: str, extra: list[str]
    ):
        self.name, self.src, self.bridge_dst, self.extra = name, src, bridge_dst, extra
        self.exim_src, self.exim_dst = exim_src, exim_dst
        #: Server processes by role ("src", "bridge-dst", "exim-dst"): CPU seconds reported.
        self.servers: dict[str, int] = {}

    def cpu(self) -> dict[str, float]:
        return {role: tree_cpu(pid) for role, pid in self.servers.items()}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> str:
        return " ".join(f"{k} {after[k] - before[k]:.0f}" for k in before)

    def run(self, work: Path, profile: Path | None, again: bool) -> dict[str, object]:
        bindir = Path(sys.executable).parent
        bridge = [
            sys.executable, "-m", "bridge.cli", "sync", f"mlflow:{self.src}",
            f"mlflow:{self.bridge_dst}", "--state", str(work / f"{self.name}-state.db"), "--json",
            *self.extra,
        ]  # fmt: skip
        env = {"MLFLOW_LOGGING_LEVEL": "WARNING", "CI": "true"}
        out: dict[str, object] = {"name": self.name}
        if "://" in self.bridge_dst and not self.bridge_dst.startswith("http"):
            # A SQL destination is created (MLflow's migrations) before timing, as the
            # servers' stores are: store creation counts on neither side.
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=self.bridge_dst).search_experiments(max_results=1)
        cpu0 = self.cpu()
        if profile is not None:
            raw = profile / f"p3-{self.name}.txt"
            spy = ["py-spy", "record", "--subprocesses", "-r", "200", "-f", "raw", "-o", str(raw)]
            t0 = time.perf_counter()
            subprocess.run([*spy, "--", *env_cmd(env, bridge)], check=True, capture_output=True)
            out["bridge_s"], out["bridge_rss"] = time.perf_counter() - t0, 0.0
            summarize(raw)
        else:
            out["bridge_s"], out["bridge_rss"], _ = measure(env_cmd(env, bridge), "bridge sync")
        out["bridge_server_cpu"] = self.spent(cpu0, self.cpu())
        out["bridge_again_s"], _, _ = measure(env_cmd(env, bridge), "bridge sync (again)")
        export_dir = work / f"{self.name}-export"
        ex_env = dict(env, MLFLOW_TRACKING_URI=self.exim_src)
        im_env = dict(env, MLFLOW_TRACKING_URI=self.exim_dst)
        export = [str(bindir / "export-experiment"), "--experiment", EXPERIMENT]
        export += ["--output-dir", str(export_dir)]
        imp = [str(bindir / "import-experiment"), "--experiment-name", EXPERIMENT]
        imp += ["--input-dir", str(export_dir)]
        cpu0 = self.cpu()
        ex_s, ex_rss, _ = measure(env_cmd(ex_env, export), "export-experiment")
        im_s, im_rss, _ = measure(env_cmd(im_env, imp), "import-experiment")
        out["exim_s"], out["exim_rss"] = ex_s + im_s, max(ex_rss, im_rss)
        out["exim_server_cpu"] = self.spent(cpu0, self.cpu())
        out["exim_again_s"] = float("nan")
        if again:  # 1.2.0 imports every run again (duplicates): as long as the first import
            out["exim_again_s"], _, _ = measure(env_cmd(im_env, imp), "import-experiment (again)")
        n_src, src_starts, src_points = snapshot(self.src)
        for side, uri in (("bridge", self.bridge_dst), ("exim", self.exim_dst)):
            n, starts, points = snapshot(uri)
            same = sum(1 for k, v in src_starts.items() if starts.get(k) == v)
            out[f"{side}_fidelity"] = (
                f"{same}/{len(src_starts)} start times, {n}/{n_src} runs, "
                f"{points:,}/{src_points:,} points"
            )
        out["load"] = Path("/proc/loadavg").read_text().split()[0:3]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL URI → URI")
    parser.add_argument("--only", default="server,sqlite,pg", help="scenarios to run")
    parser.add_argument("--profile", type=Path, help="py-spy the bridge side into this folder")
    parser.add_argument("--again", action="store_true", help="time export-import's re-import")
    parser.add_argument(
        "--bridge-args", default="", help="extra `bridge sync` options, e.g. '--workers 8'"
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, help="`mlflow server --workers` of the servers"
    )
    parser.add_argument(
        "--server-pg",
        action="store_true",
        help="the server scenario's servers on PostgreSQL databases instead of sqlite files",
    )
    args = parser.parse_args()
    if not (Path(sys.executable).parent / "export-experiment").exists():
        raise SystemExit("pip install mlflow-export-import tabulate  (needed for the comparison)")
    import conftest
    from conftest import fresh_pg_database, start_mlflow_server, stop_mlflow_server

    # A loaded shared machine can take minutes to start a server: wait up to 10 min.
    wait_http = conftest.wait_http
    conftest.wait_http = lambda url, timeout=60.0: wait_http(url, timeout=600)  # type: ignore[misc]

    only = set(args.only.split(","))
    if not args.pg:
        only.discard("pg")
    os.environ.update(MLFLOW_LOGGING_LEVEL="WARNING", CI="true")
    points = args.runs * args.steps * 5
    results: list[dict[str, object]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bridge-bench-p3-") as tmp_s,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_s)
        os.chdir(tmp)  # export-import's sqlite imports put artifacts under ./mlruns
        src = f"sqlite:///{tmp / 'src.db'}"
        t0 = time.perf_counter()
        make_source(src, args.runs, args.steps, tmp)
        print(
            f"source: {args.runs} runs, {points:,} points, made in {time.perf_counter() - t0:.0f} s"
        )
        servers: list[subprocess.Popen[bytes]] = []

        pids: dict[str, int] = {}

        def server(name: str, backend: str | None = None) -> str:
            url, proc = start_mlflow_server(tmp / name, backend, workers=args.server_workers)
            servers.append(proc)
            pids[url] = proc.pid
            return url

        def scenario(name: str, src: str, b_dst: str, e_src: str, e_dst: str) -> Scenario:
            sc = Scenario(name, src, b_dst, e_src, e_dst, args.bridge_args.split())
            roles = {"src": src, "bridge-dst": b_dst, "exim-dst": e_dst}
            sc.servers = {role: pids[url] for role, url in roles.items() if url in pids}
            return sc

        try:
            todo: list[Scenario] = []
            if "server" in only:
                if args.server_pg:  # a server per database, as a production stack runs them
                    s_src, s_b, s_e = (
                        stack.enter_context(fresh_pg_database("bench_p3s_")) for _ in range(3)
                    )
                    make_source(s_src, args.runs, args.steps, tmp / "pg-server")
                    src_url = server("src-server", s_src)
                    b_url, e_url = server("dst-bridge", s_b), server("dst-exim", s_e)
                else:
                    src_url = server("src-server", src)
                    b_url, e_url = server("dst-bridge"), server("dst-exim")
                todo.append(scenario("server", src_url, b_url, src_url, e_url))
            if "sqlite" in only:
                b, e = (f"sqlite:///{tmp / n}" for n in ("dst-bridge.db", "dst-exim.db"))
                todo.append(scenario("sqlite", src, b, src, server("dst-exim-sqlite", e)))
            if "pg" in only:
                pg_src, pg_b, pg_e = (
                    stack.enter_context(fresh_pg_database("bench_p3_")) for _ in range(3)
                )
                make_source(pg_src, args.runs, args.steps, tmp / "pg")
                todo.append(scenario("pg", pg_src, pg_b, pg_src, server("dst-exim-pg", pg_e)))
            for sc in todo:
                results.append(sc.run(tmp, args.profile, args.again))
                print(results[-1], flush=True)
        finally:
            for proc in servers:
                stop_mlflow_server(proc)

    print()
    print(f"{args.runs} runs × 5 metrics × {args.steps} steps = {points:,} points")
    print("| scenario | export-import s | bridge s | ratio | again: import / bridge s "
          "| peak RSS exim / bridge MiB | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ex, br = float(r["exim_s"]), float(r["bridge_s"])  # type: ignore[arg-type]
        print(
            f"| {r['name']} | {ex:.1f} | {br:.1f} | {ex / br:.2f} | "
            f"{float(r['exim_again_s']):.1f} / {float(r['bridge_again_s']):.1f} | "  # type: ignore[arg-type]
            f"{float(r['exim_rss']):.0f} / {float(r['bridge_rss']):.0f} | {' '.join(r['load'])} |"  # type: ignore[arg-type]
        )
    for r in results:
        print(f"{r['name']}: bridge {r['bridge_fidelity']}; export-import {r['exim_fidelity']}")
        print(
            f"{r['name']}: server CPU s during bridge: {r['bridge_server_cpu'] or '-'}; "
            f"during export-import: {r['exim_server_cpu'] or '-'}"
        )


if __name__ == "__main__":
    main()
