"""Bench: a no-op mirror cycle over N synced runs costs what changed, not what exists.

Makes an MLflow sqlite source with N small runs (default 1,000), syncs it into an empty
sqlite destination (the first cycle), then runs a second cycle with nothing changed and one
with a single new point. Prints the wall time of each cycle and how many calls each made on
the destination writer (counted by wrapping the real writer).

    python bench/mirror_noop_cycle.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bridge.adapters.base import Writer
from bridge.engine.sync import run_sync
from bridge.state import StateStore
from bridge.uris import open_reader, open_writer


class CountingWriter:
    """The real writer, with every public method call counted."""

    def __init__(self, inner: Writer) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if callable(value) and not name.startswith("_"):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                return value(*args, **kwargs)

            return counted
        return value


def make_source(uri: str, runs: int) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("noop")
    t0 = 1_600_000_000_000
    last = ""
    for r in range(runs):
        last = client.create_run(exp, start_time=t0 + r, run_name=f"r{r}").info.run_id
        client.log_batch(
            last,
            params=[Param("i", str(r))],
            metrics=[Metric("loss", 1.0 / (s + 1), t0 + s, s) for s in range(10)],
        )
        client.set_terminated(last, "FINISHED", end_time=t0 + r + 100)
    return last


def cycle(src: str, dst: str, state: StateStore) -> tuple[float, Counter[str], int]:
    reader = open_reader(f"mlflow:{src}")
    writer = CountingWriter(open_writer(f"mlflow:{dst}"))
    t0 = time.perf_counter()
    plan = run_sync(reader, writer, state, workers=4)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    reader.close()
    writer.close()
    return seconds, writer.calls, sum(r.points_written for r in plan.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        src, dst = f"sqlite:///{Path(tmp) / 'src.db'}", f"sqlite:///{Path(tmp) / 'dst.db'}"
        t0 = time.perf_counter()
        last = make_source(src, args.runs)
        print(f"source: {args.runs} runs made in {time.perf_counter() - t0:.0f} s")
        state = StateStore(str(Path(tmp) / "state.db"))
        for label in ("first sync", "no-op cycle", "one new point"):
            if label == "one new point":
                from mlflow.tracking import MlflowClient

                MlflowClient(tracking_uri=src).log_metric(last, "loss", 0.01, step=99)
            seconds, calls, points = cycle(src, dst, state)
            total = sum(calls.values())
            print(
                f"{label:<14} {seconds:7.1f} s, {points:6d} points written, "
                f"{total:6d} destination calls ({dict(calls.most_common(4))})"
            )


if __name__ == "__main__":
    main()
