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
