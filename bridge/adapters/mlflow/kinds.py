"""What the MLflow adapter does by the kind of source a run or model came from.

Every identity the bridge records starts with its source kind: ``wandb:ENTITY/PROJECT/ID``,
``mlflow:URI#ID``, ``tensorboard:LOGDIR#RUN``. :func:`source_kind` reads it, and it is the
one place the adapter looks: no string prefixes elsewhere.

* W&B runs are written with the W&B → MLflow mapping (``wandb.*`` tags for W&B's own
  fields, ``wandb.run_id``, W&B tag lists as ``wandb.tag.<tag>``), edited by ``--two-way``
  as a tag list, and read back as the W&B run they were made from.
* MLflow runs keep the same rules: a run the bridge imported from W&B reads back with its
  W&B fields (``from_wandb.py``), and copied to another MLflow store they land under the
  same names, so the copy reads back the same way.
* Any other kind (TensorBoard...) gets the package's ``<kind>-to-mlflow.toml`` when one
  ships, else neutral names: the same rules with the kind as the tag prefix
  (``tensorboard.group``...); the keys a ``--mapping`` file sets apply over either. No
  source run id tag (its source id says it all), labels for ``--two-way``, and no W&B
  restoration on read.
"""

from __future__ import annotations

import functools

from bridge.mapping import Mapping, load_mapping, rules_by_kind, shipped_mapping
from bridge.schema import RegisteredModel, SourceId

WANDB = "wandb"
MLFLOW = "mlflow"
#: Kinds written with the configured mapping as it is (see the module doc).
_AS_CONFIGURED = frozenset({WANDB, MLFLOW})
#: W&B's legacy Model Registry: its project has this name, not ``wandb-registry-<name>``.
_WANDB_LEGACY_REGISTRY = "model-registry"


def source_kind(source_id: str | None) -> str:
    """The kind a recorded source id names ("wandb", "mlflow", "tensorboard"...; "" when
    none): :class:`~bridge.schema.SourceId`'s ``kind``, the one parser of identities."""
    return SourceId.parse(source_id).kind


def from_wandb(source_id: str | None) -> bool:
    """Whether the identity names a W&B object (a run the writer made from a W&B run)."""
    return source_kind(source_id) == WANDB


def mapping_for(mapping: Mapping, kind: str) -> Mapping:
    """The tag rules for runs of this kind: ``mapping`` itself for W&B and MLflow runs.
    For another kind: the package's ``<kind>-to-mlflow.toml`` if it ships one, else the
    defaults with that kind's neutral tag prefixes — and over either, whatever keys the
    user's ``--mapping`` file set."""
    return rules_by_kind(mapping, kind, _AS_CONFIGURED, _kind_defaults)


@functools.lru_cache(maxsize=16)
def _kind_defaults(kind: str) -> Mapping:
    shipped = shipped_mapping(kind, MLFLOW)
    if shipped is not None:
        return load_mapping(shipped)
    prefix = f"{kind or 'source'}."
    return Mapping(
        source_tag_prefix=prefix,
        summary_tag_prefix=f"{prefix}summary.",
        tag_prefix=f"{prefix}tag.",
    )


def extras_kind(kind: str) -> str:
    """Whose ``run.extras`` hold the run fields the ``<prefix>group``/``job_type``/
    ``exit_code`` tags carry: W&B's for W&B runs and for MLflow runs (which hold them only
    as the W&B fields of a run imported from W&B, ``from_wandb.py``); else the kind's own."""
    return WANDB if kind in _AS_CONFIGURED else kind


def writes_native_run_id(kind: str) -> bool:
    """Whether the source's own run id gets a tag of its own (``wandb.run_id``): W&B ids
    are not in MLflow's terms; an MLflow or TensorBoard source id already is the run id."""
    return kind == WANDB


def registry_label(model: RegisteredModel) -> str:
    """The name of the project a W&B registry's content sits in (``wandb-registry-<name>``,
    or ``model-registry`` for the legacy one); other sources: their registry's name."""
    if source_kind(model.source_id) == WANDB and model.registry:
        if model.registry == _WANDB_LEGACY_REGISTRY:
            return model.registry
        return f"wandb-registry-{model.registry}"
    return model.registry or "registry"
