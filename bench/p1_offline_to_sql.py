"""Bench P1 (issue 14): W&B offline run → MLflow SQL store, `bridge sync` vs the raw insert limit.

Makes one W&B offline run of N points (default 2,000,000 over 5 metrics) with the real SDK,
then, per destination (sqlite always, PostgreSQL with --pg):

* raw limit: the same number of rows straight into MLflow's own ``metrics`` table of a
  freshly created MLflow store (its primary key and indexes), 10k rows per transaction —
  sqlite: ``sqlite3`` ``executemany`` of tuples, with the PRAGMAs the bridge's bulk writer
  uses (none: it opens a plain SQLAlchemy engine, so sqlite's defaults, as here);
  PostgreSQL: psycopg ``COPY metrics ... FROM STDIN``. Only the inserts and commits are
  timed (store creation and building each batch's tuples are not);
* bridge: ``bridge sync wandb-offline:DIR mlflow:<uri>`` as a whole process (imports
  included), peak RSS; the store is created beforehand, so creation counts on neither side.

Prints points/s of both, the ratio bridge/raw (goal ≥ 0.5), the bridge's peak RSS and the
load average (at the start and after each destination). ``--profile OUT`` instead records
one sync (sqlite; PostgreSQL with ``--pg``, idle samples included so waits on the server
show) under py-spy (``pip install py-spy``) into OUT (collapsed stacks) and prints the top
items by inclusive share of samples. ``--source DIR`` keeps the W&B run under DIR and
reuses it next time (making 2M points takes ~4 minutes on a loaded machine, untimed);
``--pg-only`` skips sqlite.

    python bench/p1_offline_to_sql.py [--points 2000000] [--metrics 5] [--pg | --pg-only]
    python bench/p1_offline_to_sql.py --points 1000000 --profile /tmp/p1.txt [--pg]
    python bench/p1_offline_to_sql.py --pg --source /tmp/p1-source   # the run made once

Measured 2026-12-07, 2-core machine possibly loaded by other jobs (load average ~3), one run
of 2,000,000 points: sqlite raw 200,909 points/s, bridge 59,599 points/s (33.6 s), ratio 0.30,
peak RSS 247 MiB; PostgreSQL raw COPY 79,554 points/s, bridge 27,855 points/s (71.8 s), ratio
0.35, peak RSS 258 MiB. The bridge writes 2,000,090 points (90 more: the run's own system and
summary metrics beside the 2M history points).

Measured again later on 2026-12-07 with every change of that day in (tuples / COPY in the bulk
sink, no wandb import, fsync-free store creation), a CI run sharing the machine (load 3-4), one
run of 2,000,000 points: sqlite raw 76,032 points/s, bridge 44,535 points/s (44.9 s), ratio
0.59; PostgreSQL raw COPY 71,180 points/s, bridge 28,556 points/s (70.0 s), ratio 0.40; peak
RSS 239 / 246 MiB. (The raw side slows more than the bridge under load: re-take on a quiet
machine.)

Conclusions (py-spy, 200 Hz, all threads, one sqlite sync of 1,000,000 points, 5,618 samples;
shares are of all samples, inclusive):

* apply, the writer thread: ``write_history`` 39.5%, of which ``SqlBulkMetricSink.add`` 34.8%.
  sqlite's own ``executemany`` is only 16.5%; SQLAlchemy Core's per-row work around it
  (``_init_compiled``' parameter list, ``construct_params``, bind processors) ~10.8% and
  building one dict per point in ``add`` 3.8%; ``StreamGate.admit`` (digests) 3.5%.
* reading history, the prefetch thread: 19.6%, overlapped with the writer; it waits on a
  full queue 4.9% of the samples, so the writer, not the reader, bounds the apply phase.
* plan: ``plan_run`` → ``WandbOfflineReader.read_run`` → ``RunState.read_part`` 15.9% — a
  whole parse of the ``.wandb`` log before any write starts (serial), which the history
  read then repeats.
* imports 12.5% (5.5% of them while opening the MLflow client), MLflow store open 2.6%;
  threads waiting on conditions 13.8%.

Change first: the plan's full parse of the log (15.9%, all on the critical path): plan from
the header, counts and a cheap fingerprint, one pass over the log. Next, close behind:
tuples through the DBAPI cursor instead of dicts through Core (~14.6%; the writer thread is
the apply phase's bottleneck), then ``COPY`` for PostgreSQL, whose ratio is bound the same way.

The read side, measured again 2026-12-07 (CPU time, min of 7 runs, 100k points / 60k records;
line-level py-spy of ``read_run`` on 1M points): the plan's cost is not protobuf parsing.
Per 60k records: framing + CRC (``payloads``) 0.046 s, ``Record.FromString`` + ``WhichOneof``
of every record 0.047 s, a pure-Python peek at the record kind 0.044 s (as dear as upb's
whole parse: skipping history records unparsed gains nothing, tried and dropped), folding the
summary 0.30 s. The SDK writes two summary records per ``run.log`` (the row's values, then
``_wandb.runtime``/``_runtime``): 400k of the 600k records of a 1M-point run, ~8 updates
each; the per-update Python (upb wrapper, ``tuple(nested_key)``, ``value_json``, the ordered
dict) is ~75% of ``read_part``; caching repeated summary records by their bytes saves ~5%.
Exact replay order must be kept, so that fold is the floor of this plan short of not
folding the summary at plan time. ``iter_history`` likewise: per-item work, not parsing.
``StreamGate.admit``: ~125 µs per 1000-point chunk, ~45% of it converting the chunk's lists
to arrays; ~0.25 s per 2M points — little to gain without changing the digest.
Start-up: ``from wandb.proto import wandb_internal_pb2`` ran the whole SDK's ``__init__``
(~1 s CPU, 5.4% of a 1M-point sync's samples on a loaded machine): now built from the SDK's
serialized descriptors without importing it (``bridge/adapters/wandb/proto_light.py``);
importing the offline reader 0.34 s CPU instead of 0.82 s. The rest of the imports are
MLflow's own (``mlflow.tracking`` pulls pandas, ``mlflow.genai`` fastapi; the SQL store
every SQLAlchemy MySQL dialect): 17% of samples inside ``MlflowStore._open_client``.
Store opens counted 2026-12-07 (create_engine / SqlAlchemyStore.__init__ patched): each URI's
tracking store is already opened once per process (MLflow caches the store per URI and the
engine in ``SqlAlchemyStore._engine_map``); W&B offline → sqlite: that store + the bulk
sink's engine; sqlite → sqlite adds on the source the check's, the listing's and the registry
store's engines. Opening an existing store: 0.04-0.08 s. Creating a new sqlite store: ~5.6 s
wall for ~1.2 s CPU — the ~60 migrations' per-DDL fsyncs; now created by MLflow's own code
under ``PRAGMA synchronous=OFF`` into ``<db>.bridge-new``, fsynced and renamed into place
(uri.py ``create_sqlite_schema``; a kill midway no longer leaves an unopenable store): ~3.9 s
(load ~5). 10k-point sync into a fresh sqlite store, whole process, 3 alternated pairs at
load ~10: 51.9 s before, 44.5 s after (0.86); py-spy: ``_open_client`` 35.8% → 23.7% of
samples, DDL ``do_execute`` 14.4% → 4.4%. sqlite → fresh sqlite, the same 10k points, 2 pairs
at load ~10: 32.0 s before, 20.5 s after (0.64). The rest of start-up is imports, MLflow's
own ``mlflow/__init__`` (pandas via ``mlflow.data`` ~1.5 s, ``mlflow.genai`` ~1.9 s at load
~10): any ``mlflow.*`` import runs it; the bridge's own chain (``bridge.api``) is ~1.1 s,
sqlalchemy and numpy, both used by every sync. A fresh PostgreSQL store: 5.2 s wall for
0.66 s client CPU, one transaction (no per-DDL commit to save).
This bench pre-creates its store untimed, so its ratio does not see the change: 500,000
points at load ~10, raw 71,489 points/s, bridge 14,527/s, ratio 0.20, peak RSS 238 MiB.

PostgreSQL, direct ``COPY`` (bulk_pg.py; 2026-12-07 afternoon, 2-core machine shared with
six other jobs, load 12-18 throughout). Profile first (``--profile --pg``, 1,000,000
points, all threads with idle samples, 168,135 samples): the writer thread (``write_history``)
spent 93% of its samples inside ``copy_rows``, nearly all waiting on the server: 78% in one
statement — ``INSERT INTO metrics SELECT ... FROM <temp> ON CONFLICT DO NOTHING`` — against
8% for the ``COPY`` into the temporary table, 3% building the ``COPY`` text, 1.9%
``StreamGate.admit``, under 1% each the ``latest_metrics`` upsert, the commit and the
watermark commit. Changed: the keys of a flush whose steps rise above every step the run
already holds for them (read once per key from the index (run_uuid, key, step), then
raised by the sink's own commits) go by ``COPY`` straight into ``metrics``; the rest (a
re-sent flush after a crash, a resumed run's interleaved points, repeated steps) keep the
temporary table + ``ON CONFLICT`` path in the same transaction, and a unique violation (a
racing writer) redoes the flush that way (tests/test_bulk_differential.py). Profile after
(2,000,000 points, 248,702 samples, load ~18): the writer is 204 s of the 292 s sampled
wall, 83% of it in ``Copy.finish`` — the server inserting the rows and their three index
entries, the work the raw limit times — ``copy_text`` 4% (now without per-row
``float``/``int``: about half its time), digests 2.8%, watermark commits 1%, the
``latest_metrics`` upserts 1%; before the first write: plan (``read_run``, the summary
fold) 41 s and opening MLflow (imports) 31 s of that sampled wall. What bounds the rest is
that serial start: the writing itself now goes at the raw limit's pace.
Figures, 2,000,000 points each, whole process, the run reused (``--source``):

* run 1 (direct COPY): sqlite raw 21,500 points/s, bridge 8,026/s, ratio 0.37 (load
  12.8 → 11.7); PostgreSQL raw 17,820/s, bridge 10,807/s (185.1 s), ratio 0.61 (load
  11.7 → 15.8), peak RSS 237 / 246 MiB;
* run 2 (and the cheaper ``copy_text``): sqlite raw 37,558/s, bridge 14,157/s, ratio 0.38
  (load 14.2 → 12.9); PostgreSQL raw 18,676/s, bridge 11,085/s (180.4 s), ratio 0.59 (load
  12.9 → 16.6), peak RSS 238 / 247 MiB;
* side by side, PostgreSQL only (``--pg-only``), the previous commit (temp table + ``ON
  CONFLICT`` for every row, run from a git worktree) then this one: before raw 18,520/s,
  bridge 10,656/s (187.7 s), ratio 0.58 (load 16.8 → 11.9); after raw 19,490/s, bridge
  12,815/s (156.1 s), ratio 0.66 (load 12.0 → 10.7): the sync 17% shorter. The ratio rises
  with the load for both (the raw side slows more: 0.40 before at load 3-4), so only the
  side-by-side pair compares the paths; re-take both on a quiet machine.
* the two paths alone (``copy_rows``, 200,000 rows, 10k per transaction, a fresh run each,
  3 alternated pairs at load ~11): checked 13.5 / 16.2 / 11.2 s, direct 10.4 / 10.1 /
  8.7 s — direct ``COPY`` takes ~0.7x the server time.

Considered and not taken: binary ``COPY`` (psycopg 3 ``write_row`` with ``set_types``):
100,000 rows into ``metrics`` in 10k-row transactions, 3 alternated runs at load ~14,
5.2-5.9 s text vs 5.2-5.7 s binary wall, client CPU 0.08 vs 0.05 s — the server's index
work dominates, and text serves psycopg2 too; a larger ``COPY`` buffer: the client is not
what waits; ``synchronous_commit = off``: the watermark is committed in the state store,
another database, after the flush, so a commit acknowledged and then lost in a database
crash would leave a watermark over points the destination lacks — never re-sent.

Quiet machine (2026-12-07 evening, load 1.1-2.2, 2M points over 5 metrics): sqlite raw
110,466 points/s (18.1 s), bridge 43,653 (45.8 s): **0.40**; PostgreSQL raw ``COPY`` 51,447
(38.9 s), bridge 27,945 (71.6 s): **0.54**. Where the sqlite sync's time goes (in process,
same run): the log holds 1,200,014 records, 400,000 history and 800,001 summary (two per
logged step); ``read_run`` for the plan 15.5 s before any write, 11 s of it ``read_part``'s
Python fold of 6.4M summary items (per 200,000 records: the fold 2.3 s, merely reading each
item's key and value 1.4-1.8 s: a tighter loop saves ~3 s); the apply's history pass 9.6 s,
overlapped with the writes.
0.5 needs the plan to stop replaying the summary records one by one (fold them in the
history pass; plan from the header, counts and a cheap fingerprint).

2026-12-08, one pass and a second core (quiet machine, load 0.5-1.2; raw sqlite 180-222k
points/s on this machine, twice the evening's). Before, same machine: 35.2 s, ratio 0.30
(raw 188,737/s). ``/usr/bin/time``: 29.0 s user + 1.9 s system in 31.4 s wall — one core:
the plan's fold and the history thread's parsing hold the GIL, and ``executemany``
releases it per row, so the writer waited on the parser. Changed: (a) a new copy's plan
reads the body without the summary (``read_run_deferring_results``; 6.9 → ~2 s CPU), the
history pass folds it, the engine writes its tags after the history: 31.8 s (0.28 at raw
222,577/s); (b) a log of 200,000+ records is parsed in a child process
(``history_process.py``, pickled columns over a pipe): the parent's CPU for the history
0.19 s instead of 5.63 s. Then: sqlite raw 180,293 / 187,069 points/s, bridge 97,885 /
111,143 (20.4 / 18.0 s): **0.54 / 0.59**; PostgreSQL raw ``COPY`` 86,504 (23.1 s), bridge
64,661 (30.9 s): **0.75**; peak RSS 244 / 256 MiB (the largest process). py-spy of the
parent under load: the writer thread's ``_send`` (``executemany``) is most of the apply;
start-up ~4 s (imports, opening MLflow), the body read ~2-2.7 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure, summarize  # noqa: E402
from sync_offline_to_mlflow import make_run  # noqa: E402

PG_BASE = os.environ.get("BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TX_ROWS = 10_000
COLUMNS = "key, value, timestamp, run_uuid, step, is_nan"


def source_run(root: Path, points: int, metrics: int) -> Path:
    """The W&B offline run of ``points`` over ``metrics`` under ``root``: made once (its
    making is not timed; ~2 minutes per million points), reused while its marker is there."""
    base = root / f"wandb-{points}x{metrics}"
    marker = base / "bench-run-folder"
    if marker.exists():
        return Path(marker.read_text())
    shutil.rmtree(base, ignore_errors=True)
    folder = make_run(base, points, metrics)
    marker.write_text(str(folder))
    return folder


def create_store(uri: str) -> str:
    """Create (migrate) an MLflow store at ``uri`` and one run in it; returns the run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.create_run(client.create_experiment("raw")).info.run_id


def batches(points: int, metrics: int, run_id: str) -> Iterator[list[tuple[object, ...]]]:
    """The run's points as ``metrics`` rows, TX_ROWS per batch (like make_big_run's values)."""
    now = int(time.time() * 1000)
    batch: list[tuple[object, ...]] = []
    for step in range(points // metrics):
        for m in range(metrics):
            batch.append((f"m{m}", step * (m + 1) * 0.5, now + step, run_id, step, False))
        if len(batch) >= TX_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def raw_sqlite(db: Path, points: int, metrics: int) -> float:
    """Seconds of executemany + commit only, 10k rows per transaction."""
    run_id = create_store(f"sqlite:///{db}")
    conn = sqlite3.connect(db, timeout=60)  # the bulk engine's connect_args; no PRAGMAs
    sql = f"INSERT INTO metrics ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    spent = 0.0
    for batch in batches(points, metrics, run_id):
        t0 = time.perf_counter()
        conn.executemany(sql, batch)
        conn.commit()
        spent += time.perf_counter() - t0
    (count,) = conn.execute("SELECT count(*) FROM metrics").fetchone()
    conn.close()
    assert count == points // metrics * metrics, count
    return spent


def raw_pg(url: str, points: int, metrics: int) -> float:
    """Seconds of COPY FROM STDIN + commit only, 10k rows per transaction."""
    import psycopg

    run_id = create_store(url)
    spent = 0.0
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for batch in batches(points, metrics, run_id):
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY metrics ({COLUMNS}) FROM STDIN") as copy:
                for row in batch:
                    copy.write_row(row)
            conn.commit()
            spent += time.perf_counter() - t0
        count = conn.execute("SELECT count(*) FROM metrics").fetchone()
    assert count is not None and count[0] == points // metrics * metrics, count
    return spent


def bridge_cmd(folder: Path, uri: str, state: Path) -> list[str]:
    cmd = [sys.executable, "-m", "bridge.cli", "sync", f"wandb-offline:{folder}"]
    return cmd + [f"mlflow:{uri}", "--state", str(state), "--json"]


def bridge_sync(folder: Path, uri: str, state: Path) -> tuple[float, float, int]:
    """Seconds and peak RSS (MiB) of the bridge process into a pre-created store; points."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema, untimed
    seconds, rss, out = measure(bridge_cmd(folder, uri, state), "bridge sync")
    return seconds, rss, int(json.loads(out)["points_written"])


class PgDatabase:
    """A fresh database on the local PostgreSQL (like tests/conftest.py's pg_database)."""

    def __init__(self) -> None:
        import sqlalchemy as sa

        self.name = "bridge_bench_" + uuid.uuid4().hex[:12]
        self._admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = PG_BASE.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.name,),
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}"')
        self._admin.dispose()


def report(dest: str, points: int, raw: float, written: int, secs: float, rss: float) -> None:
    raw_rate, bridge_rate = points / raw, written / secs
    print(f"[{dest}] raw insert limit: {points:,} rows in {raw:.1f} s = {raw_rate:,.0f} points/s")
    print(f"[{dest}] bridge sync:      {written:,} points in {secs:.1f} s = {bridge_rate:,.0f}/s")
    print(f"[{dest}] ratio bridge/raw: {bridge_rate / raw_rate:.2f} (goal >= 0.5)")
    print(f"[{dest}] bridge peak RSS:  {rss:.0f} MiB")
    print(f"[{dest}] load average now: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


def profile(folder: Path, work: Path, out: Path, pg: bool) -> None:
    """One sync (sqlite, or PostgreSQL with ``pg``) under py-spy (all threads, 200 Hz, idle
    samples included with ``pg``: waits on the server show); prints the top inclusive items."""
    from mlflow.tracking import MlflowClient

    db = PgDatabase() if pg else None
    uri = db.url if db is not None else f"sqlite:///{work / 'profile.db'}"
    try:
        MlflowClient(tracking_uri=uri).search_experiments()
        cmd = ["py-spy", "record", *(["--idle"] if pg else []), "--format", "raw", "-r", "200"]
        cmd += ["-o", str(out), "--"]
        subprocess.run(cmd + bridge_cmd(folder, uri, work / "profile-state.db"), check=True)
    finally:
        if db is not None:
            db.drop()
    summarize(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL (127.0.0.1:5432)")
    parser.add_argument("--pg-only", action="store_true", help="PostgreSQL, not sqlite")
    parser.add_argument(
        "--source", type=Path, help="keep the W&B run under this folder and reuse it next time"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy one sync (sqlite; with --pg PostgreSQL) into this file"
    )
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    points = args.points // args.metrics * args.metrics
    with tempfile.TemporaryDirectory(prefix="bridge-p1-") as tmp:
        work = Path(tmp)
        folder = source_run(args.source or work, points, args.metrics)
        if args.profile:
            profile(folder, work, args.profile, args.pg)
            return
        print(f"load average at start: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if not args.pg_only:
            raw = raw_sqlite(work / "raw.db", points, args.metrics)
            uri = f"sqlite:///{work / 'bridge.db'}"
            secs, rss, written = bridge_sync(folder, uri, work / "state.db")
            report("sqlite", points, raw, written, secs, rss)
        if args.pg or args.pg_only:
            raw_db, bridge_db = PgDatabase(), PgDatabase()
            try:
                raw = raw_pg(raw_db.url, points, args.metrics)
                secs, rss, written = bridge_sync(folder, bridge_db.url, work / "pg-state.db")
                report("postgresql", points, raw, written, secs, rss)
            finally:
                raw_db.drop()
                bridge_db.drop()


if __name__ == "__main__":
    main()
