"""The state store's tables: names, columns and keys are the stored format (never renamed)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

runs_table = sa.Table(
    "bridge_runs",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("dest_id", sa.String(128), nullable=False),
    sa.Column("project_dest_id", sa.String(128), nullable=False),
    sa.Column("fingerprint", sa.String(128)),  # source fingerprint at last completion
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sa.Column("written_params", sa.Text),  # JSON: what the bridge wrote, for conflict checks
    sa.Column("written_tags", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
)

streams_table = sa.Table(
    "bridge_streams",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("points", sa.BigInteger, nullable=False),  # watermark: points already written
)

files_table = sa.Table(
    "bridge_files",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("digest", sa.String(256), nullable=False),
)

conflicts_table = sa.Table(
    "bridge_conflicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dest_uri", sa.String(512), nullable=False),
    sa.Column("source_id", sa.String(512), nullable=False),
    sa.Column("field", sa.String(512), nullable=False),
    sa.Column("source_value", sa.Text),
    sa.Column("dest_value", sa.Text),
    sa.Column("synced_value", sa.Text),
    sa.Column("detected_at", sa.Float, nullable=False),
    sa.Column("resolved", sa.Boolean, nullable=False, default=False),
    # One run's conflicts: planning and close_stale_conflicts look them up per run.
    sa.Index("ix_bridge_conflicts_run", "dest_uri", "source_id"),
)


resolutions_table = sa.Table(
    "bridge_resolutions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conflict_id", sa.Integer),
    sa.Column("dest_uri", sa.String(512), nullable=False),
    sa.Column("source_id", sa.String(512), nullable=False),
    sa.Column("field", sa.String(512), nullable=False),
    sa.Column("choice", sa.String(16), nullable=False),  # "source" | "dest" | "superseded"
    sa.Column("source_value", sa.Text),
    sa.Column("dest_value", sa.Text),
    sa.Column("resolved_by", sa.String(256), nullable=False),  # user@host or policy:NAME
    sa.Column("resolved_at", sa.Float, nullable=False),
    sa.Column("note", sa.Text),
    sa.Index("ix_bridge_resolutions_run", "dest_uri", "source_id"),  # read per planned run
)

cycles_table = sa.Table(
    "bridge_cycles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_uri", sa.String(512), nullable=False),
    sa.Column("dest_uri", sa.String(512), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("result", sa.Integer),  # the exit code; NULL while running (or killed)
    sa.Column("skipped", sa.Text),  # why the cycle did not run (lock held ...)
    sa.Column("counts", sa.Text),  # JSON: actions, outcomes, points/files written
    sa.Column("errors", sa.Text),  # JSON list of one-line errors
    sa.Column("host", sa.String(256)),
    sa.Column("pid", sa.Integer),
    sa.Index("ix_bridge_cycles_pair", "source_uri", "dest_uri"),  # status; a row per cycle
)

members_table = sa.Table(
    "bridge_pair_runs",
    metadata,
    sa.Column("source_uri", sa.String(512), primary_key=True),
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float),  # when a complete listing stopped showing it
)

# Where a source artifact version's content lives in a destination (content addressed by
# the artifact's source identity): copied once, reused by every run or registry version.
objects_table = sa.Table(
    "bridge_objects",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),  # ArtifactVersion.source_id
    sa.Column("location", sa.String(1024), nullable=False),  # models:/ID, runs:/ID/path ...
)

# The version map: a source registry version <-> the destination's version number.
versions_table = sa.Table(
    "bridge_model_versions",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),  # ModelVersion.source_id
    sa.Column("model_name", sa.String(512), nullable=False),  # destination model name
    sa.Column("dest_version", sa.String(64), nullable=False),
)

# Aliases as last synced (both sides agreed): a move on both sides since is a conflict.
aliases_table = sa.Table(
    "bridge_model_aliases",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("model_source_id", sa.String(512), primary_key=True),
    sa.Column("alias", sa.String(256), primary_key=True),
    sa.Column("source_version", sa.String(512)),  # ModelVersion.source_id it was on
    sa.Column("dest_version", sa.String(64)),
)

# --two-way: editable fields as last agreed by both sides (a change on both since = conflict).
editable_table = sa.Table(
    "bridge_editable",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("field", sa.String(512), primary_key=True),  # "notes", "tags", "label:<key>"
    sa.Column("value", sa.Text),
)

# Beside each watermark: an order-independent digest of the points it counts (see
# bridge/engine/streams.py), valid while ``points`` equals the watermark. A new table, so
# state stores from before it keep working (no digest = not known).
stream_digests_table = sa.Table(
    "bridge_stream_digests",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(16), nullable=False),  # 64-bit, hex
)

# The reader filters of each pair's last real sync: the scope `verify` checks by default.
pair_filters_table = sa.Table(
    "bridge_pair_filters",
    metadata,
    sa.Column("source_uri", sa.String(512), primary_key=True),
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("filters", sa.Text, nullable=False),  # JSON object
    sa.Column("synced_at", sa.Float, nullable=False),
)

# Content digests of source files that come without one, by the reader's cheap identity of
# that file version (FileRef.stat_key, e.g. path + size + mtime): hashed once, not per sync.
digests_table = sa.Table(
    "bridge_content_digests",
    metadata,
    sa.Column("stat_key", sa.String(64), primary_key=True),  # sha256 hex of FileRef.stat_key
    sa.Column("md5", sa.String(64), nullable=False),  # base64 MD5 of the content
)

# Run claims: who is copying a source run into a destination right now. One row per
# (destination, source identity), taken atomically, so two syncs whose sources yield the
# same identities (an offline folder and the server; two copies of a folder) never both
# create or write a run, while different runs of one pair proceed in parallel.
claims_table = sa.Table(
    "bridge_claims",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),  # host:pid:nonce
    sa.Column("taken_at", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Index("ix_bridge_claims_holder", "holder"),  # every heartbeat; release at pass end
)

# Fencing tokens of run claims: bumped in the transaction of every take or takeover of the
# claim (never reset, kept on release), checked in the transaction of every state write
# of the claimed run, so a holder whose lease went to a successor cannot overwrite it.
# ``holder`` is who took the current token (named to a holder that lost it, even after
# the successor released the claim).
claim_fences_table = sa.Table(
    "bridge_claim_fences",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(256), nullable=False),  # who took this token (host:pid:nonce)
)

# Workspace items (traces, prompts, evaluation datasets) copied into a destination: where
# each copy is and the source fingerprint it was last made from (equal: nothing to read).
items_table = sa.Table(
    "bridge_items",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),  # ItemHeader.source_id
    sa.Column("kind", sa.String(32), nullable=False),  # "trace", "prompt", "dataset"
    sa.Column("dest_id", sa.String(512), nullable=False),
    sa.Column("fingerprint", sa.String(256), nullable=False),
    # item_digest of the copy as written: a later pass that reads a different digest back
    # knows the copy was edited in the destination since (a conflict, not overwritten).
    sa.Column("digest", sa.String(128)),
)

# Sharded passes (`bridge sync --shard I/N`): one row per pass; the once-per-pass final step
# (registry, items, deletions, the cycle record) is taken by compare-and-set on final_state.
passes_table = sa.Table(
    "bridge_passes",
    metadata,
    sa.Column("pass_id", sa.String(128), primary_key=True),
    sa.Column("source_uri", sa.String(512), nullable=False),
    sa.Column("dest_uri", sa.String(512), nullable=False),
    sa.Column("shard_count", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("final_state", sa.String(16)),  # NULL, "running", "done"
    sa.Column("final_holder", sa.String(256)),
    sa.Column("final_at", sa.Float),  # taken at; renewed while it runs
    sa.Column("incomplete", sa.Text),  # why the pass is incomplete (NULL: it is not)
)

# Each index of a pass: who runs it, its heartbeat, and how it ended.
pass_shards_table = sa.Table(
    "bridge_pass_shards",
    metadata,
    sa.Column("pass_id", sa.String(128), primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("result", sa.Integer),  # exit code of the index
    sa.Column("counts", sa.Text),  # JSON, as a cycle's
    sa.Column("errors", sa.Text),  # JSON list
)

# The pass shards of (pair, shard count) join when no --pass-id is given: one row, so two
# shards starting at once open one pass, not two.
pass_open_table = sa.Table(
    "bridge_pass_open",
    metadata,
    sa.Column("source_uri", sa.String(512), primary_key=True),
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("shard_count", sa.Integer, primary_key=True),
    sa.Column("pass_id", sa.String(128), nullable=False),
)

# A run written before its parent's copy existed: linked once the parent's copy exists.
parent_links_table = sa.Table(
    "bridge_parent_links",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("parent_source_id", sa.String(512), nullable=False),
)
