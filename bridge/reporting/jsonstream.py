"""JSON of a large report written piece by piece: the same text as ``json.dumps``.

A 10,000-run ``--json`` summary built as one dict and dumped as one string held ~4 KB a
run at its peak (the dicts of every run line plus the text): the last part of a no-op
cycle's memory that grew with the run count. Here a top-level value given as an iterator
(not a list) is written one element at a time, each element dumped on its own."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterable, Iterator
from typing import Any


def iter_json(data: dict[str, Any]) -> Iterator[str]:
    """``json.dumps(data, indent=2, default=str)`` in pieces whose concatenation is that
    exact text; a value that is an iterator (a generator) is streamed element by element."""
    lazy = {k: v for k, v in data.items() if isinstance(v, Iterator)}
    tag = uuid.uuid4().hex  # no source string can hold it: the placeholders are ours
    marks = {k: f"lazy-{tag}-{i}" for i, k in enumerate(lazy)}
    text = json.dumps({k: marks.get(k, v) for k, v in data.items()}, indent=2, default=str)
    for key, items in lazy.items():
        head, text = text.split(json.dumps(marks[key]), 1)
        yield head
        yield from _list(items)
    yield text


def _list(items: Iterable[Any]) -> Iterator[str]:
    """A top-level key's list as ``json.dumps(..., indent=2)`` writes it (items at 4)."""
    first = True
    for item in items:
        body = textwrap.indent(json.dumps(item, indent=2, default=str), "    ")
        yield ("[\n" if first else ",\n") + body
        first = False
    yield "[]" if first else "\n  ]"
