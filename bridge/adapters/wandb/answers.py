"""Type checks on the W&B server's GraphQL answers, before any value is read as data.

``wandb.Api`` hands the answer's JSON through untouched: a run whose ``state`` is a list,
a file whose ``sizeBytes`` is beyond int64 or a run edge that is a string would otherwise
be copied as the source's data (found by the GraphQL answer fuzz). Each check names the
field and raises ``ValueError``; the reader turns that into a clear per-run or listing
error.
"""

from __future__ import annotations

from typing import Any

INT64_MAX = 2**63 - 1


def node(value: Any, what: str) -> dict[str, Any]:
    """A GraphQL object (an edge's node, a run's attributes)."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} is a JSON {type(value).__name__}, not an object")
    return value


def text(attrs: dict[str, Any], key: str, what: str) -> str | None:
    """An optional string field."""
    value = attrs.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{what}: {key} is a JSON {type(value).__name__}, not a string")


def count(attrs: dict[str, Any], key: str, what: str) -> int | None:
    """An optional non-negative int64 field (sizes, line counts)."""
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: {key} is a JSON {type(value).__name__}, not an integer")
    if not 0 <= value <= INT64_MAX:
        raise ValueError(f"{what}: {key} = {value} is out of range (0 to 2^63-1)")
    return value


def texts(attrs: dict[str, Any], key: str, what: str) -> list[str]:
    """An optional list of strings (tags)."""
    value = attrs.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what}: {key} is not a list of strings")
    return list(value)


def run_attrs(attrs: Any, what: str) -> dict[str, Any]:
    """A run node's fields that the reader copies, each of its GraphQL type."""
    a = node(attrs, what)
    for key in (
        "name",
        "displayName",
        "state",
        "notes",
        "group",
        "jobType",
        "createdAt",
        "heartbeatAt",
        "commit",
        "host",
        "sweepName",
    ):
        text(a, key, what)
    count(a, "historyLineCount", what)
    texts(a, "tags", what)
    user = a.get("user")
    if user is not None:
        for key in ("username", "name"):
            text(node(user, f"{what}: user"), key, what)
    return a


def file_attrs(attrs: Any, what: str) -> dict[str, Any]:
    """A file node's fields: name, size, URLs and digest."""
    a = node(attrs, what)
    if not isinstance(a.get("name"), str) or not a["name"]:
        raise ValueError(f"{what}: name is missing or not a string")
    for key in ("url", "directUrl", "md5"):
        text(a, key, what)
    count(a, "sizeBytes", what)
    return a
