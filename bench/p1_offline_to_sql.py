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

Prints points/s of both, the ratio bridge/raw (goal ≥ 0.5) and the bridge's peak RSS.
``--profile OUT`` instead records one sqlite sync under py-spy (``pip install py-spy``)
into OUT (collapsed stacks) and prints the top items by inclusive share of samples.

    python bench/p1_offline_to_sql.py [--points 2000000] [--metrics 5] [--pg]
    python bench/p1_offline_to_sql.py --points 1000000 --profile /tmp/p1.txt

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
"""

from __future__ import annotations

import argparse
import json
import os
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


def profile(folder: Path, work: Path, out: Path) -> None:
    """One sqlite sync under py-spy (all threads, 200 Hz); prints the top inclusive items."""
    uri = f"sqlite:///{work / 'profile.db'}"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()
    cmd = ["py-spy", "record", "--format", "raw", "-r", "200", "-o", str(out), "--"]
    subprocess.run(cmd + bridge_cmd(folder, uri, work / "profile-state.db"), check=True)
    summarize(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL (127.0.0.1:5432)")
    parser.add_argument("--profile", type=Path, help="py-spy one sqlite sync into this file")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    points = args.points // args.metrics * args.metrics
    with tempfile.TemporaryDirectory(prefix="bridge-p1-") as tmp:
        work = Path(tmp)
        folder = make_run(work / "wandb-big", points, args.metrics)
        if args.profile:
            profile(folder, work, args.profile)
            return
        raw = raw_sqlite(work / "raw.db", points, args.metrics)
        uri = f"sqlite:///{work / 'bridge.db'}"
        secs, rss, written = bridge_sync(folder, uri, work / "state.db")
        report("sqlite", points, raw, written, secs, rss)
        if args.pg:
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
