"""Using the pushed models: resolving a registry reference to a SavedModel, the MLflow pyfunc
flavor the pusher logs (raw waveforms in, phones or embeddings out), the decision threshold a
speaker model ships with, and the commands that transcribe, verify, embed and cluster."""
