"""The TFX pipeline: the DAG builder, its run configuration, span discovery and schedules, and one
runner per orchestrator (local, Kubeflow Pipelines v2 / Vertex AI)."""
