"""One W&B run's body from the server: fields, config, summary, files (and their
downloads), metadata and artifacts; no history."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import IO, Any

from bridge.adapters.wandb import answers
from bridge.adapters.wandb.api_artifacts import ApiArtifacts
from bridge.adapters.wandb.api_base import PAGE_SIZE, parse_time
from bridge.adapters.wandb.bridged import layout_of, restore_run
from bridge.adapters.wandb.fields import wandb_extras
from bridge.adapters.wandb.history import is_number as _is_number
from bridge.adapters.wandb.ids import wandb_path
from bridge.adapters.wandb.key_scope import open_scoped
from bridge.errors import BridgeError, RunError
from bridge.schema import (
    FileRef,
    Run,
    RunHeader,
)

# W&B state -> neutral status; "crashed" is a run that stopped heartbeating.
STATUS = {
    "finished": "FINISHED",
    "failed": "FAILED",
    "crashed": "FAILED",
    "killed": "KILLED",
    "running": "RUNNING",
    "pending": "RUNNING",
    "preempting": "RUNNING",
    "preempted": "FAILED",
}


class ApiRunBody(ApiArtifacts):
    """The run body and its files."""

    def read_run(self, header: RunHeader) -> Run:
        path = header.locator.get("path") or wandb_path(header.source_id)
        try:
            run = self._read_run(header, path)
        except BridgeError:
            raise
        except Exception as exc:
            raise RunError(
                f"{header.source_id}: cannot read from {self._t.base_url}: {exc}"
            ) from exc
        layout = layout_of(run.config) if self.restore_bridge else None
        if layout is not None:
            restore_run(run, layout)
        return run

    def _read_run(self, header: RunHeader, path: str) -> Run:
        r = self._api_run(path)
        try:
            a = answers.run_attrs(r._attrs, "the run")
        except ValueError as exc:
            raise RunError(f"{header.source_id}: {self._t.base_url} answered: {exc}") from None
        summary = {k: v for k, v in self._retry("summary", lambda: r.summary_metrics).items()}
        summary.pop("_wandb", None)
        config = dict(self._retry("config", lambda: r.config))
        start = parse_time(a.get("createdAt"))
        end = parse_time(a.get("heartbeatAt"))
        runtime = summary.get("_runtime")
        if end is None and start is not None and _is_number(runtime):
            end = start + int(float(runtime) * 1000)
        warnings: list[str] = []
        files = self._files(r, path)
        meta = self._metadata(files, warnings)
        git_meta = meta.get("git")
        git: dict[str, Any] = git_meta if isinstance(git_meta, dict) else {}
        extra_tags = {
            tag: str(meta[k])
            for k, tag in (
                ("os", "wandb.os"),
                ("python", "wandb.python"),
                ("program", "wandb.program"),
                ("codePath", "wandb.code_path"),
                ("executable", "wandb.executable"),
            )
            if meta.get(k)
        }
        if a.get("sweepName"):
            extra_tags["wandb.sweep_id"] = str(a["sweepName"])
        state = str(a.get("state") or "")
        user = a.get("user") or {}
        return Run(
            header=header,
            name=a.get("displayName"),
            user=user.get("username") or user.get("name"),
            notes=a.get("notes") or None,
            tags=list(a.get("tags") or []),
            host=meta.get("host") or a.get("host") or None,
            git_remote=git.get("remote") or None,
            git_commit=a.get("commit") or git.get("commit") or None,
            start_time_ms=start,
            end_time_ms=end,
            status=STATUS.get(state, "FAILED"),  # type: ignore[arg-type]
            status_reason=None if state in STATUS else f"unknown W&B state {state!r}",
            config=config,
            results=summary,
            extras=wandb_extras(a.get("group") or None, a.get("jobType") or None),
            files=files,
            artifacts=self._artifacts(r, warnings),
            extra_tags=extra_tags,
            warnings=warnings,
        )

    def _files(self, r: Any, path: str) -> list[FileRef]:
        files = r.files(per_page=PAGE_SIZE)
        refs: list[FileRef] = []
        urls: dict[str, str] = {}
        seen: set[Any] = set()
        while self._next_page("files", files, seen):
            for f in files.objects:
                try:
                    fa = answers.file_attrs(f._attrs, "a file of the run")
                except ValueError as exc:
                    raise RunError(f"{path}: {self._t.base_url} answered: {exc}") from None
                url = fa.get("directUrl") or f.url
                urls[f.name] = url
                refs.append(
                    FileRef(
                        path=f"files/{f.name}",
                        size=fa.get("sizeBytes") or 0,
                        md5=fa.get("md5") or None,
                        locator={"url": url, "name": f.name, "md5": fa.get("md5")},
                    )
                )
            files.objects = []
        self._file_urls[path] = urls
        return refs

    def _metadata(self, files: list[FileRef], warnings: list[str]) -> dict[str, Any]:
        ref = next((f for f in files if f.path == "files/wandb-metadata.json"), None)
        if ref is None:
            return {}
        # Unreadable is a failed run, not a warning: host, OS, program and git would be
        # missing from a copy reported done (found by the GraphQL/HTTP answer fuzz).
        try:
            with self.open_file(ref) as fh:
                meta = json.loads(fh.read())
        except Exception as exc:
            raise RunError(f"wandb-metadata.json unreadable: {exc}") from None
        if not isinstance(meta, dict):
            raise RunError(f"wandb-metadata.json is a JSON {type(meta).__name__}, not an object")
        return meta

    def open_file(self, ref: FileRef) -> IO[bytes]:
        url = ref.locator.get("url")
        if not url:
            path, name = ref.locator.get("run_path"), ref.locator.get("name")
            url = self._file_urls.get(str(path), {}).get(str(name))
            if not url and path and name:
                f = self._retry("file", lambda: self._api_run(str(path)).file(str(name)))
                url = f._attrs.get("directUrl") or f.url
        if not url:
            raise FileNotFoundError(f"{ref.path}: no URL in the file reference")
        dest = self._cache() / "files" / hashlib.sha1(url.encode()).hexdigest()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._retry("download", lambda: self._download(url, dest))
        return open(dest, "rb")

    def _download(self, url: str, dest: Path) -> None:
        """The API's own /files URLs need the key; a ``directUrl`` elsewhere (storage) is
        fetched without it, and a redirect off the server drops it."""
        base = self._t.base_url
        with (
            open_scoped(url, base, self._key(), timeout=self.api_timeout) as resp,
            open(dest, "wb") as out,
        ):
            shutil.copyfileobj(resp, out, 1 << 20)
