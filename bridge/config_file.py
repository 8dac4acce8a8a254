"""`bridge mirror --config bridge.toml`: several pairs, each with filters, mapping, policies.

Format (see examples/bridge.toml and the README)::

    state = "postgresql://bridge@db/bridge"   # default: the user's state dir
    every = "15m"                             # s, m, h, d
    log_format = "json"                       # or "text"
    wait = false                              # wait for a busy pair instead of skipping

    [defaults]                                # any pair key; each pair may override
    on_conflict = "skip"                      # skip | fail | source-wins | dest-wins
    on_delete = "keep"                        # keep | tag | delete
    two_way = false                           # carry notes/tags/alias edits back too

    [[pair]]
    name = "vision"
    source = "wandb:acme/vision"
    dest = "mlflow:http://mlflow.internal:5000"
    mapping = "mappings/vision.toml"          # mapping overrides (relative to this file)
    filters = { since = "2026-01-01", tags = ["prod"] }
    # offline sources: file:// references read only under these (relative to this file)
    # filters = { download_references = true, reference_roots = ["/data/shared"] }

Strings may name environment variables as ``${NAME}``; secrets belong there, not here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.adapters.base import ReaderOptions
from bridge.errors import BridgeError
from bridge.mapping import read_toml

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str | float | int) -> float:
    """``"15m"`` → 900.0; plain numbers are seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
        if not m:
            raise BridgeError(f"--every {text!r}: expected a duration like 30s, 15m, 2h or 1d")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise BridgeError(f"--every {text!r} must be longer than zero")
    return seconds


def expand_env(text: str) -> str:
    """Replace ``${NAME}`` with the environment variable; a missing one is an error."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            raise BridgeError(f"environment variable {m.group(1)} is not set (named in config)")
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, text)


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[str] = Field(default_factory=list)
    since: str | None = None
    tags: list[str] = Field(default_factory=list)
    run_states: list[str] = Field(default_factory=list)
    experiments: list[str] = Field(default_factory=list)
    include_deleted: bool = False
    entity: str | None = None
    staging_dir: str | None = None
    models: list[str] = Field(default_factory=list)  # registered models; [] = all
    registry: bool = True
    traces: bool = True  # MLflow 3 workspace items (--no-traces, --no-prompts, --no-datasets)
    prompts: bool = True
    datasets: bool = True
    download_references: bool = False
    reference_roots: list[str] = Field(default_factory=list)  # file:// targets read under

    @classmethod
    def from_options(cls, opts: ReaderOptions) -> Filters:
        """The config-file form of command-line reader options (inverse of reader_options)."""
        return cls(
            runs=opts.run_ids,
            since=opts.since,
            tags=opts.tags,
            run_states=opts.states,
            experiments=opts.experiments,
            include_deleted=opts.include_deleted,
            entity=opts.entity,
            staging_dir=opts.staging_dir,
            models=opts.registries,
            registry=opts.registry,
            traces="trace" in opts.items,
            prompts="prompt" in opts.items,
            datasets="dataset" in opts.items,
            download_references=opts.download_references,
            reference_roots=opts.reference_roots,
        )


def _item_flags(f: Filters) -> dict[str, bool]:
    """Item kind -> copied, from a pair's filters."""
    return {"trace": f.traces, "prompt": f.prompts, "dataset": f.datasets}


class PairConfig(BaseModel):
    """One source → destination pair and how it is mirrored."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    source: str
    dest: str
    on_conflict: Literal["skip", "fail", "source-wins", "dest-wins"] = "skip"
    on_delete: Literal["keep", "tag", "delete"] = "keep"
    workers: int = 4
    full: bool = False
    two_way: bool = False
    accept_missing_content: bool = False
    mapping: str | None = None
    filters: Filters = Field(default_factory=Filters)

    @property
    def label(self) -> str:
        return self.name or f"{self.source} -> {self.dest}"

    def reader_options(self) -> ReaderOptions:
        f = self.filters
        return ReaderOptions(
            workers=self.workers,
            staging_dir=f.staging_dir,
            run_ids=f.runs,
            entity=f.entity,
            since=f.since,
            tags=f.tags,
            states=f.run_states,
            experiments=f.experiments,
            include_deleted=f.include_deleted,
            registries=f.models,
            registry=f.registry,
            items=[k for k, on in _item_flags(f).items() if on] + ["model"],
            download_references=f.download_references,
            reference_roots=f.reference_roots,
        )


class MirrorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = None
    every: float = 900.0
    log_format: Literal["text", "json"] = "text"
    wait: bool = False
    pairs: list[PairConfig] = Field(min_length=1)

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: Any) -> float:
        return parse_every(value)


def _resolve_reference_roots(item: dict[str, Any], base: Path) -> None:
    """``filters.reference_roots`` relative to the config file, like ``mapping``: a trust
    boundary must not move with the working directory."""
    filters = item.get("filters")
    roots = filters.get("reference_roots") if isinstance(filters, dict) else None
    if isinstance(roots, list) and all(isinstance(r, str) for r in roots):
        resolved = [str((base / Path(expand_env(r)).expanduser()).resolve()) for r in roots]
        item["filters"] = {**filters, "reference_roots": resolved}  # type: ignore[dict-item]


def load_config(path: str | Path) -> MirrorConfig:
    """Read and validate a mirror config; every problem is one :class:`BridgeError` line."""
    path = Path(path)
    data = read_toml(path, "config")
    defaults = data.pop("defaults", {})
    pairs = data.pop("pair", [])
    if not isinstance(pairs, list) or not pairs:
        raise BridgeError(f"config {path}: no [[pair]] tables (each needs source and dest)")
    merged = []
    for pair in pairs:
        item = {**defaults, **pair}
        for key in ("source", "dest"):
            if isinstance(item.get(key), str):
                item[key] = expand_env(item[key])
        if item.get("mapping"):
            item["mapping"] = str((path.parent / item["mapping"]).resolve())
        _resolve_reference_roots(item, path.parent)
        merged.append(item)
    if isinstance(data.get("state"), str):
        data["state"] = expand_env(data["state"])
    try:
        return MirrorConfig.model_validate({**data, "pairs": merged})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first.get("loc", ()))
        if loc[:1] == ["pairs"] and len(loc) > 1:
            loc = [f"pair #{int(loc[1]) + 1}", *loc[2:]]
        where = ".".join(str(p) for p in loc) or "(file)"
        raise BridgeError(f"config {path}: {where}: {first.get('msg')}") from exc
