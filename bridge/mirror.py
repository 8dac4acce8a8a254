"""`bridge mirror`: run sync cycles for one or more pairs on a fixed period, in the foreground.

Made for a container or a systemd service: one process, logs on stdout (one line per pair
and cycle; ``json`` for log shippers), SIGTERM/SIGINT finish the cycle under way and exit.
A cycle is exactly `bridge sync` with the same state store: the pair's lock, the cycle
record, the same exit codes. A failing pair is logged and retried next cycle; the loop
never stops on it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bridge.config_file import MirrorConfig, PairConfig
from bridge.cycles import plan_counts, plan_errors
from bridge.display import for_terminal
from bridge.engine.shards import ShardSpec
from bridge.errors import EXIT_CONFLICT, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, BridgeError
from bridge.locks import pair_key
from bridge.redact import redact, redact_fields

Emit = Callable[[dict[str, Any]], None]

# Worst first: what `mirror --cycles N` exits with when pairs disagree.
_SEVERITY = [EXIT_USAGE, EXIT_RUN_FAILED, EXIT_CONFLICT, EXIT_OK]


def worst(codes: list[int]) -> int:
    for code in _SEVERITY:
        if code in codes:
            return code
    return EXIT_OK


def shard_pairs(pairs: list[PairConfig], shard: ShardSpec) -> list[PairConfig]:
    """``mirror --config --shard I/N``: the pairs worker I runs, by the stable hash of each
    pair's key as written in the config (``SOURCE -> DEST``, bridge/locks.py)."""
    return [p for p in pairs if shard.owns(pair_key(p.source, p.dest))]


def run_pair(config: MirrorConfig, pair: PairConfig) -> dict[str, Any]:
    """One cycle of one pair; never raises (errors become the log line's ``error``).

    The line names the pair by its display URIs and carries no credential: the config's
    ``${VAR}`` expansions and backends' error messages pass :func:`bridge.redact.redact`."""
    from bridge import api

    started = time.time()
    line: dict[str, Any] = {"pair": pair.label, "source": pair.source, "dest": pair.dest}
    try:
        plan = api.sync(
            pair.source,
            pair.dest,
            state=config.state,
            full=pair.full,
            workers=pair.workers,
            on_conflict=pair.on_conflict,
            on_delete=pair.on_delete,
            reader_options=pair.reader_options(),
            wait=config.wait,
            mapping=pair.mapping,
            two_way=pair.two_way,
            accept_missing_content=pair.accept_missing_content,
        )
    except BridgeError as exc:
        line.update(result=exc.exit_code, error=str(exc))
    except Exception as exc:  # a bug or an unexpected backend error: log, go on
        line.update(result=EXIT_RUN_FAILED, error=f"{type(exc).__name__}: {exc}"[:500])
    else:
        line.update(source=plan.source, dest=plan.dest, result=plan.exit_code())
        if plan.skipped:
            line["skipped"] = plan.skipped
        else:
            line.update(plan_counts(plan), errors=plan_errors(plan))
            line["open_conflicts"] = [c.model_dump(exclude={"resolution"}) for c in plan.conflicts]
    line["started_at"] = _iso(started)
    line["duration_s"] = round(time.time() - started, 3)
    return redact_fields(line)


def mirror(
    config: MirrorConfig,
    *,
    cycles: int | None = None,
    emit: Emit | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run cycles every ``config.every`` seconds (``cycles`` of them, or until ``stop``).

    Returns the worst exit code of the last cycle (so ``--cycles 1`` behaves like sync).
    """
    stop = stop or threading.Event()
    emit = emit or (lambda line: None)
    done = 0
    last: list[int] = []
    next_start = time.monotonic()
    while not stop.is_set():
        next_start += config.every
        last = []
        for pair in config.pairs:
            line = run_pair(config, pair)
            line["cycle"] = done + 1
            emit(line)
            last.append(int(line["result"]))
            if stop.is_set():
                break
        done += 1
        if cycles is not None and done >= cycles:
            break
        stop.wait(max(0.0, next_start - time.monotonic()))
    return worst(last)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM (docker stop, systemd) and SIGINT end the loop after the current cycle."""

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def format_line(line: dict[str, Any], fmt: str) -> str:
    """One log line per pair and cycle: JSON for shippers, or a short human line.

    Either way one line with no raw control character (JSON escapes them itself, and every
    non-ASCII character with ``ensure_ascii``)."""
    if fmt == "json":
        return redact(json.dumps(line, default=str, sort_keys=True, ensure_ascii=True))
    head = for_terminal(f"{line['started_at']} cycle {line['cycle']} {redact(line['pair'])}:")
    if "error" in line:
        return f"{head} error (exit {line['result']}): {for_terminal(redact(line['error']))}"
    if "skipped" in line:
        return f"{head} skipped: {for_terminal(line['skipped'])}"
    acts = ", ".join(f"{n} {a}" for a, n in sorted(line["actions"].items())) or "no runs"
    return (
        f"{head} exit {line['result']}; {acts}; {line['points_written']} points, "
        f"{line['files_written']} files written; {line['conflicts']} open conflicts, "
        f"{line['resolved']} settled; {line['duration_s']}s"
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
