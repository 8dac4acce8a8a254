"""How neutral runs (typically read from MLflow) become W&B runs: the user-overridable rules.

``mappings/mlflow-to-wandb.toml`` is the documented copy of these defaults; a user edits a
copy and passes it to :func:`load_wandb_mapping`. The fixed rules (identity keys, files,
history layout) are documented in that file too, so the whole mapping is in one place.

Those are the rules for MLflow (and W&B) sources. A run of another source kind is written
with :func:`rules_for`'s: the package's ``<kind>-to-wandb.toml`` when one ships
(``tensorboard-to-wandb.toml``), else neutral ``<kind>_*`` names.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.mapping import (
    check_name_template,
    default_mapping,
    load_toml_model,
    rules_by_kind,
    shipped_mapping,
)
from bridge.schema import SourceId

#: The shipped, documented copy of the defaults (package data).
DEFAULT_WANDB_MAPPING_PATH = default_mapping("mlflow", "wandb")
#: Source kinds written with the configured rules as they are (today's MLflow-shaped ones).
AS_CONFIGURED = frozenset({"mlflow", "wandb"})
#: Characters W&B refuses in project names.
_BAD_PROJECT_CHARS = re.compile(r"[/\\#?%:]")
MAX_PROJECT_LEN = 128
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


#: Characters of a registry name ("model" in ``wandb-registry-model``) W&B accepts.
_REGISTRY_NAME = re.compile(r"^[A-Za-z0-9_\-.]+$")


class WandbRegistryRules(BaseModel):
    """``[registry]``: where source registered models go in W&B (see the TOML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: str = "model"
    collection_name: str = "{name}"

    @field_validator("registry")
    @classmethod
    def _check_registry(cls, value: str) -> str:
        if not _REGISTRY_NAME.fullmatch(value) or value.startswith("wandb-registry-"):
            raise ValueError(
                "must be a registry name without the 'wandb-registry-' prefix "
                "(letters, digits, '-', '_', '.')"
            )
        return value

    @field_validator("collection_name")
    @classmethod
    def _check_template(cls, value: str) -> str:
        return check_name_template(
            "registry.collection_name", value, ("name", "registry", "entity")
        )

    def name_for(self, name: str, registry: str | None, entity: str | None) -> str:
        """The collection name before sanitizing (see the W&B registry writer)."""
        return self.collection_name.format(name=name, registry=registry or "", entity=entity or "")


class WandbMapping(BaseModel):
    """Neutral run → W&B run rules; defaults match ``mappings/mlflow-to-wandb.toml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_name: str = "{project}"
    run_id_length: int = Field(default=12, ge=8, le=32)
    run_id_salt: str = ""
    step_key: str = "mlflow_step"
    extra_tags_config_key: str = "mlflow_tags"
    wandb_tag_values: list[str] = Field(default_factory=lambda: ["", "true"])
    wandb_tag_skip_prefixes: list[str] = Field(default_factory=lambda: ["mlflow.", "bridge."])
    group_from_parent: bool = True
    skip_config_keys: list[str] = Field(default_factory=lambda: ["_wandb"])
    exit_codes: dict[str, int] = Field(
        default_factory=lambda: {"FINISHED": 0, "FAILED": 1, "KILLED": 255, "RUNNING": 0}
    )
    registry: WandbRegistryRules = Field(default_factory=WandbRegistryRules)

    @field_validator("project_name")
    @classmethod
    def _check_template(cls, value: str) -> str:
        return check_name_template("project_name", value)

    @field_validator("step_key", "extra_tags_config_key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        if not value or value.startswith("_") or value != value.strip("- "):
            raise ValueError("must be non-empty and not start with '_', '-' or a space")
        return value

    @field_validator("exit_codes")
    @classmethod
    def _check_codes(cls, value: dict[str, int]) -> dict[str, int]:
        missing = {"FINISHED", "FAILED", "KILLED", "RUNNING"} - value.keys()
        if missing:
            raise ValueError(f"exit_codes needs every status; missing {sorted(missing)}")
        return value

    def project_for(self, project: str, entity: str | None) -> str:
        """The W&B project name for a source project/experiment (W&B-legal characters)."""
        name = self.project_name.format(project=project, entity=entity or "")
        name = _BAD_PROJECT_CHARS.sub("-", name).strip(" -") or "uncategorized"
        return name[:MAX_PROJECT_LEN]

    def run_id_for(self, source_id: str) -> str:
        """The W&B run id for a source run: base36 of SHA-256(salt + source id), cut.

        Deterministic, so re-syncs find the same run without local state; lowercase
        letters and digits only (valid in W&B ids and folder names).
        """
        digest = int.from_bytes(hashlib.sha256((self.run_id_salt + source_id).encode()).digest())
        chars: list[str] = []
        while len(chars) < self.run_id_length:
            digest, rem = divmod(digest, 36)
            chars.append(_B36[rem])
        return "".join(chars)

    def is_wandb_tag(self, key: str, value: str) -> bool:
        """Whether a backend tag becomes a plain W&B tag (it is kept in config as well)."""
        if not 1 <= len(key) <= 64:
            return False
        if any(key.startswith(p) for p in self.wandb_tag_skip_prefixes):
            return False
        return value.strip().lower() in self.wandb_tag_values


def load_wandb_mapping(path: Path | None = None) -> WandbMapping:
    """The defaults, overridden by the keys of the TOML file at ``path`` if given."""
    return load_toml_model(WandbMapping, path, "mappings/mlflow-to-wandb.toml")


def rules_for(mapping: WandbMapping, source_id: str | None) -> WandbMapping:
    """The rules for a run (or project) by the kind its recorded source id names:
    ``mapping`` itself for MLflow and W&B sources. For another kind: the package's
    ``<kind>-to-wandb.toml`` if it ships one, else the defaults with neutral names
    (``<kind>_step``, ``<kind>_tags``, ``<kind>.`` tags kept out of W&B tags) — and over
    either, whatever keys the user's ``--mapping`` file set."""
    return rules_by_kind(mapping, SourceId.parse(source_id).kind, AS_CONFIGURED, kind_defaults)


@functools.lru_cache(maxsize=16)
def kind_defaults(kind: str) -> WandbMapping:
    """A source kind's default rules (see :func:`rules_for`); "" (no kind) as "source"."""
    shipped = shipped_mapping(kind, "wandb")
    if shipped is not None:
        return load_wandb_mapping(shipped)
    name = kind or "source"
    return WandbMapping(
        step_key=f"{name}_step",
        extra_tags_config_key=f"{name}_tags",
        wandb_tag_skip_prefixes=[f"{name}.", "bridge."],
    )
