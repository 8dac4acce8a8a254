"""What an MLflow run used and made, as neutral artifact records: dataset inputs, MLflow 3
logged models it made (with their content, copied as logged models) and models it used or
logged metrics for (records); and its artifact files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.adapters.mlflow import logged_read
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


def models(store: Any, mlrun: Any) -> list[ArtifactVersion]:
    """MLflow 3 logged models the run made (with their files, copied as logged models),
    models it used or logged metrics for (records only); see logged_read.py."""
    client, info = store.client, mlrun.info
    found: dict[str, Any] = {}
    if hasattr(client, "search_logged_models"):
        found = {m.model_id: m for m in _experiment_models(store, str(info.experiment_id))}
    outputs = getattr(mlrun, "outputs", None)
    steps = {m.model_id: m.step for m in (getattr(outputs, "model_outputs", None) or [])}
    made = {mid for mid, m in found.items() if m.source_run_id == info.run_id} | steps.keys()
    inputs = getattr(mlrun, "inputs", None)
    used = {m.model_id for m in (getattr(inputs, "model_inputs", None) or [])}
    used |= {
        mid for mid, m in found.items() if any(x.run_id == info.run_id for x in m.metrics or [])
    }
    out: list[ArtifactVersion] = []
    for model_id in sorted(made | used):
        model = found.get(model_id)
        direction = "logged" if model_id in made else "used"
        if model is None:
            try:
                model = client.get_logged_model(model_id)
            except Exception:  # noqa: BLE001 - a dangling link is listed by id only
                out.append(_dangling(model_id, direction, steps.get(model_id)))
                continue
        out.append(
            logged_read.model_artifact(
                store, model, direction, steps.get(model_id), direction == "logged"
            )
        )
    return out


def _experiment_models(store: Any, experiment_id: str) -> list[Any]:
    """The logged models of the run's experiment as the listing found them (one search per
    experiment and listing; it was one more per run read), else a search now. The listing's
    view is the one the run's fingerprint was taken from (logged_read.run_digests), so a
    model changed since shows as a changed fingerprint next time, as before."""
    kept = getattr(store, "listed_models_kept", None) or {}
    found = kept.get(experiment_id)
    return (
        found if found is not None else logged_read.experiment_models(store.client, experiment_id)
    )


def _dangling(model_id: str, direction: str, step: int | None) -> ArtifactVersion:
    """A link to a logged model the store no longer has: listed by id only."""
    meta: dict[str, Any] = {"model_id": model_id}
    if step is not None:
        meta["step"] = step
    return ArtifactVersion(
        name=model_id,
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
