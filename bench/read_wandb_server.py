"""Bench: reading a 1,000,000-point run from a W&B server, parquet exports vs scan_history.

Makes one W&B offline run with the real SDK, loads it into the loopback W&B server from
tests/fakes (the real `wandb.Api` talks to it over HTTP), and times `WandbApiReader.
iter_history` twice: once with the whole history in parquet exports (the reader's preferred
path), once with no export so everything comes through `scan_history` pages.

    python bench/read_wandb_server.py [--points 1000000] [--metrics 5]

2026-12-07, 200,000 points, load average ~30 on 2 cores: before 2b8fba8 (row-wise parquet
reader, loopback server computing every Run field for each field asked and reading the
whole run for each history page) exports 20.8 s, scan_history 66.8 s; after, exports 5.4 s
(36,723 points/s), scan_history 17.4 s (11,503 points/s). Most of the gain is the server's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def read_all(url: str, exported_rows: int | None, server: object, run: object) -> tuple[int, float]:
    from bridge.adapters.base import ReaderOptions
    from bridge.adapters.wandb.api_reader import WandbApiReader
    from bridge.schema import MetricChunk

    run.exported_rows = exported_rows  # type: ignore[attr-defined]
    reader = WandbApiReader(f"acme/bench?base_url={url}", ReaderOptions())
    try:
        (header,) = list(reader.list_runs())
        body = reader.read_run(header)
        t0 = time.perf_counter()
        points = sum(len(c) for c in reader.iter_history(body) if isinstance(c, MetricChunk))
        return points, time.perf_counter() - t0
    finally:
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--metrics", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")

    from fakes.wandb_server import FakeWandbServer
    from sdk_runs import make_big_run

    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        os.environ["WANDB_CACHE_DIR"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        folder = make_big_run(Path(tmp) / "big", args.points, n_metrics=args.metrics)
        print(f"made W&B offline run: {args.points:,} points in {time.perf_counter() - t0:.1f} s")
        with FakeWandbServer() as server:
            t0 = time.perf_counter()
            run = server.load_offline_run(folder)
            print(f"loaded into the loopback server in {time.perf_counter() - t0:.1f} s")
            os.environ["WANDB_API_KEY"] = server.api_key
            for label, exported in (("parquet exports", None), ("scan_history", 0)):
                points, secs = read_all(server.url, exported, server, run)
                print(
                    f"{label:<16} {points:,} points in {secs:.1f} s = {points / secs:,.0f} points/s"
                )


if __name__ == "__main__":
    main()
