"""bridge.redact (credentials by shape and by value), its logging and traceback hooks, the
report renderer's use of it, and telemetry being off unless the user opts in."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import redact as R
from bridge import reporting as report
from bridge.engine.model import Plan, RunPlan
from bridge.telemetry import OFF, OPT_IN, disable_telemetry

SECRET = "canary-UNIT-4b1d9c"


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(R, "_registered", set())
    for name in list(os.environ):
        if name in R.ENV_SECRETS or R._ENV_SECRET_NAME.search(name):
            monkeypatch.delenv(name)
    yield


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (
            f"API request to http://user:{SECRET}@127.0.0.1:5000/api/2.0/x failed",
            [SECRET, "user:"],
            ["http://***@127.0.0.1:5000/api/2.0/x failed"],
        ),
        ("postgresql+psycopg2://bridge:p%40ss@db:5432/state", ["p%40ss"], ["@db:5432/state"]),
        ("pass with a raw @: https://u:p@ss@host/x", ["p@ss"], ["https://***@host/x"]),
        ("{'Authorization': 'Basic YXBpOmtleWtleWtleQ=='}", ["YXBpOmtleWtleWtleQ"], ["Basic ***"]),
        ("Authorization: Bearer eyJhbGciOi.abc.def", ["eyJhbGciOi"], ["Bearer ***"]),
        ("api:0123456789abcdef0123456789abcdef01234567", ["0123456789abcdef"], ["api:***"]),
        (
            "https://b.s3/k?X-Amz-Signature=abcdef12&X-Amz-Security-Token=tok%2Fxx&part=1",
            ["abcdef12", "tok%2Fxx"],
            ["X-Amz-Signature=***", "&part=1"],
        ),
        ("dsn: host=db password=hunter22 user=x", ["hunter22"], ["password=***", "user=x"]),
        ('{"password": "hunter2222", "user": "x"}', ["hunter2222"], ['"password": "***"']),
        ("aws_secret_access_key: wJalrXUtnFEMI/K7MDENG", ["wJalrXUtnFEMI"], []),
        ("https://h/cb?access_token=abc123456&next=/x", ["abc123456"], ["&next=/x"]),
    ],
)
def test_shapes(text: str, gone: list[str], kept: list[str]) -> None:
    out = R.redact(text)
    for g in gone:
        assert g not in out, out
    for k in kept:
        assert k in out, out
    assert R.redact(out) == out  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "Basic authentication failed for user alice",
        "max_tokens=5 design=3 lr=0.1 author=bob",
        "sqlite:////tmp/x.db and file:///data/run",
        "loss went from 0.5 to 0.25 at step 1200",
        "https://example.com/acme/demo.git",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert R.redact(text) == text


def test_known_values_in_every_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pa ss/wörd_1")
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok_en-value")
    monkeypatch.setenv("PGPASSWORD", "short")  # under 8 characters: ordinary words stay
    for text in [
        "got pa ss/wörd_1 back",
        "url-quoted pa%20ss%2Fw%C3%B6rd_1",
        json.dumps({"e": "pa ss/wörd_1"}),
        "markdown pa ss/wörd\\_1",
        "the tok_en-value",
    ]:
        out = R.redact(text)
        assert "ss/w" not in out and "ss%2F" not in out and "en-value" not in out, out
    assert R.redact("a short story") == "a short story"


def test_registered_uri_passwords() -> None:
    R.register_uri(f"wandb:acme/p?base_url=https://u:{SECRET}@w.example")
    R.register_uri("mlflow:http://u:p%2540ssword1@h")  # percent-encoded userinfo
    assert R.redact(f"oops {SECRET} and p%40ssword1") == "oops *** and ***"
    R.register_secret("1234567")  # too short to register
    assert R.redact("1234567") == "1234567"


def test_redact_fields_reaches_nested_models() -> None:
    plan = Plan(
        source="mlflow:sqlite:///a.db",
        dest="mlflow:http://h",
        dry_run=False,
        runs=[
            RunPlan(source_id="r1", project="p", action="create", error=f"http://u:{SECRET}@h/x")
        ],
        errors=[f"token={SECRET}"],
    )
    clean = R.redact_fields(plan)
    assert SECRET not in clean.model_dump_json()
    assert SECRET in plan.model_dump_json()  # the original is not touched


def test_every_report_format_is_redacted() -> None:
    """Markdown escapes '_' and HTML escapes '&': a secret must be removed before that."""
    R.register_secret("se_cr&et-val")
    plan = Plan(
        source="mlflow:sqlite:///a.db",
        dest="mlflow:http://h",
        dry_run=False,
        runs=[
            RunPlan(
                source_id="r1",
                project="p",
                name="se_cr&et-val",
                action="create",
                outcome="failed",
                error=f"MlflowException: http://user:{SECRET}@127.0.0.1:1/api failed",
            )
        ],
    )
    for fmt in ("text", "json", "markdown", "html"):
        out = report.render(plan, fmt)
        for needle in (SECRET, "cr&et", "cr\\_", "cr&amp;et", "cr\\u0026et"):
            assert needle not in out, (fmt, needle)
        assert "***" in out or "\\*\\*\\*" in out  # Markdown shows \*\*\* as ***


def test_logging_and_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of loggers with their own handlers, of handlers made after install, and
    tracebacks (also -v's, through the root) come out without the secret."""
    R.register_secret(SECRET)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())
    early, late, root_out = io.StringIO(), io.StringIO(), io.StringIO()
    own = logging.getLogger("canary.own")
    own.propagate = False
    own.addHandler(logging.StreamHandler(early))
    root_handler = logging.StreamHandler(root_out)
    logging.getLogger().addHandler(root_handler)
    try:
        R.install()
        own.addHandler(logging.StreamHandler(late))
        own.error("API request to http://u:%s@h failed", SECRET)
        try:
            raise RuntimeError(f"connect to postgresql://u:{SECRET}@db failed")
        except RuntimeError:
            logging.getLogger("canary.child").exception("sync failed")
    finally:
        logging.getLogger().removeHandler(root_handler)
        own.handlers.clear()
    assert "http://***@h failed" in early.getvalue()
    assert "http://***@h failed" in late.getvalue()
    assert "RuntimeError: connect to postgresql://***@db failed" in root_out.getvalue()
    for text in (early.getvalue(), late.getvalue(), root_out.getvalue()):
        assert SECRET not in text


def test_uncaught_exception_is_redacted(tmp_path: Path) -> None:
    code = (
        "from bridge.redact import install; install()\n"
        f"raise RuntimeError('http://u:{SECRET}@h down')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "RuntimeError: http://***@h down" in proc.stderr
    assert SECRET not in proc.stderr


# ---- telemetry ---------------------------------------------------------------------------

_PROBE = """
import json
from bridge.telemetry import disable_telemetry
disable_telemetry()
import mlflow
from mlflow.telemetry.client import get_telemetry_client
from mlflow.telemetry.utils import is_telemetry_disabled
import wandb.env
print(json.dumps([is_telemetry_disabled(), get_telemetry_client() is None,
                  wandb.env.error_reporting_enabled()]))
"""


@pytest.mark.e2e
def test_libraries_see_telemetry_off() -> None:
    """MLflow's and wandb's own answer, in a process that does not look like a test or CI
    run (MLflow switches itself off there): no MLflow telemetry client is even created.
    (Without disable_telemetry() the same process gets a client that phones home: that
    baseline is not run here, it would contact MLflow's servers.)"""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in OFF and k != OPT_IN and k != "CI" and not k.startswith("PYTEST")
    }
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=clean, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, True, False]


def test_opt_in_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OFF:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setenv(OPT_IN, "1")
    disable_telemetry()
    assert not any(name in os.environ for name in OFF)
    monkeypatch.delenv(OPT_IN)
    disable_telemetry()
    assert {n: os.environ.get(n) for n in OFF} == OFF


def test_cli_entry_turns_telemetry_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bridge.cli import main

    for name in (*OFF, OPT_IN):
        monkeypatch.setenv(name, "placeholder")  # restored after the test
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())
    result = CliRunner().invoke(main, ["status", "--state", str(tmp_path / "s.db")])
    assert result.exit_code == 0, result.output
    assert {n: os.environ.get(n) for n in OFF} == OFF


def test_disable_keeps_user_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPT_IN, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    for name in OFF:
        if name != "DO_NOT_TRACK":
            monkeypatch.setenv(name, "placeholder")
            monkeypatch.delenv(name)
    disable_telemetry()
    assert os.environ["DO_NOT_TRACK"] == "1"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_bridge_tags_redacted_user_data_untouched(tmp_path: Path) -> None:
    """The bridge's own status/incomplete tags pass redact; copied params and notes holding
    the same secret stay byte-identical."""
    from test_mlflow_writer import make_run

    from bridge.adapters.mlflow.writer import INCOMPLETE_TAG, STATUS_REASON_TAG, MlflowWriter

    R.register_secret(SECRET)
    url = f"postgresql://u:{SECRET}@db/x"
    run = make_run(
        status_reason=f"exit 1 after {url} refused",
        incomplete_reason=f"token={SECRET}",
        config={"db": url},
        notes=f"note with {SECRET}",
    )
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        rendered = writer.render(run)
    finally:
        writer.close()
    assert rendered.tags[STATUS_REASON_TAG] == "exit 1 after postgresql://***@db/x refused"
    assert rendered.tags[INCOMPLETE_TAG] == "token=***"
    assert rendered.params["db"] == url
    assert rendered.tags["mlflow.note.content"] == f"note with {SECRET}"


def test_wandb_display_uris_carry_no_userinfo() -> None:
    """Display URIs key the state store and fill bridge.source_uri: no password in them."""
    from bridge.adapters.wandb.api_reader import WandbApiReader
    from bridge.adapters.wandb.writer import WandbWriter

    target = f"acme/demo?base_url=https://proxy:{SECRET}@wandb.internal"
    for display in (WandbApiReader(target).display_uri, WandbWriter(target).display_uri):
        assert display == "wandb:acme/demo?base_url=https://***@wandb.internal"
