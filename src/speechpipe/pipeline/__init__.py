"""The Beam jobs (features, pairs) and the TFX pipeline: the DAG builder, its run configuration,
and one runner per orchestrator (local, Kubeflow Pipelines v2 / Vertex AI)."""
