"""The state store: what was written where, so a re-run never duplicates.

One store serves every source/destination pair. Rows are keyed by the destination's
credential-free URI and the source identity, not the source URI, so the same W&B run read
offline and later online maps to the same destination run. SQLite by default (a file in
the user's state dir); a PostgreSQL URL lets a team share it.

Everything here can be rebuilt from the destination (identity and completion tags), so a
lost state store costs time, never duplicates.

Parts: ``tables`` (the stored format), ``migrate`` (creating and upgrading a store),
``sql`` (portable upserts), ``records`` (what callers get back), and one mixin per job
(``runs``, ``conflicts``, ``pairs``, ``registry``, ``claims``, ``items``) over ``base``.
"""

from __future__ import annotations

from bridge.state.migrate import OPEN_CONFLICT_INDEX
from bridge.state.records import (
    ItemMark,
    Resolution,
    RunState,
    conflict_key,
    default_state_url,
    normalize_state_url,
)
from bridge.state.sql import upsert as _upsert
from bridge.state.store import StateStore
from bridge.state.tables import (
    aliases_table,
    claims_table,
    conflicts_table,
    cycles_table,
    digests_table,
    editable_table,
    files_table,
    items_table,
    members_table,
    metadata,
    objects_table,
    pair_filters_table,
    resolutions_table,
    runs_table,
    stream_digests_table,
    streams_table,
    versions_table,
)

__all__ = [
    "OPEN_CONFLICT_INDEX",
    "ItemMark",
    "Resolution",
    "RunState",
    "StateStore",
    "_upsert",
    "aliases_table",
    "claims_table",
    "conflict_key",
    "conflicts_table",
    "cycles_table",
    "default_state_url",
    "digests_table",
    "editable_table",
    "files_table",
    "items_table",
    "members_table",
    "metadata",
    "normalize_state_url",
    "objects_table",
    "pair_filters_table",
    "resolutions_table",
    "runs_table",
    "stream_digests_table",
    "streams_table",
    "versions_table",
]
