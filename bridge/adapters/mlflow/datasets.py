"""MLflow 3 evaluation datasets: :class:`DatasetReader` (``datasets_read``) and
:class:`DatasetWriter` (``datasets_write``), the dataset part of the reader's and writer's
workspace items (``items.py``)."""

from __future__ import annotations

from bridge.adapters.mlflow.datasets_read import DatasetReader
from bridge.adapters.mlflow.datasets_write import DatasetWriter

__all__ = ["DatasetReader", "DatasetWriter"]
