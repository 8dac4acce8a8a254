"""The W&B API key goes only to the configured server's exact scheme, host and port.

Two real loopback HTTP servers: the configured "W&B server" and "storage elsewhere". The
reader's own requests (file downloads by ``url``/``directUrl``, the raw GraphQL check) must
send the key to the first only — not to a URL that merely starts with the same text, and
not along a redirect that leaves the server (urllib keeps headers across redirects).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bridge.adapters.wandb.api_reader import WandbApiReader
from bridge.adapters.wandb.key_scope import origin, same_origin

KEY = "k" * 40
AUTH = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()


class _Recorder(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def _handle(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        target = self.server.redirects.get(self.path)
        if target:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"data": {}}' if self.path == "/graphql" else b"content"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, str | None]]
    redirects: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _start() -> _Server:
    srv = _Server(("127.0.0.1", 0), _Recorder)
    srv.seen, srv.redirects = [], {}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Server, _Server]]:
    """(the configured W&B server, storage on another port)."""
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    wandb_srv, elsewhere = _start(), _start()
    yield wandb_srv, elsewhere
    for srv in (wandb_srv, elsewhere):
        srv.shutdown()
        srv.server_close()


def _reader(base_url: str) -> WandbApiReader:
    return WandbApiReader(f"acme/demo?base_url={base_url}")


def _auth_sent(srv: _Server) -> list[str | None]:
    return [auth for _, _, auth in srv.seen]


def test_the_servers_own_files_get_the_key(
    servers: tuple[_Server, _Server], tmp_path: Path
) -> None:
    wandb_srv, _ = servers
    _reader(wandb_srv.url)._download(f"{wandb_srv.url}/files/acme/demo/r1/a.txt", tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == b"content"
    assert _auth_sent(wandb_srv) == [AUTH]


def test_a_direct_url_elsewhere_is_fetched_without_the_key(
    servers: tuple[_Server, _Server], tmp_path: Path
) -> None:
    wandb_srv, elsewhere = servers
    _reader(wandb_srv.url)._download(f"{elsewhere.url}/bucket/a.txt", tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == b"content"
    assert _auth_sent(elsewhere) == [None]


def test_a_redirect_off_the_server_drops_the_key(
    servers: tuple[_Server, _Server], tmp_path: Path
) -> None:
    wandb_srv, elsewhere = servers
    wandb_srv.redirects["/files/a.txt"] = f"{elsewhere.url}/signed/a.txt?sig=1"
    _reader(wandb_srv.url)._download(f"{wandb_srv.url}/files/a.txt", tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == b"content"
    assert _auth_sent(wandb_srv) == [AUTH]
    assert elsewhere.seen == [("GET", "/signed/a.txt?sig=1", None)]


def test_a_url_that_only_starts_like_the_server_gets_no_key(
    servers: tuple[_Server, _Server], tmp_path: Path
) -> None:
    """Configured ``http://127.0.0.1:4351`` is not ``http://127.0.0.1:43517``."""
    _, elsewhere = servers
    port = str(elsewhere.server_address[1])
    configured = f"http://127.0.0.1:{port[:-1]}"
    assert elsewhere.url.startswith(configured)
    _reader(configured)._download(f"{elsewhere.url}/x", tmp_path / "x")
    assert _auth_sent(elsewhere) == [None]


def test_the_graphql_check_does_not_follow_the_key_elsewhere(
    servers: tuple[_Server, _Server],
) -> None:
    wandb_srv, elsewhere = servers
    wandb_srv.redirects["/graphql"] = f"{elsewhere.url}/graphql"
    code, _ = _reader(wandb_srv.url)._graphql("query { viewer { id } }", {})
    assert code == 200
    assert _auth_sent(wandb_srv) == [AUTH]
    assert _auth_sent(elsewhere) == [None]


@pytest.mark.parametrize(
    ("url", "base", "same"),
    [
        ("https://api.wandb.ai/files/x", "https://api.wandb.ai", True),
        ("HTTPS://API.wandb.ai:443/files/x", "https://api.wandb.ai", True),
        ("http://h/x", "http://h:80", True),
        ("https://api.wandb.ai.evil.example/x", "https://api.wandb.ai", False),
        ("http://api.wandb.ai/x", "https://api.wandb.ai", False),
        ("https://api.wandb.ai:8443/x", "https://api.wandb.ai", False),
        ("https://api.wandb.ai@evil.example/x", "https://api.wandb.ai", False),
        ("https://h:notaport/x", "https://h", False),
        ("/relative/path", "https://h", False),
    ],
)
def test_same_origin(url: str, base: str, same: bool) -> None:
    assert same_origin(url, base) is same
    assert origin("https://H.example") == ("https", "h.example", 443)
