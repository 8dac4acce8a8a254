"""What an MLflow run used and made, as neutral artifact records: dataset inputs, MLflow 3
logged models it made (listed, not copied) and models it used; and its artifact files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.adapters.mlflow.files import local_stat_key
from bridge.paths import path_problem
from bridge.schema import ArtifactVersion, FileRef


def datasets(mlrun: Any) -> list[ArtifactVersion]:
    out: list[ArtifactVersion] = []
    inputs = getattr(mlrun, "inputs", None)
    for d in inputs.dataset_inputs if inputs else []:
        ds = d.dataset
        out.append(
            ArtifactVersion(
                name=ds.name,
                type="dataset",
                digest=ds.digest,
                direction="used",
                metadata={
                    "source_type": ds.source_type,
                    "source": ds.source,
                    "schema": ds.schema,
                    "profile": ds.profile,
                    "tags": {t.key: t.value for t in d.tags},
                },
            )
        )
    return out


def models(client: Any, mlrun: Any) -> list[ArtifactVersion]:
    """MLflow 3 logged models made by the run (listed, not copied) and models it used."""
    info = mlrun.info
    found: dict[str, Any] = {}
    if hasattr(client, "search_logged_models"):
        token: str | None = None
        while True:
            page = client.search_logged_models(
                experiment_ids=[str(info.experiment_id)],
                filter_string=f"source_run_id = '{info.run_id}'",
                max_results=100,
                page_token=token,
            )
            found.update((m.model_id, m) for m in page)
            token = page.token
            if not token:
                break
    outputs = getattr(mlrun, "outputs", None)
    steps = {m.model_id: m.step for m in (getattr(outputs, "model_outputs", None) or [])}
    for model_id in steps.keys() - found.keys():
        try:
            found[model_id] = client.get_logged_model(model_id)
        except Exception:  # noqa: BLE001 - a dangling link is listed by id only
            found[model_id] = None
    out = [_model_version(mid, found[mid], "logged", steps.get(mid)) for mid in sorted(found)]
    inputs = getattr(mlrun, "inputs", None)
    for m in getattr(inputs, "model_inputs", None) or []:
        out.append(_model_version(m.model_id, None, "used", None))
    return out


def _model_version(model_id: str, model: Any, direction: str, step: int | None) -> ArtifactVersion:
    meta: dict[str, Any] = {"model_id": model_id}
    if step is not None:
        meta["step"] = step
    name = model_id
    if model is not None:
        name = model.name or model_id
        status = model.status
        meta.update(
            params=dict(model.params or {}),
            tags=dict(model.tags or {}),
            status=getattr(status, "name", None) or str(status),
            artifact_location=model.artifact_location,
            model_type=model.model_type,
            source_run_id=model.source_run_id,
            creation_timestamp=model.creation_timestamp,
        )
    return ArtifactVersion(
        name=name,
        type="model",
        version=model_id,
        direction="logged" if direction == "logged" else "used",
        metadata=meta,
    )


def walk_artifacts(
    client: Any, run_id: str, path: str | None, local: Path | None = None
) -> Iterator[FileRef]:
    """Every artifact file under ``path``, depth first, sorted by path. ``local``: the
    run's artifact folder when it is on this file system, for a cheap ``stat_key``."""
    for info in sorted(client.list_artifacts(run_id, path), key=lambda f: f.path):
        _check_file_info(info)
        inside = path is None or info.path.startswith(f"{path}/")
        if info.is_dir and inside and path_problem(info.path) is None:
            yield from walk_artifacts(client, run_id, info.path, local)
        else:
            yield FileRef(
                path=info.path,
                size=info.file_size,
                stat_key=local_stat_key(local, info.path),
                locator={"run_id": run_id, "path": info.path},
            )


def _check_file_info(info: Any) -> None:
    """An artifact listing entry of the types MLflow's artifact API sends: its HTTP client
    passes the server's JSON through unchecked (``"is_dir": [1, 2]`` would read as a folder)."""
    size = info.file_size
    if (
        not isinstance(info.path, str)
        or not isinstance(info.is_dir, bool)
        or not (size is None or (isinstance(size, int) and not isinstance(size, bool)))
    ):
        raise ValueError(
            f"malformed artifact listing entry: path={info.path!r:.80} "
            f"is_dir={info.is_dir!r:.20} file_size={size!r:.30}"
        )
