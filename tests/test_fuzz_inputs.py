"""Fuzzing hostile or broken input (issue 11): ``.wandb`` logs, MLflow REST answers, GraphQL.

Every campaign is seeded (hypothesis ``derandomize=True``, or a fixed ``random.Random``), has
a time bound per case and for the whole test, and checks the same promises: never a
traceback out of a reader (a clear :class:`RunError` / :class:`BridgeError`, or the damage
named on the run), never a hang, never a wrong copy, and nothing lost without saying so.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdk_runs import cached_corpus
from test_txlog import encode

from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.adapters.wandb.txlog import (
    BLOCK,
    FIRST,
    FULL,
    LAST,
    MAX_RECORD_ENV,
    MIB,
    TxlogReader,
    pb,
)
from bridge.errors import BridgeError, RunError
from bridge.schema import MetricChunk

CASE_SECONDS = 10  # hard bound per case (SIGALRM): a hang fails the test instead of CI
WANDB_CASES = 5_000


class CaseHang(BaseException):
    """A case ran past its time bound. Not an Exception: the code under test must not
    take it for a network timeout and retry it, or judge it as its own failure."""


@contextmanager
def time_bound(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the body runs longer than ``seconds``."""

    def _expired(signum: int, frame: Any) -> None:
        raise CaseHang(f"case ran longer than {seconds}s: a hang")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def record_cap(cap: int | None) -> Iterator[None]:
    """``BRIDGE_MAX_RECORD_MB`` for the body (None: the default cap)."""
    old = os.environ.pop(MAX_RECORD_ENV, None)
    if cap is not None:
        os.environ[MAX_RECORD_ENV] = repr(cap / MIB)
    try:
        yield
    finally:
        os.environ.pop(MAX_RECORD_ENV, None)
        if old is not None:
            os.environ[MAX_RECORD_ENV] = old


# ---- .wandb logs ----------------------------------------------------------------------


@dataclass
class Rec:
    """One record of an intact log, found by walking its chunks (independent of the reader)."""

    start: int  # offset of its first chunk header
    end: int  # end of its last chunk
    payload: bytes


@dataclass
class LogCase:
    """A run folder to damage: its intact log bytes and records."""

    name: str
    folder: Path  # a private copy; its .wandb is rewritten per case
    log: Path
    data: bytes
    records: list[Rec]
    ends: list[int]  # where a writer may stop: after the file header or any record
    chunks: list[int]  # chunk header offsets

    def put(self, data: bytes) -> None:
        """Rewrite the log in place (reopening it for writing costs milliseconds here)."""
        fd = os.open(self.log, os.O_RDWR)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


def walk_records(data: bytes) -> list[Rec]:
    """Every record of an intact log with its byte range (FULL, or FIRST..LAST)."""
    out: list[Rec] = []
    pos, start, parts = 7, -1, b""
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        frag = data[pos + 7 : pos + 7 + length]
        if kind in (FULL, FIRST):
            start, parts = pos, b""
        parts += frag
        pos += 7 + length
        if kind in (FULL, LAST):
            out.append(Rec(start, pos, parts))
    return out


@functools.lru_cache(maxsize=4096)
def _numeric_points(payload: bytes) -> frozenset[tuple[str, int]]:
    """(key, step) of every numeric top-level value of a history record (else empty)."""
    rec = pb.Record.FromString(payload)
    if rec.WhichOneof("record_type") != "history":
        return set()
    step, keys = None, []
    for item in rec.history.item:
        key = item.nested_key[0] if len(item.nested_key) == 1 else item.key
        if not item.value_json or len(item.nested_key) > 1:
            continue
        value = json.loads(item.value_json)
        if key == "_step":
            step = int(value)
        elif not key.startswith("_") and type(value) in (int, float):
            keys.append(key)
    step = int(rec.history.step.num) if step is None else step
    return frozenset((k, step) for k in keys)


def _long_log(basic: bytes) -> bytes:
    """A multi-block log of real SDK records: the basic run with its logging (history and
    summary records) repeated 4 times, so records straddle block boundaries and damage has
    blocks after it."""
    payloads = [r.payload for r in walk_records(basic)]
    kinds = [pb.Record.FromString(p).WhichOneof("record_type") for p in payloads]
    first = kinds.index("history")
    last = len(kinds) - 1 - kinds[::-1].index("history")
    body = payloads[first : last + 1]
    return encode(payloads[:first] + body * 4 + payloads[last + 1 :])


def make_log_cases(corpus: dict[str, Path], root: Path) -> dict[str, LogCase]:
    """Private copies of SDK-made run folders to damage: basic (one block), bigconfig (a
    record over four blocks) and long (basic's logging four times: three blocks)."""
    cases: dict[str, LogCase] = {}
    for name, role in (("basic", "basic"), ("bigconfig", "bigconfig"), ("long", "basic")):
        folder = root / name / corpus[role].name
        shutil.copytree(corpus[role], folder, symlinks=True)
        (log,) = folder.glob("*.wandb")
        data = log.read_bytes()
        if name == "long":
            data = _long_log(data)
            log.write_bytes(data)
        records = walk_records(data)
        assert encode([r.payload for r in records]) == data  # the walk found every byte
        ends = [7] + [r.end for r in records]
        cases[name] = LogCase(name, folder, log, data, records, ends, chunk_offsets(data))
    assert len(cases["long"].data) > 2 * BLOCK
    return cases


@pytest.fixture(scope="module")
def wandb_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LogCase]:
    corpus = cached_corpus(tmp_path_factory.getbasetemp())
    return make_log_cases(corpus, tmp_path_factory.mktemp("fuzz-wandb"))


@st.composite
def mutations(draw: st.DrawFn, size: int, n_chunks_hint: int) -> list[tuple[Any, ...]]:
    """1-3 damage operations on a log of ``size`` bytes."""
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "flip",
                    "byte",
                    "truncate",
                    "zero",
                    "length",
                    "crc",
                    "type",
                    "header",
                    "delete",
                ]  # fmt: skip
            )
        )
        pos = draw(st.integers(0, size - 1))
        if kind == "flip":
            ops.append((kind, pos, draw(st.integers(0, 7))))
        elif kind == "byte":
            ops.append((kind, pos, draw(st.integers(0, 255))))
        elif kind == "truncate":
            ops.append((kind, pos))
        elif kind == "zero":
            ops.append((kind, pos, draw(st.integers(1, 3 * BLOCK))))
        elif kind == "length":  # a chunk's length field: huge, zero or anything
            value = draw(st.sampled_from([0, 1, 0x7FF9, 0x8000, 0xFFFF]) | st.integers(0, 0xFFFF))
            ops.append((kind, draw(st.integers(0, n_chunks_hint - 1)), value))
        elif kind == "crc":
            ops.append(
                (kind, draw(st.integers(0, n_chunks_hint - 1)), draw(st.integers(0, 2**32 - 1)))
            )
        elif kind == "type":
            ops.append((kind, draw(st.integers(0, n_chunks_hint - 1)), draw(st.integers(0, 255))))
        elif kind == "header":
            ops.append((kind, draw(st.integers(0, 6)), draw(st.integers(0, 255))))
        else:
            ops.append((kind, pos, draw(st.integers(1, 5000))))
    return ops


def chunk_offsets(data: bytes) -> list[int]:
    out, pos = [], 7
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:
            pos += room
            continue
        out.append(pos)
        pos += 7 + struct.unpack_from("<IHB", data, pos)[1]
    return out


def apply_ops(case: LogCase, ops: list[tuple[Any, ...]]) -> tuple[bytes, bool]:
    """The damaged bytes, and whether bytes moved (a deletion: offsets no longer line up)."""
    out = bytearray(case.data)
    chunks = case.chunks
    shifted = False
    for op in ops:
        kind = op[0]
        if kind == "flip" and op[1] < len(out):
            out[op[1]] ^= 1 << op[2]
        elif kind == "byte" and op[1] < len(out):
            out[op[1]] = op[2]
        elif kind == "truncate":
            del out[op[1] :]
        elif kind == "zero":
            end = min(len(out), op[1] + op[2])
            out[op[1] : end] = bytes(max(0, end - op[1]))
        elif kind in ("length", "crc", "type"):
            at = chunks[op[1] % len(chunks)]
            field = {"crc": (0, "<I"), "length": (4, "<H"), "type": (6, "<B")}[kind]
            if at + 7 <= len(out):
                struct.pack_into(field[1], out, at + field[0], op[2])
        elif kind == "header":
            if op[1] < len(out):
                out[op[1]] = op[2]
        elif kind == "delete" and op[1] < len(out):
            del out[op[1] : op[1] + op[2]]
            shifted = True
    return bytes(out), shifted


def _changed(a: bytes, b: bytes) -> np.ndarray:
    """Sorted offsets where two byte strings differ (over the shorter one's length)."""
    n = min(len(a), len(b))
    x = np.frombuffer(a, dtype=np.uint8, count=n)
    y = np.frombuffer(b, dtype=np.uint8, count=n)
    return np.flatnonzero(x != y)


def _first_change(a: bytes, b: bytes) -> int:
    diff = _changed(a, b)
    return int(diff[0]) if len(diff) else min(len(a), len(b))


def guaranteed(case: LogCase, damaged: bytes, shifted: bool, cap: int) -> list[Rec]:
    """The records the reader must yield: intact, within the cap, not in a block that damage
    made unreadable (from the block's start to the record's end nothing changed)."""
    if damaged[:7] != case.data[:7]:
        return []  # not a W&B log any more: nothing is read
    keep = [r for r in case.records if len(r.payload) <= cap and r.end <= len(damaged)]
    if shifted:
        first = _first_change(case.data, damaged)
        return [r for r in keep if r.end <= first]
    changed = _changed(case.data, damaged)
    out = []
    for r in keep:
        i = int(np.searchsorted(changed, r.start - r.start % BLOCK))
        if i == len(changed) or changed[i] >= r.end:
            out.append(r)
    return out


def clean_cut(case: LogCase, damaged: bytes) -> bool:
    """True when the damage is indistinguishable from a log whose writer stopped between
    two records (cut there, maybe zero-filled after): nothing to report then."""
    first = _first_change(case.data, damaged)
    nonzero = np.flatnonzero(np.frombuffer(damaged, dtype=np.uint8))
    last = int(nonzero[-1]) if len(nonzero) else -1
    return any(last < end <= first for end in case.ends)


def check_txlog(
    case: LogCase, damaged: bytes, shifted: bool, cap: int, traced: bool = False
) -> tuple[list[bytes], TxlogReader]:
    """The framing promises on one damaged log; returns the payloads read and the reader."""
    expected_all = [r.payload for r in case.records if len(r.payload) <= cap]
    reader = TxlogReader(case.log, max_record=cap)
    if traced:  # (tracing costs 30x: a sample of the cases)
        tracemalloc.start()
        try:
            got = [p for _, p in reader.payloads()]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # at most two copies of the biggest record allowed, plus the 1 MiB read buffer
        assert peak < 2 * min(cap, len(damaged)) + 2 * MIB, f"peak {peak} bytes"
    else:
        got = [p for _, p in reader.payloads()]
    # never a wrong record: what is read is an in-order selection of the real records
    it = iter(expected_all)
    assert all(any(p == q for q in it) for p in got), "a record the log never held"
    # every intact record before (and after, block-aligned) the damage is read
    must = [r.payload for r in guaranteed(case, damaged, shifted, cap)]
    missing = [p for p in must if p not in got]
    assert not missing, f"{len(missing)} intact record(s) not read; damages {reader.damages}"
    # nothing lost silently, every damage named with file and offset
    if got != expected_all and not clean_cut(case, damaged):
        assert reader.damages, "records lost without a damage report"
    for d in reader.damages:
        assert str(d).startswith(f"{case.log}: ") and f" at byte {d.offset}" in str(d)
        assert 0 <= d.offset <= len(damaged)
        assert d.resumed_at is None or d.offset <= d.resumed_at <= len(damaged)
    return got, reader


def check_offline_reader(case: LogCase, damaged: bytes, got: list[bytes], cap: int) -> None:
    """The whole offline reader on the damaged folder: a run (damage named) or a RunError."""
    reader = WandbOfflineReader(str(case.folder), ReaderOptions())
    with record_cap(cap):
        headers = list(reader.list_runs())
        assert len(headers) == 1
        try:
            run = reader.read_run(headers[0])
        except RunError as exc:  # NothingToImport: no record could be read, said so
            assert not got, f"records were readable, yet: {exc}"
            assert str(case.log) in str(exc)
            return
        points: set[tuple[str, int]] = set()
        for item in reader.iter_history(run):
            if isinstance(item, MetricChunk):
                points.update((item.key, s) for s in item.steps)
    expected = [r.payload for r in case.records if len(r.payload) <= cap]
    if got != expected and not clean_cut(case, damaged):
        assert run.incomplete_reason and str(case.log) in run.incomplete_reason
    wanted: set[tuple[str, int]] = set()
    for p in got:
        wanted |= _numeric_points(p)
    assert wanted <= points, f"points of intact records not imported: {sorted(wanted - points)[:5]}"


_CAPS = [None, 300, 40_000]  # default 64 MiB; small caps make real records oversized
_NAMES = ["basic", "basic", "bigconfig", "bigconfig", "long"]  # long logs cost the most


@pytest.mark.timeout(480)
def test_fuzz_wandb_logs(wandb_logs: dict[str, LogCase]) -> None:
    """≥ 5,000 damaged SDK logs: the txlog promises on each, the offline reader on each."""
    sizes = {n: len(c.data) for n, c in wandb_logs.items()}
    chunks = {n: len(chunk_offsets(c.data)) for n, c in wandb_logs.items()}
    seen = {"cases": 0, "damaged": 0, "resumed": 0, "oversized": 0}
    started, cpu0 = time.monotonic(), time.process_time()

    @st.composite
    def cases(draw: st.DrawFn) -> tuple[str, list[tuple[Any, ...]], int | None]:
        name = draw(st.sampled_from(_NAMES))
        return name, draw(mutations(sizes[name], chunks[name])), draw(st.sampled_from(_CAPS))

    @settings(
        max_examples=WANDB_CASES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def run_case(args: tuple[str, list[tuple[Any, ...]], int | None]) -> None:
        name, ops, cap_opt = args
        case = wandb_logs[name]
        cap = cap_opt if cap_opt is not None else 64 * MIB
        damaged, shifted = apply_ops(case, ops)
        case.put(damaged)
        with time_bound(CASE_SECONDS):
            traced = seen["cases"] % 25 == 0
            got, stats = check_txlog(case, damaged, shifted, cap, traced)
            check_offline_reader(case, damaged, got, cap)
        seen["cases"] += 1
        seen["damaged"] += bool(stats.damages)
        seen["resumed"] += any(d.resumed_at is not None for d in stats.damages)
        seen["oversized"] += any("cap" in d.reason for d in stats.damages)

    try:
        run_case()
    finally:
        for case in wandb_logs.values():
            case.put(case.data)
    elapsed = time.monotonic() - started
    print(f"wandb fuzz: {seen} in {elapsed:.1f}s, cpu {time.process_time() - cpu0:.1f}s")
    assert seen["cases"] >= WANDB_CASES
    # the campaign reached every path it claims to test
    assert seen["damaged"] > WANDB_CASES // 2
    assert seen["resumed"] > WANDB_CASES // 10 and seen["oversized"] > WANDB_CASES // 20


# ---- MLflow REST answers --------------------------------------------------------------

REST_CASES = int(os.environ.get("FUZZ_REST_CASES", "1000"))


#: What a reader may raise on a broken answer: the bridge's own clear errors, or MLflow's
#: (its client names the endpoint and the status or the parse failure). Anything else
#: (KeyError, TypeError, AttributeError ...) reaches the run's line as a cryptic one.
def _clear_errors() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException

    return (BridgeError, RunError, MlflowException)


@dataclass
class Campaign:
    """Tallies of one answer-fuzzing campaign; ``findings`` must stay empty."""

    malformed: frozenset[str]  # kinds no valid server sends: never to be read as data
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def judge(self, case: str, kind: str, applied: Any, truth: Any, got: Any, error: Any) -> None:
        if applied is None:
            self.outcomes["not-applied"] += 1
            return
        if error is not None:
            if isinstance(error, _clear_errors()) and str(error).strip():
                self.outcomes["clear-failure"] += 1
            else:
                self.findings.append(f"{case} {kind} {applied}: {type(error).__name__}: {error}")
            return
        if got == truth:
            self.outcomes["correct-copy"] += 1
        elif kind in self.malformed:
            self.findings.append(f"{case} {kind} {applied}: read as data, differs from the source")
        else:  # a valid answer with other data: no reader can tell
            self.outcomes["valid-but-different"] += 1


def mlflow_snapshot(url: str) -> list[Any]:
    """Everything the MLflow reader gives for every run, in a comparable form."""
    from bridge.adapters.mlflow.reader import MlflowReader

    reader = MlflowReader(url, ReaderOptions())
    out: list[Any] = []
    for header in reader.list_runs():
        run = reader.read_run(header)
        points: dict[str, list[Any]] = {}
        for item in reader.iter_history(run):
            if isinstance(item, MetricChunk):
                points.setdefault(item.key, []).extend(
                    zip(item.steps, item.timestamps, item.values, strict=True)
                )
        out.append(
            (
                header.source_id.split("#")[-1],
                header.project.name,
                run.name,
                run.status,
                run.start_time_ms,
                run.end_time_ms,
                sorted(run.config.items()),
                sorted(run.extra_tags.items()),
                sorted(f.path for f in run.files),
                sorted((k, [(s, t, repr(v)) for s, t, v in p]) for k, p in points.items()),
            )
        )
    return out


@pytest.fixture(scope="module")
def mlflow_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` holding two runs (params, tags, two metrics, a file)."""
    from conftest import start_mlflow_server, stop_mlflow_server
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    workdir = tmp_path_factory.mktemp("fuzz-mlflow")
    url, proc = start_mlflow_server(workdir)
    try:
        client = MlflowClient(url)
        exp = client.create_experiment("fuzz", tags={"team": "bridge"})
        note = workdir / "note.txt"
        note.write_text("hello")
        for i in range(2):
            run = client.create_run(exp, run_name=f"run-{i}", start_time=1_700_000_000_000 + i)
            rid = run.info.run_id
            metrics = [Metric("loss", 1 / (s + 1), 1_700_000_001_000 + s, s) for s in range(4)]
            metrics += [Metric("acc", s / 10 + i, 1_700_000_001_000 + s, s) for s in range(4)]
            client.log_batch(
                rid,
                metrics=metrics,
                params=[Param("lr", "0.01"), Param("layers", str(i + 2))],
                tags=[RunTag("owner", "fuzz"), RunTag("mlflow.note.content", "a note")],
            )
            client.log_artifact(rid, str(note))
            client.set_terminated(rid, "FINISHED", end_time=1_700_000_009_000 + i)
        yield url
    finally:
        stop_mlflow_server(proc)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_fuzz_mlflow_rest_answers(mlflow_source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """≥ 1,000 cases, one damaged answer each, through a proxy in front of `mlflow server`:
    the MLflow reader ends with a clear error or the source's real data, never a traceback
    or other data read as the source's. Found (fixed in strict_rest.py): an empty 200 body
    read as an empty message (runs/get, metrics/get-history, runs/search,
    experiments/search: a wrong copy reported done); protobuf's ParseError (an int64 out of
    range, a wrong JSON type) escaping the reader."""
    from fakes.mutating_proxy import KINDS, MutatingProxy
    from mlflow.tracking.request_header import databricks_request_header_provider as dbx

    # MLflow probes for a Databricks notebook on every request (failed imports: 6 ms each,
    # most of a case's time here); outside Databricks it always answers False.
    monkeypatch.setattr(dbx.DatabricksRequestHeaderProvider, "in_context", lambda self: False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    started = time.monotonic()
    with MutatingProxy(mlflow_source) as proxy:
        truth = mlflow_snapshot(proxy.url)
        requests = proxy.count
        assert len(truth) == 2 and requests > 5
        assert mlflow_snapshot(proxy.url) == truth  # replayed answers read the same
        campaign = run_campaign(proxy, KINDS, REST_CASES, requests, truth, mlflow_snapshot)
    print(f"mlflow REST fuzz: {dict(campaign.outcomes)} in {time.monotonic() - started:.1f}s")
    assert not campaign.findings, "\n".join(campaign.findings[:20])
    assert sum(campaign.outcomes.values()) >= REST_CASES
    assert campaign.outcomes["clear-failure"] > REST_CASES // 3
    assert campaign.outcomes["not-applied"] < REST_CASES // 5


def run_campaign(
    proxy: Any,
    kinds: tuple[str, ...],
    cases: int,
    requests: int,
    truth: Any,
    snapshot: Any,
    seed: int = 2026,
) -> Campaign:
    """``cases`` reads of the whole source, each with one answer damaged (seeded choice of
    kind and of which answer)."""
    from fakes.mutating_proxy import MALFORMED

    rng = random.Random(seed)
    campaign = Campaign(MALFORMED)
    for i in range(cases):
        kind = kinds[i % len(kinds)]
        proxy.begin(rng.randrange(requests), kind, seed=i)
        got, error = None, None
        with time_bound(CASE_SECONDS):
            try:
                got = snapshot(proxy.url)
            except Exception as exc:  # judged below: clear or a finding
                error = exc
        campaign.judge(f"case {i}", kind, proxy.applied, truth, got, error)
        if len(campaign.findings) >= 20:  # enough to act on; do not spend CI time on more
            break
    return campaign


# ---- the record cap and resuming after damage, case by case ---------------------------


def test_damage_mid_log_resumes_at_next_block(wandb_logs: dict[str, LogCase]) -> None:
    """A checksum error in block 1 of a three-block log: block 0's records and every record
    starting in block 2 or later are read; the gap is named with file and offsets."""
    case = wandb_logs["long"]
    victim = next(r for r in case.records if r.start > BLOCK + 100 and r.end < 2 * BLOCK)
    damaged = bytearray(case.data)
    damaged[victim.start + 9] ^= 0x40
    case.put(bytes(damaged))
    try:
        reader = TxlogReader(case.log)
        got = [p for _, p in reader.payloads()]
        after = [r.payload for r in case.records if r.start >= 2 * BLOCK]
        assert after and all(p in got for p in after)  # the old reader stopped here
        before = [r.payload for r in case.records if r.end <= victim.start]
        assert got[: len(before)] == before and len(got) == len(before) + len(after)
        (d,) = reader.damages
        assert (d.offset, d.reason) == (victim.start, "checksum mismatch")
        resumed = min(r.start for r in case.records if r.start >= 2 * BLOCK)
        assert d.resumed_at == resumed
        run = _read_offline(case)
        assert run.incomplete_reason == (
            f"{case.log}: checksum mismatch at byte {victim.start}, read on from byte {resumed}"
        )
    finally:
        case.put(case.data)


def _read_offline(case: LogCase) -> Any:
    reader = WandbOfflineReader(str(case.folder), ReaderOptions())
    (header,) = reader.list_runs()
    return reader.read_run(header)


def test_oversized_record_is_skipped_unbuffered(
    wandb_logs: dict[str, LogCase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An 8 MiB record under a 1 MiB cap: skipped chunk by chunk (memory stays near one
    read buffer), named with its offset, and every other record is read."""
    case = wandb_logs["basic"]
    rec = pb.Record()
    rec.config.update.add(key="blob", value_json='"' + "x" * (8 * MIB) + '"')
    big = rec.SerializeToString()
    payloads = [r.payload for r in case.records]
    data = encode(payloads[:2] + [big] + payloads[2:])
    big_at = walk_records(data)[2].start
    case.put(data)
    try:
        monkeypatch.setenv(MAX_RECORD_ENV, "1")
        reader = TxlogReader(case.log)
        assert reader.max_record == MIB
        tracemalloc.start()
        try:
            got = [p for _, p in reader.payloads()]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got == payloads
        # 2 x cap + two 1 MiB read buffers (the old and the next); read whole: > 8 MiB
        assert peak < 2 * MIB + 2 * MIB, peak
        (d,) = reader.damages
        assert d.offset == big_at and d.resumed_at == walk_records(data)[3].start
        assert (
            d.reason
            == f"record of {len(big)} bytes over the 1 MiB record cap ({MAX_RECORD_ENV}) skipped"
        )
        run = _read_offline(case)
        assert run.incomplete_reason and f"at byte {big_at}" in run.incomplete_reason
        assert "blob" not in run.config and run.config  # the rest of the config is there

        monkeypatch.setenv(MAX_RECORD_ENV, "16")
        tracemalloc.start()
        try:
            whole = [p for _, p in TxlogReader(case.log).payloads()]
            peak_whole = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert big in whole and peak_whole > 8 * MIB  # the measure sees a buffered record
    finally:
        case.put(case.data)


@pytest.mark.parametrize("value", ["0", "-3", "lots", "nan"])
def test_record_cap_setting_is_checked(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(MAX_RECORD_ENV, value)
    with pytest.raises(BridgeError, match=MAX_RECORD_ENV):
        TxlogReader("unused.wandb")


# ---- GraphQL answers of the W&B server --------------------------------------------------

GRAPHQL_CASES = int(os.environ.get("FUZZ_GRAPHQL_CASES", "1000"))


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


def wandb_reads(reader: Any) -> list[tuple[str, Any]]:
    """The small reads one case makes (one damaged answer each): the listing, and per run
    its body and its history (given the undamaged body)."""
    reads: list[tuple[str, Any]] = [("list", None)]
    for header in reader.list_runs():
        run = reader.read_run(header)
        reads += [("read", header), ("history", run)]
    return reads


def wandb_read(reader: Any, op: str, arg: Any) -> Any:
    """One read, in a comparable form."""
    if op == "list":
        return _plain([h.model_dump(mode="json") for h in reader.list_runs()])
    if op == "read":
        return _plain(reader.read_run(arg).model_dump(mode="json"))
    return _plain([item.model_dump(mode="json") for item in reader.iter_history(arg)])


@pytest.fixture(scope="module")
def wandb_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The loopback W&B server holding two SDK-made runs (history, files)."""
    from fakes.wandb_server import FakeWandbServer

    corpus = cached_corpus(tmp_path_factory.getbasetemp())
    with FakeWandbServer() as srv:
        runs = [srv.load_offline_run(corpus[role]) for role in ("basic", "crashed")]
        assert len({(r.entity, r.project) for r in runs}) == 1
        yield srv, f"{runs[0].entity}/{runs[0].project}"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_fuzz_wandb_graphql_answers(
    wandb_source: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """≥ 1,000 cases, one damaged answer each (a sticky one for a looping cursor), from the
    loopback W&B server through a proxy to the bridge's W&B reader over the real
    ``wandb.Api`` (one Api for every case): a clear RunError/BridgeError or the undamaged
    data, never another exception, a hang, or other data read as the source's."""
    from fakes.mutating_proxy import GRAPHQL_KINDS, GRAPHQL_MALFORMED, MutatingProxy

    from bridge.adapters.wandb.api_reader import WandbApiReader

    srv, path = wandb_source
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    started = time.monotonic()
    with MutatingProxy(srv.url, rewrite_urls=True) as proxy:
        reader = WandbApiReader(f"{path}?base_url={proxy.url}", ReaderOptions())
        reader.attempts, reader.base_delay = 2, 0.0  # one retry, no backoff: CI time
        try:
            reads = wandb_reads(reader)
            assert [op for op, _ in reads].count("history") == 2
            truths, counts = [], []
            for op, arg in reads:
                proxy.begin(-1, "truncate", 0)
                truths.append(wandb_read(reader, op, arg))
                counts.append(proxy.count)
                assert wandb_read(reader, op, arg) == truths[-1]  # replayed: read the same
            assert all(truths) and min(counts) >= 1
            campaign = Campaign(GRAPHQL_MALFORMED)
            rng = random.Random(2026)
            for i in range(GRAPHQL_CASES):
                kind = GRAPHQL_KINDS[i % len(GRAPHQL_KINDS)]
                which = rng.randrange(len(reads))
                op, arg = reads[which]
                truth = truths[which]
                proxy.begin(rng.randrange(counts[which]), kind, seed=i)
                got, error = None, None
                with time_bound(CASE_SECONDS):
                    try:
                        got = wandb_read(reader, op, arg)
                    except Exception as exc:  # judged: clear (RunError/BridgeError) or not
                        error = exc
                if error is not None and not isinstance(error, (RunError, BridgeError)):
                    campaign.findings.append(f"case {i} {kind} {proxy.applied}: {error!r:.300}")
                else:
                    # A file's content (wandb-metadata.json) with a value of another type is
                    # still a valid file: other data, not a damaged answer.
                    on_file = proxy.applied is not None and proxy.applied[0] != "/graphql"
                    label = (
                        f"file-{kind}" if on_file and kind in ("wrong-type", "huge-int") else kind
                    )
                    campaign.judge(f"case {i}", label, proxy.applied, truth, got, error)
                if len(campaign.findings) >= 20:
                    break
        finally:
            reader.close()
    print(f"wandb GraphQL fuzz: {dict(campaign.outcomes)} in {time.monotonic() - started:.1f}s")
    assert not campaign.findings, "\n".join(campaign.findings[:20])
    assert sum(campaign.outcomes.values()) >= GRAPHQL_CASES
    assert campaign.outcomes["clear-failure"] > GRAPHQL_CASES // 20  # most are retried
    assert campaign.outcomes["not-applied"] < GRAPHQL_CASES // 5
