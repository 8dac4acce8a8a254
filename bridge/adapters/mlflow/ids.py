"""Source identities of MLflow objects: ``mlflow:URI#LOCAL`` (a run, an experiment, a
registered model...), built through :class:`~bridge.schema.SourceId` in one place.

``URI`` is the store's credential-free tracking URI (as in ``display_uri``), so the same
store read twice names its objects the same way; the spelling is what the
``bridge.source_id`` tags and state keys already record, byte for byte.
"""

from __future__ import annotations

from bridge.schema import SourceId

KIND = "mlflow"  # the kind MLflow identities record (SourceId.kind)


def object_source_id(display_uri: str, local_id: str) -> str:
    """``<display_uri>#<local_id>``: an object of the store ``display_uri`` names
    (``mlflow:URI``), e.g. a run id, ``experiment:ID``, ``registered-model/NAME``."""
    store = SourceId.parse(display_uri)
    return str(SourceId(store.kind or KIND, f"{store.path}#{local_id}"))


def dest_run_source_id(dest_id: str) -> str:
    """``mlflow:<run id>``: what a writer's notices name a destination run it has no
    source id for (one it neither created nor read in this pass)."""
    return str(SourceId(KIND, dest_id))
