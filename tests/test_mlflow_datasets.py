"""MLflow 3 evaluation datasets copied MLflow → MLflow (issue 13): DatasetReader and
DatasetWriter on real stores — a sqlite source made with ``mlflow.genai.datasets``, copied
into sqlite, a PostgreSQL URI and an ``mlflow server`` (sqlite behind it: datasets need a
SQL store). Every field identical, a second plan finds nothing, a source upsert is planned
as exactly that change, a dataset linked only to an out-of-scope experiment is not listed.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from bridge.adapters.base import ReaderOptions
from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow.datasets import DatasetReader, DatasetWriter
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.schema_items import DatasetRecord, EvalDataset, ItemHeader, item_digest

IN_SCOPE = "qa-in"
OUT_OF_SCOPE = "qa-out"

RECORDS: list[dict[str, Any]] = [
    {"inputs": {"question": "6*7?"}, "expectations": {"answer": "42"}},
    {
        "inputs": {"question": "2+2?", "level": 1},
        "expectations": {"answer": 4, "facts": ["arithmetic"]},
        "tags": {"difficulty": "easy"},
    },
    {
        "inputs": {"question": "capital of France?"},
        "expectations": {"answer": "Paris"},
        "outputs": "Paris, France",
        "source": {"source_type": "DOCUMENT", "source_data": {"source_id": "atlas.pdf"}},
    },
]


def _make_source(uri: str) -> dict[str, str]:
    """Two experiments; ``qa-eval`` (three records) linked to the in-scope one,
    ``hidden`` linked only to the other."""
    from mlflow.genai.datasets import create_dataset

    client = MlflowClient(tracking_uri=uri)
    exp_in = client.create_experiment(IN_SCOPE)
    exp_out = client.create_experiment(OUT_OF_SCOPE)
    with _use_tracking_uri(uri):
        ds = create_dataset(name="qa-eval", experiment_id=[exp_in], tags={"purpose": "regression"})
        ds.merge_records([dict(r) for r in RECORDS])
        hidden = create_dataset(name="hidden", experiment_id=[exp_out], tags={"team": "x"})
        hidden.merge_records([{"inputs": {"q": "secret"}, "expectations": {"a": "s"}}])
    return {"exp_in": exp_in, "exp_out": exp_out, "dataset": ds.dataset_id}


class Links(ItemLinks):
    """Source experiments mapped to the writer's copies (made on demand, as the engine's
    run pass would have made them)."""

    def __init__(self, reader: MlflowReader, writer: MlflowWriter) -> None:
        self.projects = {
            reader.project_of(e).source_id: reader.project_of(e) for e in reader.experiments()
        }
        self.writer = writer

    def project(self, source_id: str) -> str | None:
        project = self.projects.get(source_id)
        return self.writer.ensure_project(project) if project is not None else None

    def run(self, source_id: str) -> str | None:
        return None

    def model(self, source_id: str) -> str | None:
        return None


def _sync(
    reader: MlflowReader, writer: MlflowWriter, header: ItemHeader, links: Links
) -> tuple[ItemChange, str, EvalDataset]:
    """One item pass as the engine runs it: find, read, plan, apply."""
    dest_id = writer.find_item(header, links)
    item = reader.read_item(header)
    assert isinstance(item, EvalDataset)
    change = writer.plan_item(item, dest_id, links)
    return change, writer.apply_item(item, change, links), item


def _content(records: list[DatasetRecord]) -> list[dict[str, Any]]:
    """Records without what each store assigns itself (ids, times), in a stable order."""
    bodies = [
        r.model_dump(mode="json", exclude={"source_record_id", "created_time_ms"}) for r in records
    ]
    for body in bodies:
        body.pop("last_update_time_ms")
    return sorted(bodies, key=lambda b: json.dumps(b, sort_keys=True))


def _only_header(reader: MlflowReader) -> ItemHeader:
    headers = list(reader.list_items("dataset"))
    assert [h.name for h in headers] == ["qa-eval"]  # "hidden" is linked out of scope only
    return headers[0]


def _check_copy(writer: MlflowWriter, dest_id: str, item: EvalDataset) -> EvalDataset:
    back = writer.read_item_back("dataset", dest_id)
    assert isinstance(back, EvalDataset)
    assert back.name == item.name
    assert back.tags == item.tags and "bridge.source_id" not in back.tags
    assert back.columns_json == item.columns_json
    assert back.created_time_ms == item.created_time_ms and back.created_by == item.created_by
    assert _content(back.records) == _content(item.records)
    assert [p.source_id for p in back.header.projects] == [
        p.source_id for p in item.header.projects
    ]
    assert item_digest(back) == item_digest(item)
    return back


@pytest.fixture(params=["sqlite", "postgresql", "server"])
def dest_uri(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dest.db'}"
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_database"))
    return str(request.getfixturevalue("mlflow_server"))


def test_dataset_copy_is_exact_idempotent_and_incremental(tmp_path: Any, dest_uri: str) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    made = _make_source(src)
    reader = MlflowReader(src, ReaderOptions(experiments=[IN_SCOPE]))
    writer = MlflowWriter(dest_uri)
    assert isinstance(reader._item_parts()["dataset"], DatasetReader)
    assert isinstance(writer._item_parts()["dataset"], DatasetWriter)
    links = Links(reader, writer)
    header = _only_header(reader)
    in_project = reader.project_of(MlflowClient(src).get_experiment(made["exp_in"]))
    assert [p.source_id for p in header.projects] == [in_project.source_id]

    change, dest_id, item = _sync(reader, writer, header, links)
    assert change.action == "create"
    assert not [w for w in change.warnings if "schema" in w]
    assert change.changes == ["new dataset qa-eval", "+3 records", f"+link experiment {IN_SCOPE}"]
    assert len(item.records) == 3 and item.tags["purpose"] == "regression"
    by_question = {r.inputs["question"]: r for r in item.records}
    assert by_question["capital of France?"].outputs == "Paris, France"
    assert by_question["capital of France?"].source == {
        "source_type": "DOCUMENT",
        "source_data": {"source_id": "atlas.pdf"},
    }
    assert by_question["2+2?"].tags is not None and by_question["2+2?"].tags["difficulty"] == "easy"
    _check_copy(writer, dest_id, item)
    raw = writer.client._tracking_client.store
    assert raw.get_dataset_experiment_ids(dest_id) == [links.project(in_project.source_id)]
    assert raw.get_dataset(dest_id).tags["bridge.source_id"] == header.source_id

    # Found again without state; a second pass plans nothing.
    fresh = MlflowWriter(dest_uri)
    assert fresh.find_item(header, links) == dest_id
    again = fresh.plan_item(reader.read_item(header), dest_id, links)
    assert again.action == "unchanged" and again.changes == []

    # The source upserts one new record and changes another's expectation; a tag moves.
    with _use_tracking_uri(src):
        from mlflow.genai.datasets import get_dataset

        ds = get_dataset(dataset_id=made["dataset"])
        ds.merge_records(
            [
                {"inputs": {"question": "6*7?"}, "expectations": {"answer": "forty-two"}},
                {"inputs": {"question": "3*3?"}, "expectations": {"answer": "9"}},
            ]
        )
    MlflowClient(src).set_dataset_tags(made["dataset"], {"purpose": "smoke"})
    header2 = _only_header(reader)
    assert header2.fingerprint != header.fingerprint
    change, dest_id2, item2 = _sync(reader, fresh, header2, links)
    assert dest_id2 == dest_id
    assert change.action == "update"
    assert change.changes == ["tag purpose: regression -> smoke", "+1 records, 1 changed"]
    assert change.payload["delete"] == []  # nothing re-created: upserts only
    _check_copy(fresh, dest_id, item2)
    assert fresh.plan_item(item2, dest_id, links).action == "unchanged"
    with _use_tracking_uri(dest_uri):
        listed = mlflow.genai.datasets.search_datasets()
    assert [d.name for d in listed] == ["qa-eval"]  # one copy, never two


def test_record_deleted_at_source_and_unmapped_link(tmp_path: Any) -> None:
    """A record deleted at the source is deleted in the copy; a link to an experiment with
    no copy is a warning, not an error."""
    src = f"sqlite:///{tmp_path / 'src.db'}"
    made = _make_source(src)
    client = MlflowClient(src)
    client.add_dataset_to_experiments(made["dataset"], [made["exp_out"]])
    reader = MlflowReader(src, ReaderOptions(experiments=[IN_SCOPE]))
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    links = Links(reader, writer)  # knows the in-scope experiment only
    header = _only_header(reader)
    assert sorted(p.name for p in header.projects) == [IN_SCOPE, OUT_OF_SCOPE]
    change, dest_id, item = _sync(reader, writer, header, links)
    assert any(OUT_OF_SCOPE in w and "no copy" in w for w in change.warnings)
    raw_src = client._tracking_client.store
    records, _ = raw_src._load_dataset_records(made["dataset"], max_results=None)
    gone = next(r for r in records if r.inputs == {"question": "6*7?"})
    client._tracking_client.store.delete_dataset_records(made["dataset"], [gone.dataset_record_id])
    header2 = _only_header(reader)
    assert header2.fingerprint != header.fingerprint  # the profile's count moved
    change, _, item2 = _sync(reader, writer, header2, links)
    assert change.changes == ["-1 records"]
    back = writer.read_item_back("dataset", dest_id)
    assert back is not None
    assert back.model_dump(exclude={"header", "records"}) == item2.model_dump(
        exclude={"header", "records"}
    )
    assert _content(back.records) == _content(item2.records)
    assert item_digest(back) == item_digest(item2)
    assert len(back.records) == 2

    # The source drops an expectation key (delete + merge again: MLflow's merge only adds
    # keys) and a tag: the copy's record is re-inserted, the tag deleted.
    records, _ = raw_src._load_dataset_records(made["dataset"], max_results=None)
    old = next(r for r in records if r.inputs == {"question": "2+2?", "level": 1})
    raw_src.delete_dataset_records(made["dataset"], [old.dataset_record_id])
    raw_src.upsert_dataset_records(
        made["dataset"],
        [{"inputs": {"question": "2+2?", "level": 1}, "expectations": {"answer": 4}}],
    )
    raw_src.delete_dataset_tag(made["dataset"], "purpose")
    change, _, item3 = _sync(reader, writer, _only_header(reader), links)
    assert change.changes == [
        "-tag purpose",
        "1 changed",
        "1 re-inserted (a key or source removed at the source)",
    ]
    back = writer.read_item_back("dataset", dest_id)
    assert back is not None and item_digest(back) == item_digest(item3)
    readded = next(r for r in back.records if r.inputs["question"] == "2+2?")
    assert readded.expectations == {"answer": 4} and "purpose" not in back.tags
    assert writer.plan_item(item3, dest_id, links).action == "unchanged"


def test_schema_order_meets_each_key_with_the_source_type() -> None:
    """Records whose types disagree ("42" vs 4): ordered so MLflow's first-seen typing
    gives the source's schema, whatever order they were listed in."""
    from bridge.adapters.mlflow.datasets_schema import schema_order, simulate_schema

    records = [
        DatasetRecord(inputs={"q": "a"}, expectations={"answer": 4}),
        DatasetRecord(inputs={"q": "b", "n": 1}, expectations={"answer": "42"}, outputs="x"),
        DatasetRecord(inputs={"q": 3}, outputs={"k": 1}),
    ]
    source = simulate_schema(None, [records[1], records[0], records[2]])
    assert source is not None and json.loads(source)["expectations"] == {"answer": "string"}
    assert simulate_schema(None, records) != source  # listing order would not do
    order = schema_order(records, source)
    assert sorted(order) == [0, 1, 2]
    assert simulate_schema(None, [records[i] for i in order]) == source


@pytest.mark.e2e
def test_cli_sync_and_verify_copy_datasets(tmp_path: Any) -> None:
    """Through the CLI: ``bridge sync`` copies the in-scope dataset (not the hidden one),
    a second sync leaves it unchanged, a source upsert is synced as exactly that change,
    ``bridge verify`` finds the copy identical; ``--no-datasets`` leaves datasets out."""
    from click.testing import CliRunner

    from bridge.cli import main

    src_uri = f"sqlite:///{tmp_path / 'src.db'}"
    dst_uri = f"sqlite:///{tmp_path / 'dst.db'}"
    made = _make_source(src_uri)
    common = ["--state", str(tmp_path / "state.db"), "--experiment", IN_SCOPE, "--json"]
    pair = [f"mlflow:{src_uri}", f"mlflow:{dst_uri}"]
    runner = CliRunner()

    def sync(*extra: str) -> dict[str, Any]:
        out = runner.invoke(main, ["sync", *pair, *common, *extra])
        assert out.exit_code == 0, out.output
        return dict(json.loads(out.output))

    first = sync()
    assert first["item_counts"]["dataset"]["create"] == 1
    [created] = first["items"]
    assert created["changes"] == [
        "new dataset qa-eval",
        "+3 records",
        f"+link experiment {IN_SCOPE}",
    ]
    with _use_tracking_uri(dst_uri):
        assert [d.name for d in mlflow.genai.datasets.search_datasets()] == ["qa-eval"]
    second = sync()
    assert second["item_counts"]["dataset"]["unchanged"] == 1 and second["items"] == []

    with _use_tracking_uri(src_uri):
        from mlflow.genai.datasets import get_dataset

        get_dataset(dataset_id=made["dataset"]).merge_records(
            [{"inputs": {"question": "3*3?"}, "expectations": {"answer": "9"}}]
        )
    assert sync("--no-datasets")["item_counts"].get("dataset", {}).get("listed", 0) == 0
    third = sync()
    [updated] = third["items"]
    assert updated["action"] == "update" and updated["changes"] == ["+1 records"]
    assert updated["dest_id"] == created["dest_id"]

    out = runner.invoke(main, ["verify", *pair, *common])
    assert out.exit_code == 0, out.output
    counts = json.loads(out.output)["item_counts"]["dataset"]
    assert counts == {"listed": 1, "copies": 1, "ok": 1}


def test_file_store_holds_no_datasets(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file store cannot hold evaluation datasets: its writer leaves the kind out (the
    engine then reports them not copied, once) and its reader lists none."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    writer = MlflowWriter(uri)
    assert "dataset" not in writer.item_kinds()
    reader = MlflowReader(uri)
    assert list(reader.list_items("dataset")) == []
    sqlite_writer = MlflowWriter(f"sqlite:///{tmp_path / 'dest.db'}")
    assert "dataset" in sqlite_writer.item_kinds()
