"""Source identities of W&B objects, spelled one way by the offline and the API reader.

The same run or artifact version read from its offline folder or from the server must map
to one destination object, so identities use only what both readers know: entity,
project, run id, collection name and the manifest digest (offline, the server's ``vN`` is
not known yet).
"""

from __future__ import annotations


def run_source_id(entity: str, project: str, run_id: str) -> str:
    """``wandb:ENTITY/PROJECT/RUN_ID`` (as in :class:`~bridge.schema.RunHeader`)."""
    return f"wandb:{entity}/{project}/{run_id}"


def artifact_source_id(entity: str, project: str, name: str, digest: str) -> str:
    """``wandb:ENTITY/PROJECT/artifact/NAME@DIGEST`` for a version of collection ``NAME``
    logged into ``ENTITY/PROJECT`` (its source collection, never a registry link)."""
    return f"wandb:{entity}/{project}/artifact/{name}@{digest}"


def collection_source_id(entity: str, project: str, name: str) -> str:
    """``wandb:ENTITY/PROJECT/COLLECTION``: a registry collection (``PROJECT`` =
    ``wandb-registry-<registry>``, ``ENTITY`` = the organization's entity) or a legacy
    Model Registry portfolio (``PROJECT`` = ``model-registry``)."""
    return f"wandb:{entity}/{project}/{name}"
