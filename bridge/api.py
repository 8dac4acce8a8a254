"""What a notebook, a script or an Airflow task calls: the same functions the CLI uses."""

from __future__ import annotations

from bridge.adapters.base import ReaderOptions
from bridge.engine.model import Plan
from bridge.engine.sync import OnConflict, run_sync
from bridge.state import StateStore
from bridge.uris import open_reader, open_writer


def sync(
    source: str,
    dest: str,
    *,
    dry_run: bool = False,
    full: bool = False,
    state: str | None = None,
    workers: int = 4,
    on_conflict: OnConflict = "skip",
    reader_options: ReaderOptions | None = None,
    show_progress: bool = False,
) -> Plan:
    """Sync every run of ``source`` into ``dest``; returns the plan with outcomes.

    Raises :class:`bridge.errors.BridgeError` for unusable URIs, stores or state.
    """
    reader = open_reader(source, reader_options)
    writer = open_writer(dest)
    store = StateStore(state, read_only=dry_run)
    try:
        reader.check()
        writer.check()
        writer.source_uri = reader.display_uri
        return run_sync(
            reader,
            writer,
            store,
            dry_run=dry_run,
            full=full,
            workers=workers,
            on_conflict=on_conflict,
            show_progress=show_progress,
        )
    finally:
        reader.close()
        writer.close()
        store.close()


def diff(source: str, dest: str, **kwargs: object) -> Plan:
    """The plan a sync would carry out, with nothing written (no destination object, no state)."""
    kwargs["dry_run"] = True
    return sync(source, dest, **kwargs)  # type: ignore[arg-type]
