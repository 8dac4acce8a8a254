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
