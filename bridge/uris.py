"""Turn "SCHEME:TARGET" URIs into adapter instances.

The registry maps a scheme to the module and class of its reader and writer; modules are
imported only when used, so `bridge --help` stays fast and a backend that is not used
costs nothing. Adding a backend = one line here plus its adapter module.
"""

from __future__ import annotations

import importlib
from typing import Any

from bridge.adapters.base import Reader, ReaderOptions, Writer
from bridge.errors import BridgeError
from bridge.redact import redact, register_uri

# scheme -> (reader "module:Class" or None, writer "module:Class" or None, example)
REGISTRY: dict[str, tuple[str | None, str | None, str]] = {
    "wandb-offline": (
        "bridge.adapters.wandb.offline_reader:WandbOfflineReader",
        "bridge.adapters.wandb.writer:WandbOfflineWriter",
        "wandb-offline:./wandb",
    ),
    "wandb": (
        "bridge.adapters.wandb.api_reader:WandbApiReader",
        "bridge.adapters.wandb.writer:WandbWriter",
        "wandb:ENTITY/PROJECT",
    ),
    "mlflow": (
        "bridge.adapters.mlflow.reader:MlflowReader",
        "bridge.adapters.mlflow.writer:MlflowWriter",
        "mlflow:sqlite:///mlflow.db",
    ),
    "tensorboard": (
        "bridge.adapters.tensorboard.reader:TensorboardReader",
        None,
        "tensorboard:./runs",
    ),
}


def split_uri(uri: str) -> tuple[str, str]:
    """Split "scheme:target"; raise a one-line usage error naming the known schemes.

    Every URI the bridge is given passes here: its passwords are registered for redaction,
    and an error quotes it redacted."""
    register_uri(uri)
    scheme, sep, target = uri.partition(":")
    known = ", ".join(f"{s}: (e.g. {ex})" for s, (_, _, ex) in REGISTRY.items())
    if not sep or scheme not in REGISTRY:
        raise BridgeError(f"unknown URI {redact(uri)!r}: expected one of {known}")
    if not target:
        raise BridgeError(f"URI {uri!r} names no target: e.g. {REGISTRY[scheme][2]}")
    return scheme, target


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:  # pragma: no cover - adapter not installed
        raise BridgeError(f"backend module {module} cannot be imported: {exc}") from exc


def open_reader(uri: str, options: ReaderOptions | None = None) -> Reader:
    scheme, target = split_uri(uri)
    reader_path = REGISTRY[scheme][0]
    if reader_path is None:
        raise BridgeError(f"{scheme}: cannot be used as a SOURCE yet (it is a destination only)")
    cls = _load(reader_path)
    reader: Reader = cls(cls.normalize_target(target), options)
    return reader


def open_writer(uri: str) -> Writer:
    scheme, target = split_uri(uri)
    writer_path = REGISTRY[scheme][1]
    if writer_path is None:
        raise BridgeError(f"{scheme}: cannot be used as a DEST yet (it is a source only)")
    cls = _load(writer_path)
    writer: Writer = cls(cls.normalize_target(target))
    return writer
