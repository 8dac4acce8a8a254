"""`bridge verify` reads a copy with the mapping its sync used (issue 12, slice S9).

A sync made with a non-default mapping file (MLflow sqlite -> W&B offline; here: another
project name, step key and config key for the source's tags) must verify clean when verify is given the same file (``--mapping``, api
``mapping=``), or none at all once the pair's last sync recorded which file it used."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.cli import main
from bridge.reporting import render

T0 = 1_650_000_000_000
MAPPING = """
project_name = "renamed-{project}"
step_key = "my_step"
extra_tags_config_key = "source_tags"
"""


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source sqlite store with two runs (a param, a tag, 5 points each)."""
    folder = tmp_path_factory.mktemp("verify-mapping")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'src.db'}")
    exp = client.create_experiment("scope", artifact_location=str(folder / "src-art"))
    for name in ("a", "b"):
        run_id = client.create_run(exp, start_time=T0, run_name=name).info.run_id
        client.log_param(run_id, "lr", "0.1")
        client.set_tag(run_id, "team", "vision")
        for step in range(5):
            client.log_metric(run_id, "loss", 1.0 / (step + 1), timestamp=T0 + step, step=step)
        client.set_terminated(run_id, "FINISHED", end_time=T0 + 100)
    (folder / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    return folder


def _synced(tmp_path: Path, stores: Path) -> tuple[str, str, str, str]:
    import shutil

    for name in ("src.db", "mapping.toml"):
        shutil.copyfile(stores / name, tmp_path / name)
    source = f"mlflow:sqlite:///{tmp_path / 'src.db'}"
    dest = f"wandb-offline:{tmp_path / 'wdest'}"
    state, mapping = str(tmp_path / "state.db"), str(tmp_path / "mapping.toml")
    plan = api.sync(source, dest, state=state, workers=2, mapping=mapping)
    assert plan.exit_code() == 0 and plan.outcomes().get("done") == 2, plan
    logs = b"".join(p.read_bytes() for p in (tmp_path / "wdest").rglob("*.wandb"))
    assert b"source_tags" in logs and b"mlflow_tags" not in logs  # the mapping applied
    return source, dest, state, mapping


@pytest.mark.e2e
def test_verify_with_the_sync_mapping_is_clean(tmp_path: Path, stores: Path) -> None:
    source, dest, state, mapping = _synced(tmp_path, stores)
    report = api.verify(source, dest, state=state, workers=2, mapping=mapping)
    assert report.exit_code() == 0, render(report, "text")
    assert [r.status for r in report.runs] == ["ok", "ok"]
    assert all(r.tags_checked > 0 and r.points_checked == 5 for r in report.runs)
    # Without the state store's mapping of runs, the renamed experiment is still found.
    report = api.verify(source, dest, state=str(tmp_path / "fresh.db"), mapping=mapping)
    assert report.exit_code() == 0, render(report, "text")
    assert [r.status for r in report.runs] == ["ok", "ok"]


@pytest.mark.e2e
def test_verify_cli_mapping_option(tmp_path: Path, stores: Path) -> None:
    source, dest, state, mapping = _synced(tmp_path, stores)
    args = ["verify", source, dest, "--state", state, "--workers", "2"]
    result = CliRunner().invoke(main, [*args, "--mapping", mapping, "--json"])
    assert result.exit_code == 0, result.output


@pytest.mark.e2e
def test_verify_uses_the_mapping_the_last_sync_recorded(tmp_path: Path, stores: Path) -> None:
    """No mapping given: the file the pair's last sync used (recorded in state)."""
    source, dest, state, mapping = _synced(tmp_path, stores)
    report = api.verify(source, dest, state=state, workers=2)
    assert report.exit_code() == 0, render(report, "text")
    assert report.mapping == mapping
    # The file gone: one clear error naming it, not a report of false mismatches.
    Path(mapping).unlink()
    with pytest.raises(Exception, match="mapping.toml"):
        api.verify(source, dest, state=state, workers=2)


# ------------------------------------------- bookkeeping keys: declared by each writer


def test_writers_declare_their_bookkeeping_keys() -> None:
    """Today's values, each writer naming its own (the engine names none)."""
    from bridge.adapters.base import Writer
    from bridge.adapters.mlflow.writer import MlflowWriter
    from bridge.adapters.wandb.offline_writer import WandbOfflineWriter
    from bridge.adapters.wandb.writer import WandbWriter

    assert Writer.bookkeeping_keys == frozenset()
    assert MlflowWriter.bookkeeping_keys == {
        "bridge.fingerprint",
        "bridge.complete",
        "bridge.source_uri",
    }
    wandb_keys = {"_bridge.fingerprint", "_bridge.complete", "_bridge.source_uri"}
    assert WandbWriter.bookkeeping_keys == wandb_keys
    assert WandbOfflineWriter.bookkeeping_keys == wandb_keys


def test_verify_skips_the_writers_bookkeeping_keys_only() -> None:
    from bridge.engine.verify.report import RunVerify
    from bridge.engine.verify.runs import _compare_values

    rv = RunVerify(source_id="s", name="n", project="p")
    want = {"bk.fingerprint": "a", "bridge.fingerprint": "a", "lr": "0.1"}
    have = {"bk.fingerprint": "b", "lr": "0.1"}
    assert _compare_values(rv, "tag", want, have, frozenset({"bk.fingerprint"})) == 2
    assert [m.field for m in rv.mismatches] == ["tag:bridge.fingerprint"]


@pytest.mark.e2e
def test_a_bridge_toml_pairs_mapping_reaches_verify(tmp_path: Path, stores: Path) -> None:
    """`bridge mirror --config` with a pair's ``mapping = ...``; `bridge verify` of that
    pair, given no mapping, renders with it (the sync recorded it)."""
    import shutil

    for name in ("src.db", "mapping.toml"):
        shutil.copyfile(stores / name, tmp_path / name)
    source = f"mlflow:sqlite:///{tmp_path / 'src.db'}"
    dest = f"wandb-offline:{tmp_path / 'wdest'}"
    state = str(tmp_path / "state.db")
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'state = "{state}"\n[[pair]]\nsource = "{source}"\ndest = "{dest}"\n'
        'mapping = "mapping.toml"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["mirror", "--config", str(config), "--cycles", "1"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["verify", source, dest, "--state", state])
    assert result.exit_code == 0, result.output
    assert f"mapping {tmp_path / 'mapping.toml'} (of the last sync)" in result.output
