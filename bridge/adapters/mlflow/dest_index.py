"""The bridge's runs in an MLflow experiment, found by their identity tag (no state needed)."""

from __future__ import annotations

from typing import Any

from bridge.adapters.base import DestRun
from bridge.adapters.mlflow.names import COMPLETE_TAG, FINGERPRINT_TAG, SOURCE_ID_TAG


def dest_run(mlrun: Any) -> DestRun:
    tags = dict(mlrun.data.tags)
    return DestRun(
        dest_id=mlrun.info.run_id,
        project_dest_id=str(mlrun.info.experiment_id),
        source_id=tags.get(SOURCE_ID_TAG),
        complete=tags.get(COMPLETE_TAG) == "true",
        fingerprint=tags.get(FINGERPRINT_TAG),
        params=dict(mlrun.data.params),
        tags=tags,
    )


def runs_by_source(
    client: Any, project_dest_id: str
) -> tuple[dict[str, DestRun], dict[str, list[str]]]:
    """Active (not deleted) runs with a ``bridge.source_id`` tag, by source id, and the
    source ids more than one run carries (a crash between create and state save): the
    complete one wins, then the earliest created; every id is in the second mapping."""
    found: dict[str, list[DestRun]] = {}
    token: str | None = None
    while True:
        page = client.search_runs(
            [project_dest_id],
            filter_string=f"tags.`{SOURCE_ID_TAG}` != ''",
            max_results=1000,
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            page_token=token,
        )
        for mlrun in page:
            dest = dest_run(mlrun)
            if dest.source_id:
                found.setdefault(dest.source_id, []).append(dest)
        token = page.token
        if not token:
            break
    result: dict[str, DestRun] = {}
    dups: dict[str, list[str]] = {}
    for source_id, runs in found.items():
        best = next((r for r in runs if r.complete), runs[0])
        result[source_id] = best
        if len(runs) > 1:
            dups[source_id] = [r.dest_id for r in runs]
    return result, dups


def find_created_run(client: Any, project_dest_id: str, source_id: str) -> str | None:
    """The active, incomplete run carrying ``source_id`` (oldest first), if any."""
    quoted = _filter_literal(source_id)
    found = client.search_runs(
        [project_dest_id],
        filter_string=f"tags.`{SOURCE_ID_TAG}` = {quoted}"
        if quoted
        else f"tags.`{SOURCE_ID_TAG}` != ''",
        max_results=1000,
        order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
    )
    for mlrun in found:
        tags = mlrun.data.tags
        if tags.get(SOURCE_ID_TAG) == source_id and tags.get(COMPLETE_TAG) != "true":
            return str(mlrun.info.run_id)
    return None


def _filter_literal(value: str) -> str | None:
    """``value`` quoted for an MLflow filter string, or None when it holds both quote
    kinds (the filter grammar has no escapes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None
