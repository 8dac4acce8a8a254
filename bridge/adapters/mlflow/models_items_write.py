"""Copies of MLflow logged models no run made (item kind ``model``): created through the
writer's logged-model side (logged_copy.create), then followed in place — tags set or
removed, params added, status reached, files added, metric rows of runs copied since.
What MLflow cannot change on a copy (name, model type, a param's value) is warned about.
See models_items.py for what is listed and how metric rows find their run.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow import logged_copy, logged_read
from bridge.adapters.mlflow.item_parts import KindWriter
from bridge.adapters.mlflow.models_items import MODELS_PREFIX, item_of, model_sid, own_tags
from bridge.adapters.mlflow.registry import MODEL_VERSIONS_TAG
from bridge.errors import BridgeError
from bridge.schema import ArtifactVersion, ManifestEntry
from bridge.schema_items import Item, ItemFile, ItemHeader, LoggedModelItem, ModelMetric

FOLLOWED = ("READY", "FAILED")  # statuses a copy is finalized with


def _files_of(client: Any, model_id: str) -> dict[str, int | None]:
    """path -> size of a destination model's files, but the bridge's own (``bridge/``)."""
    out: dict[str, int | None] = {}
    stack: list[str | None] = [None]
    while stack:
        for f in client.list_logged_model_artifacts(model_id, stack.pop()):
            if f.is_dir:
                stack.append(f.path)
            elif not f.path.startswith("bridge/"):
                out[f.path] = f.file_size
    return out


def _row(r: ModelMetric) -> dict[str, Any]:
    """A metric row as logged_copy writes it (its record's form)."""
    return {
        "key": r.key,
        "value": r.value,
        "step": r.step,
        "timestamp": r.timestamp_ms,
        "run": r.run_source_id,
        "dataset_name": r.dataset_name,
        "dataset_digest": r.dataset_digest,
    }


class RunlessModelWriter(KindWriter):
    """Copies of run-less logged models, through the writer's logged-model side."""

    @property
    def lm(self) -> Any:
        return self.store.logged_models

    def _home(self, header: ItemHeader) -> str | None:
        """This store's model the source model is a copy of (a two-way sync coming back)."""
        origin = str(header.locator.get("origin") or "")
        mine = model_sid(self.store.display_uri, "")
        return origin.removeprefix(mine) if origin.startswith(mine) else None

    def find(self, header: ItemHeader, links: ItemLinks) -> str | None:
        if self.store._store_missing():
            return None
        home = self._home(header)
        if home:
            return f"{MODELS_PREFIX}{home}"
        done = next(
            (m for m in self.lm._models_with_source(header.source_id) if logged_copy.is_done(m)),
            None,
        )
        return f"{MODELS_PREFIX}{done.model_id}" if done is not None else None

    def _copy(self, dest_id: str | None) -> Any:
        from mlflow.exceptions import MlflowException

        if not dest_id or not dest_id.startswith(MODELS_PREFIX):
            return None
        try:
            return self.store.client.get_logged_model(dest_id.removeprefix(MODELS_PREFIX))
        except MlflowException:
            return None

    # ------------------------------------------------------------------ plan

    def plan(self, item: Item, dest_id: str | None, links: ItemLinks) -> ItemChange:
        assert isinstance(item, LoggedModelItem)
        if self._home(item.header):  # never copied back into the store it came from
            return ItemChange(action="unchanged", dest_id=dest_id)
        copy = self._copy(dest_id)
        if copy is None or not logged_copy.is_done(copy):
            counts = (("params", item.params), ("tags", item.tags), ("files", item.files))
            new = [f"+{len(v)} {what}" for what, v in counts if v] + [f"status {item.status}"]
            rows, waiting = self._missing_rows(item, None)
            n = sum(len(r) for r in rows.values())
            if n:
                new.append(f"+{n} metric rows")
            return ItemChange(action="create", changes=new, warnings=self._waiting(item, waiting))
        changes: list[str] = []
        warnings: list[str] = []
        pay: dict[str, Any] = {"model_id": copy.model_id}
        have = {k: v for k, v in own_tags(copy.tags).items() if k != MODEL_VERSIONS_TAG}
        want = {k: v for k, v in item.tags.items() if k != MODEL_VERSIONS_TAG}
        pay["set_tags"] = {k: v for k, v in want.items() if have.get(k) != v}
        pay["drop_tags"] = sorted(have.keys() - want.keys())
        changes += [f"tag {k}: {have.get(k)} -> {v}" for k, v in pay["set_tags"].items()]
        changes += [f"-tag {k}" for k in pay["drop_tags"]]
        params = dict(copy.params or {})
        pay["params"] = {k: v for k, v in item.params.items() if k not in params}
        changes += [f"param {k}: {v}" for k, v in pay["params"].items()]
        warnings += [
            f"logged model {item.name}: param {k} changed at the source ({params[k]} -> {v}); "
            "MLflow keeps a model's params once written: left on the copy"
            for k, v in item.params.items()
            if k in params and params[k] != v
        ]
        now = logged_read.status_name(copy)
        if item.status in FOLLOWED and now != item.status:
            changes.append(f"status {now} -> {item.status}")
            pay["status"] = item.status
        files = _files_of(self.store.client, copy.model_id)
        pay["files"] = [f.path for f in item.files if f.path not in files or (
            f.size is not None and files[f.path] != f.size)]  # fmt: skip
        changes += [f"+file {p}" for p in pay["files"]]
        pay["rows"], waiting = self._missing_rows(item, copy)
        warnings += self._waiting(item, waiting)
        n = sum(len(rows) for rows in pay["rows"].values())
        if n:
            changes.append(f"+{n} metric rows")
        for what, a, b in (("name", item.name, copy.name),
                           ("model type", item.model_type, copy.model_type or None)):  # fmt: skip
            if a != b:
                warnings.append(f"logged model {item.name}: {what} {b} -> {a} at the source; "
                                "MLflow cannot change it on the copy")  # fmt: skip
        return ItemChange(
            action="update" if changes else "unchanged",
            dest_id=dest_id,
            changes=changes,
            warnings=warnings,
            payload=pay,
        )

    @staticmethod
    def _waiting(item: LoggedModelItem, n: int) -> list[str]:
        """Rows whose run has no complete copy yet are not kept now (said, so the engine
        takes the copy as read back for its baseline, not the source)."""
        if not n:
            return []
        return [
            f"logged model {item.name}: {n} metric row(s) of runs not copied yet; written "
            "on their runs' copies when those runs are copied"
        ]

    def _missing_rows(
        self, item: LoggedModelItem, copy: Any
    ) -> tuple[dict[str, list[dict[str, Any]]], int]:
        """Per complete destination run: the source's rows of that run the copy (None: no
        copy yet) lacks; and how many rows wait for a run not copied yet."""
        out: dict[str, list[dict[str, Any]]] = {}
        waiting = 0
        by_run: dict[str, list[ModelMetric]] = {}
        for r in item.metrics:
            if r.run_source_id:
                by_run.setdefault(r.run_source_id, []).append(r)
        for run_sid, rows in by_run.items():
            dest_run = logged_copy._complete_copy(self.lm, run_sid)
            if dest_run is None:
                waiting += len(rows)  # its run's copy writes them (see the module doc)
                continue
            have = {
                logged_copy._row_key(
                    m.key, m.step, m.timestamp, m.value, m.dataset_name, m.dataset_digest
                )  # fmt: skip
                for m in (copy.metrics if copy is not None else None) or []
                if m.run_id == dest_run
            }
            todo = [
                _row(r)
                for r in rows
                if logged_copy._row_key(
                    r.key, r.step, r.timestamp_ms, r.value, r.dataset_name, r.dataset_digest
                )
                not in have  # fmt: skip
            ]
            if todo:
                out[dest_run] = todo
        return out, waiting

    # ------------------------------------------------------------------ apply

    def apply(self, item: Item, change: ItemChange, links: ItemLinks) -> str:
        assert isinstance(item, LoggedModelItem)
        if change.action == "unchanged":
            assert change.dest_id is not None
            return change.dest_id
        if change.action == "create":
            return self._create(item, links)
        pay, client = change.payload, self.store.client
        model_id = pay["model_id"]
        if pay.get("set_tags"):
            client.set_logged_model_tags(model_id, pay["set_tags"])
        for key in pay.get("drop_tags", []):
            client.delete_logged_model_tag(model_id, key)
        if pay.get("params"):
            client.log_model_params(model_id, pay["params"])
        if pay.get("files"):
            self.lm._upload(model_id, self._art(item), self._openers(item, pay["files"]))
        if pay.get("status"):
            logged_copy._set_status(client, model_id, "", pay["status"])
        with logged_copy._ROWS_LOCK:
            for dest_run, rows in (pay.get("rows") or {}).items():
                logged_copy.write_rows(client, model_id, dest_run, rows)
        return f"{MODELS_PREFIX}{model_id}"

    def _create(self, item: LoggedModelItem, links: ItemLinks) -> str:
        if not item.header.projects:
            raise BridgeError(f"logged model {item.name}: no experiment to copy it into")
        owner = item.header.projects[0]
        project = links.project(owner.source_id)
        if project is None:
            raise BridgeError(
                f"logged model {item.name}: experiment {owner.name!r} has no copy in "
                f"{self.store.display_uri}"
            )
        art = self._art(item)
        files = self._openers(item, [f.path for f in item.files])
        return str(self.lm.put_model(project, None, art, files))

    def _art(self, item: LoggedModelItem) -> ArtifactVersion:
        """The item as the faithful artifact record logged_copy.create writes."""
        record = {
            "model_id": item.model_id,
            "name": item.name,
            "params": dict(item.params),
            "tags": dict(item.tags),
            "status": item.status,
            "model_type": item.model_type,
            "source_run": item.source_run_id,
            "metrics": [_row(r) for r in item.metrics],
        }
        return ArtifactVersion(
            name=item.name,
            type="model",
            version=item.model_id,
            direction="logged",
            metadata={logged_read.RECORD_KEY: record},
            manifest=[ManifestEntry(path=f.path, size=f.size) for f in item.files],
            source_id=item.header.source_id,
            created_at_ms=item.created_time_ms,
        )

    @staticmethod
    def _openers(item: LoggedModelItem, paths: list[str]) -> list[tuple[ManifestEntry, Any]]:
        sizes = {f.path: f.size for f in item.files}
        return [
            (ManifestEntry(path=p, size=sizes.get(p)), lambda p=p: item.open_file(p)) for p in paths
        ]

    # ------------------------------------------------------------------ verify

    def read_back(self, dest_id: str) -> Item | None:
        copy = self._copy(dest_id)
        if copy is None:
            return None
        client, display = self.store.client, self.store.display_uri
        header = ItemHeader(
            kind="model",
            source_id=model_sid(display, copy.model_id),
            name=copy.name or copy.model_id,
            fingerprint="",
        )
        files = [
            ItemFile(path=p, size=s) for p, s in sorted(_files_of(client, copy.model_id).items())
        ]
        return item_of(copy, header, files, display)
