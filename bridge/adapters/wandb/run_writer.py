"""What both W&B writers share: runs written through the real SDK (``wandb.init`` …
``finish``), offline into run folders or online to a server.

* Run id = base36(SHA-256(source id)) cut to 12 chars: a re-sync finds its run without any
  local state; ``find_runs_by_source`` rebuilds the map from config ``_bridge.source_id``.
* Config and fields: see ``layout``; history rows: see ``sink``.
* A re-sync resumes the same run id (``resume="allow"``); offline that adds a folder for
  the same id, which readers merge. Offline rows continue the ``_step`` count of earlier
  folders so ``wandb sync`` sees one increasing history; online rows continue after the
  server's last ``_step``. A row the SDK drops anyway (below its step) fails the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import IO, Any

from bridge.adapters.base import Capabilities, DestRun, Rendered, Writer
from bridge.adapters.features import MappingRules
from bridge.adapters.wandb import sdk
from bridge.adapters.wandb.bridged import SDK_FILES, SOURCE_FILES_DIR, written_step_key
from bridge.adapters.wandb.fields import EXIT_CODE, WeaveGap, run_field
from bridge.adapters.wandb.layout import (
    COMPLETE_KEY,
    FINGERPRINT_KEY,
    GROUP_TAG,
    JOB_TYPE_TAG,
    NAME_TAG,
    NOTES_TAG,
    SOURCE_ID_KEY,
    SOURCE_URI_KEY,
    TAG_PREFIX,
    Doc,
    fields_as_tags,
    render_doc,
)
from bridge.adapters.wandb.mapping import (
    AS_CONFIGURED,
    WandbMapping,
    load_wandb_mapping,
    rules_for,
)
from bridge.adapters.wandb.sdk import LiveRun
from bridge.adapters.wandb.server import api_key_for, base_url_of, first_param
from bridge.adapters.wandb.sink import WandbMetricSink, source_metric_key, stored_metric_key
from bridge.errors import BridgeError, RunError
from bridge.mapping import flatten, to_text
from bridge.paths import check_relpath, within
from bridge.schema import Project, Run, SourceId

METRICS_PER_BATCH = 10_000


class WandbRunWriter(WeaveGap, MappingRules, Writer):
    """The run-writing half both W&B writers share; subclasses add what their target can."""

    offline = False
    bookkeeping_keys = frozenset({FINGERPRINT_KEY, COMPLETE_KEY, SOURCE_URI_KEY})

    def __init__(self, target: str, mapping: WandbMapping | None = None) -> None:
        super().__init__(target)
        self.mapping = mapping or load_wandb_mapping(None)
        self._scratch: str | None = None  # see _scratch_dir
        self.capabilities = Capabilities(
            can_set_start_time=False,
            can_choose_run_id=True,
            immutable_params=False,
            stores_infinity=True,
            dedupes_metric_points=False,
            durable_flush=False,  # the SDK writes/uploads in the background
            metrics_per_batch=METRICS_PER_BATCH,
            params_per_batch=1000,
            tags_per_batch=1000,
        )
        path, _, query = target.partition("?")
        params = urllib.parse.parse_qs(query)
        self._path = path
        self._entity: str | None = first_param(params, "entity")
        self._fixed_project: str | None = first_param(params, "project")
        self._explicit_url: str | None = first_param(params, "base_url")
        self._lock = threading.Lock()
        self._init_lock = threading.Lock()
        self._live: dict[str, LiveRun] = {}
        self._pending_resume: set[str] = set()

    def load_mapping(self, path: Path) -> None:
        """Replace the default rules with the file's (``--mapping FILE``)."""
        self.mapping = load_wandb_mapping(path)

    def rules(self, source_id: str | None) -> WandbMapping:
        """The rules for a run or project by its recorded source kind (see ``rules_for``)."""
        return rules_for(self.mapping, source_id)

    # ------------------------------------------------------------------ basics

    @property
    def base_url(self) -> str:
        return base_url_of(self._explicit_url)

    def _api_key(self) -> str:
        key = api_key_for(self.base_url)
        if not key:
            raise BridgeError(
                f"{self.display_uri}: no API key for {self.base_url}; set WANDB_API_KEY or run "
                f"`wandb login --host {self.base_url}`"
            )
        return key

    def project_name(self, project: Project) -> str:
        if self._fixed_project:
            return self._fixed_project
        return self.rules(project.source_id).project_for(project.name, project.entity)

    def _project_id(self, name: str) -> str:
        return f"{self._entity}/{name}" if not self.offline else name

    def find_project(self, project: Project) -> str | None:
        """The project's id; W&B projects need no creation (``wandb.init`` makes them), so
        an absent one simply has no runs."""
        return self._project_id(self.project_name(project))

    def ensure_project(self, project: Project) -> str:
        return self._project_id(self.project_name(project))

    def _split(self, dest_id: str) -> tuple[str, str]:
        """(project name, run id) of a destination id."""
        head, _, run_id = dest_id.rpartition("/")
        return head.rpartition("/")[2], run_id

    def _dest_run(
        self, dest_id: str, project_dest_id: str, config: dict[str, Any], fields: dict[str, Any]
    ) -> DestRun:
        params = {k: to_text(v) for k, v in flatten(config) if v is not None}
        sid = config.get(SOURCE_ID_KEY)
        fingerprint = config.get(FINGERPRINT_KEY)
        return DestRun(
            dest_id=dest_id,
            project_dest_id=project_dest_id,
            source_id=sid if isinstance(sid, str) else None,
            complete=config.get(COMPLETE_KEY) is True,
            fingerprint=fingerprint if isinstance(fingerprint, str) and fingerprint else None,
            params=params,
            tags=fields_as_tags(fields),
        )

    def _step_key(self, config: dict[str, Any]) -> str:
        return written_step_key(config, self.mapping)

    def _count(self, counts: dict[str, int], key: str, step_key: str) -> None:
        if key.startswith("_") or key == step_key:
            return
        original = source_metric_key(key, step_key)
        counts[original] = counts.get(original, 0) + 1

    # ------------------------------------------------------------------ rendering

    def render(self, run: Run, parent_dest_id: str | None = None) -> Rendered:
        doc = self._render_doc(run)
        return Rendered(params=doc.params, tags=doc.tags, warnings=doc.warnings)

    def _render_doc(self, run: Run) -> Doc:
        return render_doc(run, self.rules(run.header.source_id), self.source_uri)

    def run_id(self, run: Run) -> str:
        return self.rules(run.header.source_id).run_id_for(run.header.source_id)

    # ------------------------------------------------------------------ live runs

    def _init_kwargs(self, project: str, run_id: str) -> dict[str, Any]:
        if self.offline:
            root = Path(self._path).expanduser()
            root.mkdir(parents=True, exist_ok=True)
            return {
                "mode": "offline",
                "dir": str(root),
                "project": project,
                "entity": self._entity,
                "id": run_id,
            }
        return {
            "mode": "online",
            "project": project,
            "entity": self._entity,
            "id": run_id,
            **self._scratch_dir(),
        }

    def _scratch_dir(self) -> dict[str, str]:
        """``wandb.init(dir=...)`` for online runs: the SDK's local run folders go to
        ``WANDB_DIR`` if the user set it, else to a temp folder removed on close — not to
        ``./wandb`` in the user's working directory. Always passed explicitly: the SDK reads
        its environment once per process, at the first ``wandb.init``."""
        if os.environ.get("WANDB_DIR"):
            return {"dir": os.environ["WANDB_DIR"]}
        with self._lock:
            if self._scratch is None:
                self._scratch = tempfile.mkdtemp(prefix="bridge-wandb-")
            return {"dir": self._scratch}

    def _start(self, dest_id: str, source_id: str, run: Run | None, resume: bool) -> LiveRun:
        """``wandb.init`` for one run (serialized: init is not meant to race)."""
        import wandb

        project, run_id = self._split(dest_id)
        kwargs = self._init_kwargs(project, run_id)
        extra: dict[str, Any] = {}
        if not self.offline:
            extra = {"api_key": self._api_key(), "base_url": self.base_url}
        doc = self._render_doc(run) if run is not None else None
        if run is not None and doc is not None:
            commit, remote = run.git_commit, run.git_remote
            if SourceId.parse(source_id).kind in AS_CONFIGURED:  # MLflow's own git tags
                commit = commit or run.extra_tags.get("mlflow.source.git.commit")
                remote = remote or run.extra_tags.get("mlflow.source.git.repoURL")
            if commit:
                extra["git_commit"] = commit
            if remote:
                extra["git_remote_url"] = remote
            kwargs.update(
                name=doc.tags.get(NAME_TAG),
                notes=doc.tags.get(NOTES_TAG),
                group=doc.tags.get(GROUP_TAG),
                job_type=doc.tags.get(JOB_TYPE_TAG),
            )
            if not resume:
                kwargs["tags"] = doc.wandb_tags
        config: dict[str, Any] = {SOURCE_ID_KEY: source_id, COMPLETE_KEY: False}
        if self.source_uri:
            config[SOURCE_URI_KEY] = self.source_uri
        prev_steps = self._offline_next_step(dest_id) if resume and self.offline else 0
        with self._init_lock:
            sdk_run = wandb.init(
                **kwargs,
                config=config,
                resume="allow",
                reinit="create_new",
                allow_val_change=True,
                settings=sdk.sdk_settings(**extra),
            )
        step_key = self.rules(source_id).step_key
        sdk_run.define_metric(step_key, hidden=False)
        sdk_run.define_metric("*", step_metric=step_key)
        next_step = max(int(sdk_run.starting_step), prev_steps)
        if resume and not self.offline:
            next_step = max(next_step, self._server_next_step(dest_id))
        live = LiveRun(run=sdk_run, dest_id=dest_id, source_id=source_id, next_step=next_step)
        with self._lock:
            self._live[dest_id] = live
        return live

    def _offline_next_step(self, dest_id: str) -> int:
        """Offline folders know nothing of each other: continue after the last ``_step``."""
        return 0

    def _server_next_step(self, dest_id: str) -> int:
        """Online: the step after the last one the server holds."""
        return 0

    def _get_live(self, dest_id: str, run: Run | None = None) -> LiveRun:
        with self._lock:
            live = self._live.get(dest_id)
            pending = dest_id in self._pending_resume
            if pending:
                self._pending_resume.discard(dest_id)
        if live is not None:
            return live
        if not pending:
            raise RunError(f"W&B run {dest_id} is not open in this writer (create or update it)")
        source_id = run.header.source_id if run is not None else ""
        if not source_id:
            current = self.get_run(dest_id)
            source_id = (current.source_id if current else None) or ""
        return self._start(dest_id, source_id, run, resume=True)

    # ------------------------------------------------------------------ writing

    def create_run(self, project_dest_id: str, run: Run, rendered: Rendered) -> str:
        """``wandb.init`` with the deterministic id, name, tags and the identity config."""
        dest_id = f"{project_dest_id}/{self.run_id(run)}"
        with self._lock:
            if dest_id in self._live:
                return dest_id
        self._start(dest_id, run.header.source_id, run, resume=False)
        return dest_id

    def begin_update(self, dest_id: str) -> None:
        """Resume the run (lazily, at the first write: the run body gives group and job
        type to ``wandb.init``); it opens with ``_bridge.complete`` = False."""
        with self._lock:
            if dest_id in self._live:
                self._live[dest_id].run.config.update({COMPLETE_KEY: False}, allow_val_change=True)
                return
            self._pending_resume.add(dest_id)

    def write_metadata(
        self, dest_id: str, run: Run, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        """Config keys whose flat params changed (each top-level key written whole), then
        name/notes/tags. Group and job type are set by ``wandb.init``."""
        live = self._get_live(dest_id, run)
        doc = self._render_doc(run)
        tops = {doc.owners[k] for k in params if k in doc.owners}
        if tops:
            live.run.config.update({t: doc.config[t] for t in sorted(tops)}, allow_val_change=True)
        if NAME_TAG in tags:
            live.run.name = tags[NAME_TAG]
        if NOTES_TAG in tags:
            live.run.notes = tags[NOTES_TAG]
        new = [k[len(TAG_PREFIX) :] for k in tags if k.startswith(TAG_PREFIX)]
        if new:
            have = list(live.run.tags or ())
            merged = have + [t for t in new if t not in have and 1 <= len(t) <= 64]
            if merged != have:
                live.run.tags = tuple(merged)

    def metric_sink(self, dest_id: str) -> WandbMetricSink:
        live = self._get_live(dest_id)
        step_key = self.rules(live.source_id).step_key
        return WandbMetricSink(
            live, step_key, lambda k: stored_metric_key(k, step_key), self.notices
        )

    def put_file(self, dest_id: str, path: str, stream: IO[bytes]) -> None:
        """Copy into the run's files dir and ``run.save(policy="now")`` it."""
        check_relpath(path, "file path")
        if path.split("/", 1)[0] in SDK_FILES:
            path = f"{SOURCE_FILES_DIR}{path}"
        live = self._get_live(dest_id)
        files_dir = Path(live.run.dir)
        within(files_dir, path, "file path")  # no link planted in files/ redirects it
        local = files_dir / path
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.bridge-partial")
        try:  # a stream that fails part-way (content not matching its manifest) leaves nothing
            with open(partial, "wb") as out:
                shutil.copyfileobj(stream, out, 1024 * 1024)
            partial.replace(local)
        finally:
            partial.unlink(missing_ok=True)
        live.run.save(str(local), base_path=str(files_dir), policy="now")

    def finish_run(self, dest_id: str, run: Run, fingerprint: str) -> None:
        """Non-numeric summary values, end time/status, fingerprint, then
        ``_bridge.complete`` = True last, then ``finish`` with the mapped exit code."""
        live = self._get_live(dest_id, run)
        summary = {
            k: v
            for k, v in run.results.items()
            if not k.startswith("_")
            and not isinstance(v, (int, float))
            and not (isinstance(v, dict) and "_type" in v)
        }
        if summary:
            live.run.summary.update(summary)
        final: dict[str, Any] = {"_bridge.status": run.status}
        if run.end_time_ms is not None:
            final["_bridge.end_time_ms"] = run.end_time_ms
        live.run.config.update(final, allow_val_change=True)
        live.run.config.update({FINGERPRINT_KEY: fingerprint}, allow_val_change=True)
        live.run.config.update({COMPLETE_KEY: True}, allow_val_change=True)
        code = run_field(run, EXIT_CODE)
        if code is None:
            code = self.rules(run.header.source_id).exit_codes.get(run.status, 1)
        self._finish(live, code)
        with self._lock:
            self._live.pop(dest_id, None)

    def _finish(self, live: LiveRun, exit_code: int) -> None:
        """``run.finish``; offline, also wait until the log is really complete on disk."""
        log = self._log_path(live)
        live.run.finish(exit_code=exit_code)
        if log is not None and not sdk.wait_for_exit_record(log):
            timeout = sdk.LOG_CLOSE_TIMEOUT_S
            raise RunError(f"W&B did not finish writing {log} within {timeout:.0f}s")

    def _log_path(self, live: LiveRun) -> Path | None:
        """The run's transaction log (offline only: online, finish waits for the upload)."""
        return None

    def close(self) -> None:
        """Finish runs left open by a failure (exit code 1; their ``_bridge.complete`` stays
        False, so the next sync resumes them)."""
        with self._lock:
            left = list(self._live.values())
            self._live.clear()
            self._pending_resume.clear()
        for live in left:
            try:
                self._finish(live, 1)
            except Exception:  # noqa: BLE001 - closing must not raise
                pass
        if self._scratch is not None:  # every run is finished (uploaded): nothing left to keep
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
