"""What ``WandbApiReader.check`` sends and how it reads a failed answer: one clear
line that tells a rejected key from a refused request."""

from __future__ import annotations

import json
from typing import Any

#: check()'s documents. Spec-compliant GraphQL servers reject a document that declares a
#: variable it never uses, so each one uses all it declares.
CHECK_ENTITY = "query BridgeCheck($e: String!) { viewer { username } entity(name: $e) { name } }"
CHECK_PROJECT = (
    "query BridgeCheck($e: String!, $p: String!) { viewer { username } "
    "project(name: $p, entityName: $e) { id name } }"
)
_MESSAGE_CHARS = 300


def json_object(raw: bytes) -> dict[str, Any]:
    """A response body as a JSON object; {} when it is empty or not one (an HTML proxy
    page, a truncated body)."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_messages(body: dict[str, Any]) -> list[str]:
    """The messages of a GraphQL ``errors`` array (entries without one are skipped)."""
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    return [str(e["message"]) for e in errors if isinstance(e, dict) and e.get("message")]


def _one_line(message: str, secret: str) -> str:
    """A server message fit for the one error line: single-spaced, bounded, and never
    holding the API key (a server may echo what it was sent)."""
    text = " ".join(message.replace(secret, "***").split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def check_failure(base: str, code: int, body: dict[str, Any], key: str) -> str | None:
    """The error line for a check answer that carries no usable data: a rejected key
    (401/403) is told apart from a request the server refused (GraphQL ``errors``,
    quoted), which says nothing about the key."""
    if code in (401, 403):
        return (
            f"wandb: {base} rejected the API key (HTTP {code}); set WANDB_API_KEY to a "
            "valid key for this server"
        )
    messages = _error_messages(body)
    if messages:
        status = "" if code == 200 else f" (HTTP {code})"
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        return f'wandb: {base} rejected the request{status}: "{_one_line(messages[0], key)}"{more}'
    if code != 200:
        return f"wandb: {base} answered HTTP {code}; check WANDB_BASE_URL"
    return None


class Unreachable(OSError):
    """Connection refused / DNS failure: retrying will not help within check()."""
