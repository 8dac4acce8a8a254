"""A tiny GraphQL parser and executor for the fake W&B server.

Real clients (wandb-core's Go client, the Python public API) send full GraphQL documents
with fragments, aliases and variables. Answering by projecting the selection set over
resolver objects keeps the response shapes exactly what was asked for; a field nobody
implemented raises :class:`Unimplemented`, so gaps are visible instead of silent nulls.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class GqlError(Exception):
    """A GraphQL-level error returned in ``errors``."""


class Unimplemented(GqlError):
    """A field the fake server does not know how to answer."""


_TOKEN = re.compile(
    r"""
    (?P<ws>[\s,\ufeff]+|\#[^\n]*)
   |(?P<spread>\.\.\.)
   |(?P<punct>[{}()\[\]:!$=@|&])
   |(?P<bstring>\"\"\"(?:.|\n)*?\"\"\")
   |(?P<string>"(?:\\.|[^"\\])*")
   |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
   |(?P<name>[_A-Za-z][_0-9A-Za-z]*)
    """,
    re.X,
)


@dataclass
class Field:
    alias: str
    name: str
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any] | None


@dataclass
class Spread:
    name: str
    directives: list[tuple[str, dict[str, Any]]]


@dataclass
class Inline:
    type_cond: str | None
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any]


@dataclass
class Var:
    name: str


@dataclass
class Operation:
    kind: str
    name: str
    var_defaults: dict[str, Any]
    selections: list[Any]


@dataclass
class Document:
    operations: list[Operation] = field(default_factory=list)
    fragments: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)


def _tokenize(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise GqlError(f"syntax error at offset {pos}: {src[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind == "ws":
            continue
        out.append((kind, m.group()))
    return out


class _Parser:
    def __init__(self, src: str) -> None:
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "")

    def take(self, value: str | None = None) -> str:
        kind, val = self.peek()
        if kind == "eof" or (value is not None and val != value):
            raise GqlError(f"syntax error: expected {value!r}, got {val!r}")
        self.i += 1
        return val

    def at(self, value: str) -> bool:
        return self.peek()[1] == value and self.peek()[0] in ("punct", "spread", "name")

    def document(self) -> Document:
        doc = Document()
        while self.peek()[0] != "eof":
            if self.at("{"):
                doc.operations.append(Operation("query", "", {}, self.selection_set()))
                continue
            word = self.take()
            if word == "fragment":
                name = self.take()
                self.take("on")
                cond = self.take()
                self.directives()
                doc.fragments[name] = (cond, self.selection_set())
            elif word in ("query", "mutation", "subscription"):
                name = self.take() if self.peek()[0] == "name" else ""
                defaults = self.var_defs() if self.at("(") else {}
                self.directives()
                doc.operations.append(Operation(word, name, defaults, self.selection_set()))
            else:
                raise GqlError(f"syntax error: unexpected {word!r}")
        return doc

    def var_defs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.take("(")
        while not self.at(")"):
            self.take("$")
            name = self.take()
            self.take(":")
            self.type_ref()
            out[name] = self.value() if self.at("=") and self.take("=") else None
            self.directives()
        self.take(")")
        return out

    def type_ref(self) -> None:
        if self.at("["):
            self.take("[")
            self.type_ref()
            self.take("]")
        else:
            self.take()
        if self.at("!"):
            self.take("!")

    def directives(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self.at("@"):
            self.take("@")
            name = self.take()
            out.append((name, self.arguments() if self.at("(") else {}))
        return out

    def arguments(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.take("(")
        while not self.at(")"):
            name = self.take()
            self.take(":")
            out[name] = self.value()
        self.take(")")
        return out

    def value(self) -> Any:
        kind, val = self.peek()
        if val == "$" and kind == "punct":
            self.take()
            return Var(self.take())
        if kind == "number":
            self.take()
            return float(val) if any(c in val for c in ".eE") else int(val)
        if kind == "string":
            self.take()
            return json.loads(val)
        if kind == "bstring":
            self.take()
            return val[3:-3]
        if val == "[":
            self.take()
            items = []
            while not self.at("]"):
                items.append(self.value())
            self.take("]")
            return items
        if val == "{":
            self.take()
            obj = {}
            while not self.at("}"):
                k = self.take()
                self.take(":")
                obj[k] = self.value()
            self.take("}")
            return obj
        self.take()
        return {"true": True, "false": False, "null": None}.get(val, val)

    def selection_set(self) -> list[Any]:
        self.take("{")
        out: list[Any] = []
        while not self.at("}"):
            out.append(self.selection())
        self.take("}")
        return out

    def selection(self) -> Any:
        if self.peek()[0] == "spread":
            self.take()
            if self.at("on"):
                self.take("on")
                cond = self.take()
                dirs = self.directives()
                return Inline(cond, dirs, self.selection_set())
            if self.at("@") or self.at("{"):
                dirs = self.directives()
                return Inline(None, dirs, self.selection_set())
            name = self.take()
            return Spread(name, self.directives())
        name = self.take()
        alias = name
        if self.at(":"):
            self.take(":")
            name = self.take()
        args = self.arguments() if self.at("(") else {}
        dirs = self.directives()
        sels = self.selection_set() if self.at("{") else None
        return Field(alias, name, args, dirs, sels)


def parse(src: str) -> Document:
    """Parse a GraphQL document (operations and fragments)."""
    return _Parser(src).document()


#: Interfaces a concrete type implements (for ``... on Interface`` conditions).
INTERFACES: dict[str, tuple[str, ...]] = {
    "ArtifactSequence": ("ArtifactCollection",),
    "ArtifactPortfolio": ("ArtifactCollection",),
}


class Node:
    """Base of resolver objects: field ``x`` is answered by method ``f_x(args)``."""

    typename = "Object"

    def resolve(self, name: str, args: dict[str, Any]) -> Any:
        fn = getattr(self, "f_" + name, None)
        if fn is None:
            raise Unimplemented(f"field {self.typename}.{name}")
        return fn(args)


def _typename(obj: Any) -> str | None:
    if isinstance(obj, dict):
        return obj.get("__typename")
    return getattr(obj, "typename", None)


def _subst(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, Var):
        return variables.get(value.name)
    if isinstance(value, list):
        return [_subst(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, variables) for k, v in value.items()}
    return value


class _Exec:
    def __init__(self, doc: Document, variables: dict[str, Any]) -> None:
        self.doc = doc
        self.vars = variables

    def included(self, directives: list[tuple[str, dict[str, Any]]]) -> bool:
        for name, args in directives:
            cond = bool(_subst(args.get("if"), self.vars))
            if (name == "include" and not cond) or (name == "skip" and cond):
                return False
        return True

    def collect(self, obj: Any, sels: list[Any], out: list[Field]) -> None:
        typename = _typename(obj)
        for sel in sels:
            if not self.included(sel.directives):
                continue
            if isinstance(sel, Field):
                out.append(sel)
                continue
            if isinstance(sel, Spread):
                if sel.name not in self.doc.fragments:
                    raise GqlError(f"unknown fragment {sel.name}")
                cond, sub = self.doc.fragments[sel.name]
            else:
                cond, sub = sel.type_cond, sel.selections
            if cond is None or typename is None or cond == typename:
                self.collect(obj, sub, out)
            elif cond in INTERFACES.get(typename, ()):
                self.collect(obj, sub, out)

    def complete(self, value: Any, sels: list[Any] | None) -> Any:
        if sels is None or value is None:
            return value
        if isinstance(value, (list, tuple)):
            return [self.complete(v, sels) for v in value]
        return self.select(value, sels)

    def select(self, obj: Any, sels: list[Any]) -> dict[str, Any]:
        fields: list[Field] = []
        self.collect(obj, sels, fields)
        result: dict[str, Any] = {}
        for f in fields:
            if f.name == "__typename":
                result[f.alias] = _typename(obj) or "Object"
                continue
            args = _subst(f.args, self.vars)
            if isinstance(obj, Node):
                value = obj.resolve(f.name, args)
            elif isinstance(obj, dict):
                value = obj.get(f.name)
            else:
                raise Unimplemented(f"field {f.name} on {type(obj).__name__}")
            sub = self.complete(value, f.selections)
            if f.alias in result and isinstance(result[f.alias], dict) and isinstance(sub, dict):
                result[f.alias] = {**result[f.alias], **sub}
            else:
                result[f.alias] = sub
        return result


def operation_name(src: str, given: str | None = None) -> str:
    """The operation's name: the request's ``operationName`` or the first named op."""
    if given:
        return given
    m = re.search(r"\b(query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)", src)
    return m.group(2) if m else "(anonymous)"


def execute(
    src: str,
    variables: dict[str, Any] | None,
    root: Node,
    op_name: str | None = None,
    mutation_root: Node | None = None,
) -> dict[str, Any]:
    """Run one operation of ``src`` against ``root`` (mutations against ``mutation_root``
    when given); return the ``data`` dict."""
    doc = parse(src)
    ops = doc.operations
    if op_name:
        ops = [o for o in ops if o.name == op_name] or ops
    if not ops:
        raise GqlError("no operation in document")
    op = ops[0]
    merged = {k: v for k, v in op.var_defaults.items()}
    merged.update({k: v for k, v in (variables or {}).items()})
    for k, v in op.var_defaults.items():
        if merged.get(k) is None and v is not None:
            merged[k] = v
    target = mutation_root if op.kind == "mutation" and mutation_root is not None else root
    return _Exec(doc, merged).select(target, op.selections)
