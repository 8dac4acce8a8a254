"""Validation of incoming GraphQL requests the way a spec-compliant server does it.

The fake's executor (:mod:`tests.fakes.gql_mini`) answers by projecting selections over
resolver objects and would happily run a document a real server refuses: a variable
declared and never used, a variable used and never declared, a field or argument the
schema does not have, an input object with a field its type does not define. W&B's server
rejects such a request before running it, with HTTP 200 and a body holding only ``errors``
(each with ``message`` and ``locations``). :func:`request_errors` does the same checks with
graphql-core against ``wandb_schema.graphql`` (the modelled subset of W&B's schema):
parse, validate with every rule of the specification, pick the operation, coerce the
variables against their declared types.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values

SCHEMA_PATH = Path(__file__).with_name("wandb_schema.graphql")
#: Modules holding the documents the SDK generates from W&B's schema (ariadne-codegen).
SDK_OPERATION_MODULES = (
    "wandb.sdk.artifacts._generated.operations",
    "wandb.apis._generated.operations",
    "wandb.sdk.internal._generated.operations",
)
_OPERATION_START = re.compile(rb"(?:^|\n)((?:query|mutation) ([_A-Za-z][_0-9A-Za-z]*) ?[({])")


@lru_cache(maxsize=1)
def schema() -> GraphQLSchema:
    """The SDL, built once per process."""
    return build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))


def _error(exc: GraphQLError) -> dict[str, Any]:
    """A GraphQLError as a response error: its message and where in the document."""
    out: dict[str, Any] = {"message": exc.message}
    if exc.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in exc.locations]
    return out


def _operation(
    ops: list[OperationDefinitionNode], name: str | None
) -> OperationDefinitionNode | str:
    """The operation to run, or why there is none (GraphQL spec, GetOperation)."""
    if name:
        found = [o for o in ops if o.name is not None and o.name.value == name]
        return found[0] if found else f"Unknown operation named '{name}'."
    if len(ops) == 1:
        return ops[0]
    return "Must provide operation name if query contains multiple operations."


def request_errors(
    query: str, variables: dict[str, Any] | None, operation_name: str | None = None
) -> list[dict[str, Any]]:
    """The errors a spec-compliant server answers for this request ([] when it is valid)."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return [_error(exc)]
    problems = validate(schema(), document)
    if problems:
        return [_error(p) for p in problems]
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    op = _operation(ops, operation_name)
    if isinstance(op, str):
        return [{"message": op}]
    coerced = get_variable_values(schema(), op.variable_definitions or (), variables or {})
    if isinstance(coerced, list):
        return [_error(e) for e in coerced]
    return []


def sdk_documents() -> dict[str, str]:
    """Name -> document for every operation the installed SDK generates (Python side)."""
    out: dict[str, str] = {}
    for module_name in SDK_OPERATION_MODULES:
        module = importlib.import_module(module_name)
        for attr in dir(module):
            if attr.endswith("_GQL"):
                out[f"sdk:{attr}"] = getattr(module, attr)
    return out


def _document_end(data: bytes, start: int) -> int:
    """End offset of the operation starting at ``start`` and the fragments after it
    (genqlient stores each as one constant: the operation, then its fragments)."""
    depth, pos = 0, start
    while pos < len(data):
        char = data[pos : pos + 1]
        if char == b"{":
            depth += 1
        elif char == b"}":
            depth -= 1
            if depth == 0 and not data[pos + 1 : pos + 200].lstrip().startswith(b"fragment "):
                return pos + 1
        pos += 1
    return pos


def core_documents(binary: Path) -> dict[str, str]:
    """Name -> document for every genqlient operation embedded in a wandb-core binary:
    what the Go side of the SDK can send (read from the executable, not retyped)."""
    data = binary.read_bytes()
    out: dict[str, str] = {}
    for match in _OPERATION_START.finditer(data):
        start = match.start(1)
        text = data[start : _document_end(data, start)].decode("utf-8", "replace")
        out.setdefault(f"core:{match.group(2).decode()}", text)
    return out
