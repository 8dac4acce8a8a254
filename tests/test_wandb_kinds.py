"""The W&B writers pick their rules per run by the source kind its identity records:
MLflow (and W&B) sources keep today's rules byte for byte (golden render made by the code
before the change), a TensorBoard run gets ``tensorboard-to-wandb.toml``'s names, any other
kind neutral ``<kind>_*`` names; restoration on read keys on the recorded kind too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tensorboard_reader import HPARAMS, loss_at, write_tensorboardx_run

from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.mapping import (
    WandbMapping,
    kind_defaults,
    load_wandb_mapping,
    rules_for,
)
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.adapters.wandb.offline_writer import WandbOfflineWriter
from bridge.mapping import default_mapping
from bridge.schema import MetricChunk, Project, Run, RunHeader

#: ``render`` of :func:`_mlflow_run` by the writer before per-kind rules (commit 2aa2450).
GOLDEN_MLFLOW_RENDER: dict = {
    "config": {
        "_bridge.end_time_ms": 2000,
        "_bridge.host": "h",
        "_bridge.parent_source_id": "mlflow:sqlite:///m.db#parent",
        "_bridge.source_id": "mlflow:sqlite:///m.db#0123abcd",
        "_bridge.source_project": "exp one",
        "_bridge.source_run_id": "0123abcd",
        "_bridge.source_uri": "mlflow:sqlite:///m.db",
        "_bridge.start_time_ms": 1000,
        "_bridge.status": "FAILED",
        "_bridge.step_key": "mlflow_step",
        "_bridge.user": "ana",
        "lr": "0.1",
        "mlflow_tags": {
            "mlflow.source.git.commit": "abc",
            "mlflow.user": "ana",
            "promoted": "true",
            "team": "vision",
        },
        "mlflow_tags_": "clash",
        "opt": {"b1": 0.9},
    },
    "params": {
        "_bridge.end_time_ms": "2000",
        "_bridge.host": "h",
        "_bridge.parent_source_id": "mlflow:sqlite:///m.db#parent",
        "_bridge.source_id": "mlflow:sqlite:///m.db#0123abcd",
        "_bridge.source_project": "exp one",
        "_bridge.source_run_id": "0123abcd",
        "_bridge.source_uri": "mlflow:sqlite:///m.db",
        "_bridge.start_time_ms": "1000",
        "_bridge.status": "FAILED",
        "_bridge.step_key": "mlflow_step",
        "_bridge.user": "ana",
        "lr": "0.1",
        "mlflow_tags.mlflow.source.git.commit": "abc",
        "mlflow_tags.mlflow.user": "ana",
        "mlflow_tags.promoted": "true",
        "mlflow_tags.team": "vision",
        "mlflow_tags_": "clash",
        "opt.b1": "0.9",
    },
    "tags": {
        "wandb.group": "i2sw1qt2y1wd",
        "wandb.name": "train",
        "wandb.notes": "n",
        "wandb.tag.base": "true",
        "wandb.tag.promoted": "true",
    },
    "wandb_tags": ["base", "promoted"],
    "warnings": ["sanitized-key"],
}


def _mlflow_run() -> Run:
    sid = "mlflow:sqlite:///m.db#0123abcd"
    return Run(
        header=RunHeader(
            source_id=sid,
            native_id="0123abcd",
            project=Project(source_id="mlflow:sqlite:///m.db#exp/1", name="exp one"),
            name="train",
            fingerprint="f",
        ),
        name="train",
        user="ana",
        notes="n",
        tags=["base"],
        host="h",
        start_time_ms=1000,
        end_time_ms=2000,
        status="FAILED",
        config={"lr": "0.1", "mlflow_tags": "clash", "opt": {"b1": 0.9}, "_wandb": {"x": 1}},
        parent_source_id="mlflow:sqlite:///m.db#parent",
        extra_tags={
            "mlflow.source.git.commit": "abc",
            "mlflow.user": "ana",
            "promoted": "true",
            "team": "vision",
        },
    )


def _render(writer: WandbOfflineWriter, run: Run) -> dict:
    doc = writer._render_doc(run)
    return {
        "config": doc.config,
        "params": doc.params,
        "tags": doc.tags,
        "wandb_tags": doc.wandb_tags,
        "warnings": [w.code for w in doc.warnings],
    }


@pytest.fixture
def writer(tmp_path: Path) -> WandbOfflineWriter:
    w = WandbOfflineWriter(str(tmp_path / "out"))
    w.source_uri = "mlflow:sqlite:///m.db"
    return w


def test_mlflow_sourced_render_is_byte_identical(writer: WandbOfflineWriter) -> None:
    run = _mlflow_run()
    rendered = _render(writer, run)
    assert json.dumps(rendered, sort_keys=True) == json.dumps(GOLDEN_MLFLOW_RENDER, sort_keys=True)
    assert writer.run_id(run) == WandbMapping().run_id_for(run.header.source_id)
    assert writer.rules(run.header.source_id) is writer.mapping


@pytest.mark.parametrize("sid", ["mlflow:sqlite:///m.db#1", "wandb:e/p/abc"])
def test_mlflow_and_wandb_kinds_keep_the_configured_rules(sid: str) -> None:
    mapping = WandbMapping(step_key="s")
    assert rules_for(mapping, sid) is mapping


def test_tensorboard_rules_come_from_the_shipped_file() -> None:
    path = default_mapping("tensorboard", "wandb")
    assert path is not None and path.name == "tensorboard-to-wandb.toml"
    expected = WandbMapping(
        step_key="global_step",
        extra_tags_config_key="tensorboard_tags",
        wandb_tag_skip_prefixes=["tensorboard.", "bridge."],
    )
    assert load_wandb_mapping(path) == expected
    assert kind_defaults("tensorboard") == expected
    # every rule is spelled out in the file (nothing left to the code's defaults)
    text = path.read_text()
    for name in WandbMapping.model_fields:
        assert f"\n{name} = " in text or f"[{name}]" in text, name
    assert rules_for(WandbMapping(), "tensorboard:/logs#runA") == expected


def test_a_kind_without_a_file_gets_neutral_names() -> None:
    rules = rules_for(WandbMapping(), "comet:ws/proj/123")
    assert rules.step_key == "comet_step"
    assert rules.extra_tags_config_key == "comet_tags"
    assert rules.wandb_tag_skip_prefixes == ["comet.", "bridge."]
    assert rules.run_id_for("comet:x") == WandbMapping().run_id_for("comet:x")
    assert rules_for(WandbMapping(), "no-kind-here").step_key == "source_step"


def test_mapping_file_keys_apply_over_every_kind(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('step_key = "iteration"\nrun_id_salt = "x"\n')
    mapping = load_wandb_mapping(f)
    tb = rules_for(mapping, "tensorboard:/logs#runA")
    assert tb.step_key == "iteration" and tb.run_id_salt == "x"
    assert tb.extra_tags_config_key == "tensorboard_tags"


def _all_keys(value: object, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        keys = []
        for k, v in value.items():
            keys.append(f"{prefix}{k}")
            keys.extend(_all_keys(v, f"{prefix}{k}."))
        return keys
    return []


def test_tensorboard_log_into_wandb_offline_has_no_mlflow_keys(tmp_path: Path) -> None:
    from bridge import api

    root = tmp_path / "tb-logs"
    write_tensorboardx_run(root / "runA", points=40)
    out = tmp_path / "wandb-out"
    plan = api.sync(
        f"tensorboard:{root}", f"wandb-offline:{out}", state=str(tmp_path / "s.db"), workers=1
    )
    assert plan.exit_code() == 0

    raw = WandbOfflineReader(str(out), ReaderOptions(), restore_bridge=False)
    headers = raw.list_runs()
    assert {h.name for h in headers} == {"runA", "runA/hp"}
    for header in headers:
        run = raw.read_run(header)
        keys = _all_keys(run.config) + _all_keys(run.summary)
        history: set[str] = set()
        for item in raw.iter_history(run):
            if isinstance(item, MetricChunk):
                history.add(item.key)
        assert not [k for k in keys + sorted(history) if "mlflow" in k], (keys, history)
        assert run.config["_bridge.step_key"] == "global_step"
        assert "global_step" in history
        if header.name == "runA/hp":
            assert "tensorboard_tags" in run.config
            assert all(t.startswith("tensorboard.") for t in run.config["tensorboard_tags"])
            assert not [t for t in run.tags if t.startswith("tensorboard")]

    # read back as the runs that were written: the source kind picks the layout's names
    back = WandbOfflineReader(str(out), ReaderOptions())
    by_name = {h.name: h for h in back.list_runs()}
    hp = back.read_run(by_name["runA/hp"])
    assert "tensorboard_tags" not in hp.config and not any(
        k.startswith("_bridge.") for k in hp.config
    )
    assert hp.extra_tags and all(k.startswith("tensorboard.") for k in hp.extra_tags)
    assert {k: v for k, v in hp.config.items() if k in HPARAMS}
    run_a = back.read_run(by_name["runA"])
    points: list[tuple[int, float]] = []
    for item in back.iter_history(run_a):
        if isinstance(item, MetricChunk) and item.key == "train/loss":
            points.extend(zip(item.steps, item.values, strict=True))
    assert points == [(s, loss_at(s)) for s in range(40)]
