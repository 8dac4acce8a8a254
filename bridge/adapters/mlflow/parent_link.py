"""The MLflow writer's deferred parent link: ``mlflow.parentRunId`` set on a copy written
before its parent's copy existed (bridge/engine/links.py)."""

from __future__ import annotations

from typing import Any

from bridge.adapters.features import ParentLinks

PARENT_TAG = "mlflow.parentRunId"


class MlflowParentLinks(ParentLinks):
    """Mixed into the MLflow writer (which has ``client``)."""

    client: Any

    def link_parent(self, dest_id: str, parent_dest_id: str) -> dict[str, str]:
        self.client.set_tag(dest_id, PARENT_TAG, parent_dest_id)
        return {PARENT_TAG: parent_dest_id}
