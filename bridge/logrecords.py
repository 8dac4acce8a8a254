"""Log records whose message is rewritten once, when the record is made.

Filters on handlers only see records of the handlers that exist when they are installed;
a library that adds its own handler later (MLflow does, inside a command) would log past
them. A record factory sees every record. Display escaping and redaction both install one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any


def install_message_rewrite(transform: Callable[[str], str], marker: str) -> None:
    """Wrap the process's log record factory so each message passes ``transform``;
    ``marker`` names this rewrite so installing it twice wraps only once."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, marker, False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        try:
            record.msg = transform(record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed call is logging's to report
            return record
        record.args = None
        return record

    setattr(make, marker, True)
    logging.setLogRecordFactory(make)
