"""A loopback proxy that mutates one answer of a real server per fuzz case.

Put it in front of an ``mlflow server`` (REST) or the loopback W&B server (GraphQL). A case
is :meth:`MutatingProxy.begin` (which request of the case to damage, how, a seed) followed
by the client's requests; the proxy forwards each request, then hands the ``target``-th
answer to :func:`mutate` before the client sees it. Answers are the real server's: the first
answer to each distinct request (method, path, query, body) is kept and replayed to later
cases, so a thousand cases cost the server one pass (the fuzzed readers only read).

Mutations (``KINDS``): a cut body, an empty body, an HTML page with 200 or 502, a wrong
content type, a JSON value that is not an object, a value of the wrong JSON type, an integer
out of every 64-bit range, and a missing field. Loopback only.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.parse
from typing import Any

from fakes.fault_proxy import FaultProxy, _Handler, _Server

#: Every kind, and those whose answers no valid server sends (a client must not accept them
#: as data: a clear failure or, after a retry, the real answer). A missing field can leave a
#: valid answer (optional fields), so it is checked for no traceback only.
KINDS = (
    "truncate",
    "empty",
    "html-200",
    "html-502",
    "content-type",
    "not-object",
    "wrong-type",
    "huge-int",
    "missing-field",
)
MALFORMED = frozenset(KINDS) - {"missing-field", "content-type"}
#: GraphQL answers (``POST /graphql``) besides ``KINDS``: a null where an object was, an
#: ``errors`` array (with the data left, or with ``data: null``), and a page that says there
#: is a next page at the cursor just asked for (sticky: every later answer to that request
#: says so too, as a server stuck in a loop would).
GRAPHQL_KINDS = (*KINDS, "null-object", "errors", "errors-no-data", "loop-cursor")
#: A null may be valid (a nullable field): checked for no traceback only, like a missing field.
GRAPHQL_MALFORMED = MALFORMED | {"errors", "errors-no-data", "loop-cursor"}
#: Fields whose text is free (a param or tag value "3" is a string, not an integer): a huge
#: number there is a valid answer with other data, not a damaged one.
FREE_TEXT = frozenset({"value", "key", "name", "run_name", "description"})
HTML = b"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Oops</h1></body></html>"


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) below the root of a JSON document."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    items: list[tuple[Any, Any]] = []
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    for k, v in items:
        out.append(((*path, k), v))
        out.extend(_nodes(v, (*path, k)))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


def _other_type(value: Any, rng: random.Random) -> Any:
    """A value of a different JSON type (never null: null reads as 'absent' in protobuf)."""
    choices: list[Any] = ["not-a-value", 7, [1, 2], {"x": 1}, True]

    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, (int, float)):
            return "number"
        return type(v).__name__

    return rng.choice([c for c in choices if kind(c) != kind(value)])


def _is_int_text(v: Any) -> bool:
    return isinstance(v, str) and v.lstrip("-").isdigit() and len(v) < 20


def _graphql_mutation(
    kind: str,
    rng: random.Random,
    status: int,
    headers: list[tuple[str, str]],
    doc: Any,
    request_cursor: Any,
) -> tuple[int, list[tuple[str, str]], bytes, str]:
    """The GraphQL-only kinds (see ``GRAPHQL_KINDS``) on a parsed answer."""
    if not isinstance(doc, dict):
        return status, headers, json.dumps(doc).encode(), ""
    what = ""
    if kind == "null-object":
        objects = [(p, v) for p, v in _nodes(doc) if isinstance(v, dict)]
        if objects:
            path, _ = rng.choice(objects)
            _set(doc, path, None)
            what = f"{path} = null"
    elif kind in ("errors", "errors-no-data"):
        doc["errors"] = [{"message": "injected: internal error", "path": ["x"]}]
        if kind == "errors-no-data":
            doc["data"] = None
        what = kind
    elif kind == "loop-cursor":
        infos = [v for _, v in _nodes(doc) if isinstance(v, dict) and "pageInfo" in v]
        for conn in infos:
            info = conn["pageInfo"]
            if isinstance(info, dict):
                info["hasNextPage"] = True
                info["endCursor"] = request_cursor
                for edge in conn.get("edges") or []:
                    if isinstance(edge, dict) and "cursor" in edge:
                        edge["cursor"] = request_cursor
                what = f"next page at the cursor asked for ({request_cursor!r}), forever"
    return status, headers, json.dumps(doc).encode(), what


def mutate(
    kind: str,
    rng: random.Random,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    request_cursor: Any = None,
) -> tuple[int, list[tuple[str, str]], bytes, str]:
    """One damaged answer and a line saying what was done ("" when nothing could be)."""
    plain = [(k, v) for k, v in headers if k.lower() != "content-type"]
    if kind == "truncate":
        if not body:
            return status, headers, body, ""
        cut = rng.randrange(len(body))
        return status, headers, body[:cut], f"cut at {cut} of {len(body)}"
    if kind == "empty":
        return status, headers, b"", "empty body"
    if kind == "html-200":
        return 200, [*plain, ("Content-Type", "text/html")], HTML, "HTML page, 200"
    if kind == "html-502":
        return 502, [*plain, ("Content-Type", "text/html")], HTML, "HTML page, 502"
    if kind == "content-type":
        return status, [*plain, ("Content-Type", "text/html")], body, "text/html"
    if kind == "not-object":
        value = rng.choice([[], "ok", 1, True, None])
        return status, headers, json.dumps(value).encode(), f"answer {value!r}"
    try:
        doc = json.loads(body)
    except ValueError:
        return status, headers, body, ""
    if kind in ("null-object", "errors", "errors-no-data", "loop-cursor"):
        return _graphql_mutation(kind, rng, status, headers, doc, request_cursor)
    nodes = _nodes(doc)
    if kind == "wrong-type" and nodes:
        path, value = rng.choice(nodes)
        new = _other_type(value, rng)
        _set(doc, path, new)
        return status, headers, json.dumps(doc).encode(), f"{path} = {new!r}"
    if kind == "huge-int":
        ints = [
            (p, v)
            for p, v in nodes
            if (isinstance(v, int) and not isinstance(v, bool))
            or (_is_int_text(v) and p[-1] not in FREE_TEXT)
        ]
        if ints:
            path, value = rng.choice(ints)
            new = rng.choice([2**64, -(2**63) - 1, 10**30, 2**200])
            _set(doc, path, new if isinstance(value, int) else str(new))
            return status, headers, json.dumps(doc).encode(), f"{path} = {new}"
        return status, headers, body, ""
    if kind == "missing-field":
        fields = [(p, v) for p, v in nodes if isinstance(p[-1], str)]
        if isinstance(doc, dict):
            fields += [((k,), v) for k, v in doc.items()]
        if fields:
            path, _ = rng.choice(fields)
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            del parent[path[-1]]
            return status, headers, json.dumps(doc).encode(), f"{path} removed"
    return status, headers, body, ""


def _request_cursor(body: bytes) -> Any:
    """The ``cursor`` variable of a GraphQL request (None when absent or not GraphQL)."""
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        return None
    variables = doc.get("variables") if isinstance(doc, dict) else None
    return variables.get("cursor") if isinstance(variables, dict) else None


class _MutatingHandler(_Handler):
    server: _Server
    #: Headers and body go out as two writes: with Nagle on, the body waits for the client's
    #: delayed ACK (40 ms an answer here, most of a case's time).
    disable_nagle_algorithm = True

    def _handle(self) -> None:
        proxy: MutatingProxy = self.server.proxy  # type: ignore[assignment]
        body = self._body()
        status, headers, answer = proxy.answer(self.command, self.path, self.headers, body)
        path = urllib.parse.urlsplit(self.path).path
        request = (self.command, self.path, body)
        status, headers, answer = proxy.damage(path, status, headers, answer, request)
        try:
            self._answer(status, headers, answer)
        except OSError:
            self.close_connection = True


class MutatingProxy(FaultProxy):
    """Forwards to ``upstream`` (replaying answers already seen); damages one answer a case."""

    handler = _MutatingHandler

    def __init__(
        self,
        upstream: str,
        lifetime_s: float = 900.0,
        replay: bool = True,
        rewrite_urls: bool = False,
    ) -> None:
        super().__init__(upstream, lifetime_s=lifetime_s)
        self.replay = replay
        #: Replace the upstream's own URL in JSON answers by the proxy's, so the files and
        #: exports a server names (the loopback W&B server names itself) come through here.
        self.rewrite_urls = rewrite_urls
        self._upstream_url = upstream.rstrip("/")
        self._seen: dict[tuple[str, str, bytes], tuple[int, list[tuple[str, str]], bytes]] = {}
        self._case_lock = threading.Lock()
        self.begin(-1, "truncate", 0)

    def begin(self, target: int, kind: str, seed: int) -> None:
        """A new case: damage the ``target``-th answer from now on (0-based) with ``kind``."""
        with self._case_lock:
            self.target, self.kind, self.rng = target, kind, random.Random(seed)
            self.count = 0
            self.applied: tuple[str, str] | None = None  # (path, what was done)
            self._sticky: tuple[tuple[str, str, bytes], tuple[Any, ...]] | None = None

    def answer(
        self, method: str, target: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        key = (method, target, body)
        if self.replay and key in self._seen:
            return self._seen[key]
        got = self.forward(method, target, headers, body)
        if self.rewrite_urls and any(
            k.lower() == "content-type" and "json" in v.lower() for k, v in got[1]
        ):
            old, new = self._upstream_url.encode(), self.url.rstrip("/").encode()
            got = (got[0], got[1], got[2].replace(old, new))
        if self.replay and got[0] == 200:
            self._seen[key] = got
        return got

    def damage(
        self,
        path: str,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        request: tuple[str, str, bytes] = ("", "", b""),
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._case_lock:
            index = self.count
            self.count += 1
            if self._sticky is not None and self._sticky[0] == request:
                return self._sticky[1]  # type: ignore[return-value]
            if index != self.target:
                return status, headers, body
            cursor = _request_cursor(request[2])
            status, headers, body, what = mutate(self.kind, self.rng, status, headers, body, cursor)
            if what:
                self.applied = (path, what)
                if self.kind == "loop-cursor":
                    self._sticky = (request, (status, headers, body))
            return status, headers, body
