"""Plan and apply runs in one pool of workers, holding O(workers) run bodies.

A run's body (config, summary, file lists, artifact manifests) is read while the run is
planned and needed again while it is applied. Planning every run before applying any
holds every body of the pass at once; here a run is applied as soon as it is planned and
may be, in the same pool, so a body lives only while one worker task plans or applies it:
at most ``workers`` bodies at a time (the pool never has more tasks in flight).

A run that may not be applied yet drops its body (keeping its plan line, its rendering
and what the applier needs besides the body) and reads it again when its apply starts:

- a child whose parent run is still in this pass (parents are written first, so a child
  can name its parent's copy) waits until the parent's planning — and apply, if any — ended;
- every run of a pass that must plan everything before writing anything
  (``--on-conflict fail``: nothing is written if any run has a conflict). The cost there
  is one more read of each run's body (no history, no file content) from the source, and
  one more rendering (these runs keep nothing while the others are planned).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from bridge.engine.context import Planned
from bridge.engine.lines import RunLines
from bridge.engine.model import RunPlan
from bridge.schema import RunHeader

PlanFn = Callable[[RunHeader], Planned]
"""Plan one run; never raises (a failure is a failed plan line)."""
SettleFn = Callable[[Planned], bool]
"""Called in the scheduling thread once a run is planned: bookkeeping; True = apply it."""
ApplyFn = Callable[[Planned], None]
"""Apply one run (reading a dropped body again first); never raises."""


def _parent(p: Planned) -> str | None:
    parent = p.run.parent_source_id if p.run is not None else p.parent_source_id
    return parent if parent != p.plan.source_id else None


class Pipeline:
    """One pass's scheduler. :meth:`run` may be called again to apply runs set aside."""

    def __init__(
        self,
        workers: int,
        plan: PlanFn,
        settle: SettleFn,
        apply: ApplyFn,
    ) -> None:
        self.workers = max(1, workers)
        self._plan, self._settle, self._apply = plan, settle, apply
        self._pending: set[str] = set()  # runs of this call whose planning/apply has not ended
        self._waiting: dict[str, list[Planned]] = {}  # parent source id -> children to apply
        self._ready: deque[Planned] = deque()  # to apply now (bodies dropped)
        # id(line) -> where the line of a run not finished yet is: sealed when it is
        # (any call's lines: runs set aside finish in a later call)
        self._slots: dict[int, tuple[RunLines[RunPlan], int]] = {}

    def run(
        self,
        headers: Iterable[RunHeader],
        ids: Collection[str] | None = None,
        later: Iterable[Planned] = (),
        apply_now: bool = True,
        all_planned: Callable[[], None] | None = None,
    ) -> tuple[RunLines[RunPlan], list[Planned]]:
        """Plan ``headers`` (in order, ``workers`` at a time; ``ids`` are their source ids,
        known before the headers are read; by default read from ``headers``) and apply what ``settle`` picks — right away
        when ``apply_now``, else set aside with its body dropped — and apply ``later`` (runs
        set aside by an earlier call). ``all_planned`` is called once the last of
        ``headers`` is planned (at once when there are none). Returns every run's plan
        line, in ``headers`` order, and the runs set aside. Headers are read as slots free
        up and a finished run keeps only its plan line, sealed (spilled to disk,
        engine/lines.py), so the pass holds no header, ``Planned`` or line per run
        (``later`` ones aside)."""
        if ids is None:  # a list of headers: their ids are at hand
            headers = list(headers)
            ids = [h.source_id for h in headers]
        later = list(later)
        self._pending = set(ids) | {p.plan.source_id for p in later}
        for p in later:
            self._queue(p)
        lines: RunLines[RunPlan] = RunLines()  # a place per header, taken when submitted
        aside: list[Planned] = []
        todo = enumerate(headers)
        more = True  # ``todo`` may have more headers
        left = len(ids)
        if left == 0 and all_planned is not None:
            all_planned()
        # future -> its header's index (planning) or the run (applying)
        running: dict[Future[Any], int | Planned] = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while more or self._ready or running or self._waiting:
                while len(running) < self.workers and (self._ready or more):
                    if self._ready:  # applies first: they free what children wait for
                        p = self._ready.popleft()
                        running[pool.submit(self._applied, p)] = p
                        continue
                    item = next(todo, None)
                    if item is None:
                        more = False
                        break
                    running[pool.submit(self._plan, item[1])] = lines.reserve()
                if not running:
                    self._release_cycle()
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    if isinstance(task, Planned):  # applied
                        future.result()
                        self._finish(task)
                        continue
                    p = future.result()
                    assert p is not None
                    lines.put(task, p.plan)
                    self._slots[id(p.plan)] = (lines, task)
                    left -= 1
                    if left == 0 and all_planned is not None:
                        all_planned()
                    if not self._settle(p):
                        self._finish(p)
                    elif not apply_now:
                        p.forget_rendering()
                        aside.append(p)
                    elif self._must_wait(p):
                        p.drop_body()
                        self._waiting.setdefault(_parent(p) or "", []).append(p)
                    else:  # the slot this plan used goes to its apply: the body moves on
                        running[pool.submit(self._applied, p)] = p
        return lines, aside

    def _applied(self, p: Planned) -> None:
        """Apply; the body is dropped when the apply ends, whatever happened."""
        try:
            self._apply(p)
        finally:
            p.drop_body()
        return None

    def _must_wait(self, p: Planned) -> bool:
        parent = _parent(p)
        return parent is not None and parent in self._pending

    def _queue(self, p: Planned) -> None:
        if self._must_wait(p):
            self._waiting.setdefault(_parent(p) or "", []).append(p)
        else:
            self._ready.append(p)

    def _finish(self, p: Planned) -> None:
        """The run's planning (and apply, if any) ended: keep its plan line and header
        only, and let the children waiting for it go."""
        p.forget_rendering()
        p.watermarks, p.files_done, p.baseline = {}, {}, None
        p.plan.keep_counts()  # the line is kept to the report: counts, not values
        slot = self._slots.pop(id(p.plan), None)
        if slot is not None:  # final: to disk
            slot[0].seal(slot[1])
        self._pending.discard(p.plan.source_id)
        self._ready.extend(self._waiting.pop(p.plan.source_id, []))

    def _release_cycle(self) -> None:
        """Nothing runs and nothing is ready, yet runs wait: their parents wait on them
        (a cycle in the parent links). Apply them in any order (a link may be missing)."""
        for children in self._waiting.values():
            self._ready.extend(children)
        self._waiting.clear()
