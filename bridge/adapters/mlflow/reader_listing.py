"""The MLflow reader's listing: experiments in scope, their runs oldest first, and each
run's header with its fingerprint (fingerprint.py; see MlflowReader for what it sees)."""

from __future__ import annotations

import fnmatch
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from bridge.adapters.base import ReaderOptions
from bridge.adapters.mlflow import logged_read, run_objects
from bridge.adapters.mlflow.access import denied, status_of
from bridge.adapters.mlflow.files import local_dir
from bridge.adapters.mlflow.fingerprint import fingerprint_of, local_listing
from bridge.adapters.mlflow.history import point_stats
from bridge.adapters.mlflow.ids import object_source_id
from bridge.errors import BridgeError
from bridge.schema import Project, RunHeader

SEARCH_PAGE = 1000
BRIDGE_PREFIX = "bridge."
URIS_KEPT = 4096


class Recent(OrderedDict[str, str]):
    """The values set last, at most ``kept`` (the oldest go): e.g. the artifact URIs of
    the runs seen last, so a 10,000-run listing does not keep one per run; a key no
    longer held is asked again."""

    def __init__(self, kept: int = URIS_KEPT) -> None:
        super().__init__()
        self.kept = kept

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.kept:
            self.popitem(last=False)


class RunListing:
    """Mixin of :class:`~bridge.adapters.mlflow.reader.MlflowReader` (its ``client``,
    ``kind``, ``options``, ``display_uri``, ``engine``, ``fingerprint_artifacts`` and the
    ``_artifact_uris`` it fills)."""

    client: Any
    kind: str
    options: ReaderOptions
    engine: Any
    fingerprint_artifacts: bool | None
    _artifact_uris: dict[str, str]
    _lock: threading.Lock
    #: Logged models of each experiment as the last listing found them (run_objects.py).
    listed_models_kept: dict[str, list[Any]]
    #: ``--experiment`` names the server refused (denied_experiments), once per reader.
    _denied: list[str] | None = None

    @property
    def display_uri(self) -> str:
        raise NotImplementedError  # MlflowStore's

    def _view_type(self) -> Any:
        from mlflow.entities import ViewType

        return ViewType.ALL if self.options.include_deleted else ViewType.ACTIVE_ONLY

    def experiments(self) -> list[Any]:
        """Experiments in scope: all active ones, or those whose name matches a pattern.

        With ``include_deleted`` deleted experiments are searched too.
        """
        found = self._all_experiments()
        patterns = self.options.experiments
        if patterns:
            found = [e for e in found if any(fnmatch.fnmatchcase(e.name, p) for p in patterns)]
        return sorted(found, key=lambda e: int(e.experiment_id) if e.experiment_id.isdigit() else 0)

    def denied_experiments(self) -> list[str]:
        """Experiments named with ``--experiment`` (no glob) that the listing did not show
        because the server refuses them to these credentials (a basic-auth server lists
        only what the caller may read): reported, not silently left out."""
        if self._denied is None:
            listed = {e.name for e in self.experiments()}
            names = [p for p in self.options.experiments if p not in listed]
            self._denied = []
            for name in names:
                if any(ch in name for ch in "*?["):
                    continue
                try:
                    self.client.get_experiment_by_name(name)
                except Exception as exc:  # noqa: BLE001 - only a 403 is ours to say
                    if status_of(exc) != 403:
                        raise
                    self._denied.append(name)
        return self._denied

    def no_match_error(self) -> BridgeError:
        """No experiment in scope: the refused ones named (nothing can be done), else the
        experiments there are."""
        refused = self.denied_experiments()
        if refused:
            return BridgeError(str(denied(self.display_uri, refused[0], "READ")))
        names = sorted(e.name for e in self._all_experiments())[:10]
        return BridgeError(
            f"{self.display_uri}: no experiment matches {', '.join(self.options.experiments)}; "
            f"experiments here: {', '.join(names) or '(none)'}"
        )

    def denied_header(self, name: str) -> RunHeader:
        """A refused experiment as one line of the pass: its read fails (exit 1) naming it."""
        sid = object_source_id(self.display_uri, f"experiment-name:{name}")
        return RunHeader(
            source_id=sid,
            native_id=f"experiment-name:{name}",
            project=Project(source_id=sid, name=name),
            name=f"experiment {name} (not readable)",
            fingerprint="permission-denied",
            locator={"denied": name},
        )

    def _all_experiments(self) -> list[Any]:
        found: list[Any] = []
        token: str | None = None
        while True:
            page = self.client.search_experiments(
                view_type=self._view_type(), max_results=SEARCH_PAGE, page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                return found

    def project_of(self, exp: Any) -> Project:
        tags = dict(exp.tags or {})
        return Project(
            source_id=object_source_id(self.display_uri, f"experiment:{exp.experiment_id}"),
            name=exp.name,
            description=tags.get("mlflow.note.content") or None,
            tags={
                k: v
                for k, v in sorted(tags.items())
                if not k.startswith("mlflow.") and not k.startswith(BRIDGE_PREFIX)
            },
        )

    def list_runs(self) -> Iterator[RunHeader]:
        """Every run in scope, oldest first (new runs land on the last page, so offset
        paging stays stable while a live store grows)."""
        wanted = set(self.options.run_ids)
        bad = [i for i in wanted if not i or not all(ch.isalnum() or ch in "-_" for ch in i)]
        if bad:
            raise BridgeError(f"{self.display_uri}: {bad[0]!r} is not an MLflow run id")
        for exp in self.experiments():
            project = self.project_of(exp)
            models = logged_read.listed_models(self, exp.experiment_id)
            # Kept for read_run only when the search answered: listed_models gives [] for a
            # store that failed to answer, and keeps an answer for the item pass.
            listed = getattr(self, "_models_listed", None) or {}
            if models or listed.get(str(exp.experiment_id)) is models:
                self.listed_models_kept[str(exp.experiment_id)] = models
            else:
                self.listed_models_kept.pop(str(exp.experiment_id), None)
            if not wanted and "model" not in self.options.items:  # else item kind "model"
                logged_read.report_orphans(self, models, project.source_id)
            digests = logged_read.run_digests(models)
            filters: list[str | None] = [None]
            if wanted:
                ids = sorted(wanted)
                filters = [
                    "attributes.run_id IN ({})".format(",".join(f"'{i}'" for i in ids[n : n + 100]))
                    for n in range(0, len(ids), 100)
                ]
            for filter_string in filters:
                runs = self._search(exp.experiment_id, filter_string)
                for run, points in self._with_point_stats(runs):
                    header = self.header_of(run, project, points)
                    if run.info.run_id in digests:  # its logged models (logged_read.py)
                        header.fingerprint += f":models={digests[run.info.run_id][:32]}"
                    yield header
        for name in self.denied_experiments() if self.options.experiments else []:
            yield self.denied_header(name)

    def _search(self, experiment_id: str, filter_string: str | None) -> Iterator[Any]:
        token: str | None = None
        while True:
            page = self.client.search_runs(
                experiment_ids=[experiment_id],
                filter_string=filter_string or "",
                run_view_type=self._view_type(),
                max_results=SEARCH_PAGE,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    def _with_point_stats(self, runs: Iterator[Any]) -> Iterator[tuple[Any, list[Any] | None]]:
        """Each listed run with its per-key point statistics: SQL stores, one grouped query
        per page of runs (see :func:`point_stats`); servers, None (not fetched)."""
        if self.kind not in ("sqlite", "sql"):
            for run in runs:
                yield run, None
            return
        while page := list(itertools.islice(runs, SEARCH_PAGE)):
            stats = point_stats(self.engine, [r.info.run_id for r in page])
            for run in page:
                yield run, stats.get(run.info.run_id, [])

    def header_of(self, run: Any, project: Project, points: list[Any] | None = None) -> RunHeader:
        info = run.info
        self._artifact_uris[info.run_id] = info.artifact_uri
        return RunHeader(
            source_id=object_source_id(self.display_uri, info.run_id),
            native_id=info.run_id,
            project=project,
            name=info.run_name or None,
            fingerprint=self.fingerprint_of(run, points),
            locator={
                "experiment_id": str(info.experiment_id),
                "lifecycle_stage": info.lifecycle_stage,
            },
        )

    def fingerprint_of(self, run: Any, points: list[Any] | None = None) -> str:
        """Hash of a run as ``search_runs``/``get_run`` return it, plus the per-key point
        statistics ``points`` when given (see the class docstring)."""
        listing = self._artifact_listing(run.info.run_id, run.info.artifact_uri)
        return fingerprint_of(run, points, listing)

    def _artifact_listing(self, run_id: str, artifact_uri: str) -> list[Any] | None:
        if self.fingerprint_artifacts is False:
            return None
        local = local_dir(artifact_uri)
        if local is not None:
            return local_listing(local)
        if self.fingerprint_artifacts:
            return [(f.path, f.size) for f in run_objects.walk_artifacts(self.client, run_id, None)]
        return None
