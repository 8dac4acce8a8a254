"""Reports of registered-model changes and new artifact versions (text, JSON, Markdown,
HTML): what a reviewer sees before a sync writes anything."""

from __future__ import annotations

import json

from bridge import reporting as report
from bridge.engine.model import AliasLine, Conflict, ModelPlan, Plan, RunPlan, VersionLine


def _plan() -> Plan:
    run = RunPlan(
        source_id="wandb:acme/p/r1",
        project="p",
        action="create",
        artifacts_new=[
            "clf:v1 (model, 2048 bytes)",
            "refs:v0 (dataset, 0 bytes, 2 references kept)",
        ],
        bytes_new=2048,
    )
    model = ModelPlan(
        source_id="wandb:acme-org/wandb-registry-model/<script>x</script>",
        name="<script>x</script>",
        dest_name="clf",
        action="conflict",
        versions=[
            VersionLine(
                source_id="s:v2", source_version="v2", bytes_new=2048, note="run out of scope"
            )
        ],
        aliases=[
            AliasLine(alias="prod", source_version="v2", dest_from="1", dest_to="+v2"),
            AliasLine(
                alias="latest", source_version="v2", dest_from=None, dest_to=None, action="illegal"
            ),
            AliasLine(
                alias="staging", source_version="v0", dest_from="3", dest_to="1", action="conflict"
            ),
        ],
        conflicts=[
            Conflict(
                source_id="wandb:acme-org/wandb-registry-model/<script>x</script>",
                field="alias:staging",
                source_value="1",
                dest_value="3",
                synced_value="2",
                reason="alias moved on both sides since the last sync",
            )
        ],
    )
    return Plan(
        source="wandb:acme/p",
        dest="mlflow:sqlite:///m.db",
        dry_run=True,
        runs=[run],
        models=[model],
    )


def test_text_lists_versions_bytes_and_alias_moves() -> None:
    text = report.as_text(_plan())
    assert "2 artifact versions (2048 bytes)" in text
    assert "version v2 -> (next) — run out of scope" in text
    assert "alias prod: set 1 -> +v2 (source: v2)" in text
    assert "alias:staging: source='1' dest='3' last-synced='2'" in text


def test_json_and_markdown_carry_the_models() -> None:
    plan = _plan()
    data = json.loads(report.as_json(plan))
    [model] = data["models"]
    assert model["dest_name"] == "clf" and model["bytes_new"] == 2048
    assert [a["alias"] for a in model["aliases"]] == ["prod", "latest", "staging"]
    assert data["runs"][0]["artifacts_new"][0].startswith("clf:v1")
    assert plan.exit_code() == 3
    md = report.as_markdown(plan)
    assert "### Registered models" in md and "v2→next" in md


def test_html_escapes_model_names() -> None:
    page = report.render(_plan(), "html")
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "Registered models" in page and "+v2" in page
