"""One offline run's body folded from the records of all its folders (a resumed run
leaves one per process): fields, config, summary, status, end time, files, artifacts.

The summary is most of a long run's records (the SDK writes two per logged step) and its
fold most of the time spent reading the body: a plan that does not need it (a new copy)
reads the body without it (``fold_summary=False``) and the history pass folds it
(offline_history.py), so the log is parsed once before the first point is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.fields import wandb_extras
from bridge.adapters.wandb.offline_content import artifact_of, files_of
from bridge.adapters.wandb.offline_records import (
    del_path,
    json_value,
    metric_def,
    path_of,
    row_meta,
    set_path,
    ts_ms,
)
from bridge.adapters.wandb.txlog import MAX_RECORD_ENV, TxlogReader, describe_damages
from bridge.schema import (
    ArtifactVersion,
    Run,
    RunHeader,
)


class SummaryFold:
    """The run summary from its update/remove records, replayed in write order."""

    def __init__(self) -> None:
        # Summary writes by key path, raw JSON, in last-write order: decoded once at the end.
        self.raw: dict[tuple[str, ...], str] = {}

    def summary(self, rec: Any) -> None:
        """One ``SummaryRecord``."""
        raw = self.raw
        for u in rec.update:
            nk = u.nested_key
            key = tuple(nk) if nk else (u.key,)
            if key in raw:  # move to the end: the replay order is the write order
                del raw[key]
            raw[key] = u.value_json
        for r in rec.remove:
            path = path_of(r)
            n = len(path)
            for key in [k for k in raw if list(k[:n]) == path]:
                del raw[key]

    def run(self, run: Any) -> None:
        """The summary a ``RunRecord`` carries (a resumed run's starting summary)."""
        for u in run.summary.update:
            key = tuple(path_of(u))
            self.raw.pop(key, None)
            self.raw[key] = u.value_json

    def result(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for key, value_json in self.raw.items():
            if key[0] != "_wandb":
                set_path(summary, list(key), json_value(value_json))
        return summary


class RunState:
    """Everything read_run folds together from the records of all parts of one run."""

    def __init__(
        self, header: RunHeader, options: ReaderOptions, *, fold_summary: bool = True
    ) -> None:
        self.header = header
        self.options = options
        self.run_rec: Any | None = None
        self.run_recs: list[Any] = []
        self.config: dict[str, Any] = {}
        self.wandb_config: dict[str, Any] = {}
        # None: the summary is left to the history pass (see the module's docstring).
        self.summary: SummaryFold | None = SummaryFold() if fold_summary else None
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
                if self.summary is not None:
                    self.summary.summary(rec.summary)
            elif kind == "config":
                self._config(rec.config)
            elif kind == "stats":
                if rec.stats.HasField("timestamp"):
                    self._time(ts_ms(rec.stats.timestamp))
            elif kind == "output_raw" or kind == "output":
                out = rec.output_raw if kind == "output_raw" else rec.output
                if out.HasField("timestamp"):
                    self._time(ts_ms(out.timestamp))
            elif kind == "run":
                self._run(rec.run)
                if rec.run.HasField("start_time"):
                    part_start = ts_ms(rec.run.start_time)
            elif kind == "environment":
                self._environment(rec.environment)
            elif kind == "metric":
                d = metric_def(rec.metric)
                ident = (rec.metric.name, rec.metric.glob_name)
                self.metrics.setdefault(ident, {}).update(d)
            elif kind == "files":
                for f in rec.files.files:
                    self.record_files[f.path] = folder
            elif kind == "artifact":
                self.artifacts.append(
                    artifact_of(
                        rec.artifact, "logged", self.header, self.options.staging_dir, self.warnings
                    )
                )
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
            first_step = row_meta(first_hist)[0]
            last_step, last_ts = row_meta(last_hist)
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
            path = path_of(u)
            target = self.wandb_config if path[0] == "_wandb" else self.config
            if path[0] == "_wandb":
                path = path[1:] or ["_"]
            set_path(target, path, json_value(u.value_json))
        for r in cfg.remove:
            del_path(self.config, path_of(r))

    def _run(self, run: Any) -> None:
        self.run_recs.append(run)
        if self.run_rec is None:
            self.run_rec = run
        if run.HasField("start_time"):
            ms = ts_ms(run.start_time)
            self.start_ms = ms if self.start_ms is None else min(self.start_ms, ms)
        self._config(run.config)
        if self.summary is not None:
            self.summary.run(run)

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
        summary = self.summary.result() if self.summary is not None else {}
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
            host=latest("host") or None,
            git_remote=git_remote or self.env.get("_git_remote"),
            git_commit=git_commit or self.env.get("_git_commit"),
            start_time_ms=self.start_ms,
            end_time_ms=end_ms,
            status=status,  # type: ignore[arg-type]
            status_reason=reason,
            config=self.config,
            results=summary,
            results_pending=self.summary is None,
            metric_definitions=list(self.metrics.values()),
            files=files_of(parts, self.record_files, self.warnings),
            artifacts=self.artifacts,
            extra_tags=extra_tags,
            incomplete_reason="; ".join(self.incomplete) or None,
            refused=self.refused,
            warnings=self.warnings,
            extras=wandb_extras(latest("run_group"), latest("job_type"), self.exit_code),
        )
