"""Canary: no credential leaves the bridge's process, whatever fails.

Distinctive secrets go into every credential slot the bridge takes — MLflow URI userinfo,
MLflow's env credentials (username/password and token), the PostgreSQL state URL password,
the W&B API key (from the environment and from netrc), AWS secrets — and the real CLI runs
as a user would: ``sync`` (``--json``, ``--report`` as JSON/Markdown/HTML), ``diff``,
``mirror --cycles 1`` from a ``bridge.toml`` with ``${VAR}``s, ``status``, ``conflicts`` and
``verify``, also with ``-v``, against destinations that fail in several ways: connection
refused, connection dropped after the health check, HTTP 500 and 401 (echoing the request's
``Authorization`` header back, as a debugging proxy does), a mistyped scheme, and a W&B
server that quotes the header in its GraphQL error. Then every stdout/stderr, report file,
log line, both state databases (dumped) and the destination store with its artifacts are
searched for the secrets in any spelling: zero occurrences.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port
from fakes.wandb_server import FakeWandbServer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_RUN = REPO / "examples/wandb/offline-run-20261126_071030-example-train"

URI_USER = "bridge"
URI_PASS = "canary-URIPASS-7f3a91"
ENV_USER = "canary-user"
ENV_PASS = "canary-ENVPASS-8b2c44"
ENV_TOKEN = "canary-ENVTOKEN-5d9e07"
PG_PASS = "canary-PGPASS-1a6f38"
WANDB_KEY = "canary-WANDBKEY-2e7b55-" + "0123456789abcdef" * 2  # 40+ characters, as W&B wants
AWS_SECRET = "canary-AWSSECRET-9c4d21"
AWS_TOKEN = "canary-AWSTOKEN-3f8a60"
SECRETS = [URI_PASS, ENV_PASS, ENV_TOKEN, PG_PASS, WANDB_KEY, AWS_SECRET, AWS_TOKEN]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def needles() -> dict[str, str]:
    """Every spelling under which a secret would count as leaked."""
    out: dict[str, str] = {}
    for secret in SECRETS:
        out[secret] = secret
        out[f"{secret} (percent-encoded)"] = urllib.parse.quote(secret, safe="")
        out[f"{secret} (inner part)"] = secret.split("-")[1]  # survives escaping of '-'
    out["basic auth of the URI userinfo"] = _b64(f"{URI_USER}:{URI_PASS}")
    out["basic auth of the env credentials"] = _b64(f"{ENV_USER}:{ENV_PASS}")
    out["basic auth of the W&B key"] = _b64(f"api:{WANDB_KEY}")
    return out


# ---- loopback servers that fail ---------------------------------------------------------


class _Failing(BaseHTTPRequestHandler):
    """An MLflow-looking server whose /health and experiment search (what the bridge's
    up-front check asks) answer, and nothing else works: ``drop``
    closes the connection unanswered; ``500``/``401`` answer with a body quoting the
    request's Authorization header (what a debugging proxy or a verbose server does)."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def _answer(self) -> None:
        scheme = (self.headers.get("Authorization") or "none").split(" ")[0]
        self.server.requests.append(f"{self.command} {self.path} auth={scheme}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.rstrip("/").endswith("/health"):
            self._send(200, b"OK")
            return
        if self.server.mode != "wandb" and "/experiments/search" in self.path:
            # the bridge's up-front check passes: the failures come while runs are copied
            self._send(200, b'{"experiments": []}', "application/json")
            return
        if self.server.mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        echo = f"Authorization: {self.headers.get('Authorization')}; Host: {self.headers['Host']}"
        if self.server.mode == "wandb":
            body = json.dumps({"errors": [{"message": f"bad request ({echo})"}]}).encode()
            self._send(400, body, "application/json")
            return
        code = int(self.server.mode)
        self._send(code, f"upstream refused {self.command} {self.path}; {echo}".encode())

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mode: str
    requests: list[str]


@pytest.fixture
def failing() -> Iterator[dict[str, _Server]]:
    """mode -> a failing loopback server."""
    servers: dict[str, _Server] = {}
    for mode in ("500", "401", "drop", "wandb"):
        srv = _Server(("127.0.0.1", 0), _Failing)
        srv.mode, srv.requests = mode, []
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[mode] = srv
    yield servers
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def _userinfo(url: str) -> str:
    return url.replace("http://", f"http://{URI_USER}:{URI_PASS}@")


# ---- the source and the commands --------------------------------------------------------


def _mlflow_source(tmp: Path) -> str:
    """Two finished runs in an MLflow sqlite store (made with MLflow's own client)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / 'source.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("canary", artifact_location=str(tmp / "source-artifacts"))
    for i in range(2):
        run = client.create_run(exp, run_name=f"run-{i}", tags={"team": "vision"})
        client.log_param(run.info.run_id, "lr", str(0.1 * (i + 1)))
        for step in range(5):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
        client.set_terminated(run.info.run_id)
    return uri


class Cli:
    """Runs ``python -m bridge.cli`` with the canary environment; keeps every output."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.outputs: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> int:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "bridge.cli", *args],
            env={**self.env, **(env or {})},
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=180,
        )
        with self._lock:
            took = f"({time.monotonic() - started:.1f}s, exit {proc.returncode})"
            self.outputs.append((f"$ bridge {' '.join(args)} {took}", proc.stdout + proc.stderr))
        return proc.returncode

    def all(self, *commands: tuple[tuple[str, ...], dict[str, str]]) -> list[int]:
        """Run ``(args, extra environment)`` commands, three at a time."""
        with ThreadPoolExecutor(3) as pool:
            return list(pool.map(lambda c: self(*c[0], env=c[1]), commands))


def _environment(tmp: Path, wandb_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    return {
        **keep,
        "MLFLOW_TRACKING_USERNAME": ENV_USER,
        "MLFLOW_TRACKING_PASSWORD": ENV_PASS,
        "MLFLOW_TRACKING_TOKEN": ENV_TOKEN,
        "AWS_ACCESS_KEY_ID": "AKIACANARYEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": AWS_TOKEN,
        "WANDB_API_KEY": WANDB_KEY,
        "WANDB_BASE_URL": wandb_url,
        "WANDB_DIR": str(tmp / "wandb-dir"),
        "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
        "WANDB_DATA_DIR": str(tmp / "wandb-data"),
        "XDG_STATE_HOME": str(tmp / "xdg-state"),
        # fail fast: MLflow would retry a 500 or a dropped connection for minutes
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def _conflict(source: str, dest: str) -> None:
    """Edit tag ``team`` on both sides of one copied run: the next sync records a conflict."""
    from mlflow.tracking import MlflowClient

    src, dst = MlflowClient(tracking_uri=source), MlflowClient(tracking_uri=dest)
    copies = dst.search_runs(
        [e.experiment_id for e in dst.search_experiments()], "tags.team = 'vision'"
    )
    copy = copies[0]
    name = copy.data.tags["mlflow.runName"]
    (original,) = src.search_runs(
        [e.experiment_id for e in src.search_experiments()], f"tags.mlflow.runName = '{name}'"
    )
    src.set_tag(original.info.run_id, "team", "src-edit")
    dst.set_tag(copy.info.run_id, "team", "dest-edit")


# ---- what was said and stored -----------------------------------------------------------


def _sqlite_dump(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _pg_dump(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(
                f"{table.name}: {tuple(row)}"
                for table in meta.sorted_tables
                for row in conn.execute(sa.select(table))
            )
    finally:
        engine.dispose()


def _files_text(root: Path) -> str:
    return "\n".join(
        f"{p}: {p.read_bytes().decode('utf-8', 'replace')}"
        for p in sorted(root.rglob("*"))
        if p.is_file()
    )


def _leaks(haystacks: list[tuple[str, str]]) -> list[str]:
    """One line per place and secret: where, which spelling, and the text around it."""
    found = []
    for where, text in haystacks:
        for secret in SECRETS:
            where = where.replace(secret, "<secret>")  # the command line itself is no leak
        seen = set()
        for name, needle in needles().items():
            at = text.find(needle)
            if at >= 0 and name.split(" ")[0] not in seen:
                seen.add(name.split(" ")[0])
                context = text[max(0, at - 100) : at + len(needle) + 20].replace("\n", "⏎")
                found.append(f"{name} in {where[:90]}: …{context}…")
    return found


def test_no_secret_leaves_the_process(
    tmp_path: Path, failing: dict[str, _Server], pg_database: str
) -> None:
    source = _mlflow_source(tmp_path)
    ok_dest = f"sqlite:///{tmp_path / 'dest.db'}"
    sqlite_state = str(tmp_path / "state.db")
    pg_state = pg_database.replace("postgres@", f"postgres:{PG_PASS}@", 1)
    assert PG_PASS in pg_state
    urls = {mode: _url(srv) for mode, srv in failing.items()}
    urls["refused"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    bad = {mode: f"mlflow:{_userinfo(url)}" for mode, url in urls.items() if mode != "wandb"}
    typo = f"mlfow:{_userinfo(urls['500'])}"
    wandb_bad = f"wandb:acme/example?base_url={urls['wandb'].replace('127.0.0.1', 'localhost')}"

    with FakeWandbServer(api_key=WANDB_KEY) as srv:
        srv.load_offline_run(EXAMPLE_RUN)
        env = _environment(tmp_path, srv.url)
        cli = Cli(tmp_path, env)
        src = f"mlflow:{source}"
        # a healthy pair first: runs to verify, a conflict to list, cycles to show
        assert cli("sync", src, f"mlflow:{ok_dest}", "--state", sqlite_state, "--json") == 0
        assert cli("sync", "wandb:acme/example", f"mlflow:{ok_dest}", "--state", pg_state) == 0
        _conflict(source, ok_dest)
        (tmp_path / "bridge.toml").write_text(
            'state = "${CANARY_STATE}"\nevery = "1s"\n\n'
            '[[pair]]\nsource = "${CANARY_SOURCE}"\ndest = "${CANARY_DEST_500}"\n\n'
            '[[pair]]\nsource = "${CANARY_SOURCE}"\ndest = "${CANARY_DEST_DROP}"\n'
        )
        mirror_env = {
            "CANARY_STATE": pg_state,
            "CANARY_SOURCE": src,
            "CANARY_DEST_500": bad["500"],
            "CANARY_DEST_DROP": bad["drop"],
        }
        # no userinfo either: requests would send it as Basic auth instead of the token
        token_only = {"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}
        # The W&B key from netrc, for "localhost" only: requests (under MLflow's client) reads
        # netrc too, and would send that entry as Basic auth to an MLflow server on the host.
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine localhost login user password {WANDB_KEY}\n")
        netrc.chmod(0o600)
        no_env_key = {"WANDB_API_KEY": "", "NETRC": str(netrc)}
        report = str(tmp_path / "report")
        ok = f"mlflow:{ok_dest}"
        codes = cli.all(
            (("sync", src, ok, "--state", sqlite_state, "--report", report + ".md"), {}),
            (
                (
                    "sync",
                    src,
                    bad["500"],
                    "--state",
                    pg_state,
                    "--json",
                    "--report",
                    report + ".json",
                ),
                {},
            ),
            (
                ("-v", "sync", src, bad["drop"], "--state", pg_state, "--report", report + ".html"),
                {},
            ),
            (("sync", src, bad["refused"], "--state", sqlite_state, "--json"), {}),
            (("sync", src, f"mlflow:{urls['401']}", "--state", sqlite_state), token_only),
            (("sync", src, typo, "--state", sqlite_state), {}),
            (("-v", "sync", wandb_bad, ok, "--state", sqlite_state), {}),
            (("sync", wandb_bad, bad["500"], "--state", pg_state), no_env_key),
            (
                (
                    "-v",
                    "diff",
                    src,
                    bad["drop"],
                    "--format",
                    "html",
                    "--output",
                    report + "-d.html",
                ),
                {},
            ),
            (("-v", "mirror", "--config", "bridge.toml", "--cycles", "1"), mirror_env),
        )
        codes += cli.all(
            (("status", "--state", pg_state), {}),
            (("status", "--state", sqlite_state, "--json"), {}),
            (("-v", "conflicts", "--state", sqlite_state), {}),
            (("conflicts", "--state", pg_state, "--json"), {}),
            (("verify", src, ok, "--state", sqlite_state, "--format", "markdown"), {}),
            (("-v", "verify", src, bad["500"], "--state", pg_state, "--json"), {}),
        )

    transcript = "\n\n".join(f"{cmd}\n{out}" for cmd, out in cli.outputs)
    if os.environ.get("CANARY_TRANSCRIPT"):
        Path(os.environ["CANARY_TRANSCRIPT"]).write_text(transcript)
    # The commands failed the ways meant: each failing server was asked past /health, the
    # healthy pair ran, the second sync found the conflict, the rest failed.
    for mode, srv in failing.items():
        assert any("/health" not in r for r in srv.requests), (mode, srv.requests)
    assert any("auth=Bearer" in r for r in failing["401"].requests)  # the token was sent
    assert any("auth=Basic" in r for r in failing["500"].requests)
    # both W&B invocations sent a key (the environment's, then netrc's) and were refused
    assert transcript.count("rejected the request (HTTP 400)") >= 2, transcript
    expected = [3, 1, 1, 2, 1, 2, 2, 2, 1, 1] + [0, 0, 0, 0, 1, 1]
    assert codes == expected, transcript
    assert "mlflow:http://" in transcript, "the failing destinations were never named"

    assert "src-edit" in transcript, "bridge conflicts listed no conflict"

    reports = [(p.name, p.read_text()) for p in sorted(tmp_path.glob("report*"))]
    stores = {
        "sqlite state store": _sqlite_dump(tmp_path / "state.db"),
        "PostgreSQL state store": _pg_dump(pg_database),
        "destination store": _sqlite_dump(tmp_path / "dest.db"),
        "destination artifacts": _files_text(tmp_path / "mlartifacts"),
    }
    # What is searched holds what it should: the failed cycles' errors (redacted), the
    # copies with their identity tags and the W&B run's files, a report per format.
    assert "API request to http://***@127.0.0.1" in stores["PostgreSQL state store"]
    assert "bridge.source_id" in stores["destination store"]
    assert "output.log" in stores["destination artifacts"]
    assert {name.rsplit(".", 1)[-1] for name, _ in reports} == {"md", "json", "html"}
    haystacks = list(cli.outputs) + reports + list(stores.items())
    leaks = _leaks(haystacks)
    assert not leaks, "secrets left the process:\n" + "\n".join(leaks)
