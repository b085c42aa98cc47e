"""What a run leaves behind and how it is read back: model versions in the MLflow registry (with
the pyfunc flavor the pusher logs and the resolver that turns a reference into a SavedModel) and
the run report."""
