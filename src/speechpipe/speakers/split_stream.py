"""One split of speaker feature records read with bounded memory: an index of its utterances
(ids only, one pass) and a stream of the features of chosen rows, one record at a time.

The embedder trainer (its validation speakers and the back end's training sample) and the
speaker evaluator (the test split and the validation split its threshold is fitted on) share
it. Neither holds a split's features: what stays in memory is the index (a few dozen bytes per
utterance) and the embeddings of the chosen rows, so a 10^5-utterance validation or test split
costs megabytes, not the tens of gigabytes its spectrograms would.

Both passes read the shards through one tf.data reader whose interleave is deterministic, so
row i of the index is record i of every stream; each streamed record's utterance id is checked
against the index all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Union

import numpy as np
import tensorflow as tf

from speechpipe.io import records
from speechpipe.training import expand_files, parse_example

INDEX_BATCH = 4096  # records parsed at once in the index pass (ids only)


@dataclass
class SplitIndex:
    """One split's utterances in record order, without their features."""

    files: List[str]
    utterances: List[str]
    speakers: List[str]
    sessions: List[str]
    frames: np.ndarray  # int64 [utterances]

    def __len__(self) -> int:
        return len(self.utterances)


def _raw_records(files: Sequence[str]) -> tf.data.Dataset:
    """Serialised records of `files` in one deterministic order (the index and every stream)."""
    compressed = {records.compression_of(f) for f in files}
    if len(compressed) != 1:
        raise ValueError(f"mixed compressed and uncompressed shards: {list(files)[:4]} ...")
    return tf.data.TFRecordDataset(list(files), compression_type=compressed.pop(), num_parallel_reads=tf.data.AUTOTUNE)


def _parse_ids(serialized: tf.Tensor) -> dict:
    spec = {
        records.UTTERANCE: tf.io.FixedLenFeature([], tf.string),
        records.SPEAKER: tf.io.FixedLenFeature([], tf.string),
        records.SESSION: tf.io.FixedLenFeature([], tf.string),
        records.NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
    }
    return tf.io.parse_single_example(serialized, spec)


def read_index(patterns: Union[str, Sequence[str]], min_speakers: int = 1) -> SplitIndex:
    """The index of one or more split folders (TFX's Split-<name>/, a shard manifest's, local or
    a URI) or shard globs; an error when there are no utterances, or fewer than `min_speakers`
    speakers (an EER needs 2: same- and different-speaker trials)."""
    files = expand_files(patterns)
    index = SplitIndex(files, [], [], [], np.zeros(0, np.int64))
    frames: List[np.ndarray] = []
    # Each record's ids are parsed before batching: a batch of whole records would hold
    # INDEX_BATCH spectrograms (hundreds of MB at VoxCeleb lengths).
    ids = _raw_records(files).map(_parse_ids, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for batch in ids.batch(INDEX_BATCH).as_numpy_iterator():
        index.utterances += [u.decode("utf-8") for u in batch[records.UTTERANCE]]
        index.speakers += [s.decode("utf-8") for s in batch[records.SPEAKER]]
        index.sessions += [s.decode("utf-8") for s in batch[records.SESSION]]
        frames.append(batch[records.NUM_FRAMES].astype(np.int64))
    if not index.utterances:
        raise ValueError(f"no utterances in {patterns}")
    index.frames = np.concatenate(frames)
    speakers = len(set(index.speakers))
    if speakers < min_speakers:
        raise ValueError(
            f"the split {patterns} has {speakers} speaker(s): an EER needs at least {min_speakers} speakers"
        )
    return index


def stream_features(index: SplitIndex, rows: Sequence[int]) -> Iterator[np.ndarray]:
    """The features ([frames, bins] float32) of `rows` of `index`, in ascending row order, read
    from its shards one record at a time; the other records are skipped before they are decoded."""
    rows = np.asarray(rows, np.int64)
    if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= len(index)):
        raise ValueError("stream_features: rows must be ascending, distinct and inside the index")
    wanted = np.zeros(len(index), bool)
    wanted[rows] = True
    keep = tf.constant(wanted)
    dataset = (
        _raw_records(index.files)
        .enumerate()
        .filter(lambda i, _: tf.gather(keep, tf.minimum(i, len(index) - 1)) & (i < len(index)))
        .map(lambda i, serialized: (i, parse_example(serialized)), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(8)
    )
    seen = 0
    for row, example in dataset.as_numpy_iterator():
        utterance = example["utterance"].decode("utf-8")
        if row != rows[seen] or utterance != index.utterances[row]:
            raise RuntimeError(
                f"the shards of {index.files[:2]} ... changed since they were indexed: record {row} is "
                f"{utterance!r}, the index has {index.utterances[min(row, len(index) - 1)]!r}"
            )
        seen += 1
        yield example["features"]
    if seen != rows.size:
        raise RuntimeError(
            f"the shards hold {seen} of the {rows.size} indexed utterances asked for: were they rewritten?"
        )
