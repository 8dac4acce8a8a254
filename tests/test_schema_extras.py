"""The neutral run vocabulary: backend-only fields in ``Run.extras`` by kind, ``results``
for W&B's summary, the old names as compatibility aliases, and the parent's destination
id handed to the writer beside the run (never in the record)."""

from __future__ import annotations

from pathlib import Path

from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.adapters.wandb.fields import run_field, wandb_extras
from bridge.schema import Project, Run, RunHeader


def _header(sid: str = "wandb:team/proj/abc") -> RunHeader:
    project = Project(source_id=sid.rsplit("/", 1)[0], name="proj", entity="team")
    return RunHeader(source_id=sid, native_id="abc", project=project, fingerprint="f")


def test_neutral_fields_have_no_backend_names() -> None:
    fields = set(Run.model_fields)
    assert not fields & {"group", "job_type", "exit_code", "summary", "parent_dest_id"}
    assert {"results", "extras"} <= fields


def test_legacy_keywords_land_in_wandb_extras_and_results() -> None:
    run = Run(header=_header(), group="g", job_type="train", exit_code=0, summary={"a": 1})
    assert run.extras == {"wandb": {"group": "g", "job_type": "train", "exit_code": 0}}
    assert run.results == {"a": 1}
    # the read-only aliases read the same values
    assert (run.group, run.job_type, run.exit_code, run.summary) == ("g", "train", 0, {"a": 1})
    # None is "unset": no key, and an empty namespace is not made
    assert Run(header=_header(), group=None, exit_code=None).extras == {}


def test_legacy_keywords_merge_with_explicit_extras() -> None:
    run = Run(header=_header(), group="g", extras={"wandb": {"sweep": "s"}, "x": {"k": 1}})
    assert run.extras == {"wandb": {"sweep": "s", "group": "g"}, "x": {"k": 1}}


def test_extra_reads_the_first_namespace_that_has_the_key() -> None:
    run = Run(header=_header(), extras={"tensorboard": {"group": "tb"}})
    assert run.extra("group", "wandb") is None
    assert run.extra("group", "wandb", "tensorboard") == "tb"
    run.set_extra("wandb", "group", "wb")
    assert run.extra("group", "wandb", "tensorboard") == "wb"
    run.set_extra("wandb", "group", None)
    assert "wandb" not in run.extras and run.extra("group", "wandb") is None


def test_wandb_fields_helpers() -> None:
    assert wandb_extras("g", None, 3) == {"wandb": {"group": "g", "exit_code": 3}}
    assert wandb_extras() == {}
    tb = Run(header=_header("tensorboard:/logs#a"), extras={"tensorboard": {"group": "hp"}})
    assert run_field(tb, "group") == "hp"  # a TensorBoard group becomes the W&B group
    wb = Run(header=_header(), extras=wandb_extras("g"))
    assert run_field(wb, "group") == "g" and run_field(wb, "job_type") is None


def test_parent_dest_id_travels_beside_the_run(tmp_path: Path) -> None:
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        run = Run(header=_header(), parent_source_id="wandb:team/proj/parent")
        assert "mlflow.parentRunId" not in writer.render(run).tags
        tags = writer.render(run, parent_dest_id="0123abcd").tags
        assert tags["mlflow.parentRunId"] == "0123abcd"
    finally:
        writer.close()
