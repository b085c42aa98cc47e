"""The embedder's training input: batches of P speakers x K segments, drawn seeded, for the
in-batch pairwise loss (speechpipe.speakers.embedder.losses)."""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import tensorflow as tf

from speechpipe.speakers.split_data import SplitData
from speechpipe.validation import ConfigError


class SpeakerBatches:
    """P speakers x K segments per batch, speaker-major, seeded: random utterances of each
    speaker, a random `segment_frames` crop of each.

    Utterances shorter than one segment are left out (as the pair builder does). A speaker
    with fewer than K usable utterances gives some twice (other crops)."""

    def __init__(
        self, data: SplitData, segment_frames: int, speakers_per_batch: int, segments_per_speaker: int, seed: int
    ) -> None:
        from speechpipe.speakers.pair_dataset import SegmentTable

        usable = [i for i, f in enumerate(data.features) if f.shape[0] >= segment_frames]
        self.excluded_short = len(data) - len(usable)
        if not usable:
            raise ValueError(f"no training utterance has {segment_frames} frames (one segment)")
        self.table = SegmentTable.from_arrays((data.utterances[i], data.features[i]) for i in usable)
        names = sorted({data.speakers[i] for i in usable})
        if len(names) < speakers_per_batch:
            raise ConfigError(
                f"speakers_per_batch={speakers_per_batch}, but the training split has "
                f"{len(names)} speakers with a usable utterance"
            )
        index = {name: k for k, name in enumerate(names)}
        speaker_of_row = np.array([index[data.speakers[i]] for i in usable])
        self.rows_by_speaker = [np.flatnonzero(speaker_of_row == k) for k in range(len(names))]
        self.speakers = names
        self.segment_frames = segment_frames
        self.p, self.k = speakers_per_batch, segments_per_speaker
        self.seed = seed

    def batches(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        window = np.arange(self.segment_frames)
        table = self.table
        while True:
            speakers = rng.choice(len(self.rows_by_speaker), self.p, replace=False)
            rows = np.concatenate(
                [
                    rng.choice(self.rows_by_speaker[s], self.k, replace=len(self.rows_by_speaker[s]) < self.k)
                    for s in speakers
                ]
            )
            span = table.lengths[rows] - self.segment_frames + 1
            offsets = np.minimum((rng.random(rows.size) * span).astype(np.int64), span - 1)
            x = table.frames[(table.starts[rows] + offsets)[:, None] + window[None, :]].astype(np.float32)
            yield x, np.repeat(speakers, self.k).astype(np.int32)

    def dataset(self) -> tf.data.Dataset:
        n, f, bins = self.p * self.k, self.segment_frames, self.table.n_bins
        return tf.data.Dataset.from_generator(
            self.batches, output_signature=(tf.TensorSpec([n, f, bins], tf.float32), tf.TensorSpec([n], tf.int32))
        ).prefetch(2)
