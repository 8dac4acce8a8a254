"""A pass's plan lines, finished ones kept on disk: ``Plan.runs``.

A pass reports one line per run (``T``, ~2.5 KB in memory even with its values to
write dropped), and every line used to be held until the report was printed: 25 MB at
10,000 runs, the last part of a pass's memory that grew with the run count. Here a line
that is final (its run planned, and applied if it is applied at all: the pipeline says so
with :meth:`RunLines.seal`) is pickled to a private anonymous temporary file and read back
on demand; only lines still changing stay in memory (O(workers), plus the runs a pass sets
aside). Reading is lazy: iterating yields the lines in order, one at a time; ``len`` is
known without reading; :meth:`ordered` walks them sorted by a key holding only the keys.

Lines added by hand (``Plan(runs=[...])``, ``append``, ``extend``) stay in memory, the
same objects, until sealed. A line read back after :meth:`seal` is a copy: change lines
before they are sealed, not after. A line that cannot be pickled (never seen: lines are
plain pydantic data) stays in memory.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, TypeVar, overload

T = TypeVar("T")


class RunLines(Sequence[T]):
    """The plan lines of one pass, in order (a list-like sequence; see the module doc)."""

    def __init__(self, lines: Iterable[T] = ()) -> None:
        self._off = array("q")  # offset in the file, -1: live (in ``_live``)
        self._size = array("q")
        self._live: dict[int, T] = {}
        self._file: IO[bytes] | None = None
        self._end = 0
        self._lock = threading.Lock()
        self.extend(lines)

    # -- building -------------------------------------------------------------------------
    def append(self, line: T, final: bool = False) -> int:
        """Add ``line`` at the end; returns its index. It stays in memory (the caller may
        still change it) until :meth:`seal`; ``final``: sealed now."""
        with self._lock:
            i = len(self._off)
            self._off.append(-1)
            self._size.append(0)
            self._live[i] = line
        if final:
            self.seal(i)
        return i

    def reserve(self) -> int:
        """A place at the end for a line not known yet (:meth:`put` it before reading)."""
        with self._lock:
            self._off.append(-1)
            self._size.append(0)
            return len(self._off) - 1

    def put(self, i: int, line: T) -> None:
        """The line of place ``i`` (reserved or still in memory), not final yet."""
        with self._lock:
            if self._off[i] != -1:
                raise ValueError(f"plan line {i} is sealed")
            self._live[i] = line

    def extend(self, lines: Iterable[T], final: bool = False) -> None:
        for line in lines:
            self.append(line, final)

    def seal(self, i: int) -> None:
        """Line ``i`` is final: spill it to the file."""
        with self._lock:
            line = self._live.get(i)
            if line is None:
                return
            try:
                data = pickle.dumps(line, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - kept in memory instead
                return
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="bridge-lines-")
            os.pwrite(self._file.fileno(), data, self._end)
            self._off[i], self._size[i] = self._end, len(data)
            self._end += len(data)
            del self._live[i]

    def seal_all(self) -> None:
        for i in list(self._live):
            self.seal(i)

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._off)

    def __bool__(self) -> bool:
        return len(self._off) > 0

    def _get(self, i: int) -> T:
        with self._lock:
            line = self._live.get(i)
            if line is None:
                if self._off[i] == -1:
                    raise LookupError(f"plan line {i} was reserved, never put")
                assert self._file is not None
                data = os.pread(self._file.fileno(), self._size[i], self._off[i])
        if line is None:
            line = pickle.loads(data)  # noqa: S301 - our own private file
        return line

    def __iter__(self) -> Iterator[T]:
        for i in range(len(self._off)):
            yield self._get(i)

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("plan line index out of range")
        return self._get(i)

    def ordered(self, key: Callable[[T], Any]) -> Iterator[T]:
        """The lines sorted by ``key`` (stable, like ``sorted``), read one at a time:
        what is held is the keys, not the lines."""
        keys = [(key(line), i) for i, line in enumerate(self)]
        keys.sort(key=lambda k: k[0])  # stable on equal keys: listing order
        for _, i in keys:
            yield self._get(i)

    def transformed(self, fn: Callable[[T], T]) -> RunLines[T]:
        """New lines ``fn(line)``, in one pass: a line in memory stays in memory (the same
        object when ``fn`` returns it), a sealed one is sealed in the new file. One pass,
        not one per read: reports read the lines several times (counts, conflicts,
        warnings, the table) and ``fn`` may be costly (redaction: ~1 ms a line)."""
        out: RunLines[T] = RunLines()
        for i in range(len(self)):
            out.append(fn(self._get(i)), final=i not in self._live)
        return out

    # -- list-likeness --------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, RunLines | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RunLines({len(self)} lines, {len(self._live)} in memory)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunLines, (list(self),))

    def __copy__(self) -> RunLines[T]:
        return RunLines(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> RunLines[T]:
        import copy

        return RunLines(copy.deepcopy(line, memo) for line in self)

    def close(self) -> None:
        """Drop the file (also done when the object is collected)."""
        if self._file is not None:
            self._file.close()

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Any value; ``Plan`` validates it (an iterable of lines becomes a RunLines)."""
        from pydantic_core import core_schema

        return core_schema.any_schema()
