"""One redaction point: credentials never leave the process in a message of the bridge's own.

Everything the bridge says about itself — console lines, log records and tracebacks, reports,
the errors it keeps in the state store, its own ``bridge.*`` tags — passes :func:`redact`.
Backends' error messages routinely carry the request URL (``http://user:pass@host/api/...``),
a SQLAlchemy URL or a header, so secrets are removed two ways:

* by shape: userinfo in any ``scheme://user:pass@host`` (also SQLAlchemy URLs),
  ``Authorization``/``Bearer``/``Basic`` values, W&B's ``api:<key>`` pair, AWS keyed secrets
  and signed-URL parameters, ``password=`` / ``token=`` style parameters;
* by value: secrets the process knows — credential environment variables
  (``MLFLOW_TRACKING_PASSWORD``, ``WANDB_API_KEY``, ``AWS_SECRET_ACCESS_KEY`` ...), the W&B key
  read from netrc and the passwords of every URI the bridge was given, registered by the code
  that parses them (:func:`register_secret`, :func:`register_uri`). Only values of 8 characters
  or more: a shorter one would blank out ordinary words. Their percent-, JSON-, HTML- and
  Markdown-escaped spellings are removed too.

Copied user data (params, tags, notes, files) never passes here: it stays byte-identical in
the destination. Redaction is for what the bridge *shows* and *records about itself*.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
import re
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

from bridge.logrecords import install_message_rewrite

MASK = "***"
#: Shorter secrets are not redacted by value (they would hit ordinary words and numbers).
MIN_SECRET_LEN = 8

#: Credential variables read by MLflow, W&B, boto3, psycopg, Databricks and Azure clients.
ENV_SECRETS = frozenset(
    {
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "WANDB_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "PGPASSWORD",
        "MYSQL_PWD",
        "DATABRICKS_TOKEN",
        "DATABRICKS_CLIENT_SECRET",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_CLIENT_SECRET",
    }
)
#: Any other variable named like a credential is treated as one too.
_ENV_SECRET_NAME = re.compile(r"(?:PASSWORD|PASSWD|_PWD|TOKEN|SECRET|API_KEY|ACCESS_KEY)$")

# A value never runs into a quote, a backslash (JSON/escaped text) or markup.
_STOP = r"\s\"'\\<>`"

#: scheme://userinfo@ — greedy up to the last "@" before the host part ends, so a password
#: with a raw "@" is masked whole.
_USERINFO = re.compile(rf"(?i)\b([a-z][a-z0-9+.\-]*://)([^{_STOP}/?#]+)@")
#: Header-like credentials: "Authorization: Bearer x", "'X-Amz-Security-Token': 'x'".
_HEADER = re.compile(
    rf"(?i)\b(authorization|proxy-authorization|x-api-key|api-key|cookie|x-amz-security-token)"
    rf"([\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token|digest)\s+)?([^{_STOP}&,;}}]+)"
)
#: "Bearer <token>" / "Basic <base64>" anywhere; the token must look like one (8+ characters
#: with a digit or one of + / = . _ -), so "Basic authentication" stays readable.
_SCHEME_TOKEN = re.compile(r"\b(Bearer|Basic|Token)(\s+)([A-Za-z0-9._~+/\-]{8,}=*)")
#: W&B's basic-auth pair.
_API_PAIR = re.compile(r"\bapi:([A-Za-z0-9_\-]{20,})")
#: key=value where the key names a secret (query strings, DSNs, boto/psycopg messages).
_SECRET_KEY = (
    r"[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key"
    r"|signature|credential|sig)"
)
_KEYED = re.compile(rf"(?i)(?<![A-Za-z0-9])({_SECRET_KEY})(\s*=\s*)([^{_STOP}&;,)}}\]]+)")
#: The same in a Python/JSON mapping: "password": "value", 'token': 'value'.
_QUOTED = re.compile(rf"(?i)([\"'])({_SECRET_KEY})\1(\s*:\s*)([\"'])((?:(?!\4)[^\\])+)\4")
#: AWS config-file spelling: aws_secret_access_key: value.
_AWS_COLON = re.compile(
    rf"(?i)\b(aws_secret_access_key|aws_session_token|aws_security_token)(\s*:\s*)([^{_STOP},]+)"
)

_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret the process was given, so every output drops it by value.

    Ignored when shorter than :data:`MIN_SECRET_LEN`.
    """
    if not value or len(value) < MIN_SECRET_LEN:
        return
    with _lock:
        _registered.update(_spellings(value))


def register_uri(text: str | None) -> None:
    """Register the passwords (userinfo) and secret-named query values of every URL in
    ``text`` — a source, destination or state URI, possibly with a URL inside
    (``wandb:E/P?base_url=...``)."""
    if not text:
        return
    for m in _USERINFO.finditer(text):
        _user, sep, password = m.group(2).partition(":")
        if sep:
            register_secret(password)
            register_secret(urllib.parse.unquote(password))
    for m in _KEYED.finditer(text):
        register_secret(m.group(3))
        register_secret(urllib.parse.unquote_plus(m.group(3)))


def _spellings(value: str) -> set[str]:
    """The ways a secret can be spelled in a message: as is, percent-encoded (URLs),
    JSON-, repr-, HTML- and Markdown-escaped (reports)."""
    forms = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        html.escape(value, quote=True),
        re.sub(r"([\\`*_\[\]|~])", r"\\\1", value),
    }
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return name in ENV_SECRETS or bool(_ENV_SECRET_NAME.search(name))


@functools.lru_cache(maxsize=1024)
def _env_spellings(value: str) -> frozenset[str]:
    return frozenset(_spellings(value))


#: The last answer of known_secrets and what it was computed from: a report redacts every
#: string of every line, and the environment and the registered set rarely change between.
_last: tuple[tuple[tuple[str, ...], int, int], list[str]] | None = None


def known_secrets() -> list[str]:
    """Registered secrets and credential environment variables, longest first (read anew
    on each call: tests and callers change the environment; only the derived spellings
    and the sorted answer are reused while neither the values nor the registry changed)."""
    global _last
    values = tuple(
        sorted(
            value
            for name, value in os.environ.items()
            if len(value) >= MIN_SECRET_LEN and _secret_name(name)
        )
    )
    with _lock:
        key = (values, id(_registered), len(_registered))
        last = _last
        if last is not None and last[0] == key:
            return last[1]
        found = set(_registered)
    for value in values:
        found |= _env_spellings(value)
    answer = sorted(found, key=len, reverse=True)
    with _lock:
        _last = (key, answer)
    return answer


def _scheme_token(m: re.Match[str]) -> str:
    token = m.group(3)
    if not re.search(r"[0-9+/=._\-]", token):
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{MASK}"


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``***``."""
    if not text:
        return text
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{MASK}", text)
    text = _SCHEME_TOKEN.sub(_scheme_token, text)
    text = _API_PAIR.sub(f"api:{MASK}", text)
    text = _QUOTED.sub(rf"\1\2\1\3\4{MASK}\4", text)
    text = _AWS_COLON.sub(rf"\1\2{MASK}", text)
    return _KEYED.sub(rf"\1\2{MASK}", text)


_T = TypeVar("_T")


def redact_fields(obj: _T) -> _T:
    """A copy of ``obj`` (a pydantic model, dict, list or tuple of them) with every string
    in it redacted: what a renderer gets, so escaping for Markdown or HTML cannot hide a
    secret from :func:`redact`."""
    from pydantic import BaseModel

    if isinstance(obj, str):
        return redact(obj)  # type: ignore[return-value]
    if isinstance(obj, BaseModel):
        fields = type(obj).model_fields
        return obj.model_copy(update={n: redact_fields(getattr(obj, n)) for n in fields})
    if isinstance(obj, dict):
        return {redact_fields(k): redact_fields(v) for k, v in obj.items()}  # type: ignore[return-value]
    if isinstance(obj, list | tuple):
        return type(obj)(redact_fields(v) for v in obj)  # type: ignore[return-value]
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):  # Plan.runs
        return type(obj)(redact_fields(v) for v in obj)  # type: ignore[call-arg]
    return obj


# ---- logging and uncaught exceptions ---------------------------------------------------


class RedactingFilter(logging.Filter):
    """Redacts a record's message, traceback and stack on its way to a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _add_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread else "?"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))


def install() -> None:
    """Route the process's log records and uncaught tracebacks through :func:`redact`.

    A :class:`RedactingFilter` goes on every handler that exists now (the root's, and those
    of libraries that log to their own, such as ``mlflow``); call it after the other
    handler filters so it runs last. Messages of handlers created later are redacted when
    the record is made (the record factory).
    """
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            _add_filter(handler)
    install_message_rewrite(redact, "bridge_redacting")
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
