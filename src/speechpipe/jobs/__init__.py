"""The Beam jobs: features (decode, resample, spectrograms, normalisation, sharded TFRecords),
speaker pairs and trial lists, and batch inference. Each runs on its own (`run(argv)`) or inside
a TFX component; none imports the components or the pipeline above it."""
