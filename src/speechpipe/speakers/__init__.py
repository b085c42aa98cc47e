"""Speakers: same/different-speaker pairs and VoxCeleb trial lists, the siamese embedder, and the
verification and clustering figures it is judged by."""
