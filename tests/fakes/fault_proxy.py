"""A loopback HTTP proxy that injects faults between a client and a real server.

Put it in front of an ``mlflow server`` on 127.0.0.1 and point the client at ``proxy.url``.
Every request is forwarded unchanged unless the seeded fault schedule picks it; a picked
request gets one of these faults:

* ``503`` — answered 503 by the proxy; the server never sees the request;
* ``503-retry-after`` — the same with ``Retry-After: 1``;
* ``reset`` — the connection is reset before anything is forwarded (nothing committed);
* ``drop`` — forwarded, the server answers (it has committed), then the proxy resets the
  connection instead of answering: the client sees a reset / remote disconnect and cannot
  tell whether the write happened — the case that duplicates non-idempotent calls;
* ``slow`` — forwarded and answered by the server (committed), but the answer is held back
  ``slow_s`` seconds, beyond the client's timeout (set ``MLFLOW_HTTP_REQUEST_TIMEOUT``).

Targeting: ``paths`` (endings of the request path, e.g. ``"runs/create"``; ``"logged-models"``
is the logged-model create only, not its search or finalize), ``match``
(bytes the request body must contain) and ``rate`` (probability per matching request);
``max_faults`` bounds the total. Bounded in time too: the proxy shuts itself down after
``lifetime_s`` seconds. Loopback only.
"""

from __future__ import annotations

import http.client
import io
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = ("503", "503-retry-after", "reset", "drop", "slow")
#: Hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1), plus the framing we redo.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


@dataclass
class FaultRule:
    """Which requests may fail and how: ``rate`` of those whose path ends with one of
    ``paths`` (all when empty) and whose body contains ``match`` (any when None)."""

    kinds: tuple[str, ...] = KINDS
    rate: float = 0.0
    paths: tuple[str, ...] = ()
    match: bytes | None = None
    max_faults: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")

    def applies(self, path: str, body: bytes) -> bool:
        if self.paths and not any(path.endswith(p) for p in self.paths):
            return False
        return self.match is None or self.match in body


@dataclass
class FaultLog:
    """What the proxy did: requests per path, faults per (kind, path), forwarded count."""

    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[tuple[str, str]] = field(default_factory=Counter)
    forwarded: int = 0

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def by_kind(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (kind, _path), n in self.faults.items():
            out[kind] += n
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the server behind us
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def _body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), no answer at all."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The socket is only really closed once its file objects are: close them all now
        # (and leave the base class harmless buffers to flush).
        for stream in (self.rfile, self.wfile, self.connection):
            try:
                stream.close()
            except OSError:
                pass
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        path = urllib.parse.urlsplit(self.path).path
        kind = proxy.pick(self.command, path, body)
        if kind in ("503", "503-retry-after"):
            extra = [("Retry-After", "1")] if kind == "503-retry-after" else []
            msg = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected 503"}'
            self._answer(503, [("Content-Type", "application/json"), *extra], msg)
            return
        if kind == "reset":
            self._reset()
            return
        status, headers, answer = proxy.forward(self.command, self.path, self.headers, body)
        if kind == "drop":
            self._reset()
            return
        if kind == "slow":
            time.sleep(proxy.slow_s)  # the client has given up by now
        try:
            self._answer(status, headers, answer)
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


class FaultProxy:
    """Seeded fault-injecting proxy to ``upstream`` (``http://127.0.0.1:PORT``)."""

    handler: type[BaseHTTPRequestHandler] = _Handler  # subclasses answer with their own

    def __init__(
        self,
        upstream: str,
        seed: int = 0,
        rules: Iterable[FaultRule] = (),
        slow_s: float = 3.0,
        lifetime_s: float = 600.0,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"loopback upstreams only, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.seed = seed
        self.slow_s = slow_s
        self.lifetime_s = lifetime_s
        self.log = FaultLog()
        self._rules: list[FaultRule] = list(rules)
        self._rule_faults: Counter[int] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._http: _Server | None = None
        self._stopper: threading.Timer | None = None

    # -- schedule
    def set_rules(self, *rules: FaultRule, seed: int | None = None) -> None:
        """Replace the fault rules (no rule: a plain proxy); reseed if ``seed`` is given."""
        with self._lock:
            self._rules = list(rules)
            self._rule_faults = Counter()
            if seed is not None:
                self.seed = seed
                self._rng = random.Random(seed)

    def pick(self, method: str, path: str, body: bytes) -> str | None:
        """The fault for this request, or None; counted in ``log``."""
        with self._lock:
            self.log.requests[f"{method} {path}"] += 1
            for n, rule in enumerate(self._rules):
                if not rule.applies(path, body):
                    continue
                if rule.max_faults is not None and self._rule_faults[n] >= rule.max_faults:
                    continue
                if self._rng.random() >= rule.rate:
                    continue
                kind = self._rng.choice(rule.kinds)
                self._rule_faults[n] += 1
                self.log.faults[(kind, path)] += 1
                return kind
            return None

    def forward(
        self, method: str, target: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request upstream on a fresh connection; the whole answer."""
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP}
            out["Content-Length"] = str(len(body))
            conn.request(method, target, body=body, headers=out)
            resp = conn.getresponse()
            answer = resp.read()
            with self._lock:
                self.log.forwarded += 1
            return resp.status, list(resp.getheaders()), answer
        finally:
            conn.close()

    # -- lifecycle
    def start(self) -> FaultProxy:
        self._http = _Server(("127.0.0.1", 0), self.handler)
        self._http.proxy = self
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._stopper = threading.Timer(self.lifetime_s, self.stop)
        self._stopper.daemon = True
        self._stopper.start()
        return self

    def stop(self) -> None:
        http_server, self._http = self._http, None
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()
        if self._stopper is not None and self._stopper is not threading.current_thread():
            self._stopper.cancel()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._http is not None, "proxy not started"
        return f"http://127.0.0.1:{self._http.server_address[1]}"
