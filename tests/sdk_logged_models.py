"""MLflow 3 logged models made with MLflow's own APIs, and what a copy must keep of them.

:func:`make_logged_models` builds the issue-13 corpus in one experiment ("lm"):

* run ``train``: ``clf`` (``initialize_logged_model`` with params/tags, then
  ``set_logged_model_tags``, ``log_model_params``, files written into the model's artifact
  location, ``log_metric(model_id=, dataset=)``, finalized READY); ``pyf``
  (``mlflow.pyfunc.log_model``: READY, a run output, MLflow's own files); ``broken``
  (finalized FAILED); a plain metric without model;
* run ``eval``: uses ``clf`` as a model input and logs model metrics for it on another
  dataset;
* ``orphan``: a logged model no run made (``initialize_logged_model`` outside a run),
  PENDING, with a file;
* ``clfreg``: a registered model whose version 1 is ``clf`` (``mlflow.register_model``).

:func:`snapshot` reads a store back per model name: every field the copy promises.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

T0 = 1_700_000_000_000


def _echo_model() -> Any:
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201 - hints make MLflow warn
            return model_input

    return Echo()


def make_logged_models(uri: str, tmp: Path) -> dict[str, str]:
    """The corpus above in the store ``uri``; returns name -> model id (and run ids)."""
    import mlflow
    from mlflow.entities import LoggedModelInput
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("lm", artifact_location=(tmp / "lm-art").as_uri())
    files = tmp / "clf-files"
    (files / "sub").mkdir(parents=True, exist_ok=True)
    (files / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (files / "sub" / "config.json").write_text('{"depth": 3}\n')
    ids: dict[str, str] = {}
    train_ds = mlflow.data.from_numpy(np.arange(6).reshape(3, 2), source="s3://b/t.npy", name="tr")
    eval_ds = mlflow.data.from_numpy(np.arange(4).reshape(2, 2), source="s3://b/e.npy", name="ev")
    with _use_tracking_uri(uri):
        with mlflow.start_run(experiment_id=exp, run_name="train") as run:
            ids["train"] = run.info.run_id
            clf = mlflow.initialize_logged_model(
                name="clf", params={"alpha": "0.1"}, tags={"team": "a"}, model_type="sklearn"
            )
            ids["clf"] = clf.model_id
            mlflow.set_logged_model_tags(clf.model_id, {"stage": "dev"})
            mlflow.log_model_params({"depth": "3"}, model_id=clf.model_id)
            client.log_model_artifacts(clf.model_id, str(files))
            mlflow.log_metric("acc", 0.9, step=1, timestamp=T0 + 1, model_id=clf.model_id,
                              dataset=train_ds)  # fmt: skip
            mlflow.log_metric("acc", 0.95, step=2, timestamp=T0 + 2, model_id=clf.model_id,
                              dataset=train_ds)  # fmt: skip
            mlflow.log_metric("loss", 0.3, step=2, timestamp=T0 + 3, model_id=clf.model_id)
            mlflow.finalize_logged_model(clf.model_id, "READY")
            info = mlflow.pyfunc.log_model(name="pyf", python_model=_echo_model())
            ids["pyf"] = info.model_id
            mlflow.log_metric("acc", 0.7, step=1, timestamp=T0 + 4, model_id=info.model_id)
            broken = mlflow.initialize_logged_model(name="broken", tags={"why": "oom"})
            ids["broken"] = broken.model_id
            mlflow.finalize_logged_model(broken.model_id, "FAILED")
            mlflow.log_metric("epoch_loss", 1.5, step=0, timestamp=T0 + 5)
        with mlflow.start_run(experiment_id=exp, run_name="eval") as run:
            ids["eval"] = run.info.run_id
            client.log_inputs(run.info.run_id, models=[LoggedModelInput(clf.model_id)])
            mlflow.log_metric("eval_acc", 0.88, step=0, timestamp=T0 + 6, model_id=clf.model_id,
                              dataset=eval_ds)  # fmt: skip
        orphan = mlflow.initialize_logged_model(
            name="orphan", experiment_id=exp, params={"k": "v"}, tags={"made": "by hand"}
        )
        ids["orphan"] = orphan.model_id
        client.log_model_artifact(orphan.model_id, str(files / "weights.bin"))
        mlflow.register_model(f"models:/{clf.model_id}", "clfreg")
    return ids


def _files(client: MlflowClient, model_id: str, tmp: Path) -> dict[str, bytes]:
    """Every artifact of a logged model but the bridge's own record (``bridge/``)."""
    from mlflow.artifacts import download_artifacts

    model = client.get_logged_model(model_id)
    out: dict[str, bytes] = {}
    stack: list[str | None] = [None]
    while stack:
        for f in client.list_logged_model_artifacts(model_id, stack.pop()):
            if f.is_dir:
                stack.append(f.path)
            elif not f.path.startswith("bridge/"):
                local = download_artifacts(
                    artifact_uri=f"{model.artifact_location}/{f.path}",
                    dst_path=str(tmp / model_id),
                    tracking_uri=client._tracking_client.tracking_uri,
                )
                out[f.path] = Path(local).read_bytes()
    return out


def _metric(m: Any, run_names: dict[str, str]) -> tuple[Any, ...]:
    value = "nan" if math.isnan(m.value) else m.value
    return (m.key, m.step, m.timestamp, value, m.dataset_name, m.dataset_digest,
            run_names.get(m.run_id or "", m.run_id))  # fmt: skip


def snapshot(uri: str, tmp: Path) -> dict[str, dict[str, Any]]:
    """Per logged model name: what an MLflow → MLflow copy must keep (ids as names)."""
    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=1000)
    run_names = {r.info.run_id: r.info.run_name for r in runs}
    models = list(client.search_logged_models(exps, max_results=1000))
    names = {m.model_id: m.name for m in models}
    out: dict[str, dict[str, Any]] = {}
    for m in models:
        m = client.get_logged_model(m.model_id)
        out[m.name] = {
            "experiment": client.get_experiment(m.experiment_id).name,
            "params": dict(m.params),
            "tags": {k: v for k, v in m.tags.items() if not k.startswith("bridge.")},
            "status": m.status.name if hasattr(m.status, "name") else str(m.status),
            # MLflow's REST API has no "unset" for it: a server answers "" for None
            "model_type": m.model_type or None,
            # likewise "" for a model no run made
            "source_run": run_names.get(m.source_run_id or "", m.source_run_id or None),
            "metrics": sorted(_metric(x, run_names) for x in m.metrics or []),
            "files": _files(client, m.model_id, tmp),
        }
    for v in client.search_model_versions():
        out[f"version:{v.name}/{v.version}"] = {
            "model": names.get(v.model_id or "", v.model_id),
            "source": names.get(str(v.source).removeprefix("models:/"), v.source),
            "run": run_names.get(v.run_id or "", v.run_id),
        }
    for r in runs:
        name = r.info.run_name
        out[f"run:{name}"] = {
            "outputs": sorted(
                (names.get(o.model_id, o.model_id), o.step)
                for o in (r.outputs.model_outputs if r.outputs else [])
            ),
            "inputs": sorted(
                names.get(i.model_id, i.model_id)
                for i in (r.inputs.model_inputs if r.inputs else [])
            ),
            "datasets": sorted(
                (d.dataset.name, d.dataset.digest, tuple(sorted((t.key, t.value) for t in d.tags)))
                for d in (r.inputs.dataset_inputs if r.inputs else [])
            ),
            "metrics": {
                k: sorted(
                    (p.step, p.timestamp, p.value)
                    for p in client.get_metric_history(r.info.run_id, k)
                )  # fmt: skip
                for k in r.data.metrics
            },
        }
    return out
