"""Bench: copy 1,000 traces x 20 spans MLflow -> MLflow, the bridge vs a span-by-span replay.

The released mlflow-export-import (1.2.0 on PyPI) has no trace commands. Its development line
(github.com/mlflow/mlflow-export-import, commit cf626079fc6729b10e34c2fd0fa3cf36fbfb30b2,
2 Jan 2026) exports a trace with ``get_trace`` and imports it by replaying it through MLflow's
public tracing API: ``mlflow_export_import/trace/import_trace.py`` (``import_trace``:
``MlflowClient.start_trace`` for the root span with the source's tags, ``set_trace_metadata``
through the in-memory trace manager, root events, ``end_trace``),
``trace/trace_data_importer.py`` (``_import_span_data``: breadth-first
``MlflowClient.start_span`` + ``end_span`` per child span with the source's start/end ns,
status, inputs/outputs, attributes without ``mlflow.*`` keys; ``_import_assessments``:
``mlflow.log_assessment`` of a Feedback/Expectation per source assessment with the span id
mapped and the source's ``overrides`` id) and ``trace/trace_utils.py``. ``replay`` below
re-implements that approach (none of their code is copied). Adaptations, each in the
baseline's favour or forced by MLflow 3.17: the hand-off from export to import is in memory
(theirs writes trace.json and downloads the spans artifact to a directory); ``trace_id=``
where their calls still say ``request_id=`` (renamed in MLflow 3); a trace that raises is
counted and the next one goes on (their bulk import stops an experiment's loop at the first
exception); assessments are logged once MLflow's asynchronous trace export (on by default)
has been flushed — in their per-trace order they race the export and fail with "Trace not
found" on MLflow 3.17, and turning async logging off makes the replay about 2.5x slower;
that queue holds every trace of the copy (``MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE``
1,000,000 unless set): at MLflow's default of 1,000 tasks a 1,000-trace replay into sqlite
silently dropped 717 traces here. Like theirs, only the root span's events are replayed and
an override keeps the source's assessment id.

The bridge is timed as a whole ``bridge sync mlflow:SRC mlflow:DST`` process; the replay as a
whole process too (``--replay SRC DST``), both through bench/measure.py (wall time, peak RSS).
Each method writes into a fresh destination of each kind: a sqlite URI and an
``mlflow server`` (PostgreSQL behind it when the local server is up, else sqlite). The
fidelity table is computed by reading source and copy back (bench/trace_corpus.py).

Profile (py-spy, all threads, 300 traces into sqlite, before issue 14's changes): the
destination's ``start_trace`` 40% of samples (called twice per trace: before the spans and
again after them), ``log_spans`` 23%, the source's ``get_trace`` 8%, finding the copy 5%
(a ``get_trace_info`` and a tag search per trace, and the plan read the info again).
Changes: copies found by one listing per destination experiment (by their
``bridge.source_id`` tag) and the source ids' infos read 100 at a time
(``batch_get_trace_infos``), answered again for the plan from that read; ``start_trace``
once, again only where ``log_spans`` may change what it wrote (state in progress, a
preview unset, root-span trace tags, times not covering the spans': none of 60 checked in
this corpus); a changed copy read back once for plan and conflict check. Left: spans of several
traces in one ``log_spans``/OTLP request (the engine applies one item at a time); the
item pass already keeps ``--workers`` (4) traces in flight.

Figures (2026-12-07, 2 cores shared with other benches, load average 14-30 throughout, so
wall times are ~8x the quiet machine's; ratios taken in one run): 1,000 traces x 20 spans,
into sqlite replay 912 s, bridge 425 s (2.15x; before: 105 s vs 55 s, 1.9x); into a server
on PostgreSQL replay 928 s, bridge 224 s (4.1x; before: 133 s vs 121 s, 1.1x). No-op
re-sync of the 1,000 traces (whole process, mostly start-up): 48 s sqlite, 33 s server,
same load. Fidelity of the bridge's copy: every row of the table 100%.

    python bench/copy_traces.py [--traces 1000] [--spans 20] [--dests sqlite,server]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import trace_corpus  # noqa: E402
from measure import drop_pg_database, measure, pg_database  # noqa: E402


def _parse(value: Any) -> Any:
    """JSON-decode a span attribute value when it is JSON (their ``_try_parse_json``)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _user_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes without MLflow's own ``mlflow.*`` keys (their ``_get_span_attributes``)."""
    return {k: _parse(v) for k, v in attributes.items() if not k.startswith("mlflow.")}


def _replay_trace(client: Any, trace: Any, experiment_id: str) -> tuple[str, dict[str, str]]:
    """One trace, root first then children breadth-first, then metadata and its end; returns
    the copy's trace id and the source -> copy span id map its assessments need."""
    from mlflow.entities import SpanEvent
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    spans = trace.data.spans
    children: dict[str | None, list[Any]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    src_root = children[None][0]
    attrs = src_root.to_dict()["attributes"]
    root = client.start_trace(
        name=src_root.name,
        span_type=_parse(attrs.get("mlflow.spanType", "UNKNOWN")),
        inputs=_parse(attrs.get("mlflow.spanInputs")),
        attributes=_user_attributes(attrs),
        tags=dict(trace.info.tags),
        experiment_id=experiment_id,
        start_time_ns=src_root.start_time_ns,
    )
    trace_id = root.trace_id
    span_map = {src_root.span_id: root.span_id}
    queue = [(child, root.span_id) for child in children.get(src_root.span_id, [])]
    while queue:
        span, parent_id = queue.pop(0)
        attrs = span.to_dict()["attributes"]
        new = client.start_span(
            name=span.name,
            trace_id=trace_id,
            parent_id=parent_id,
            span_type=_parse(attrs.get("mlflow.spanType", "UNKNOWN")),
            inputs=_parse(attrs.get("mlflow.spanInputs")),
            attributes=_user_attributes(attrs),
            start_time_ns=span.start_time_ns,
        )
        client.end_span(
            trace_id=trace_id,
            span_id=new.span_id,
            status=span.status,
            outputs=_parse(attrs.get("mlflow.spanOutputs")),
            end_time_ns=span.end_time_ns,
        )
        span_map[span.span_id] = new.span_id
        queue.extend((child, new.span_id) for child in children.get(span.span_id, []))
    for event in src_root.events:
        root.add_event(SpanEvent(event.name, event.timestamp, event.attributes))
    manager = InMemoryTraceManager.get_instance()
    metadata = dict(trace.info.trace_metadata)
    metadata.pop("mlflow.sourceRun", None)
    for key, value in metadata.items():
        if key not in ("mlflow.traceInputs", "mlflow.traceOutputs"):
            manager.set_trace_metadata(trace_id, key, value)
    attrs = src_root.to_dict()["attributes"]
    client.end_trace(
        trace_id=trace_id,
        status=src_root.status,
        attributes=_user_attributes(attrs),
        outputs=_parse(attrs.get("mlflow.spanOutputs")),
        end_time_ns=src_root.end_time_ns,
    )
    return trace_id, span_map


def _replay_assessments(trace: Any, trace_id: str, span_map: dict[str, str]) -> None:
    """The source's assessments as new ones on the copy (their ``_import_assessments``)."""
    import mlflow
    from mlflow.entities import Expectation, Feedback

    for a in trace.info.assessments:
        common: dict[str, Any] = {
            "name": a.name,
            "source": a.source,
            "trace_id": trace_id,
            "span_id": span_map.get(a.span_id) if a.span_id else None,
            "metadata": a.metadata,
            "create_time_ms": a.create_time_ms,
            "last_update_time_ms": a.last_update_time_ms,
        }
        if getattr(a, "feedback", None) is not None:
            made: Any = Feedback(
                value=a.feedback.value,
                error=a.feedback.error,
                rationale=a.rationale,
                overrides=a.overrides,
                valid=a.valid,
                **common,
            )
        else:
            made = Expectation(value=a.expectation.value, **common)
        mlflow.log_assessment(trace_id=trace_id, assessment=made)


def replay(src_uri: str, dst_uri: str) -> dict[str, Any]:
    """The baseline: list the source's traces, get each, replay it into ``dst_uri``."""
    # Before MLflow makes its export queue: one that drops no trace of the copy.
    os.environ.setdefault("MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE", "1000000")
    import mlflow
    from mlflow import MlflowClient

    src = MlflowClient(tracking_uri=src_uri)
    mlflow.set_tracking_uri(dst_uri)
    dst = MlflowClient(tracking_uri=dst_uri)
    exp = src.get_experiment_by_name(trace_corpus.EXPERIMENT)
    dst_exp = dst.get_experiment_by_name(trace_corpus.EXPERIMENT)
    dst_exp_id = (
        dst_exp.experiment_id if dst_exp else dst.create_experiment(trace_corpus.EXPERIMENT)
    )
    ids: list[str] = []
    token = None
    while True:
        page = src.search_traces(
            locations=[exp.experiment_id], max_results=500, page_token=token, include_spans=False
        )
        ids.extend(t.info.trace_id for t in page)
        token = page.token
        if not token:
            break
    errors: list[str] = []
    later: list[tuple[Any, str, dict[str, str]]] = []
    for trace_id in ids:
        try:
            trace = src.get_trace(trace_id)
            later.append((trace, *_replay_trace(dst, trace, dst_exp_id)))
        except Exception as exc:  # counted, reported; the next trace goes on
            errors.append(f"trace {trace_id}: {type(exc).__name__}: {str(exc)[:200]}")
    mlflow.flush_trace_async_logging()
    for trace, copy_id, span_map in later:
        try:
            _replay_assessments(trace, copy_id, span_map)
        except Exception as exc:
            errors.append(f"assessments of {copy_id}: {type(exc).__name__}: {str(exc)[:200]}")
    kinds = Counter(re.sub(r"\b(tr|a)-[0-9a-f]+", "<id>", e)[:160] for e in errors)
    return {"listed": len(ids), "replayed": len(later), "failed": len(errors), "errors": kinds}


def _pg_database() -> str | None:
    """A fresh PostgreSQL database for a server's backend, or None when none is reachable."""
    try:
        return pg_database()
    except Exception:
        return None


def _run_method(method: str, src: str, dst: str, tmp: Path) -> dict[str, Any]:
    """One timed copy as its own process: seconds, peak RSS, what it printed; for the
    bridge also a second sync with the same state (nothing changed: the no-op re-sync)."""
    if method == "replay":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--replay", src, dst]
    else:
        state = tmp / f"state-{uuid.uuid4().hex[:8]}.db"
        cmd = [sys.executable, "-m", "bridge.cli", "sync", f"mlflow:{src}", f"mlflow:{dst}"]
        cmd += ["--state", str(state)]
    seconds, rss, out = measure(cmd, method)
    lines = out.strip().splitlines() or [""]
    said = [ln.strip() for ln in lines if ln.strip().startswith("traces:")] or lines[-1:]
    res: dict[str, Any] = {"seconds": seconds, "rss": rss, "out": said}
    if method != "replay":
        again, _rss, out = measure(cmd, "re-sync")
        lines = out.strip().splitlines() or [""]
        res["resync"] = again
        res["resync_out"] = [ln.strip() for ln in lines if ln.strip().startswith("traces:")]
    return res


def _copy_into(kind: str, method: str, src: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    """A fresh destination of ``kind``, ``method`` copied into it, then read back."""
    from conftest import start_mlflow_server, stop_mlflow_server

    work = tmp / f"{method}-{kind}"
    work.mkdir()
    if kind == "sqlite":
        dst = f"sqlite:///{work / 'dest.db'}"
        res = _run_method(method, src, dst, tmp)
        return "sqlite", {**res, "snap": trace_corpus.snapshot(dst)}
    pg = _pg_database()
    url, proc = start_mlflow_server(work, backend_uri=pg)
    try:
        res = _run_method(method, src, url, tmp)
        res["snap"] = trace_corpus.snapshot(url)
    finally:
        stop_mlflow_server(proc)
        if pg:
            drop_pg_database(pg)
    return ("server (PostgreSQL)" if pg else "server (sqlite)"), res


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=int, default=1000)
    parser.add_argument("--spans", type=int, default=20)
    parser.add_argument("--dests", default="sqlite,server")
    parser.add_argument("--methods", default="replay,bridge")
    parser.add_argument("--replay", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(replay(*args.replay)))
        return
    os.environ.update(MLFLOW_LOGGING_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    print(f"load average at the start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-traces-") as tmp_s:
        tmp = Path(tmp_s)
        os.chdir(tmp)  # sqlite stores put trace artifacts under ./mlruns
        src = f"sqlite:///{tmp / 'src.db'}"
        t0 = time.perf_counter()
        trace_corpus.make_corpus(src, args.traces, args.spans)
        source = trace_corpus.snapshot(src)
        n = len(source.traces)
        print(
            f"source: {n} traces x {args.spans} spans, made in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        cols: list[tuple[str, dict[str, Any]]] = []
        for kind in args.dests.split(","):
            for method in args.methods.split(","):
                label, res = _copy_into(kind, method, src, tmp)
                name = f"{'bridge sync' if method == 'bridge' else 'replay'} → {label}"
                cols.append((name, res))
                print(
                    f"{name}: {res['seconds']:.1f} s, {n / res['seconds']:.1f} traces/s, "
                    f"peak RSS {res['rss']:.0f} MiB; {res['out'][0][:600]}",
                    flush=True,
                )
                if "resync" in res:
                    print(
                        f"  no-op re-sync: {res['resync']:.1f} s (whole process); "
                        f"{(res['resync_out'] or [''])[0][:200]}",
                        flush=True,
                    )
    print()
    print("| | " + " | ".join(name for name, _ in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    print("| wall time (s) | " + " | ".join(f"{r['seconds']:.1f}" for _, r in cols) + " |")
    print("| traces/s | " + " | ".join(f"{n / r['seconds']:.1f}" for _, r in cols) + " |")
    print("| peak RSS (MiB) | " + " | ".join(f"{r['rss']:.0f}" for _, r in cols) + " |")
    print(
        "| no-op re-sync (s) | "
        + " | ".join(f"{r['resync']:.1f}" if "resync" in r else "—" for _, r in cols)
        + " |"
    )
    for at in range(0, len(cols) - 1, 2):
        (a, ra), (b, rb) = cols[at], cols[at + 1]
        if a.startswith("replay") and b.startswith("bridge"):
            print(f"{b}: {ra['seconds'] / rb['seconds']:.2f}x the replay's speed")
    print(f"load average at the end: {Path('/proc/loadavg').read_text().strip()}")
    tables = [trace_corpus.fidelity(source, r["snap"]) for _, r in cols]
    for row in tables[0] if tables else []:
        print(f"| {row} | " + " | ".join(t[row] for t in tables) + " |")


if __name__ == "__main__":
    main()
