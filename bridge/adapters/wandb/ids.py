"""Source identities of W&B objects, spelled one way by the offline and the API reader.

The same run or artifact version read from its offline folder or from the server must map
to one destination object, so identities use only what both readers know: entity,
project, run id, collection name and the manifest digest (offline, the server's ``vN`` is
not known yet).
"""

from __future__ import annotations

from bridge.schema import SourceId

KIND = "wandb"  # the kind W&B identities record (SourceId.kind)


def run_source_id(entity: str, project: str, run_id: str) -> str:
    """``wandb:ENTITY/PROJECT/RUN_ID`` (as in :class:`~bridge.schema.RunHeader`)."""
    return str(SourceId(KIND, f"{entity}/{project}/{run_id}"))


def artifact_source_id(entity: str, project: str, name: str, digest: str) -> str:
    """``wandb:ENTITY/PROJECT/artifact/NAME@DIGEST`` for a version of collection ``NAME``
    logged into ``ENTITY/PROJECT`` (its source collection, never a registry link)."""
    return str(SourceId(KIND, f"{entity}/{project}/artifact/{name}@{digest}"))


def collection_source_id(entity: str, project: str, name: str) -> str:
    """``wandb:ENTITY/PROJECT/COLLECTION``: a registry collection (``PROJECT`` =
    ``wandb-registry-<registry>``, ``ENTITY`` = the organization's entity) or a legacy
    Model Registry portfolio (``PROJECT`` = ``model-registry``)."""
    return str(SourceId(KIND, f"{entity}/{project}/{name}"))


def project_source_id(entity: str, project: str) -> str:
    """``wandb:ENTITY/PROJECT`` (as in :class:`~bridge.schema.Project`)."""
    return str(SourceId(KIND, f"{entity}/{project}"))


def wandb_path(source_id: str) -> str:
    """The W&B path (``ENTITY/PROJECT/...``) a W&B source id names; any other id as it is."""
    sid = SourceId.parse(source_id)
    return sid.path if sid.kind == KIND else source_id
