"""What a run leaves behind: model versions in the MLflow registry and the run report."""
