"""MLflow backend: ``mlflow:TRACKING_URI`` as a destination."""

from bridge.adapters.mlflow.writer import MlflowMetricSink, MlflowWriter

__all__ = ["MlflowMetricSink", "MlflowWriter"]
