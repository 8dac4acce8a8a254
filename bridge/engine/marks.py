"""Values the engine records in the destination and in state, with the reason for each."""

from __future__ import annotations

#: Where a source value lands when the destination's param is immutable and the source
#: wins: the param cannot change, so the new value is written to this tag instead and
#: the param keeps its old value (never a silent overwrite or drop).
PARAM_OVERRIDE_PREFIX = "bridge.param_override."
#: Recorded for a file whose content was missing and a person accepted as gone for good.
MANIFEST_ONLY = "manifest-only:"
#: Appended to the fingerprint recorded for a run synced with open conflicts, so the next
#: sync does not take it as unchanged: it reads the run again and reports them again.
OPEN_CONFLICTS = "+open-conflicts"
#: Run tag set by ``--on-delete tag`` on a copy whose source run was deleted.
SOURCE_DELETED_TAG = "bridge.source_deleted"
