"""An artifact version reached by two passes (two shards, two processes) or two workers of
one pass at once is placed once: the first claims it in the state store, the others wait
and reuse the recorded copy (engine/object_claims.py). Real MLflow writer and state store."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge.engine.context import SyncContext
from bridge.engine.model import RunPlan
from bridge.engine.models import place_model
from bridge.schema import ArtifactVersion, Project
from bridge.state import StateStore
from bridge.uris import open_reader, open_writer

ART = ArtifactVersion(
    name="classifier",
    type="model",
    version="v0",
    digest="d41d8cd98f00b204e9800998ecf8427e",
    source_id="wandb:acme/proj/artifact/classifier@d41d8cd98f00b204e9800998ecf8427e",
)


@pytest.mark.parametrize("shared_pass", [False, True], ids=["two-passes", "one-pass"])
def test_a_model_reached_at_once_is_placed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_pass: bool
) -> None:
    dest = f"sqlite:///{tmp_path / 'dst.db'}"
    (tmp_path / "src.db").touch()
    state = StateStore(str(tmp_path / "state.db"))
    reader = open_reader(f"mlflow:sqlite:///{tmp_path / 'src.db'}")
    writers = [open_writer(f"mlflow:{dest}") for _ in range(2)]
    project = writers[0].ensure_project(Project(source_id="wandb:acme/proj", name="proj"))
    calls: list[str] = []
    put = type(writers[0]).put_model

    def slow_put(self: Any, *args: Any) -> str:  # a wide window for the race
        calls.append(threading.current_thread().name)
        time.sleep(1.0)
        return put(self, *args)

    monkeypatch.setattr(type(writers[0]), "put_model", slow_put)
    contexts = [SyncContext(reader=reader, writer=w, state=state) for w in writers]
    if shared_pass:
        contexts = [contexts[0], contexts[0]]
    placed: list[str] = []

    def place(ctx: SyncContext) -> None:
        line = RunPlan(source_id="wandb:acme/proj/r1", project="proj", action="create")
        placed.append(place_model(ctx, line, project, None, ART))

    threads = [
        threading.Thread(target=place, args=(c,), name=f"t{i}") for i, c in enumerate(contexts)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(calls) == 1, calls  # one process wrote the model object
    assert len(placed) == 2 and placed[0] == placed[1]  # the other reused its location
    assert state.get_object(writers[0].display_uri, ART.source_id) == placed[0]
    exp = MlflowClient(tracking_uri=dest).get_experiment_by_name("proj")
    models = MlflowClient(tracking_uri=dest).search_logged_models([exp.experiment_id])
    assert len(models) == 1
    assert state.claims() == {}  # every object claim given back
    for ctx in contexts:
        ctx.release_runs()
