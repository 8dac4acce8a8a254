"""The W&B API key goes to the configured server only: same scheme, host and port.

A server hands out file URLs (``directUrl``) that may point at storage elsewhere, and an
answer may redirect; ``urllib`` keeps an ``Authorization`` header across a redirect to any
host. A URL that merely *starts with* the server's URL is not the server either
(``https://api.wandb.ai.example.com``, ``http://host:80`` vs ``http://host:8080``): origins
are compared parsed, never as string prefixes.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from base64 import b64encode
from typing import IO, Any

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of ``url`` (lower-cased, default port filled in); None when
    the URL has no host or an invalid port."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, base_url: str) -> bool:
    """True when ``url`` is on ``base_url``'s exact scheme, host and port."""
    here = origin(url)
    return here is not None and here == origin(base_url)


def basic_auth(key: str) -> str:
    """The ``Authorization`` value W&B expects: Basic ``api:<key>``."""
    return "Basic " + b64encode(f"api:{key}".encode()).decode()


class _ScopedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib does, but drops the key when one leaves the server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def redirect_request(  # type: ignore[override]
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same_origin(new.full_url, self.base_url):
            new.remove_header("Authorization")
        return new


def open_scoped(
    url: str,
    base_url: str,
    key: str | None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Any:
    """Open ``url``; the API key is attached only if ``url`` is on ``base_url``'s origin,
    and is dropped by any redirect that leaves it."""
    sent = dict(headers or {})
    if key and same_origin(url, base_url):
        sent["Authorization"] = basic_auth(key)
    request = urllib.request.Request(url, data=data, headers=sent)
    opener = urllib.request.build_opener(_ScopedRedirects(base_url))
    return opener.open(request, timeout=timeout)
