"""Errors with the exit code and the one line a user sees."""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3


class BridgeError(Exception):
    """A problem the user can fix: bad URI, unreachable server, unreadable folder.

    The message is the single line printed; it names the thing and the fix, never a secret.
    """

    exit_code = EXIT_USAGE


class LeaseLost(BridgeError):
    """This pass's lease on a run went to another holder (it stopped renewing for longer
    than the lease: paused, cut off): nothing more of that run is written here, its state
    writes are refused, and the successor finishes it. The run fails on this pass's line
    (exit 1); the others go on."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, source_id: str, holder: str | None) -> None:
        self.source_id = source_id
        self.holder = holder  # host:pid of the successor; None: the claim was given back
        if holder:
            text = f"lease lost to {holder} — the successor finishes it"
        else:
            text = "claim given back before this write — not written"
        super().__init__(f"run {source_id}: {text}")


class RunError(Exception):
    """One run could not be read or written; the others go on."""


class NothingToImport(RunError):
    """The source run holds nothing importable (e.g. a log its process never flushed):
    skipped with a warning, not a failure. Every other RunError fails the run."""


class ContentError(RunError):
    """Content could not be copied as its manifest says (missing, or bytes that do not
    match): the rest of the run is written, the run stays incomplete and is retried.
    ``code`` is the report's warning code: "checksum-mismatch" or "missing-file"."""

    def __init__(self, message: str, code: str = "checksum-mismatch") -> None:
        super().__init__(message)
        self.code = code


class PermissionDenied(RunError):
    """The destination or source refused one project (an experiment) to these credentials
    (HTTP 403): its runs fail with this line, the others go on. When every run of a pass
    fails so, nothing can be done: the pass ends as one BridgeError line (exit 2)."""
