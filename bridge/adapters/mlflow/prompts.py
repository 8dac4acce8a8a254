"""MLflow prompt registry, read and written faithfully (issue 13): the kind's two parts,
split by side (:mod:`.prompts_read`, :mod:`.prompts_write`) and imported from here by the
items dispatcher."""

from __future__ import annotations

from bridge.adapters.mlflow.prompts_read import PromptReader
from bridge.adapters.mlflow.prompts_write import PromptWriter

__all__ = ["PromptReader", "PromptWriter"]
