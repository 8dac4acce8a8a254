"""The MLflow reader's requests per run (issue 14, P3): the experiment's logged models are
searched once per listing, not once more per run read; on a server the history read takes
the metric keys read_run's ``get_run`` saw instead of a second ``get_run``. What is read is
unchanged: the same runs, bodies and points as with the caches emptied."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.base import ReaderOptions
from bridge.adapters.mlflow.reader import MlflowReader

RUNS = 3
SCOPE = ReaderOptions(experiments=["calls"])  # not the Default experiment: one listing


def make_source(uri: str, art: Path) -> list[str]:
    """One experiment: RUNS runs with two metric keys and a param, and one logged model
    made by the first run (so every run's read looks at the experiment's models)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    exp = client.create_experiment("calls", artifact_location=str(art))
    ids = []
    for r in range(RUNS):
        run_id = client.create_run(exp, run_name=f"r{r}").info.run_id
        metrics = [Metric(k, s * 0.5 + r, 1_000 + s, s) for s in range(5) for k in ("a", "b")]
        client.log_batch(run_id, metrics=metrics, params=[Param("p", str(r))])
        client.set_terminated(run_id)
        ids.append(run_id)
    if hasattr(client, "create_logged_model"):
        client.create_logged_model(exp, name="m", source_run_id=ids[0])
    return ids


def counting(reader: MlflowReader) -> Counter[str]:
    """Count the reader client's get_run and search_logged_models calls."""
    calls: Counter[str] = Counter()
    client = reader.client
    for name in ("get_run", "search_logged_models"):
        real = getattr(client, name)

        def wrapped(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        setattr(client, name, wrapped)
    return calls


def read_all(reader: MlflowReader, forget: bool = False) -> list[Any]:
    """Every run's body and points; ``forget`` empties the reader's caches before each read
    (the reads as they were before the caches)."""
    out = []
    for header in reader.list_runs():
        if forget:
            reader.listed_models_kept.clear()
        run = reader.read_run(header)
        if forget:
            reader._keys_read.clear()
        points = [(c.key, c.steps, c.timestamps, c.values) for c in reader.iter_history(run)]
        out.append((run.model_dump(mode="json"), points))
    return out


def test_sqlite_logged_models_searched_once_per_listing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    make_source(uri, tmp_path / "art")
    reader = MlflowReader(uri, SCOPE)
    calls = counting(reader)
    cached = read_all(reader)
    assert calls["search_logged_models"] == 1  # the listing's; was 1 + RUNS
    assert calls["get_run"] == RUNS
    calls.clear()
    assert read_all(reader, forget=True) == cached
    assert calls["search_logged_models"] == 1 + RUNS
    models = [a for body, _ in cached for a in body["artifacts"] if a["type"] == "model"]
    assert len(models) == 1 and models[0]["direction"] == "logged"
    reader.close()


@pytest.mark.e2e
def test_server_one_get_run_per_run(tmp_path: Path) -> None:
    from conftest import running_mlflow_server

    with running_mlflow_server(tmp_path / "server") as url:
        make_source(url, tmp_path / "art")
        reader = MlflowReader(url, SCOPE)
        calls = counting(reader)
        cached = read_all(reader)
        assert calls["get_run"] == RUNS  # read_run's only; was 2 per run
        assert calls["search_logged_models"] == 1
        # A second history read of a run asks the server again (the keys are taken once).
        run = reader.read_run(next(iter(reader.list_runs())))
        list(reader.iter_history(run))
        calls.clear()
        list(reader.iter_history(run))
        assert calls["get_run"] == 1
        calls.clear()
        assert read_all(reader, forget=True) == cached
        assert calls["get_run"] == 2 * RUNS
        assert all(len(points) == 2 for _, points in cached)
        reader.close()
