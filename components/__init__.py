"""The TFX custom components of the pipeline and the trainer modules its Trainers run."""
