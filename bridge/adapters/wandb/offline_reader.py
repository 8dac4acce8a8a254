"""``wandb-offline:DIR`` — read W&B offline run folders (``offline-run-*`` / ``run-*``).

The SDK's offline runs hold everything in one ``.wandb`` transaction log per folder plus
``files/`` (console log, media). A resumed run (``wandb.init(id=..., resume="allow")``)
leaves one folder per process; they are merged into one run, logs read in time order.
Artifact content is not in the run folder but in the SDK staging dir that the manifest
entries' ``local_path`` names. A run the bridge itself wrote (config ``_bridge.source_id``)
reads as the run it was given: source steps, times, status and tags (see ``bridged``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bridge.adapters.base import Reader, ReaderOptions
from bridge.adapters.wandb import history_process
from bridge.adapters.wandb.bridged import layout_of, restore_run
from bridge.adapters.wandb.history import absolute_folder_target
from bridge.adapters.wandb.ids import project_source_id, run_source_id
from bridge.adapters.wandb.offline_body import RunState
from bridge.adapters.wandb.offline_folders import (
    FOLDER_RE,
    ConcatFile,
    fingerprint,
    is_run_folder,
    log_of,
    run_id_of,
    since_ms,
)
from bridge.adapters.wandb.offline_history import history_items
from bridge.adapters.wandb.offline_records import ts_ms
from bridge.adapters.wandb.txlog import TxlogReader
from bridge.errors import BridgeError, NothingToImport, RunError
from bridge.schema import (
    FileRef,
    HistoryItem,
    Project,
    Run,
    RunHeader,
)

__all__ = ["WandbOfflineReader", "run_id_of"]

LIST_RECORDS = 32  # the run record is the 2nd record; allow some slack
DEFAULT_PROJECT = "uncategorized"  # what W&B names a project nobody named


class WandbOfflineReader(Reader):
    """Reads W&B offline run folders without the network or the SDK's sync."""

    scheme = "wandb-offline"

    @classmethod
    def normalize_target(cls, target: str) -> str:
        return absolute_folder_target(target)

    def __init__(
        self, target: str, options: ReaderOptions | None = None, *, restore_bridge: bool = True
    ) -> None:
        super().__init__(target, options)
        self.root = Path(target).expanduser()
        #: Read runs the bridge wrote as the runs it was given (see ``bridged``); False
        #: shows the raw layout (``_bridge.*`` config, row-counter steps), as the writer needs.
        self.restore_bridge = restore_bridge

    # ---- discovery -------------------------------------------------------------------

    def _folders(self) -> list[Path]:
        root = self.root
        if is_run_folder(root) or (root.is_dir() and log_of(root) and run_id_of(root)):
            return [root]
        found: list[Path] = []
        for base in (root, root / "wandb"):
            if base.is_dir():
                found.extend(p for p in sorted(base.iterdir()) if is_run_folder(p))
            if found:
                break
        return found

    def check(self) -> None:
        root = self.root
        if not root.exists():
            raise BridgeError(
                f"wandb-offline: {root} does not exist; point it at a wandb/ folder "
                "or one offline-run-* folder"
            )
        if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
            raise BridgeError(
                f"wandb-offline: {root} is not a readable folder; check the path and its permissions"
            )
        if not self._folders():
            raise BridgeError(
                f"wandb-offline: no offline-run-*/run-* folders in {root}; point it at the "
                "wandb/ folder the SDK wrote (WANDB_DIR/wandb)"
            )

    def _scan_part(self, folder: Path) -> dict[str, Any] | None:
        """The cheap facts of one folder: its log and the run record near the log's start."""
        log = log_of(folder)
        if log is None:
            return None
        part: dict[str, Any] = {"folder": str(folder), "log": str(log), "run": None}
        reader = TxlogReader(log)
        for _, rec in reader.records(limit=LIST_RECORDS):
            if rec.WhichOneof("record_type") == "run":
                part["run"] = rec.run
                break
        stamp = FOLDER_RE.match(folder.name)
        run = part["run"]
        part["sort"] = (
            ts_ms(run.start_time) if run is not None and run.HasField("start_time") else 0,
            stamp.group(1) if stamp else "",
            folder.name,
        )
        return part

    def _entity(self, record_entity: str) -> str:
        return (
            record_entity
            or getattr(self.options, "entity", None)
            or os.environ.get("WANDB_ENTITY", "")
        )

    def list_runs(self) -> Iterator[RunHeader]:
        by_id: dict[str, list[dict[str, Any]]] = {}
        for folder in self._folders():
            part = self._scan_part(folder)
            if part is None:
                continue
            run = part["run"]
            rid = (run.run_id if run is not None else "") or run_id_of(folder) or folder.name
            by_id.setdefault(rid, []).append(part)
        wanted = set(self.options.run_ids)
        cutoff_ms = since_ms(self.options.since)
        for rid, parts in sorted(by_id.items()):
            if wanted and rid not in wanted:
                continue
            parts.sort(key=lambda p: p["sort"])
            runs = [p["run"] for p in parts if p["run"] is not None]
            first = runs[0] if runs else None
            if self.options.tags:  # a run whose tags are unknown cannot match
                all_tags = {t for r in runs for t in r.tags}
                if not all_tags.intersection(self.options.tags):
                    continue
            if cutoff_ms is not None and first is not None and first.HasField("start_time"):
                if ts_ms(first.start_time) < cutoff_ms:
                    continue
            entity = self._entity(first.entity if first is not None else "")
            project_name = (
                (first.project if first is not None else "")
                or os.environ.get("WANDB_PROJECT", "")
                or DEFAULT_PROJECT
            )
            project = Project(
                source_id=project_source_id(entity, project_name),
                name=project_name,
                entity=entity or None,
            )
            name = next((r.display_name for r in reversed(runs) if r.display_name), None)
            yield RunHeader(
                source_id=run_source_id(entity, project_name, rid),
                native_id=rid,
                project=project,
                name=name,
                fingerprint=fingerprint([Path(p["folder"]) for p in parts]),
                locator={
                    "run_id": rid,
                    "parts": [{"folder": p["folder"], "log": p["log"]} for p in parts],
                },
            )

    # ---- the run body ----------------------------------------------------------------

    def read_run(self, header: RunHeader) -> Run:
        run = self._read(header, fold_summary=True)
        assert run is not None
        return run

    def read_run_deferring_results(self, header: RunHeader) -> Run | None:
        """The body without the summary fold (the history pass folds it), except where the
        body itself needs the summary: a bridge-written run's layout, or an end time that
        only the summary's ``_runtime`` gives (None then: read_run)."""
        return self._read(header, fold_summary=False)

    def _read(self, header: RunHeader, fold_summary: bool) -> Run | None:
        parts: list[dict[str, Any]] = [dict(p) for p in header.locator.get("parts", [])]
        if not parts:
            raise RunError(f"{header.source_id}: no run folder in the locator")
        st = RunState(header, self.options, fold_summary=fold_summary)
        for part in parts:
            st.read_part(part)
        if not any(p.get("records") for p in parts):
            logs = ", ".join(p["log"] for p in parts)
            why = "; ".join(p["problem"] for p in parts if p.get("problem"))
            raise NothingToImport(f"{header.source_id}: no readable records in {logs} ({why})")
        run = st.finish(parts)
        layout = layout_of(run.config) if self.restore_bridge else None
        if not fold_summary and (
            layout is not None or (run.end_time_ms is None and run.start_time_ms is not None)
        ):
            return None
        if layout is not None:
            restore_run(run, layout)
        return run

    def iter_history(self, run: Run) -> Iterator[HistoryItem]:
        if history_process.wanted(run):  # a long log: parsed on another core
            return history_process.history_in_process(run, self.restore_bridge)
        return history_items(run, self.restore_bridge)

    def file_reference_roots(self) -> list[str] | None:
        """Offline folders are the operator's own: their ``file://`` references may be
        read, under the ``--reference-root`` folders only."""
        return list(self.options.reference_roots)

    def open_file(self, ref: FileRef) -> IO[bytes]:
        paths = ref.locator.get("abs_paths")
        if paths:
            return io.BufferedReader(ConcatFile(list(paths)))
        path = ref.locator.get("abs_path") or ref.locator.get("local_path")
        if not path:
            raise FileNotFoundError(f"{ref.path}: no local path in the file reference")
        return open(path, "rb")
