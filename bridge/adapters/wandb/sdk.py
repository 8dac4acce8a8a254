"""The wandb SDK as the writers drive it: settings for bridge-made runs, one open run,
and waiting for an offline run's log to be complete on disk."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import RunError

#: How long a writer waits for wandb-core to close an offline run's log.
LOG_CLOSE_TIMEOUT_S = 60.0


def sdk_settings(**extra: Any) -> Any:
    """SDK settings for a bridge-made run: none of the bridge process's own console, system
    metrics, code, git or package list end up in the imported run."""
    import wandb

    return wandb.Settings(
        console="off",
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        x_save_requirements=False,
        save_code=False,
        disable_git=True,
        disable_job_creation=True,
        silent=True,
        **extra,
    )


@dataclass
class LiveRun:
    """One open SDK run and what the writer tracks about it."""

    run: Any
    dest_id: str
    source_id: str
    next_step: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Rows logged in this session (``check_kept`` has something to check).
    logged: int = 0

    def log_row(self, row: dict[str, Any]) -> None:
        with self.lock:
            self.run.log(row, step=self.next_step)
            self.next_step += 1
            self.logged += 1

    def check_kept(self) -> None:
        """Raise if wandb-core dropped rows. It drops a row logged below its own step with
        only a terminal warning; after ``log(row, step=s)`` its step is ``s`` (the row
        stays open until a higher step comes), so a higher answer means rows went below it."""
        with self.lock:
            if not self.logged:
                return
            at, last = int(self.run.step), self.next_step - 1
        if at > last:
            raise RunError(
                f"W&B run {self.dest_id}: the wandb SDK dropped history rows logged at steps "
                f"up to {last} (its history is at step {at}); they were not written"
            )


def wait_for_exit_record(log: Path, timeout: float = LOG_CLOSE_TIMEOUT_S) -> bool:
    """Wait until ``log`` ends with the run's exit record.

    ``run.finish()`` returns before wandb-core has flushed and closed the transaction log
    (the stream is torn down asynchronously), so a reader right after it can see a
    header-only or partial log. The exit record is the last one written.
    """
    from bridge.adapters.wandb.txlog import TxlogReader

    deadline = time.monotonic() + timeout
    last_size = -1
    while time.monotonic() < deadline:
        size = log.stat().st_size if log.exists() else 0
        if size == last_size and size > 7:
            last = None
            for _, rec in TxlogReader(log).records():
                last = rec.WhichOneof("record_type")
            if last == "exit":
                return True
        last_size = size
        time.sleep(0.02)
    return False
