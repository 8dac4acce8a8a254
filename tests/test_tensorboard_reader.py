"""The TensorBoard reader on event files written by real writers: tensorboardX's
SummaryWriter (scalars, hparams, text, images, histograms) and TF2-style tensor scalars
written with the tensorboard package's own protos and EventFileWriter."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.adapters.base import ReaderOptions
from bridge.adapters.tensorboard.reader import CHUNK_POINTS, TensorboardReader
from bridge.errors import BridgeError
from bridge.schema import ExtraValue, MetricChunk, Run

LOSS_POINTS = 20_500  # more than EventAccumulator's 10,000-per-tag reservoir
HPARAMS = {"lr": 0.01, "batch": 32, "optimizer": "adam", "augment": True}


def loss_at(step: int) -> float:
    return float(np.float32(1.0 / (step + 1)))


def write_tensorboardx_run(folder: Path, points: int = LOSS_POINTS) -> None:
    """A run as tensorboardX writes it; add_hparams adds a child run folder "hp"."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(folder)) as w:
        for step in range(points):
            w.add_scalar("train/loss", loss_at(step), step)
        w.add_text("notes", "first **epoch** done", 1)
        w.add_image("samples/input", np.linspace(0, 1, 3 * 8 * 6).reshape(3, 8, 6), 2)
        w.add_histogram("weights", np.arange(100, dtype=np.float64), 3)
        w.add_hparams(HPARAMS, {"hparam/accuracy": 0.75}, name="hp", global_step=5)


def write_tf2_scalars(folder: Path, tag: str, values: list[float], start: float) -> None:
    """Scalars in the tensor form TF2's tf.summary.scalar writes: a float32 scalar tensor
    as raw ``tensor_content`` bytes (TF's C++ writer), the "scalars" plugin metadata on
    the tag's first value only; and one double in ``double_val``."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for step, x in enumerate(values):
        value = summary_pb2.Summary.Value(
            tag=tag,
            tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_content=np.float32(x).tobytes()
            ),
        )
        if step == 0:
            value.metadata.CopyFrom(scalar_metadata.create_summary_metadata("", ""))
        summary = summary_pb2.Summary(value=[value])
        writer.add_event(event_pb2.Event(wall_time=start + step, step=step, summary=summary))
    double = summary_pb2.Summary.Value(
        tag=f"{tag}_double",
        tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[0.1]),
    )
    double.metadata.plugin_data.plugin_name = "scalars"
    writer.add_event(
        event_pb2.Event(
            wall_time=start + len(values), step=7, summary=summary_pb2.Summary(value=[double])
        )
    )
    writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tb") / "experiment-1"
    write_tensorboardx_run(root / "runA")
    write_tf2_scalars(root / "tf2", "eval/acc", [0.5, 0.25, 0.125], start=1_700_000_000.25)
    return root


def _read(reader: TensorboardReader, name: str) -> tuple[Run, list[MetricChunk], list[ExtraValue]]:
    header = next(h for h in reader.list_runs() if h.name == name)
    run = reader.read_run(header)
    items = list(reader.iter_history(run))
    chunks = [i for i in items if isinstance(i, MetricChunk)]
    extras = [i for i in items if isinstance(i, ExtraValue)]
    return run, chunks, extras


def _points(chunks: list[MetricChunk], key: str) -> list[tuple[int, int, float]]:
    return [
        p for c in chunks if c.key == key for p in zip(c.steps, c.timestamps, c.values, strict=True)
    ]


def test_every_folder_with_event_files_is_a_run(logdir: Path) -> None:
    reader = TensorboardReader(TensorboardReader.normalize_target(str(logdir)))
    reader.check()
    headers = list(reader.list_runs())
    assert [h.name for h in headers] == ["runA", "runA/hp", "tf2"]
    for h in headers:
        assert h.source_id == f"tensorboard:{logdir.resolve()}#{h.name}"
        assert h.native_id == h.name
        assert h.project.name == "experiment-1"
        assert h.project.source_id == f"tensorboard:{logdir.resolve()}"
    # the log dir itself holding event files is the run "."
    single = TensorboardReader(str((logdir / "tf2").resolve()))
    (only,) = single.list_runs()
    assert only.name == "." and only.source_id.endswith("/tf2#.")
    picked = TensorboardReader(
        str(logdir.resolve()), ReaderOptions(run_ids=["tf2"], tags=["x"], since="2026-01-01")
    )
    assert [h.name for h in picked.list_runs()] == ["tf2"]
    assert [h.name for h in picked.list_runs()] == ["tf2"]
    (notice,) = picked.notices.drain()
    assert notice.code == "ignored-filter" and "--since, --tag" in notice.message


def test_check_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(BridgeError, match="not a folder"):
        TensorboardReader(str(tmp_path / "missing")).check()
    with pytest.raises(BridgeError, match="no events.out.tfevents"):
        TensorboardReader(str(tmp_path)).check()


def test_scalars_are_all_read_in_order_in_bounded_chunks(logdir: Path) -> None:
    reader = TensorboardReader(str(logdir.resolve()))
    run, chunks, _ = _read(reader, "runA")
    loss = _points(chunks, "train/loss")
    assert len(loss) == LOSS_POINTS  # no sampling
    assert [s for s, _, _ in loss] == list(range(LOSS_POINTS))
    assert all(v == loss_at(s) for s, _, v in loss)
    assert all(len(c) <= CHUNK_POINTS for c in chunks)
    stamps = [t for _, t, _ in loss]
    assert stamps == sorted(stamps) and run.start_time_ms is not None
    assert run.start_time_ms <= stamps[0] <= stamps[-1] <= (run.end_time_ms or 0)
    assert abs(stamps[0] - time.time() * 1000) < 3_600_000  # wall time in ms


def test_tf2_tensor_scalars_with_metadata_on_the_first_value_only(logdir: Path) -> None:
    reader = TensorboardReader(str(logdir.resolve()))
    run, chunks, extras = _read(reader, "tf2")
    assert _points(chunks, "eval/acc") == [
        (0, 1_700_000_000_250, 0.5),
        (1, 1_700_000_001_250, 0.25),
        (2, 1_700_000_002_250, 0.125),
    ]
    assert _points(chunks, "eval/acc_double") == [(7, 1_700_000_003_250, 0.1)]
    assert extras == [] and run.warnings == []
    assert run.start_time_ms is not None and run.start_time_ms <= 1_700_000_000_250


def test_hparams_become_config_with_their_metrics(logdir: Path) -> None:
    reader = TensorboardReader(str(logdir.resolve()))
    run, chunks, _ = _read(reader, "runA/hp")
    assert run.config == {"lr": 0.01, "batch": 32.0, "optimizer": "adam", "augment": True}
    assert run.status == "FINISHED"
    assert json.loads(run.extra_tags["tensorboard.hparams.metrics"]) == ["hparam/accuracy"]
    assert _points(chunks, "hparam/accuracy")[0][::2] == (5, 0.75)


def test_text_histograms_and_images_are_kept_and_counted(logdir: Path) -> None:
    reader = TensorboardReader(str(logdir.resolve()))
    run, _, extras = _read(reader, "runA")
    by_kind = {e.kind: e for e in extras}
    assert set(by_kind) == {"text", "histogram", "image-file"}

    text = by_kind["text"]
    assert (text.key, text.step, json.loads(text.value_json)) == (
        "notes/text_summary",
        1,
        "first **epoch** done",
    )

    hist = json.loads(by_kind["histogram"].value_json)
    assert by_kind["histogram"].step == 3
    assert sum(count for _, _, count in hist["buckets"]) == 100

    image = by_kind["image-file"]
    value = json.loads(image.value_json)
    assert (value["width"], value["height"]) == (6, 8)
    assert image.file is not None and image.file.path == f"files/{value['path']}"
    assert image.file.path.startswith("files/media/images/samples/input/step2_")
    with reader.open_file(image.file) as fh:
        data = fh.read()
    assert data.startswith(b"\x89PNG") and len(data) == image.file.size
    assert hashlib.sha256(data).hexdigest() == image.file.sha256 == value["sha256"]

    said = " ".join(run.warnings)
    for kind in ("1 images", "1 histograms", "1 text"):
        assert kind in said


def test_media_opened_in_any_order(tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "r")) as w:
        for step in range(3):
            w.add_image("img", np.full((3, 4, 4), step / 3.0), step)
    reader = TensorboardReader(str(tmp_path))
    _, _, extras = _read(reader, "r")
    refs = [e.file for e in extras if e.file is not None]
    assert len(refs) == 3
    for ref in [refs[2], refs[0], refs[1], refs[1]]:
        with reader.open_file(ref) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == ref.sha256
    reader.close()


def test_a_growing_file_and_a_new_file_append_after_what_was_read(tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    root = tmp_path / "logs"
    w = SummaryWriter(str(root / "run"))
    for step in range(1500):
        w.add_scalar("x", step, step)
    reader = TensorboardReader(str(root))

    def snapshot() -> tuple[str, list[tuple[int, int, float]]]:
        (header,) = reader.list_runs()
        run = reader.read_run(header)
        return header.fingerprint, _points(
            [i for i in reader.iter_history(run) if isinstance(i, MetricChunk)], "x"
        )

    def settled(count: int) -> tuple[str, list[tuple[int, int, float]]]:
        """tensorboardX writes from a background thread: flush until it has written."""
        for _ in range(100):
            w.flush()
            fp, points = snapshot()
            if len(points) >= count:
                return fp, points
            time.sleep(0.1)
        return fp, points

    fp1, first = settled(1500)
    assert len(first) == 1500
    assert snapshot()[0] == fp1  # unchanged files, unchanged fingerprint

    for step in range(1500, 1800):
        w.add_scalar("x", step, step)
    fp2, grown = settled(1800)
    assert fp2 != fp1 and grown[:1500] == first and len(grown) == 1800

    w.close()
    time.sleep(1.1)  # a new writer's file name carries the time in seconds
    with SummaryWriter(str(root / "run")) as w2:
        for step in range(1800, 1900):
            w2.add_scalar("x", step, step)
    fp3, more = snapshot()
    assert fp3 != fp2 and more[:1800] == grown
    assert [s for s, _, _ in more] == list(range(1900))


def _record_offsets(path: Path) -> list[int]:
    import struct

    data, pos, out = path.read_bytes(), 0, []
    while pos + 12 <= len(data):
        out.append(pos)
        pos += 12 + struct.unpack("<Q", data[pos : pos + 8])[0] + 4
    return out


def test_a_cut_off_last_record_is_a_file_being_written_a_damaged_one_is_named(
    tmp_path: Path,
) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "r")) as w:
        for step in range(100):
            w.add_scalar("x", step, step)
    (path,) = (tmp_path / "r").glob("events.out.tfevents.*")
    reader = TensorboardReader(str(tmp_path))
    whole = path.read_bytes()

    path.write_bytes(whole[:-5])  # the writer is in the middle of its last record
    run, chunks, _ = _read(reader, "r")
    assert run.incomplete_reason is None
    assert [s for s, _, _ in _points(chunks, "x")] == list(range(99))

    damaged = bytearray(whole)
    damaged[_record_offsets(path)[51] + 14] ^= 0xFF  # a data byte of record 52 (step 50)
    path.write_bytes(bytes(damaged))
    run, chunks, _ = _read(reader, "r")
    assert [s for s, _, _ in _points(chunks, "x")] == list(range(50))
    assert run.incomplete_reason is not None
    assert "record 52 of 101 is damaged" in run.incomplete_reason


def test_audio_and_graphs_become_media_files(tmp_path: Path) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "  # the start of a WAV file is enough here
    audio_value = summary_pb2.Summary.Value(
        tag="sound",
        audio=summary_pb2.Summary.Audio(
            sample_rate=8000, num_channels=1, encoded_audio_string=wav, content_type="audio/wav"
        ),
    )
    writer = EventFileWriter(str(tmp_path / "r"))
    summary = summary_pb2.Summary(value=[audio_value])
    writer.add_event(event_pb2.Event(wall_time=1_700_000_000.0, step=4, summary=summary))
    writer.close()
    graph = b"\x0a\x03abc"  # some serialized GraphDef bytes
    writer = EventFileWriter(str(tmp_path / "g"))
    writer.add_event(event_pb2.Event(wall_time=1_700_000_000.0, step=0, graph_def=graph))
    writer.close()
    reader = TensorboardReader(str(tmp_path))

    run, _, extras = _read(reader, "r")
    (audio,) = extras
    assert audio.kind == "audio-file" and audio.step == 4 and audio.file is not None
    assert audio.file.path.endswith(".wav")
    with reader.open_file(audio.file) as fh:
        assert fh.read() == wav
    assert "1 audio value(s)" in " ".join(run.warnings)

    run, _, extras = _read(reader, "g")
    (blob,) = extras
    assert blob.kind == "blob-file" and blob.file is not None
    assert blob.file.path.startswith("files/media/graphs/") and blob.file.path.endswith(".pb")
    with reader.open_file(blob.file) as fh:
        assert fh.read() == graph
    assert "1 graphs value(s)" in " ".join(run.warnings)
