"""Asked before ``--on-delete`` acts: does a run the listing no longer shows still exist?

A basic-auth server lists only what the caller may read, so an experiment whose READ was
withdrawn looks exactly like a deleted one in a listing. ``get_run`` tells them apart:
``RESOURCE_DOES_NOT_EXIST`` or a ``deleted`` lifecycle stage (of the run or its experiment)
is gone; a 401/403 or any other failure is unknown; a readable active run is present.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.features import Presence, SourcePresence
from bridge.adapters.mlflow.ids import object_source_id


class MlflowPresence(SourcePresence):
    """``run_presence`` for :class:`~bridge.adapters.mlflow.reader.MlflowReader`."""

    client: Any

    @property
    def display_uri(self) -> str:  # the reader's
        raise NotImplementedError

    def run_presence(self, source_id: str) -> Presence:
        _, _, run_id = source_id.rpartition("#")
        if not run_id or object_source_id(self.display_uri, run_id) != source_id:
            return "unknown"  # not a run of this store: nothing to ask it
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            return "gone" if exc.error_code == "RESOURCE_DOES_NOT_EXIST" else "unknown"
        if run.info.lifecycle_stage == "deleted":
            return "gone"
        try:
            experiment = self.client.get_experiment(run.info.experiment_id)
        except MlflowException as exc:
            return "gone" if exc.error_code == "RESOURCE_DOES_NOT_EXIST" else "unknown"
        return "gone" if experiment.lifecycle_stage == "deleted" else "present"
