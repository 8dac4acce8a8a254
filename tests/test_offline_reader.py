"""``WandbOfflineReader`` on runs the real SDK made offline, checked against what it was told."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import pytest
from sdk_runs import BASIC, STARTED_AT, basic_value, cached_corpus, make_big_run, run_id_of

from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.errors import BridgeError, RunError
from bridge.schema import ExtraValue, MetricChunk, Run, RunHeader

ENTITY, PROJECT = "acme", "demo"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return cached_corpus(tmp_path_factory.getbasetemp())


def _wdir(corpus: dict[str, Path]) -> Path:
    return corpus["basic"].parent


def _headers(reader: WandbOfflineReader) -> dict[str, RunHeader]:
    return {h.native_id: h for h in reader.list_runs()}


def _read(corpus: dict[str, Path], role: str) -> tuple[WandbOfflineReader, Run]:
    reader = WandbOfflineReader(str(_wdir(corpus)))
    return reader, reader.read_run(_headers(reader)[role])


def _history(
    reader: WandbOfflineReader, run: Run
) -> tuple[dict[str, list[tuple[int, int, float]]], list[ExtraValue], list[MetricChunk]]:
    points: dict[str, list[tuple[int, int, float]]] = {}
    extras: list[ExtraValue] = []
    chunks: list[MetricChunk] = []
    for item in reader.iter_history(run):
        if isinstance(item, MetricChunk):
            chunks.append(item)
            assert len(item.steps) == len(item.timestamps) == len(item.values)
            points.setdefault(item.key, []).extend(
                zip(item.steps, item.timestamps, item.values, strict=True)
            )
        else:
            extras.append(item)
    return points, extras, chunks


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# ---- check / list -------------------------------------------------------------------


def test_check_names_the_path_and_the_fix(tmp_path: Path, corpus: dict[str, Path]) -> None:
    with pytest.raises(BridgeError, match="does not exist") as err:
        WandbOfflineReader(str(tmp_path / "nope")).check()
    assert str(tmp_path / "nope") in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BridgeError, match="no offline-run"):
        WandbOfflineReader(str(tmp_path / "empty")).check()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BridgeError, match="not a readable folder"):
        WandbOfflineReader(str(tmp_path / "file")).check()
    WandbOfflineReader(str(_wdir(corpus))).check()
    WandbOfflineReader(str(_wdir(corpus).parent)).check()  # WANDB_DIR holding wandb/
    WandbOfflineReader(str(corpus["basic"])).check()  # one run folder


def test_list_runs(corpus: dict[str, Path]) -> None:
    reader = WandbOfflineReader(str(_wdir(corpus)))
    headers = _headers(reader)
    assert set(headers) == {
        "basic", "artifact", "crashed", "resumed", "truncated", "killed", "bigconfig"
    }  # fmt: skip
    basic = headers["basic"]
    assert basic.source_id == f"wandb:{ENTITY}/{PROJECT}/basic"
    assert basic.project.source_id == f"wandb:{ENTITY}/{PROJECT}"
    assert (basic.project.name, basic.project.entity) == (PROJECT, ENTITY)
    assert basic.name == BASIC["name"]
    assert len(headers["resumed"].locator["parts"]) == 2  # two processes, one run
    assert len({h.fingerprint for h in headers.values()}) == len(headers)
    assert _headers(reader)["basic"].fingerprint == basic.fingerprint  # stable
    assert run_id_of(corpus["basic"]) == "basic"
    # the killed run (no run record) is still listed under its folder's run id
    assert headers["killed"].source_id.endswith("/killed")
    only = WandbOfflineReader(str(_wdir(corpus)), ReaderOptions(run_ids=["crashed"]))
    assert [h.native_id for h in only.list_runs()] == ["crashed"]
    tagged = WandbOfflineReader(str(_wdir(corpus)), ReaderOptions(tags=["cpu"]))
    assert [h.native_id for h in tagged.list_runs()] == ["basic"]
    future = WandbOfflineReader(str(_wdir(corpus)), ReaderOptions(since="2999-01-01"))
    assert [h.native_id for h in future.list_runs()] == ["killed"]  # start time unknown
    single = WandbOfflineReader(str(corpus["basic"]))
    assert [h.source_id for h in single.list_runs()] == [basic.source_id]


def test_listing_is_cheap(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Listing reads only the log's first records: damage far down the log is not seen."""
    copy = tmp_path / corpus["basic"].name
    shutil.copytree(corpus["basic"], copy)
    log = copy / "run-basic.wandb"
    data = bytearray(log.read_bytes())
    data[len(data) - 100] ^= 0xFF
    log.write_bytes(bytes(data))
    (header,) = WandbOfflineReader(str(copy)).list_runs()
    assert header.name == BASIC["name"]


def test_fingerprint_changes_when_anything_is_appended(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / corpus["crashed"].name
    shutil.copytree(corpus["crashed"], copy)
    reader = WandbOfflineReader(str(copy))
    (before,) = reader.list_runs()
    with open(copy / "files" / "output.log", "ab") as fh:
        fh.write(b"one more line\n")
    (after_file,) = reader.list_runs()
    assert after_file.fingerprint != before.fingerprint
    with open(copy / "run-crashed.wandb", "ab") as fh:
        fh.write(b"\0" * 3)
    (after_log,) = reader.list_runs()
    assert after_log.fingerprint not in {before.fingerprint, after_file.fingerprint}


# ---- the basic run ---------------------------------------------------------------------


def test_basic_run_body(corpus: dict[str, Path]) -> None:
    _, run = _read(corpus, "basic")
    assert run.name == BASIC["name"]
    assert run.notes == BASIC["notes"]
    assert run.tags == BASIC["tags"]
    assert run.group == BASIC["group"] and run.job_type == BASIC["job_type"]
    assert run.git_remote == BASIC["git_remote"] and run.git_commit == BASIC["git_commit"]
    assert run.user == BASIC["username"]
    assert run.host
    assert run.config == {**BASIC["config"], **BASIC["config_update"]}
    assert "_wandb" not in run.config
    made_at = float((_wdir(corpus).parent / STARTED_AT).read_text())
    assert run.start_time_ms is not None and run.end_time_ms is not None
    assert made_at * 1000 < run.start_time_ms < time.time() * 1000
    assert run.start_time_ms <= run.end_time_ms < run.start_time_ms + 60_000
    assert (run.status, run.exit_code, run.status_reason) == ("FINISHED", 0, None)
    assert run.incomplete_reason is None and run.warnings == []
    for key, value in BASIC["summary_only"].items():
        assert run.summary[key] == value
    assert run.summary["loss"] == basic_value("loss", 49)
    assert run.summary["grad"] == {"norm": 1.25}
    assert run.summary["val/acc"] == {"max": 49 / 200}  # define_metric(summary="max")
    assert run.summary["sample"]["_type"] == "image-file"
    assert "_wandb" not in run.summary
    defs = {d.get("name") or d.get("glob_name"): d for d in run.metric_definitions}
    assert defs["val/*"]["step_metric"] == "epoch" and defs["val/*"]["summary"] == ["max"]
    assert "epoch" in defs
    files = {f.path: f for f in run.files}
    assert {"files/output.log", "files/requirements.txt"} <= set(files)
    media = [p for p in files if p.startswith("files/media/images/")]
    assert len(media) == 1 and media[0].endswith(".png")
    assert run.extra_tags["wandb.cli_version"].startswith("0.")


def test_basic_history(corpus: dict[str, Path]) -> None:
    reader, run = _read(corpus, "basic")
    points, extras, chunks = _history(reader, run)
    assert all(len(c) <= 1000 for c in chunks)
    for metric in ("loss", "acc", "lr_now"):
        pts = points[metric]
        assert [s for s, _, _ in pts] == list(range(BASIC["steps"]))
        for step, _, value in pts:
            assert _same(value, basic_value(metric, step)), (metric, step, value)
    assert math.isnan(points["loss"][BASIC["nan_step"]][2])
    assert points["acc"][BASIC["inf_step"]][2] == math.inf
    assert points["acc"][BASIC["neginf_step"]][2] == -math.inf
    assert points["flag"] == [(BASIC["bool_step"], points["flag"][0][1], 1.0)]
    assert [(s, v) for s, _, v in points["grad.norm"]] == [(BASIC["nested_step"], 1.25)]
    assert [s for s, _, _ in points["epoch"]] == [9, 19, 29, 39, 49]
    assert [v for _, _, v in points["val/acc"]] == [s / 200 for s in (9, 19, 29, 39, 49)]
    # timestamps: epoch ms inside the run, never decreasing along a key
    for pts in points.values():
        stamps = [t for _, t, _ in pts]
        assert stamps == sorted(stamps)
        assert all(run.start_time_ms - 1000 <= t <= run.end_time_ms for t in stamps)
    assert not {"_step", "_timestamp", "_runtime"} & set(points)
    # system metrics: per-key sample index steps
    system = {k: v for k, v in points.items() if k.startswith("system/")}
    assert system and all([s for s, _, _ in v] == list(range(len(v))) for v in system.values())
    # summary-only numbers come last, one point each at the last step; strings never do
    last = BASIC["steps"] - 1
    assert [(s, v) for s, _, v in points["best_epoch"]] == [(last, 42.0)]
    assert [(s, v) for s, _, v in points["score"]] == [(last, 0.875)]
    assert "final_note" not in points and "val/acc.max" not in points
    tail = [c.key for c in chunks[-2:]]
    assert set(tail) == {"best_epoch", "score"}
    # non-numeric values
    by_key = {e.key: e for e in extras}
    assert set(by_key) == {"phase", "sample"}
    phase = by_key["phase"]
    assert (phase.step, phase.kind, phase.value_json, phase.file) == (
        BASIC["text_step"], "string", '"warmup"', None
    )  # fmt: skip
    image = by_key["sample"]
    assert image.step == BASIC["image_step"] and image.kind == "image-file"
    assert image.file is not None and image.file.path.startswith("files/media/images/")
    assert image.file.path in {f.path for f in run.files}
    assert Path(image.file.locator["abs_path"]).is_file()
    with reader.open_file(image.file) as fh:
        png = fh.read()
    assert png.startswith(b"\x89PNG") and len(png) == image.file.size


def test_open_console_log(corpus: dict[str, Path]) -> None:
    reader, run = _read(corpus, "basic")
    ref = next(f for f in run.files if f.path == "files/output.log")
    with reader.open_file(ref) as fh:
        assert b"basic run says hello" in fh.read()


def test_history_is_chunked_and_streamed(tmp_path: Path) -> None:
    folder = make_big_run(tmp_path, n_points=2_500, n_metrics=1)
    reader = WandbOfflineReader(str(folder))
    (header,) = reader.list_runs()
    run = reader.read_run(header)
    points, _, chunks = _history(reader, run)
    m0 = [c for c in chunks if c.key == "m0"]
    assert [len(c) for c in m0] == [1000, 1000, 500]
    assert [(s, v) for s, _, v in points["m0"]] == [(s, s * 0.5) for s in range(2500)]
    first = reader.iter_history(run)
    assert isinstance(next(first), MetricChunk | ExtraValue)  # a generator, not a list


# ---- other runs ------------------------------------------------------------------------


def test_artifact_run(corpus: dict[str, Path]) -> None:
    _, run = _read(corpus, "artifact")
    (art,) = run.artifacts
    assert (art.name, art.type, art.direction) == ("tiny-dataset", "dataset", "logged")
    assert art.description == "two small files"
    assert art.metadata == {"rows": 2, "source": "sdk_runs"}
    assert {"best", "candidate", "latest"} == set(art.aliases)
    assert art.digest
    entries = {e.path: e for e in art.manifest}
    assert set(entries) == {"train.csv", "docs/readme.txt"}
    assert Path(entries["train.csv"].local_path or "").read_text() == "x,y\n1,2\n3,4\n"
    assert Path(entries["docs/readme.txt"].local_path or "").read_text() == "tiny dataset\n"
    assert entries["train.csv"].size == 12 and entries["train.csv"].digest
    assert run.warnings == []


def test_artifact_staging_dir_fallback(corpus: dict[str, Path], tmp_path: Path) -> None:
    staging = corpus["basic"].parent.parent / "data" / "artifacts" / "staging"
    moved = tmp_path / "moved-staging"
    shutil.copytree(staging, moved)
    hidden = staging.with_name("staging-hidden")
    staging.rename(hidden)
    try:
        reader = WandbOfflineReader(str(corpus["artifact"]), ReaderOptions(staging_dir=str(moved)))
        (header,) = reader.list_runs()
        run = reader.read_run(header)
        paths = [Path(e.local_path or "") for e in run.artifacts[0].manifest]
        assert all(p.is_file() and p.parent == moved for p in paths)
        assert run.warnings == []
        reader = WandbOfflineReader(str(corpus["artifact"]))
        run = reader.read_run(header)
        assert len(run.warnings) == 2
        assert all("missing" in w and str(staging) in w for w in run.warnings)
    finally:
        hidden.rename(staging)


def test_crashed_run(corpus: dict[str, Path]) -> None:
    reader, run = _read(corpus, "crashed")
    assert (run.status, run.exit_code) == ("FAILED", 1)
    points, _, _ = _history(reader, run)
    assert [v for _, _, v in points["loss"]] == [1.0 / (s + 1) for s in range(5)]
    ref = next(f for f in run.files if f.path == "files/output.log")
    with reader.open_file(ref) as fh:
        assert b"simulated training crash" in fh.read()


def test_resumed_run_is_one_run(corpus: dict[str, Path]) -> None:
    reader = WandbOfflineReader(str(_wdir(corpus)))
    header = _headers(reader)["resumed"]
    parts = header.locator["parts"]
    run = reader.read_run(header)
    points, _, _ = _history(reader, run)
    # part 2 logged implicit steps 0..9 offline; they continue after part 1's last step
    assert [(s, v) for s, _, v in points["x"]] == [(s, float(s)) for s in range(20)]
    assert [v for _, _, v in points["part"]] == [1.0] * 10 + [2.0] * 10
    assert run.config == {"part": 2}
    assert run.extra_tags["wandb.resumed_parts"] == "2"
    assert any("shifted by 10" in w for w in run.warnings)
    first_start = reader.read_run(header.model_copy(update={"locator": {"parts": parts[:1]}}))
    assert run.start_time_ms == first_start.start_time_ms
    assert run.end_time_ms is not None and first_start.end_time_ms is not None
    assert run.end_time_ms > first_start.end_time_ms
    assert run.status == "FINISHED"
    system = [k for k in points if k.startswith("system/")]
    assert system and all(len(points[k]) == 2 for k in system)  # one sample per part


def test_truncated_run(corpus: dict[str, Path]) -> None:
    from bridge.adapters.wandb.txlog import TxlogReader

    log = corpus["truncated"] / "run-truncated.wandb"
    txr = TxlogReader(log)
    intact = sum(1 for _, r in txr.records() if r.WhichOneof("record_type") == "history")
    assert txr.damage is not None
    reader, run = _read(corpus, "truncated")
    assert run.incomplete_reason == f"{log}: truncated chunk at byte {txr.damage.offset}"
    assert run.status == "FAILED" and run.exit_code is None
    assert run.status_reason and "no exit record" in run.status_reason
    points, _, _ = _history(reader, run)
    assert 0 < intact < 200
    assert [(s, v) for s, _, v in points["a"]] == [(s, float(s)) for s in range(intact)]
    assert [v for _, _, v in points["b"]] == [s * 2.0 for s in range(intact)]


def test_killed_run_raises_run_error(corpus: dict[str, Path]) -> None:
    reader = WandbOfflineReader(str(_wdir(corpus)))
    header = _headers(reader)["killed"]
    with pytest.raises(RunError) as err:
        reader.read_run(header)
    assert str(corpus["killed"] / "run-killed.wandb") in str(err.value)
    assert "header-only" in str(err.value)


def test_big_config_value(corpus: dict[str, Path]) -> None:
    _, run = _read(corpus, "bigconfig")
    assert run.config == {"blob": "x" * 100_000, "small": 1}


def test_bundled_example_reads_cleanly() -> None:
    wdir = Path(__file__).resolve().parent.parent / "examples" / "wandb"
    reader = WandbOfflineReader(str(wdir))
    reader.check()
    headers = _headers(reader)
    assert set(headers) == {"example-train", "example-crash"}
    train = reader.read_run(headers["example-train"])
    assert train.status == "FINISHED" and train.warnings == [] and train.tags
    points, extras, _ = _history(reader, train)
    assert len(points["loss"]) == 100 and [e.kind for e in extras] == ["image-file"]
    assert reader.read_run(headers["example-crash"]).exit_code == 1


@pytest.mark.parametrize("role", ["basic", "artifact", "crashed", "resumed", "truncated"])
def test_results_folded_by_the_history_pass_match_read_run(
    corpus: dict[str, Path], role: str
) -> None:
    """A body read without the summary fold (a new copy's plan) gets the same results,
    summary-only points and history from the history pass as read_run + iter_history."""
    reader, full = _read(corpus, role)
    deferred = reader.read_run_deferring_results(_headers(reader)[role])
    assert deferred is not None
    assert deferred.results_pending and deferred.results == {}
    assert full.results and not full.results_pending
    body = {"results", "results_pending"}
    assert deferred.model_dump(exclude=body) == full.model_dump(exclude=body)
    want_points, want_extras, _ = _history(reader, full)
    points, extras, _ = _history(reader, deferred)
    assert not deferred.results_pending
    assert deferred.results == full.results
    assert set(points) == set(want_points)
    for key, series in want_points.items():
        got = points[key]
        assert len(got) == len(series), key
        assert all(
            a[:2] == b[:2] and _same(a[2], b[2]) for a, b in zip(got, series, strict=True)
        ), key
    assert [e.model_dump() for e in extras] == [e.model_dump() for e in want_extras]
    if role == "basic":
        for key, value in BASIC["summary_only"].items():
            assert deferred.results[key] == value


def _items(items: object) -> list[dict[str, object]]:
    out = []
    for item in items:  # type: ignore[attr-defined]
        d = item.model_dump()
        if isinstance(item, MetricChunk):  # NaN != NaN: compare their bits as text
            d["values"] = [repr(v) for v in item.values]
        out.append(d)
    return out


@pytest.mark.parametrize("role", ["basic", "artifact", "crashed", "resumed", "truncated"])
def test_history_from_a_child_process_is_the_same(
    corpus: dict[str, Path], role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long log's history is parsed in a child process (history_process.py): the same
    items in the same order, and the same results folded, as parsed in the parent."""
    from bridge.adapters.wandb import history_process

    reader = WandbOfflineReader(str(_wdir(corpus)))
    header = _headers(reader)[role]
    monkeypatch.setenv(history_process.THRESHOLD_ENV, "off")
    here = reader.read_run_deferring_results(header)
    assert here is not None and not history_process.wanted(here)
    want = _items(reader.iter_history(here))
    monkeypatch.setenv(history_process.THRESHOLD_ENV, "0")
    there = reader.read_run_deferring_results(header)
    assert there is not None and history_process.wanted(there)
    got = _items(reader.iter_history(there))
    assert got == want and len(got) > 0
    assert not there.results_pending and there.results == here.results


def test_history_child_process_failure_is_a_run_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that stops early leaves no child behind; a child that cannot read the
    log fails the run with one line naming why."""
    from bridge.adapters.wandb import history_process

    monkeypatch.setenv(history_process.THRESHOLD_ENV, "0")
    # more history than a pipe holds: the child is still writing when the consumer stops
    folder = make_big_run(tmp_path, n_points=40_000, n_metrics=2)
    reader = WandbOfflineReader(str(folder))
    (header,) = reader.list_runs()
    run = reader.read_run(header)
    stream = reader.iter_history(run)
    assert isinstance(next(stream), MetricChunk)
    assert _history_children(), "the stream reads from a child process"
    stream.close()  # type: ignore[attr-defined]
    assert not _history_children()
    for log in folder.rglob("*.wandb"):
        log.unlink()
    with pytest.raises(RunError, match=r"reading history: FileNotFoundError"):
        list(reader.iter_history(run))


def _history_children() -> list[int]:
    """This process's children running history_process, exited but not reaped included
    (from /proc: no psutil)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"history_process" in cmd:
            found.append(int(stat.parent.name))
    return found


def test_history_process_threshold_setting_is_checked(
    corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.adapters.wandb import history_process

    reader, run = _read(corpus, "basic")
    monkeypatch.setenv(history_process.THRESHOLD_ENV, "lots")
    with pytest.raises(BridgeError, match=f"{history_process.THRESHOLD_ENV}='lots': give a"):
        history_process.wanted(run)
    monkeypatch.setenv(history_process.THRESHOLD_ENV, "off")
    assert not history_process.wanted(run)
