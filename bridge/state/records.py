"""The records the store hands out, where it lives by default, and conflict identities."""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_state_dir
from pydantic import BaseModel, Field


class Resolution(BaseModel):
    """How one conflict was settled: by a person (``conflicts resolve``) or a policy."""

    id: int
    conflict_id: int | None
    field: str
    choice: str
    source_value: str | None
    dest_value: str | None
    resolved_by: str
    resolved_at: float


class RunState(BaseModel):
    dest_id: str
    project_dest_id: str
    fingerprint: str | None = None
    complete: bool = False
    written_params: dict[str, str] = Field(default_factory=dict)
    written_tags: dict[str, str] = Field(default_factory=dict)


class ItemMark(BaseModel):
    """Where a workspace item's copy lives and the source fingerprint it was made from."""

    kind: str
    dest_id: str
    fingerprint: str
    digest: str | None = None  # item_digest of the copy as written (None: not recorded)


def default_state_url() -> str:
    """SQLite file in the user's state dir (platformdirs), one store for all pairs."""
    folder = Path(user_state_dir("tracking-bridge", appauthor=False))
    return f"sqlite:///{folder / 'state.db'}"


def normalize_state_url(value: str | None) -> str:
    """Accept a SQLAlchemy URL or a plain file path."""
    if not value:
        return default_state_url()
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def conflict_key(field: str, source_value: str | None, dest_value: str | None) -> str:
    """Identity of a conflict for :meth:`StateStore.close_stale_conflicts`."""
    return f"{field}\x00{source_value}\x00{dest_value}"
