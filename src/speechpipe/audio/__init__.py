"""Reading audio and computing features: decoding and resampling, the corpus readers (VoxCeleb
layout, JSON Lines manifests, Kaldi data directories), spectrograms and their normalisation, and
the same features inside a TensorFlow graph for serving, and waveforms padded into one batch."""
