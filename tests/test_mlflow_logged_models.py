"""End to end: MLflow 3 logged models copied MLflow → MLflow, field by field (issue 13).

The corpus (tests/sdk_logged_models.py) is made with MLflow's own APIs; every field a copy
promises — name, params, tags, status, model type, files, source run, model metrics with
their run, step, time, dataset name/digest, run outputs, the registered version made from
a model — is compared source vs destination by :func:`snapshot`, ids read as names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from sdk_logged_models import T0, make_logged_models, snapshot

from bridge import api
from bridge.adapters.base import ReaderOptions

pytestmark = pytest.mark.e2e

#: Tables whose rows a second sync must leave exactly as they were.
TABLES = ("logged_models", "logged_model_tags", "logged_model_params", "logged_model_metrics",
          "metrics", "tags", "runs", "model_versions", "input_tags", "inputs")  # fmt: skip


def _sync(src: str, dst: str, tmp: Path, **kw: Any) -> Any:
    plan = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=str(tmp / "state.db"), **kw)
    assert plan.exit_code() == 0, [(r.source_id, r.error) for r in plan.runs]
    return plan


def _same(src: str, dst: str, tmp: Path) -> None:
    """Every field of every logged model, run link and version identical; the orphan
    (no run made it) too, copied by the item pass (tests/test_mlflow_runless_models.py)."""
    a, b = snapshot(src, tmp / "a"), snapshot(dst, tmp / "b")
    assert set(a) == set(b)
    for name in b:
        for field in a[name]:
            assert b[name][field] == a[name][field], (name, field)


def _rows(uri: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as conn:
            return {
                t: sorted(tuple(map(repr, r)) for r in conn.exec_driver_sql(f"SELECT * FROM {t}"))
                for t in TABLES
            }
    finally:
        engine.dispose()


def _check(src: str, dst: str, tmp: Path) -> dict[str, str]:
    ids = make_logged_models(src, tmp)
    plan = _sync(src, dst, tmp)
    _same(src, dst, tmp)
    snap = snapshot(dst, tmp / "c")
    assert [(m[0], m[1], m[2], m[3], m[4], m[6]) for m in snap["clf"]["metrics"]] == [
        ("acc", 1, T0 + 1, 0.9, "tr", "train"),
        ("acc", 2, T0 + 2, 0.95, "tr", "train"),
        ("eval_acc", 0, T0 + 6, 0.88, "ev", "eval"),
        ("loss", 2, T0 + 3, 0.3, None, "train"),
    ]
    assert all(m[5] for m in snap["clf"]["metrics"][:3])  # dataset digests kept
    assert snap["clf"]["files"].keys() == {"weights.bin", "sub/config.json"}
    assert (snap["broken"]["status"], snap["pyf"]["status"]) == ("FAILED", "READY")
    assert snap["run:train"]["outputs"] == [("pyf", 0)]
    version = snap["version:clfreg/1"]
    assert (version["source"], version["run"]) == ("clf", "train")  # models:/<the copy>
    # the model no run made is copied as a workspace item, no longer reported not copied
    assert not [w for w in plan.notices if w.code == "logged-model-not-copied"]
    assert plan.item_counts["model"]["create"] == 1
    assert [i.name for i in plan.items if i.kind == "model"] == ["orphan"]
    # the copies' model ids are the destination's own, each model copied once
    d = MlflowClient(tracking_uri=dst)
    exps = [e.experiment_id for e in d.search_experiments()]
    copies = list(d.search_logged_models(exps))
    assert sorted(m.name for m in copies) == ["broken", "clf", "orphan", "pyf"]
    assert not {m.model_id for m in copies} & set(ids.values())
    # a second sync writes nothing
    before = _rows(dst)
    again = _sync(src, dst, tmp)
    assert again.counts() == {"unchanged": 2}
    assert sum(r.points_written for r in again.runs) == 0
    assert _rows(dst) == before
    return ids


def test_sqlite_to_sqlite_every_field_then_nothing(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}", tmp_path)


def test_sqlite_to_postgresql_uri(tmp_path: Path, pg_database: str) -> None:
    _check(f"sqlite:///{tmp_path / 'src.db'}", pg_database, tmp_path)


def test_sqlite_to_mlflow_server(tmp_path: Path, mlflow_server: str) -> None:
    """Through MLflow's REST API: the same fields; a second sync touches no model."""
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_logged_models(src, tmp_path)
    _sync(src, mlflow_server, tmp_path)
    _same(src, mlflow_server, tmp_path)
    d = MlflowClient(tracking_uri=mlflow_server)
    exps = [e.experiment_id for e in d.search_experiments()]

    def state() -> list[tuple[Any, ...]]:
        return sorted(
            (m.name, m.last_updated_timestamp, len(m.metrics or []), sorted(m.tags.items()))
            for m in d.search_logged_models(exps)
        )

    before = state()
    again = _sync(src, mlflow_server, tmp_path)
    assert again.counts() == {"unchanged": 2}
    assert state() == before


def test_new_model_metric_tag_and_status_follow(tmp_path: Path) -> None:
    """After the first copy: a changed model tag and a PENDING model finalized at the
    source (the run itself unchanged) are followed; then a new model metric (and its run
    point) is written, exactly that row."""
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    ids = make_logged_models(src, tmp_path)
    c = MlflowClient(tracking_uri=src)
    pending = c.create_logged_model(c.get_run(ids["train"]).info.experiment_id,
                                    name="late", source_run_id=ids["train"])  # fmt: skip
    _sync(src, dst, tmp_path)
    _same(src, dst, tmp_path)
    assert snapshot(dst, tmp_path / "c")["late"]["status"] == "PENDING"
    c.set_logged_model_tags(ids["broken"], {"why": "oom again"})
    c.finalize_logged_model(pending.model_id, LoggedModelStatus.READY)
    before = _rows(dst)
    plan = _sync(src, dst, tmp_path)
    assert plan.counts() == {"update": 1, "unchanged": 1}
    assert sum(r.points_written for r in plan.runs) == 0
    _same(src, dst, tmp_path)
    assert snapshot(dst, tmp_path / "d")["late"]["status"] == "READY"
    assert _rows(dst)["logged_model_metrics"] == before["logged_model_metrics"]
    before = _rows(dst)
    c.log_metric(ids["train"], "acc", 0.99, timestamp=T0 + 100, step=3, model_id=ids["clf"])
    plan = _sync(src, dst, tmp_path)
    assert plan.counts() == {"update": 1, "unchanged": 1}
    assert sum(r.points_written for r in plan.runs) == 1
    _same(src, dst, tmp_path)
    after = _rows(dst)
    new_rows = set(after["logged_model_metrics"]) - set(before["logged_model_metrics"])
    assert len(new_rows) == 1 and "0.99" in " ".join(next(iter(new_rows)))
    assert len(after["logged_model_metrics"]) == len(before["logged_model_metrics"]) + 1
    assert _sync(src, dst, tmp_path).counts() == {"unchanged": 2}
    assert _rows(dst) == after


def test_metrics_of_a_run_synced_before_the_model(tmp_path: Path) -> None:
    """``eval`` logs metrics for ``clf`` (made by ``train``) and is copied first, when
    ``clf`` has no copy yet: the rows land when the model's copy is made."""
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    ids = make_logged_models(src, tmp_path)
    _sync(src, dst, tmp_path, reader_options=ReaderOptions(run_ids=[ids["eval"]], registry=False))
    d = MlflowClient(tracking_uri=dst)
    assert not list(d.search_logged_models([e.experiment_id for e in d.search_experiments()]))
    plan = _sync(src, dst, tmp_path)
    assert plan.counts() == {"create": 1, "unchanged": 1}
    _same(src, dst, tmp_path)
