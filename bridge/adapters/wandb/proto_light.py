"""W&B's record messages without importing the wandb SDK.

``from wandb.proto import wandb_internal_pb2`` runs ``wandb/__init__.py`` first: the whole
SDK, ~1 s of CPU at every start of a process that only reads ``.wandb`` logs (the proto
modules themselves take milliseconds). So, unless the SDK is already imported, the
messages are built from the installed SDK's own generated modules' serialized descriptors
(their ``AddSerializedFile`` literal; nothing of them is executed) into a private
descriptor pool, with protobuf's own builder, as the generated modules do. Same wire
format, same fields and enums: the installed SDK's. Anything unexpected falls back to the
SDK import; ``BRIDGE_WANDB_PROTO=sdk`` forces it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

#: The generated modules wandb_internal_pb2 needs, dependencies first.
_FILES = ("wandb_base_pb2", "wandb_telemetry_pb2", "wandb_internal_pb2")
_SERIALIZED = re.compile(rb"AddSerializedFile\((b'(?:[^'\\]|\\.)*')\)")


def _sdk() -> Any:
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2


def _light() -> Any:
    import google.protobuf
    from google.protobuf import descriptor_pool, empty_pb2, struct_pb2, timestamp_pb2
    from google.protobuf.internal import builder

    spec = importlib.util.find_spec("wandb")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("wandb is not installed")
    major = google.protobuf.__version__.split(".")[0]
    folder = Path(list(spec.submodule_search_locations)[0]) / "proto" / f"v{major}"
    pool = descriptor_pool.DescriptorPool()
    for dep in (empty_pb2, struct_pb2, timestamp_pb2):
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)
    names: dict[str, Any] = {}
    for name in _FILES:
        found = _SERIALIZED.search((folder / f"{name}.py").read_bytes())
        if found is None:
            raise ImportError(f"no serialized descriptor in {folder / name}.py")
        serialized = ast.literal_eval(found.group(1).decode("ascii"))
        pool.AddSerializedFile(serialized)
        file_desc = pool.FindFileByName(f"wandb/proto/{name.removesuffix('_pb2')}.proto")
        names = {}
        builder.BuildMessageAndEnumDescriptors(file_desc, names)
        builder.BuildTopDescriptorsAndMessages(file_desc, f"wandb.proto.{name}", names)
    return SimpleNamespace(**names)  # the last file's: wandb_internal's messages and enums


def load_internal() -> Any:
    """``wandb.proto.wandb_internal_pb2``, or the same messages built without the SDK."""
    if "wandb" in sys.modules or os.environ.get("BRIDGE_WANDB_PROTO") == "sdk":
        return _sdk()
    try:
        return _light()
    except Exception:  # an SDK laid out otherwise: pay for its import
        return _sdk()
