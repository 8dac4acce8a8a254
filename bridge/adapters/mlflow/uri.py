"""Tracking-URI helpers shared by the MLflow reader and writer."""

from __future__ import annotations

import urllib.parse

from bridge.errors import BridgeError

_SQL_SCHEMES = {"postgresql", "mysql", "mssql"}
_SECRET_QUERY_KEYS = ("pass", "secret", "token", "key", "auth", "cred", "sig")


def redact_uri(uri: str) -> str:
    """``uri`` without ``user:password@`` and without secret-looking query parameters.

    Edits the text in place rather than re-assembling it: ``urlunsplit`` would turn
    ``sqlite:////abs.db`` into ``sqlite://abs.db``.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri.rsplit("@", 1)[-1]
    out = uri
    if "@" in parts.netloc:
        prefix = uri[: uri.index("//") + 2] if "//" in uri else ""
        out = prefix + parts.netloc.rsplit("@", 1)[-1] + uri[len(prefix) + len(parts.netloc) :]
    if parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not any(s in k.lower() for s in _SECRET_QUERY_KEYS)]
        if len(kept) != len(pairs):
            head, _, rest = out.partition("?")
            frag = "#" + parts.fragment if parts.fragment else ""
            query = urllib.parse.urlencode(kept)
            out = head + ("?" + query if query else "") + frag
    return out


def store_kind(uri: str) -> str:
    """Classify a tracking URI: "sqlite", "sql", "http" or "file"; BridgeError otherwise."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return "sqlite"
    if base in _SQL_SCHEMES:
        return "sql"
    if base in ("http", "https"):
        return "http"
    if base == "file":
        return "file"
    raise BridgeError(
        f"mlflow:{redact_uri(uri)}: unsupported tracking URI scheme {scheme or '(none)'!r}; "
        "use sqlite:///PATH.db, postgresql://..., mysql://..., http(s)://HOST:PORT or file:PATH"
    )


def scrub(text: object, uri: str) -> str:
    """The first line of an error message with ``uri`` redacted and its secrets masked."""
    line = (str(text).strip().splitlines() or [""])[0][:300]
    line = line.replace(uri, redact_uri(uri))
    try:
        parts = urllib.parse.urlsplit(uri)
        secrets = [parts.password] + [
            v
            for k, v in urllib.parse.parse_qsl(parts.query)
            if any(s in k.lower() for s in _SECRET_QUERY_KEYS)
        ]
    except ValueError:
        secrets = []
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***").replace(urllib.parse.quote(secret), "***")
    return line
