"""A long offline run's history parsed in a child process, beside the writer.

Parsing a ``.wandb`` log (and folding its summary, offline_body.py) is Python work that
holds the GIL, as does most of what a writer does between its database calls: on a thread
the two take turns on one core (a 2M-point sync ran at 29 s of CPU in 31 s). A child
process parses on the other core; the parent only unpickles the columns it sends.

The child is ``python -m`` this module: it gets the run's history inputs (locator, start
time, results or that they are pending) pickled on stdin and writes pickled batches of
items, then the folded results, on its own pipe (stdout is pointed at stderr first, so
nothing a library prints can corrupt the stream). Runs under
``BRIDGE_HISTORY_PROCESS_RECORDS`` records (default 200,000; ``off`` never) are read in
the parent: a process start costs ~0.3 s. The parent kills the child when the consumer
stops early; a child killed with the parent dies on its next write (broken pipe).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bridge.adapters.wandb.offline_history import history_items
from bridge.errors import BridgeError, RunError
from bridge.schema import ExtraValue, HistoryItem, MetricChunk, Run

THRESHOLD_ENV = "BRIDGE_HISTORY_PROCESS_RECORDS"
DEFAULT_THRESHOLD = 200_000
BATCH_ITEMS = 16
_INPUTS = {"header", "name", "start_time_ms", "results", "results_pending"}


def wanted(run: Run) -> bool:
    """Whether this run's history is worth a process: records over the threshold and a
    second core to parse on."""
    setting = os.environ.get(THRESHOLD_ENV, "").strip().lower()
    if setting == "off" or (os.cpu_count() or 1) < 2:
        return False
    try:
        threshold = int(setting) if setting else DEFAULT_THRESHOLD
    except ValueError:
        raise BridgeError(
            f"{THRESHOLD_ENV}={setting!r}: give a number of records (or 'off'), "
            f"e.g. {DEFAULT_THRESHOLD}"
        ) from None
    parts = run.header.locator.get("parts", [])
    return sum(int(p.get("records") or 0) for p in parts) >= threshold


def history_in_process(run: Run, restore_bridge: bool) -> Iterator[HistoryItem]:
    """:func:`history_items` of ``run`` from a child process; sets ``run.results`` when
    they were pending, as the in-process pass does."""
    request = pickle.dumps((run.model_dump(include=_INPUTS), restore_bridge), protocol=5)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=_child_env(),
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(request)
            proc.stdin.close()
            while True:
                try:
                    kind, body = pickle.load(proc.stdout)
                except EOFError:
                    code = proc.wait()
                    raise RunError(
                        f"{run.header.source_id}: the history reader process ended early "
                        f"(exit code {code}){_tail(errors)}"
                    ) from None
                if kind == "items":
                    for item in body:
                        if isinstance(item, tuple):
                            key, steps, stamps, values = item
                            yield MetricChunk.model_construct(
                                key=key, steps=steps, timestamps=stamps, values=values
                            )
                        else:
                            yield ExtraValue.model_validate(item)
                elif kind == "done":
                    if run.results_pending:
                        run.results, run.results_pending = body, False
                    return
                else:
                    raise RunError(f"{run.header.source_id}: reading history: {body}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()


def _child_env() -> dict[str, str]:
    """The parent's environment, with this very ``bridge`` package first on the path (the
    parent may have found it through a path of its own, not an installed package)."""
    root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _tail(errors: IO[bytes]) -> str:
    errors.seek(0)
    lines = errors.read().decode("utf-8", "replace").strip().splitlines()
    return f": {lines[-1]}" if lines else ""


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    fields, restore_bridge = pickle.load(inp)
    run = Run.model_validate(fields)
    batch: list[Any] = []
    try:
        for item in history_items(run, restore_bridge):
            if isinstance(item, MetricChunk):
                batch.append((item.key, item.steps, item.timestamps, item.values))
            else:
                batch.append(item.model_dump())
            if len(batch) >= BATCH_ITEMS:
                pickle.dump(("items", batch), out, protocol=5)
                batch = []
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        pickle.dump(("items", batch), out, protocol=5)
        pickle.dump(("error", f"{type(exc).__name__}: {exc}"), out, protocol=5)
        return
    pickle.dump(("items", batch), out, protocol=5)
    pickle.dump(("done", run.results), out, protocol=5)


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the stream
    try:
        _serve(sys.stdin.buffer, out)
        out.flush()
    except BrokenPipeError:  # the parent stopped reading (or died): nothing to do
        os._exit(1)


if __name__ == "__main__":
    main()
