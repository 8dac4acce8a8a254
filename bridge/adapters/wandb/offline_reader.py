"""``wandb-offline:DIR`` — read W&B offline run folders (``offline-run-*`` / ``run-*``).

The SDK's offline runs hold everything in one ``.wandb`` transaction log per folder plus
``files/`` (console log, media). A resumed run (``wandb.init(id=..., resume="allow")``)
leaves one folder per process; they are merged into one run, logs read in time order.
Artifact content is not in the run folder but in the SDK staging dir that the manifest
entries' ``local_path`` names. A run the bridge itself wrote (config ``_bridge.source_id``)
reads as the run it was given: source steps, times, status and tags (see ``bridged``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from bridge.adapters.base import Reader, ReaderOptions
from bridge.adapters.wandb.bridged import LOCATOR_KEY as BRIDGE_LAYOUT
from bridge.adapters.wandb.bridged import layout_of, restore_run, split_row
from bridge.adapters.wandb.history import absolute_folder_target, summary_only_points
from bridge.adapters.wandb.history import flatten as _flatten
from bridge.adapters.wandb.history import is_number as _is_number
from bridge.adapters.wandb.ids import artifact_source_id
from bridge.adapters.wandb.txlog import MAX_RECORD_ENV, TxlogReader, describe_damages, pb
from bridge.errors import BridgeError, NothingToImport, RunError
from bridge.paths import path_problem
from bridge.schema import (
    ArtifactVersion,
    ExtraValue,
    FileRef,
    HistoryItem,
    ManifestEntry,
    MetricChunk,
    Project,
    Run,
    RunHeader,
)

FOLDER_RE = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+)$")
CHUNK_POINTS = 1000
INTERNAL_KEYS = ("_step", "_timestamp", "_runtime")
LIST_RECORDS = 32  # the run record is the 2nd record; allow some slack
DEFAULT_PROJECT = "uncategorized"  # what W&B names a project nobody named


def run_id_of(folder: Path) -> str | None:
    """The run id a run folder's name carries (``offline-run-<date>_<time>-<id>``)."""
    m = FOLDER_RE.match(folder.name)
    return m.group(2) if m else None


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and FOLDER_RE.match(path.name) is not None


def _log_of(folder: Path) -> Path | None:
    """The folder's transaction log: ``run-<id>.wandb`` (or the only ``*.wandb``)."""
    rid = run_id_of(folder)
    if rid:
        named = folder / f"run-{rid}.wandb"
        if named.is_file():
            return named
    logs = sorted(folder.glob("*.wandb"))
    return logs[0] if logs else None


def _json(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json  # not JSON: keep the raw text rather than lose it


def _path(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _set_path(d: dict[str, Any], path: list[str], value: Any) -> None:
    for k in path[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {}
        d = nxt
    d[path[-1]] = value


def _del_path(d: dict[str, Any], path: list[str]) -> None:
    for k in path[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            return
        d = nxt
    d.pop(path[-1], None)


def _ts_ms(ts: Any) -> int:
    return int(ts.seconds * 1000 + ts.nanos // 1_000_000)


def _history_value(item: Any) -> Any:
    """Decoded value of a history item (``value_json`` in 0.31; typed fields in newer SDKs)."""
    if item.value_json:
        return _json(item.value_json)
    kind = item.WhichOneof("value")
    if kind is None or kind == "none":
        return None
    if kind == "json":
        return _json(item.json)
    return getattr(item, kind)


def _fast_value(item: Any) -> Any:
    """Like :func:`_history_value`, but numbers skip the JSON parser (the hot path)."""
    vj = item.value_json
    if vj:
        try:
            return float(vj) if vj[0] not in '"[{tfn' else _json(vj)
        except ValueError:
            return _json(vj)
    return _history_value(item)


def _row_meta(history: Any) -> tuple[int, int | None]:
    """(step, timestamp ms) of one history row: ``_step``/``_timestamp``, else ``step.num``."""
    step: int | None = None
    ts: int | None = None
    for item in history.item:
        nk = item.nested_key
        head = nk[0] if len(nk) == 1 else (item.key if not nk else "")
        if head == "_step" or head == "_timestamp":
            v = _history_value(item)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            if head == "_step":
                step = int(v)
            else:
                ts = int(v * 1000)
    return (int(history.step.num) if step is None else step), ts


def _since_ms(since: str | None) -> int | None:
    """``ReaderOptions.since`` (ISO date or datetime, UTC unless it says) as epoch ms."""
    if not since:
        return None
    try:
        when = datetime.fromisoformat(since)
    except ValueError as exc:
        raise BridgeError(f"--since {since!r} is not an ISO date (e.g. 2026-01-31)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def _fingerprint(folders: list[Path]) -> str:
    """Hash of (path, size, mtime) of the logs and files/: changes when anything is appended."""
    h = hashlib.sha256()
    for folder in folders:
        entries: list[Path] = [p for p in folder.glob("*.wandb") if p.is_file()]
        files_dir = folder / "files"
        if files_dir.is_dir():
            entries.extend(p for p in files_dir.rglob("*") if p.is_file())
        for p in sorted(entries):
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _stat_key(paths: list[Path], stats: list[os.stat_result]) -> str:
    """What identifies this version of a file cheaply: where it really is (symlinks that
    ``run.save`` leaves are followed), its size and mtime. A rewrite of the same size
    still moves the mtime, so the content is hashed again."""
    return "\n".join(
        f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}" for p, st in zip(paths, stats, strict=True)
    )


class _ConcatFile(io.RawIOBase):
    """Several files read as one stream (``output.log`` of a resumed run's parts)."""

    def __init__(self, paths: list[str]) -> None:
        self._paths = list(paths)
        self._fh: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while True:
            if self._fh is None:
                if not self._paths:
                    return 0
                self._fh = open(self._paths.pop(0), "rb")
            n = self._fh.readinto(buf)
            if n:
                return n
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


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
        if _is_run_folder(root) or (root.is_dir() and _log_of(root) and run_id_of(root)):
            return [root]
        found: list[Path] = []
        for base in (root, root / "wandb"):
            if base.is_dir():
                found.extend(p for p in sorted(base.iterdir()) if _is_run_folder(p))
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
        log = _log_of(folder)
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
            _ts_ms(run.start_time) if run is not None and run.HasField("start_time") else 0,
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
        since_ms = _since_ms(self.options.since)
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
            if since_ms is not None and first is not None and first.HasField("start_time"):
                if _ts_ms(first.start_time) < since_ms:
                    continue
            entity = self._entity(first.entity if first is not None else "")
            project_name = (
                (first.project if first is not None else "")
                or os.environ.get("WANDB_PROJECT", "")
                or DEFAULT_PROJECT
            )
            project = Project(
                source_id=f"wandb:{entity}/{project_name}",
                name=project_name,
                entity=entity or None,
            )
            name = next((r.display_name for r in reversed(runs) if r.display_name), None)
            yield RunHeader(
                source_id=f"wandb:{entity}/{project_name}/{rid}",
                native_id=rid,
                project=project,
                name=name,
                fingerprint=_fingerprint([Path(p["folder"]) for p in parts]),
                locator={
                    "run_id": rid,
                    "parts": [{"folder": p["folder"], "log": p["log"]} for p in parts],
                },
            )

    # ---- the run body ----------------------------------------------------------------

    def read_run(self, header: RunHeader) -> Run:
        parts: list[dict[str, Any]] = [dict(p) for p in header.locator.get("parts", [])]
        if not parts:
            raise RunError(f"{header.source_id}: no run folder in the locator")
        st = _RunState(header, self.options)
        for part in parts:
            st.read_part(part)
        if not any(p.get("records") for p in parts):
            logs = ", ".join(p["log"] for p in parts)
            why = "; ".join(p["problem"] for p in parts if p.get("problem"))
            raise NothingToImport(f"{header.source_id}: no readable records in {logs} ({why})")
        run = st.finish(parts)
        layout = layout_of(run.config) if self.restore_bridge else None
        if layout is not None:
            restore_run(run, layout)
        return run

    def iter_history(self, run: Run) -> Iterator[HistoryItem]:
        parts = [p for p in run.header.locator.get("parts", []) if p.get("records")]
        buffers: dict[str, tuple[list[int], list[int], list[float]]] = {}
        seen: set[str] = set()
        last_step = 0
        last_ts = run.start_time_ms or 0
        stats_index: dict[str, int] = {}
        layout = run.header.locator.get(BRIDGE_LAYOUT) if self.restore_bridge else None
        step_key = layout["step_key"] if layout else None
        for part in parts:
            shift = int(part.get("step_shift", 0))
            folders = [Path(part["folder"])] + [Path(p["folder"]) for p in parts]
            reader = TxlogReader(part["log"])
            for _, rec in reader.records():
                kind = rec.WhichOneof("record_type")
                if kind == "history":
                    flat: list[tuple[str, Any]] = []
                    row: dict[str, Any] | None = None
                    step: int | None = None
                    for item in rec.history.item:
                        nk = item.nested_key
                        if len(nk) > 1:  # a nested dict or a media value split by the SDK
                            if row is None:
                                row = {}
                            _set_path(row, list(nk), _history_value(item))
                            continue
                        head = nk[0] if nk else item.key
                        v = _fast_value(item)
                        if head in INTERNAL_KEYS:
                            if head == "_step" and _is_number(v):
                                step = int(v)
                            elif head == "_timestamp" and _is_number(v) and math.isfinite(v):
                                last_ts = round(v * 1000) if step_key else int(v * 1000)
                            continue
                        if isinstance(v, dict):
                            _flatten(head, v, flat)
                        else:
                            flat.append((head, v))
                    if row is not None:
                        for k, v in row.items():
                            _flatten(k, v, flat)
                    if step is None:
                        step = int(rec.history.step.num)
                    step += shift
                    if step_key is not None:  # bridge-written: the source step is a column
                        source_step, flat = split_row(flat, step_key)
                        if source_step is not None:
                            step = source_step
                    if step > last_step:
                        last_step = step
                    for key, v in flat:
                        if isinstance(v, (int, float)):
                            seen.add(key)
                            buf = buffers.get(key)
                            if buf is None:
                                buf = buffers[key] = ([], [], [])
                            buf[0].append(step)
                            buf[1].append(last_ts)
                            buf[2].append(float(v))
                            if len(buf[0]) >= CHUNK_POINTS:
                                yield MetricChunk(
                                    key=key, steps=buf[0], timestamps=buf[1], values=buf[2]
                                )
                                buffers[key] = ([], [], [])
                        else:
                            yield _extra(key, step, last_ts, v, folders)
                elif kind == "stats":
                    ts = _ts_ms(rec.stats.timestamp) if rec.stats.HasField("timestamp") else last_ts
                    for sitem in rec.stats.item:
                        v = _json(sitem.value_json)
                        if not _is_number(v):
                            continue
                        key = f"system/{sitem.key}"
                        idx = stats_index.get(key, 0)
                        stats_index[key] = idx + 1
                        buf = buffers.get(key)
                        if buf is None:
                            buf = buffers[key] = ([], [], [])
                        buf[0].append(idx)
                        buf[1].append(ts)
                        buf[2].append(float(v))
                        if len(buf[0]) >= CHUNK_POINTS:
                            yield MetricChunk(
                                key=key, steps=buf[0], timestamps=buf[1], values=buf[2]
                            )
                            buffers[key] = ([], [], [])
        for key, (steps, stamps, values) in buffers.items():
            if steps:
                yield MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)
        yield from summary_only_points(run.summary, seen, last_step, last_ts)

    def file_reference_roots(self) -> list[str] | None:
        """Offline folders are the operator's own: their ``file://`` references may be
        read, under the ``--reference-root`` folders only."""
        return list(self.options.reference_roots)

    def open_file(self, ref: FileRef) -> IO[bytes]:
        paths = ref.locator.get("abs_paths")
        if paths:
            return io.BufferedReader(_ConcatFile(list(paths)))
        path = ref.locator.get("abs_path") or ref.locator.get("local_path")
        if not path:
            raise FileNotFoundError(f"{ref.path}: no local path in the file reference")
        return open(path, "rb")


def _extra(key: str, step: int, ts: int, value: Any, folders: list[Path]) -> ExtraValue:
    """A non-numeric history value; media values point at their file under ``files/``."""
    raw = json.dumps(value, allow_nan=True, separators=(",", ":"))
    file: FileRef | None = None
    if isinstance(value, dict):
        kind = str(value.get("_type", "object"))
        media = value.get("path")
        if isinstance(media, str) and media:
            # A media path that is absolute or climbs out (``..``) is kept as named: the
            # engine refuses ``files/<path>`` by name and nothing outside is ever opened.
            locator: dict[str, Any] = {}
            if path_problem(media) is None:
                locator["abs_path"] = str(
                    next(
                        (f / "files" / media for f in folders if (f / "files" / media).is_file()),
                        folders[0] / "files" / media,
                    )
                )
            size = value.get("size")
            sha = value.get("sha256")
            file = FileRef(
                path=f"files/{media}",
                size=size if isinstance(size, int) else None,
                sha256=sha if isinstance(sha, str) else None,
                locator=locator,
            )
    elif isinstance(value, str):
        kind = "string"
    else:
        kind = "object"
    return ExtraValue(key=key, step=step, timestamp=ts, value_json=raw, kind=kind, file=file)


def _metric_def(m: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if m.name:
        d["name"] = m.name
    if m.glob_name:
        d["glob_name"] = m.glob_name
    if m.step_metric:
        d["step_metric"] = m.step_metric
    if m.HasField("options"):
        if m.options.step_sync:
            d["step_sync"] = True
        if m.options.hidden:
            d["hidden"] = True
    if m.HasField("summary"):
        aggs = [f.name for f, v in m.summary.ListFields() if v is True]
        if aggs:
            d["summary"] = aggs
    if m.goal:
        d["goal"] = pb.MetricRecord.MetricGoal.Name(m.goal).removeprefix("GOAL_").lower()
    if m.expanded_from_glob:
        d["expanded_from_glob"] = True
    return d


class _RunState:
    """Everything read_run folds together from the records of all parts of one run."""

    def __init__(self, header: RunHeader, options: ReaderOptions) -> None:
        self.header = header
        self.options = options
        self.run_rec: Any | None = None
        self.run_recs: list[Any] = []
        self.config: dict[str, Any] = {}
        self.wandb_config: dict[str, Any] = {}
        # Summary writes by key path, raw JSON, in last-write order: decoded once at the end.
        self.summary_raw: dict[tuple[str, ...], str] = {}
        self.metrics: dict[tuple[str, str], dict[str, Any]] = {}
        self.record_files: dict[str, Path] = {}
        self.artifacts: list[ArtifactVersion] = []
        self.exit_code: int | None = None
        self.exit_seen_last = False
        self.env: dict[str, str] = {}
        self.user: str | None = None
        self.start_ms: int | None = None
        self.last_ms: int | None = None
        self.runtime_end: int | None = None
        self.incomplete: list[str] = []
        self.refused: list[str] = []  # records over the size cap: a loss, named
        self.warnings: list[str] = []
        self.max_step: int | None = None

    def _time(self, ms: int) -> None:
        if self.last_ms is None or ms > self.last_ms:
            self.last_ms = ms

    def read_part(self, part: dict[str, Any]) -> None:
        folder = Path(part["folder"])
        reader = TxlogReader(part["log"])
        part_start: int | None = None
        first_hist: Any = None
        last_hist: Any = None
        part_exit: int | None = None
        part_runtime = 0.0
        for _, rec in reader.records():
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                # Only the first and last rows matter here (step range, end time): keep
                # references instead of decoding every row; iter_history decodes them.
                if first_hist is None:
                    first_hist = rec.history
                last_hist = rec.history
            elif kind == "summary":
                raw = self.summary_raw
                for u in rec.summary.update:
                    nk = u.nested_key
                    key = tuple(nk) if nk else (u.key,)
                    if key in raw:  # move to the end: the replay order is the write order
                        del raw[key]
                    raw[key] = u.value_json
                for r in rec.summary.remove:
                    self._summary_remove(_path(r))
            elif kind == "config":
                self._config(rec.config)
            elif kind == "stats":
                if rec.stats.HasField("timestamp"):
                    self._time(_ts_ms(rec.stats.timestamp))
            elif kind == "output_raw" or kind == "output":
                out = rec.output_raw if kind == "output_raw" else rec.output
                if out.HasField("timestamp"):
                    self._time(_ts_ms(out.timestamp))
            elif kind == "run":
                self._run(rec.run)
                if rec.run.HasField("start_time"):
                    part_start = _ts_ms(rec.run.start_time)
            elif kind == "environment":
                self._environment(rec.environment)
            elif kind == "metric":
                d = _metric_def(rec.metric)
                ident = (rec.metric.name, rec.metric.glob_name)
                self.metrics.setdefault(ident, {}).update(d)
            elif kind == "files":
                for f in rec.files.files:
                    self.record_files[f.path] = folder
            elif kind == "artifact":
                self.artifacts.append(self._artifact(rec.artifact, "logged"))
            elif kind == "use_artifact":
                ua = rec.use_artifact
                self.artifacts.append(
                    ArtifactVersion(name=ua.name, type=ua.type, direction="used", digest=None)
                )
            elif kind == "exit":
                part_exit = int(rec.exit.exit_code)
                part_runtime = float(rec.exit.runtime)
        part["records"] = reader.count
        first_step = last_step = None
        if first_hist is not None and last_hist is not None:
            first_step = _row_meta(first_hist)[0]
            last_step, last_ts = _row_meta(last_hist)
            if last_ts is not None:
                self._time(last_ts)
        if reader.damages:
            self.incomplete.append(describe_damages(reader.damages))
            self.refused.extend(
                f"{d} — raise {MAX_RECORD_ENV} to read it"
                for d in reader.damages
                if MAX_RECORD_ENV in d.reason
            )
        if reader.count == 0:
            part["problem"] = (
                describe_damages(reader.damages)
                if reader.damages
                else f"{part['log']}: header-only log (the process died before writing records)"
            )
            self.warnings.append(f"skipped {part['problem']}")
            self.exit_code = None  # the latest process of this run died without a word
            return
        # A resumed part whose steps restart below the previous part's: online W&B would
        # have continued after the last step, so shift this part's steps the same way.
        if first_step is not None:
            if self.max_step is not None and first_step <= self.max_step:
                part["step_shift"] = self.max_step + 1 - first_step
                self.warnings.append(
                    f"{part['folder']}: steps restart at {first_step} after step "
                    f"{self.max_step}; shifted by {part['step_shift']}"
                )
            if last_step is not None:
                shifted = last_step + int(part.get("step_shift", 0))
                self.max_step = shifted if self.max_step is None else max(self.max_step, shifted)
        self.exit_code = part_exit
        if part_start is not None and part_runtime > 0:
            end = part_start + int(part_runtime * 1000)
            self.runtime_end = max(self.runtime_end or 0, end)

    def _config(self, cfg: Any) -> None:
        for u in cfg.update:
            path = _path(u)
            target = self.wandb_config if path[0] == "_wandb" else self.config
            if path[0] == "_wandb":
                path = path[1:] or ["_"]
            _set_path(target, path, _json(u.value_json))
        for r in cfg.remove:
            _del_path(self.config, _path(r))

    def _run(self, run: Any) -> None:
        self.run_recs.append(run)
        if self.run_rec is None:
            self.run_rec = run
        if run.HasField("start_time"):
            ms = _ts_ms(run.start_time)
            self.start_ms = ms if self.start_ms is None else min(self.start_ms, ms)
        self._config(run.config)
        for u in run.summary.update:
            key = tuple(_path(u))
            self.summary_raw.pop(key, None)
            self.summary_raw[key] = u.value_json

    def _summary_remove(self, path: list[str]) -> None:
        n = len(path)
        for key in [k for k in self.summary_raw if list(k[:n]) == path]:
            del self.summary_raw[key]

    def _environment(self, env: Any) -> None:
        for field, tag in (
            ("os", "wandb.os"),
            ("python", "wandb.python"),
            ("program", "wandb.program"),
            ("code_path", "wandb.code_path"),
            ("executable", "wandb.executable"),
        ):
            v = getattr(env, field)
            if v:
                self.env[tag] = v
        if env.username:
            self.user = env.username
        if env.HasField("git"):
            if env.git.remote_url:
                self.env["_git_remote"] = env.git.remote_url
            if env.git.commit:
                self.env["_git_commit"] = env.git.commit

    def _artifact(self, a: Any, direction: str) -> ArtifactVersion:
        entries: list[ManifestEntry] = []
        for c in a.manifest.contents:
            local = c.local_path or None
            if local and not Path(local).is_file():
                moved = self._staged(local)
                if moved is not None:
                    local = str(moved)
                else:
                    self.warnings.append(
                        f"artifact {a.name}: content of {c.path} missing at {local}"
                        + (
                            f" and under {self.options.staging_dir}"
                            if self.options.staging_dir
                            else ""
                        )
                    )
            extra: dict[str, Any] = {}
            if c.mimetype:
                extra["mimetype"] = c.mimetype
            if c.birth_artifact_id:
                extra["birth_artifact_id"] = c.birth_artifact_id
            if len(c.extra):
                extra["extra"] = {e.key: _json(e.value_json) for e in c.extra}
            entries.append(
                ManifestEntry(
                    path=c.path,
                    digest=c.digest or None,
                    size=int(c.size) if c.size or not c.ref else None,
                    ref=c.ref or None,
                    local_path=local,
                    extra=extra,
                )
            )
        meta = _json(a.metadata) if a.metadata else {}
        project = self.header.project
        digest = a.digest or None
        return ArtifactVersion(
            name=a.name,
            type=a.type,
            digest=digest,
            description=a.description or None,
            aliases=list(a.aliases),  # as recorded ("latest" included); no vN offline
            metadata=meta if isinstance(meta, dict) else {"value": meta},
            manifest=entries,
            direction="logged" if direction == "logged" else "used",
            # The same identity the API reader gives this version once it is uploaded.
            source_id=(
                artifact_source_id(project.entity or "", project.name, a.name, digest)
                if digest
                else None
            ),
            producer_source_id=self.header.source_id if direction == "logged" else None,
        )

    def _staged(self, local: str) -> Path | None:
        """Find a staging file under ``options.staging_dir`` (same layout below the root)."""
        root = self.options.staging_dir
        if not root:
            return None
        norm = local.replace("\\", "/")
        marker = "/artifacts/staging/"
        rel = norm.split(marker, 1)[1] if marker in norm else Path(norm).name
        if path_problem(rel) is not None:  # never look outside the named staging folder
            return None
        for cand in (Path(root) / rel, Path(root) / "artifacts" / "staging" / rel):
            if cand.is_file():
                return cand
        return None

    def _files(self, parts: list[dict[str, Any]]) -> list[FileRef]:
        """Everything under each part's ``files/``; later parts win, console logs concatenate."""
        found: dict[str, list[Path]] = {}
        for part in parts:
            files_dir = Path(part["folder"]) / "files"
            if not files_dir.is_dir():
                continue
            for p in sorted(files_dir.rglob("*")):
                if p.is_file():
                    rel = p.relative_to(files_dir).as_posix()
                    found.setdefault(rel, []).append(p)
        for rel, folder in self.record_files.items():
            if rel not in found:
                self.warnings.append(f"file {rel} named by the log is missing in {folder}/files")
        refs: list[FileRef] = []
        for rel, paths in sorted(found.items()):
            if rel == "output.log" and len(paths) > 1:
                stats = [p.stat() for p in paths]
                refs.append(
                    FileRef(
                        path=f"files/{rel}",
                        size=sum(st.st_size for st in stats),
                        stat_key=_stat_key(paths, stats),
                        locator={"abs_paths": [str(p) for p in paths]},
                    )
                )
            else:
                p = paths[-1]
                st = p.stat()
                refs.append(
                    FileRef(
                        path=f"files/{rel}",
                        size=st.st_size,
                        stat_key=_stat_key([p], [st]),
                        locator={"abs_path": str(p)},
                    )
                )
        return refs

    def finish(self, parts: list[dict[str, Any]]) -> Run:
        recs = self.run_recs

        def latest(attr: str) -> str | None:
            return next((getattr(r, attr) for r in reversed(recs) if getattr(r, attr)), None)

        tags: list[str] = []
        for r in recs:
            tags.extend(t for t in r.tags if t not in tags)
        git_remote = next((r.git.remote_url for r in recs if r.git.remote_url), None)
        git_commit = next((r.git.commit for r in reversed(recs) if r.git.commit), None)
        extra_tags = {k: v for k, v in self.env.items() if not k.startswith("_")}
        cli = next((r.telemetry.cli_version for r in recs if r.telemetry.cli_version), None)
        if cli:
            extra_tags["wandb.cli_version"] = cli
        sweep = latest("sweep_id")
        if sweep:
            extra_tags["wandb.sweep_id"] = sweep
        read_parts = [p for p in parts if p.get("records")]
        if len(read_parts) > 1:
            extra_tags["wandb.resumed_parts"] = str(len(read_parts))
        summary: dict[str, Any] = {}
        for key, value_json in self.summary_raw.items():
            if key[0] != "_wandb":
                _set_path(summary, list(key), _json(value_json))
        runtime = summary.get("_runtime")
        end_ms = self.last_ms
        if self.runtime_end is not None:
            end_ms = max(end_ms or 0, self.runtime_end)
        if end_ms is None and self.start_ms is not None and isinstance(runtime, (int, float)):
            end_ms = self.start_ms + int(float(runtime) * 1000)
        status: str
        reason: str | None = None
        if self.exit_code is None:
            status = "FAILED"
            reason = "no exit record in the log (process killed or log cut)"
        else:
            status = "FINISHED" if self.exit_code == 0 else "FAILED"
        new_header = self.header.model_copy(
            update={"locator": {**self.header.locator, "parts": parts}}
        )
        return Run(
            header=new_header,
            name=latest("display_name") or self.header.name,
            user=self.user,
            notes=latest("notes"),
            tags=tags,
            group=latest("run_group"),
            job_type=latest("job_type"),
            host=latest("host") or None,
            git_remote=git_remote or self.env.get("_git_remote"),
            git_commit=git_commit or self.env.get("_git_commit"),
            start_time_ms=self.start_ms,
            end_time_ms=end_ms,
            status=status,  # type: ignore[arg-type]
            status_reason=reason,
            exit_code=self.exit_code,
            config=self.config,
            summary=summary,
            metric_definitions=list(self.metrics.values()),
            files=self._files(parts),
            artifacts=self.artifacts,
            extra_tags=extra_tags,
            incomplete_reason="; ".join(self.incomplete) or None,
            refused=self.refused,
            warnings=self.warnings,
        )
