"""MLflow backend: ``mlflow:TRACKING_URI`` as a source and as a destination."""

from bridge.adapters.mlflow.sink import MlflowMetricSink
from bridge.adapters.mlflow.writer import MlflowWriter

__all__ = ["MlflowMetricSink", "MlflowWriter"]
