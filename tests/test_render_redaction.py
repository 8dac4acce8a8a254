"""Reports are redacted field by field copying only what redaction changes
(reporting/render.py): the same values as ``redact_fields``' whole copy, the original
plan untouched, and lines without a credential not copied."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

from bridge import redact as R
from bridge.engine.model import Conflict, Plan, RunPlan
from bridge.schema import Warning_

SECRET = "canary-RENDER-7c2e11"
# the module (the package re-exports its ``render`` function under the same name)
render_mod = importlib.import_module("bridge.reporting.render")


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(R, "_registered", set())
    R.register_secret(SECRET)
    yield


def _plan() -> Plan:
    clean = [
        RunPlan(source_id=f"r{i}", project="p", action="create", params_to_write={"lr": "1"})
        for i in range(5)
    ]
    dirty = RunPlan(
        source_id="r9",
        project="p",
        action="conflict",
        outcome="failed",
        error=f"http://u:{SECRET}@h/x",
        tags_to_write={f"k-{SECRET}": "v", "plain": SECRET},
        conflicts=[Conflict(source_id="r9", field="tag:t", source_value=SECRET, reason="x")],
        warnings=[Warning_(source_id="r9", code="c", message=f"token={SECRET}")],
        artifacts_new=[f"a:{SECRET}", "b:v1"],
    )
    return Plan(
        source="mlflow:sqlite:///a.db",
        dest="mlflow:http://h",
        dry_run=False,
        runs=[*clean, dirty],
        errors=[f"token={SECRET}", "fine"],
    )


def test_the_redacted_copy_has_redact_fields_values_and_shares_clean_lines() -> None:
    plan = _plan()
    before = plan.model_dump_json()
    red = render_mod._redacted(plan)
    assert red.model_dump_json() == R.redact_fields(plan).model_dump_json()
    assert SECRET not in red.model_dump_json()
    assert plan.model_dump_json() == before  # the original is not touched
    assert all(a is b for a, b in zip(red.runs[:5], plan.runs[:5], strict=True))
    assert red.runs[5] is not plan.runs[5]


@pytest.mark.parametrize("fmt", ["text", "json", "markdown", "html"])
def test_every_format_renders_as_with_a_whole_copy(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan()
    out = render_mod.render(plan, fmt)
    monkeypatch.setattr(render_mod, "_redacted", R.redact_fields)
    whole = render_mod.render(plan, fmt)
    strip = (lambda s: s.split("generated", 1)[0]) if fmt == "html" else (lambda s: s)
    assert strip(out) == strip(whole)
    assert SECRET not in out
