"""``wandb-offline:DIR``: W&B offline run folders under ``DIR/wandb`` for a later
``wandb sync``, written by the real SDK in offline mode.

Each ``wandb.init`` writes a real ``DIR/wandb/offline-run-*`` folder. A written folder is
not edited or removed (``wandb sync`` may have uploaded it already), and offline runs
cannot link artifacts into a registry: this writer declares neither run deletion, edits
nor models. Its own folders are read back by the bridge's offline reader, so stored points
can be read back exactly (:class:`MetricReadBack`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from bridge.adapters.base import DestRun, ReaderOptions
from bridge.adapters.features import MetricReadBack
from bridge.adapters.wandb.fields import GROUP, JOB_TYPE, WANDB
from bridge.adapters.wandb.history import absolute_folder_target
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.adapters.wandb.run_writer import WandbRunWriter
from bridge.adapters.wandb.sdk import LiveRun
from bridge.errors import BridgeError, RunError
from bridge.schema import MetricChunk


class WandbOfflineWriter(WandbRunWriter, MetricReadBack):
    """Writes offline run folders under ``DIR/wandb`` for a later ``wandb sync``."""

    scheme = "wandb-offline"
    offline = True

    @classmethod
    def normalize_target(cls, target: str) -> str:
        return absolute_folder_target(target)

    @property
    def display_uri(self) -> str:
        return f"{self.scheme}:{self._path}"

    def check(self) -> None:
        root = Path(self._path).expanduser()
        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise BridgeError(
                f"{self.display_uri}: {root} is not a writable folder; choose a writable path"
            )

    def _reader(self, run_ids: list[str] | None = None) -> WandbOfflineReader:
        return WandbOfflineReader(
            str(Path(self._path).expanduser()),
            ReaderOptions(run_ids=run_ids or []),
            restore_bridge=False,  # the writer finds and diffs its runs by their raw layout
        )

    def _read(self, project: str, run_ids: list[str] | None = None) -> Iterator[tuple[Any, Any]]:
        """(header, run) of every readable run folder set of ``project`` in DIR."""
        root = Path(self._path).expanduser()
        if not root.is_dir():
            return
        reader = self._reader(run_ids)
        for header in reader.list_runs():
            if header.project.name != project:
                continue
            try:
                yield header, reader.read_run(header)
            except RunError:
                continue

    def _offline_dest_run(self, project: str, run: Any) -> DestRun:
        fields = {
            "name": run.name,
            "notes": run.notes,
            "group": run.extra(GROUP, WANDB),
            "job_type": run.extra(JOB_TYPE, WANDB),
            "tags": run.tags,
        }
        return self._dest_run(f"{project}/{run.header.native_id}", project, run.config, fields)

    def find_runs_by_source(self, project_dest_id: str) -> dict[str, DestRun]:
        found: dict[str, DestRun] = {}
        for _, run in self._read(project_dest_id):
            dest = self._offline_dest_run(project_dest_id, run)
            if dest.source_id:
                found.setdefault(dest.source_id, dest)
        return found

    def get_run(self, dest_id: str) -> DestRun | None:
        project, run_id = self._split(dest_id)
        for _, run in self._read(project, [run_id]):
            return self._offline_dest_run(project, run)
        return None

    def metric_counts(self, dest_id: str) -> dict[str, int]:
        project, run_id = self._split(dest_id)
        counts: dict[str, int] = {}
        reader = self._reader([run_id])
        for _, run in self._read(project, [run_id]):
            step_key = self._step_key(run.config)
            for item in reader.iter_history(run):
                if isinstance(item, MetricChunk):
                    for _ in range(len(item)):
                        self._count(counts, item.key, step_key)
        return counts

    def read_metric_points(self, dest_id: str, keys: Collection[str]) -> Iterator[MetricChunk]:
        """Points of these keys as the bridge's offline reader reads the run's folders back:
        source keys, steps and timestamps restored (see ``bridged``)."""
        project, run_id = self._split(dest_id)
        root = Path(self._path).expanduser()
        if not root.is_dir():
            return
        wanted = set(keys)
        reader = WandbOfflineReader(str(root), ReaderOptions(run_ids=[run_id]))
        for header in reader.list_runs():
            if header.project.name != project:
                continue
            for item in reader.iter_history(reader.read_run(header)):
                if isinstance(item, MetricChunk) and item.key in wanted:
                    yield item

    def _log_path(self, live: LiveRun) -> Path | None:
        try:
            return Path(live.run.settings.sync_file)
        except Exception:  # noqa: BLE001 - no log to wait for
            return None

    def _offline_next_step(self, dest_id: str) -> int:
        project, run_id = self._split(dest_id)
        last = -1
        for _, run in self._read(project, [run_id]):
            step = run.results.get("_step")
            if isinstance(step, (int, float)) and math.isfinite(step):
                last = max(last, int(step))
        return last + 1
