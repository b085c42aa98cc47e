"""speechpipe: a distributed speech data-and-training pipeline (Beam feature and pair jobs, TFX
training of a CTC phone recogniser and a siamese speaker embedder, evaluation, gating, and an
MLflow model registry)."""
