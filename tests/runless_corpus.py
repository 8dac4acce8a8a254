"""Logged models no run made, made with MLflow's own APIs, for
tests/test_mlflow_runless_models.py. Run in a subprocess (``python -m tests.runless_corpus
URI FOLDER [--more]``): the fluent APIs keep global state (tracking URI, active model).

* ``solo``: ``initialize_logged_model`` outside a run with params, tags and a model type;
  two files (one in a sub folder); a model-metric row logged by run ``judge`` on a
  dataset, one without; finalized READY; a trace recorded while it is the active model
  (the trace's metadata links it);
* ``draft``: PENDING, no files, no metrics.

``--more``: a tag set on ``solo``, ``draft`` finalized FAILED, one more file on ``draft``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

EXPERIMENT = "runless"
T0 = 1_700_000_000_000


def make(uri: str, folder: Path) -> dict[str, str]:
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = mlflow.set_experiment(EXPERIMENT).experiment_id
    files = folder / "solo-files"
    (files / "sub").mkdir(parents=True, exist_ok=True)
    (files / "weights.bin").write_bytes(bytes(range(256)) * 3)
    (files / "sub" / "config.json").write_text('{"layers": 2}\n')
    solo = mlflow.initialize_logged_model(
        name="solo", experiment_id=exp, params={"k": "v", "lr": "0.01"},
        tags={"made": "by hand"}, model_type="agent",
    )  # fmt: skip
    client.log_model_artifacts(solo.model_id, str(files))
    ds = mlflow.data.from_numpy(np.arange(4).reshape(2, 2), source="s3://b/e.npy", name="ev")
    with mlflow.start_run(experiment_id=exp, run_name="judge") as run:
        mlflow.log_metric("score", 0.5, step=1, timestamp=T0 + 1, model_id=solo.model_id,
                          dataset=ds)  # fmt: skip
        mlflow.log_metric("latency", 12.0, step=0, timestamp=T0 + 2, model_id=solo.model_id)
    mlflow.finalize_logged_model(solo.model_id, "READY")
    draft = mlflow.initialize_logged_model(name="draft", experiment_id=exp)
    mlflow.set_active_model(model_id=solo.model_id)

    @mlflow.trace
    def answer(x: int) -> int:
        return x * 2

    answer(21)
    mlflow.clear_active_model()
    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush is not None:
        flush()
    trace = mlflow.search_traces(locations=[exp], return_type="list")[0]
    return {
        "solo": solo.model_id,
        "draft": draft.model_id,
        "judge": run.info.run_id,
        "trace": trace.info.trace_id,
    }


def more(uri: str, folder: Path, ids: dict[str, str]) -> None:
    client = MlflowClient(uri)
    client.set_logged_model_tags(ids["solo"], {"made": "by hand, reviewed"})
    note = folder / "note.txt"
    note.write_text("late file\n")
    client.log_model_artifact(ids["draft"], str(note))
    from mlflow.entities import LoggedModelStatus

    client.finalize_logged_model(ids["draft"], LoggedModelStatus.FAILED)


if __name__ == "__main__":
    where = Path(sys.argv[2])
    if "--more" in sys.argv[3:]:
        more(sys.argv[1], where, json.loads((where / "ids.json").read_text()))
    else:
        made = make(sys.argv[1], where)
        (where / "ids.json").write_text(json.dumps(made))
        print(json.dumps(made))
