"""The CLI's report commands on the bundled example: verify (clean, then tampered), HTML diff."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wandb"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, CI="true"),
        timeout=300,
    )


def test_verify_and_html_diff_through_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    dest, state = f"mlflow:sqlite:///{db}", str(tmp_path / "state.db")
    source = f"wandb-offline:{EXAMPLE}"

    page = tmp_path / "plan.html"
    diff = _cli("diff", source, dest, "--state", state, "--format", "html", "--output", str(page))
    assert diff.returncode == 0, diff.stderr
    html = page.read_text(encoding="utf-8")
    assert "<html" in html and "example-train" in html and "create" in html

    assert _cli("sync", source, dest, "--state", state).returncode == 0
    clean = _cli("verify", source, dest, "--state", state, "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["mismatches"] == []

    with sqlite3.connect(db) as conn:  # someone edits one stored point
        changed = conn.execute(
            "UPDATE metrics SET value = value + 1 WHERE key = 'loss' AND step = 10 AND run_uuid ="
            " (SELECT run_uuid FROM tags WHERE key = 'bridge.source_id'"
            " AND value LIKE '%/example-train')"
        ).rowcount
    assert changed == 1
    tampered = _cli("verify", source, dest, "--state", state, "--json")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    fields = {m["field"] for m in json.loads(tampered.stdout)["mismatches"]}
    assert fields == {"metric:loss"}


def test_html_diff_plots_changed_streams(tmp_path: Path) -> None:
    """A source run gains points after a sync: the HTML diff plots source vs destination."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    src_uri = f"sqlite:///{tmp_path / 'src.db'}"
    client = MlflowClient(tracking_uri=src_uri)
    exp = client.create_experiment("plots", artifact_location=str(tmp_path / "src-art"))
    run = client.create_run(exp, start_time=1_650_000_000_000, run_name="<b>r</b>")
    t0 = 1_650_000_000_000
    client.log_batch(
        run.info.run_id, metrics=[Metric("loss", 1 / (i + 1), t0 + i, i) for i in range(50)]
    )
    client.set_terminated(run.info.run_id, "FINISHED", end_time=t0 + 1000)
    source, dest = f"mlflow:{src_uri}", f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    state = str(tmp_path / "state.db")
    assert _cli("sync", source, dest, "--state", state).returncode == 0
    client.log_batch(
        run.info.run_id, metrics=[Metric("loss", 0.01, t0 + 100 + i, 50 + i) for i in range(25)]
    )
    page = tmp_path / "diff.html"
    diff = _cli("diff", source, dest, "--state", state, "--format", "html", "--output", str(page))
    assert diff.returncode == 0, diff.stderr
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html and "class='src'" in html and "class='dst'" in html
    assert "(75 source / 50 destination points)" in html
    assert "<b>r</b>" not in html
