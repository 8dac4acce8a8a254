"""Where a source trace's copy is in the destination, for the trace writer's ``find``.

One search per trace (by its ``bridge.source_id`` tag) costs a query (a request to a
server) for each trace of a pass. Instead the copies already present in an experiment are
listed once, by that tag, in pages of 500: the pass looks them up in memory. A copy the
listing does not show (one under the source's own trace id in another experiment) is
still found by that id, and the info read for it is kept for the plan that follows, which
needs the same answer (does the destination hold the id already?). Those infos are read
100 at a time (``batch_get_trace_infos``), in the order the pass looks them up.

A changed copy the plan reads is kept for the read-back of the conflict check that comes
right after it in the same item's step (one read, not two); writing the copy drops it.

The index is per writer (one sync); copies the writer makes are added to it, so a later
pass of the same process finds them too. A copy deleted meanwhile is found in the index
but read back as gone by the plan, which then creates it as if nothing were found.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG

TRACE_TAG_PREFIX = "mlflow.traceTag."  # root-span attributes log_spans makes trace tags
PAGE = 500  # traces per listing request (MLflow's SQL store and server take 500)
MEMO = 1024  # infos/copies kept between a find, its plan and its read-back (bounded)
WINDOW = 100  # trace infos read in one request ahead of the pass's finds
_MISSING = object()


class CopyIndex:
    """Copies in each destination experiment by source identity, listed once each."""

    def __init__(self, client: Any, info: Callable[[str], Any], backend: Callable[[], Any]) -> None:
        self._client = client
        self._info = info  # trace id -> its TraceInfo, or None
        self._backend = backend  # the tracking store (batch_get_trace_infos)
        self._lock = threading.Lock()
        self._fetch = threading.Lock()
        self._no_batch = False
        self._ids: list[str] = []
        self._order: dict[str, int] = {}
        self._exp_locks: dict[str, threading.Lock] = {}
        self._by_exp: dict[str, dict[str, str]] = {}
        self._memo: OrderedDict[str, Any] = OrderedDict()
        self._reads: OrderedDict[str, Any] = OrderedDict()

    def copy_in(self, exp: str, source_id: str) -> str | None:
        """The id of the copy of ``source_id`` the experiment ``exp`` holds, or None."""
        with self._lock:
            lock = self._exp_locks.setdefault(exp, threading.Lock())
        with lock:  # one listing per experiment, however many threads ask
            if exp not in self._by_exp:
                self._by_exp[exp] = self._list(exp)
            return self._by_exp[exp].get(source_id)

    def added(self, exp: str, source_id: str, trace_id: str) -> None:
        """A copy this writer made: found by later lookups without listing again."""
        with self._lock:
            held = self._by_exp.get(exp)
            if held is not None:
                held.setdefault(source_id, trace_id)

    def expect(self, trace_ids: list[str]) -> None:
        """The source trace ids the pass will look for, in its order: a lookup of one
        reads the infos of it and the next ones in one request (:meth:`info`)."""
        with self._lock:
            self._ids = list(trace_ids)
            self._order = {tid: n for n, tid in enumerate(self._ids)}

    def info(self, trace_id: str) -> Any:
        """The destination's info of ``trace_id`` (None: it holds no such trace), kept
        for the one :meth:`take_info` of the plan that follows."""
        with self._lock:
            if trace_id in self._memo:
                return self._memo[trace_id]
            announced = trace_id in self._order
        if not announced:  # read alone, threads in parallel
            return self._remember(trace_id, self._info(trace_id))
        with self._fetch:  # one window at a time: threads asking for the next id wait
            with self._lock:
                if trace_id in self._memo:
                    return self._memo[trace_id]
                at = self._order.get(trace_id)
                window = self._ids[at : at + WINDOW] if at is not None else [trace_id]
            got = self._batch(window) if len(window) > 1 else None
            if got is None:
                return self._remember(trace_id, self._info(trace_id))
            with self._lock:
                self._memo.update(got)
                while len(self._memo) > MEMO:
                    self._memo.popitem(last=False)
            return got[trace_id]

    def _remember(self, trace_id: str, info: Any) -> Any:
        with self._lock:
            self._memo[trace_id] = info
            while len(self._memo) > MEMO:
                self._memo.popitem(last=False)
        return info

    def _batch(self, trace_ids: list[str]) -> dict[str, Any] | None:
        """Infos of ``trace_ids`` in one request (None for those the store lacks), or None
        where the store has no batch read (an older server): then one read each."""
        if self._no_batch:
            return None
        try:
            infos = self._backend().batch_get_trace_infos(trace_ids)
        except Exception:  # noqa: BLE001 - no batch endpoint: read one by one
            self._no_batch = True
            return None
        got: dict[str, Any] = dict.fromkeys(trace_ids)
        got.update({str(i.trace_id): i for i in infos if str(i.trace_id) in got})
        return got

    def take_info(self, trace_id: str) -> Any:
        """The info :meth:`info` read for ``trace_id`` (once), else read now."""
        with self._lock:
            got = self._memo.pop(trace_id, _MISSING)
        return self._info(trace_id) if got is _MISSING else got

    def keep_read(self, dest_id: str, copy: Any) -> None:
        """The copy as the plan read it, for the conflict check's read-back of the same
        item that follows (engine/item_conflicts.py): read once, not twice."""
        with self._lock:
            self._reads[dest_id] = copy.model_copy(deep=True)
            while len(self._reads) > MEMO:
                self._reads.popitem(last=False)

    def take_read(self, dest_id: str) -> Any:
        """The copy :meth:`keep_read` kept (once; callers may change it), else None."""
        with self._lock:
            return self._reads.pop(dest_id, None)

    def _list(self, exp: str) -> dict[str, str]:
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            page = self._client.search_traces(
                locations=[exp],
                filter_string=f"tag.`{ITEM_SOURCE_TAG}` LIKE '%'",
                max_results=PAGE,
                page_token=token,
                include_spans=False,
            )
            for trace in page:
                sid = (trace.info.tags or {}).get(ITEM_SOURCE_TAG)
                if sid is not None:
                    found.setdefault(sid, str(trace.info.trace_id))
            token = page.token
            if not token:
                return found


def spans_may_alter(info: Any, spans: list[Any]) -> bool:
    """Whether ``log_spans`` after ``start_trace(info)`` can change what that wrote, so
    the info must be written again. MLflow's SQL store (behind a server too) leaves a
    trace whose info ``start_trace`` wrote (its "finalized" marker) as it is except: a
    state still IN_PROGRESS/unspecified takes the root span's, a preview left unset is
    derived from the root span, and ``mlflow.traceTag.*`` attributes of the root span
    become tags (the trace name among them). Anything else it derives (token usage,
    cost, session, user) a second ``start_trace`` would not undo either. Times that
    cover the spans' own are checked too: a server older than that marker widens the
    trace's time range to its spans'."""
    start_ms = min(s.start_time_ns for s in spans) // 1_000_000
    ends = [s.end_time_ns for s in spans if s.end_time_ns is not None]
    if info.request_time > start_ms or (
        ends
        and (
            info.execution_duration is None
            or info.request_time + info.execution_duration < max(ends) // 1_000_000
        )
    ):
        return True
    state = getattr(info.state, "value", info.state)
    if state in ("IN_PROGRESS", "STATE_UNSPECIFIED"):
        return True
    if info.request_preview is None or info.response_preview is None:
        return True
    for span in spans:
        if span.parent_id is None and any(
            str(k).startswith(TRACE_TAG_PREFIX) for k in (span.attributes or {})
        ):
            return True
    return False
