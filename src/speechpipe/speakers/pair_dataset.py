"""The trainer's side of the pair design: pair references -> segment pairs, in tf.data.

The pair job (`speechpipe pairs`) writes references, `(label, utterance_a, utterance_b)`, not
segments: a reference takes ~18 bytes on disk where a joined pair of two 40 x 80 float32
segments takes ~24 KB, and resolving references is faster than reading joined pairs (bench
figures in docs/pairs.md). The trainer holds the features of a split once, in a `SegmentTable`
(every frame of every utterance in one array, and where each utterance starts), and cuts the
segments while it reads the pairs:

* **Order**: the references of a split are resolved to table rows once (`PairReferences`, 9
  bytes a pair in memory), and each training epoch visits them in a full permutation drawn
  from (seed, epoch) -- a global shuffle, which a shuffle buffer over joined segment records
  could not afford.
* **Training crops**: each segment starts at a frame drawn uniformly from
  [0, num_frames - 40], per pair, from a stateless RNG keyed by (seed, epoch, batch): every
  epoch sees other crops of the same pairs, and a seed gives the same crops on every run.
* **Evaluation** (`training=False`): the centred segment, offset (num_frames - 40) // 2. For
  utterance-level embeddings, `utterance_windows` cuts every window with a hop of `eval_hop`
  frames (default 20, half a segment), plus one window aligned to the end when the hop does
  not reach it, so no frame is left out.
* **Short utterances**: the pair job excludes utterances shorter than one segment (and lists
  them), so a reference never points at one; the table checks this and fails loudly if not.

At VoxCeleb2 scale the table (every frame, float32) does not fit in memory; `save` writes it as
a .npy that `load(mmap=True)` maps from disk, and the same dataset code gathers from the map
(`max_frames` keeps only a centred crop of long utterances to shrink it further).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from speechpipe.speakers.pairs import LABEL_KEY, UTTERANCE_A_KEY, UTTERANCE_B_KEY

SEGMENT_FRAMES = 40  # seed 002's 40-frame segments
EVAL_HOP = 20

_TABLE_FRAMES = "frames.npy"
_TABLE_INDEX = "index.npz"
_TABLE_UTTERANCES = "utterances.json"


class MissingUtteranceError(KeyError):
    """A pair references an utterance the segment table does not hold."""


@dataclass
class SegmentTable:
    """Every frame of a set of utterances, concatenated: utterance k is
    frames[starts[k] : starts[k] + lengths[k]]."""

    utterances: Tuple[str, ...]
    starts: np.ndarray  # int64 [n]
    lengths: np.ndarray  # int64 [n]
    frames: np.ndarray  # [total frames, bins], float32 or float16; may be a np.memmap

    def __post_init__(self) -> None:
        if len(set(self.utterances)) != len(self.utterances):
            raise ValueError("segment table: an utterance id is repeated")
        if not (len(self.utterances) == len(self.starts) == len(self.lengths)):
            raise ValueError("segment table: utterances, starts and lengths differ in length")
        self._row = {u: k for k, u in enumerate(self.utterances)}

    @property
    def n_bins(self) -> int:
        return int(self.frames.shape[1])

    @property
    def memory_mapped(self) -> bool:
        return isinstance(self.frames, np.memmap)

    @classmethod
    def from_arrays(
        cls, items: Iterable[Tuple[str, np.ndarray]], dtype=np.float32, max_frames: Optional[int] = None
    ) -> "SegmentTable":
        """From (utterance, [frames, bins] array) pairs. `max_frames` keeps a centred crop."""
        names: List[str] = []
        arrays: List[np.ndarray] = []
        for name, array in items:
            array = np.asarray(array)
            if array.ndim != 2:
                raise ValueError(f"{name}: features must be [frames, bins], got shape {array.shape}")
            if max_frames is not None and array.shape[0] > max_frames:
                start = (array.shape[0] - max_frames) // 2
                array = array[start : start + max_frames]
            names.append(name)
            arrays.append(array.astype(dtype, copy=False))
        if not arrays:
            raise ValueError("segment table: no utterances")
        bins = {a.shape[1] for a in arrays}
        if len(bins) != 1:
            raise ValueError(f"segment table: utterances differ in bins: {sorted(bins)}")
        lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return cls(tuple(names), starts, lengths, np.concatenate(arrays, axis=0))

    @classmethod
    def from_feature_records(
        cls, features_dir: str, splits: Sequence[str], dtype=np.float32, max_frames: Optional[int] = None
    ) -> "SegmentTable":
        """From the feature job's Split-<split>/data_tfrecord-* shards, or the shards an
        ExamplesUnion's split manifest lists (both found by speechpipe.io.records.shard_paths),
        decoded by speechpipe.io.records (so the table follows that module's record format)."""
        from speechpipe.io import records

        if not any(records.shard_paths(features_dir, split) for split in splits):
            raise FileNotFoundError(f"no feature records for {', '.join(splits)} under {features_dir}")
        return cls.from_arrays(
            ((u.utterance, u.features) for split in splits for u in records.read_split(features_dir, split)),
            dtype=dtype,
            max_frames=max_frames,
        )

    def save(self, folder: str) -> None:
        """frames.npy (memory-mappable), index.npz and utterances.json."""
        os.makedirs(folder, exist_ok=True)
        np.save(os.path.join(folder, _TABLE_FRAMES), np.asarray(self.frames))
        np.savez(os.path.join(folder, _TABLE_INDEX), starts=self.starts, lengths=self.lengths)
        with open(os.path.join(folder, _TABLE_UTTERANCES), "w", encoding="utf-8") as f:
            json.dump(list(self.utterances), f)

    @classmethod
    def load(cls, folder: str, mmap: bool = False) -> "SegmentTable":
        with open(os.path.join(folder, _TABLE_UTTERANCES), encoding="utf-8") as f:
            utterances = tuple(json.load(f))
        index = np.load(os.path.join(folder, _TABLE_INDEX))
        frames = np.load(os.path.join(folder, _TABLE_FRAMES), mmap_mode="r" if mmap else None)
        return cls(utterances, index["starts"], index["lengths"], frames)

    def features(self, utterance: str) -> np.ndarray:
        k = self.row(utterance)
        return np.asarray(self.frames[self.starts[k] : self.starts[k] + self.lengths[k]])

    def row(self, utterance: str) -> int:
        try:
            return self._row[utterance]
        except KeyError:
            raise MissingUtteranceError(f"utterance {utterance!r} is not in the segment table") from None


def training_offsets(lengths: np.ndarray, uniform: np.ndarray, segment_frames: int = SEGMENT_FRAMES) -> np.ndarray:
    """The training rule in numpy (the dataset computes the same in TensorFlow): a uniform
    u in [0, 1) picks a start in [0, length - segment_frames]."""
    span = lengths - segment_frames + 1
    return np.minimum((uniform * span).astype(np.int64), span - 1)


def evaluation_offsets(lengths: np.ndarray, segment_frames: int = SEGMENT_FRAMES) -> np.ndarray:
    """The centred segment's start."""
    return (lengths - segment_frames) // 2


def utterance_windows(features: np.ndarray, segment_frames: int = SEGMENT_FRAMES, hop: int = EVAL_HOP) -> np.ndarray:
    """Every `segment_frames` window of an utterance with `hop` frames between starts, and one
    more aligned to the end when the hop does not land there: [windows, segment_frames, bins].
    An utterance shorter than one segment is an error (the pair job excludes those)."""
    frames = features.shape[0]
    if frames < segment_frames:
        raise ValueError(f"{frames} frames: shorter than one segment ({segment_frames})")
    if hop < 1:
        raise ValueError(f"hop={hop}: need at least 1")
    starts = list(range(0, frames - segment_frames + 1, hop))
    if starts[-1] != frames - segment_frames:
        starts.append(frames - segment_frames)
    return np.stack([features[s : s + segment_frames] for s in starts])


@dataclass
class PairReferences:
    """A split's pairs resolved to segment-table rows once, when training starts: 9 bytes a
    pair in memory (two int32 rows and an int8 label), so that even 10 million pairs take
    90 MB and every epoch can be a full, seeded shuffle of all of them."""

    rows_a: np.ndarray  # int32 [pairs]
    rows_b: np.ndarray  # int32 [pairs]
    labels: np.ndarray  # int8 [pairs], 1 same speaker, 0 different

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def read(
        cls, files: Sequence[str], table: SegmentTable, segment_frames: int = SEGMENT_FRAMES, chunk: int = 65536
    ) -> "PairReferences":
        """Reads the pair job's GZIP TFRecords and resolves their utterances in `table`.

        A reference to an utterance the table lacks, or to one shorter than a segment, raises
        MissingUtteranceError / ValueError naming it: the mistake shows before training."""
        import tensorflow as tf

        if not files:
            raise ValueError("PairReferences.read: no pair files")
        spec = {
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            UTTERANCE_A_KEY: tf.io.FixedLenFeature([], tf.string),
            UTTERANCE_B_KEY: tf.io.FixedLenFeature([], tf.string),
        }
        lookup = _lookup_table(table)

        def parse(records):
            parsed = tf.io.parse_example(records, spec)
            return (
                lookup.lookup(parsed[UTTERANCE_A_KEY]),
                lookup.lookup(parsed[UTTERANCE_B_KEY]),
                parsed[LABEL_KEY],
                parsed[UTTERANCE_A_KEY],
                parsed[UTTERANCE_B_KEY],
            )

        dataset = (
            tf.data.TFRecordDataset(list(files), compression_type="GZIP", buffer_size=4 << 20)
            .batch(chunk)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        )
        rows_a, rows_b, labels = [], [], []
        for a, b, label, names_a, names_b in dataset.as_numpy_iterator():
            for rows, names in ((a, names_a), (b, names_b)):
                if (rows < 0).any():
                    name = names[int(np.argmax(rows < 0))].decode("utf-8")
                    raise MissingUtteranceError(f"a pair references {name!r}, which the segment table lacks")
                short = table.lengths[rows] < segment_frames
                if short.any():
                    name = names[int(np.argmax(short))].decode("utf-8")
                    raise ValueError(f"a pair references {name!r}, shorter than one segment ({segment_frames} frames)")
            if not np.isin(label, (0, 1)).all():
                raise ValueError("a pair record has a label other than 0 or 1")
            rows_a.append(a.astype(np.int32))
            rows_b.append(b.astype(np.int32))
            labels.append(label.astype(np.int8))
        if not labels:
            return cls(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8))
        return cls(np.concatenate(rows_a), np.concatenate(rows_b), np.concatenate(labels))


def _lookup_table(table: SegmentTable):
    import tensorflow as tf

    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(table.utterances), tf.range(len(table.utterances), dtype=tf.int64)
        ),
        default_value=-1,
    )


def pair_dataset(
    references: "PairReferences | Sequence[str]",
    table: SegmentTable,
    segment_frames: int = SEGMENT_FRAMES,
    batch_size: int = 128,
    training: bool = True,
    seed: int = 0,
    epoch: int = 0,
    repeat: bool = False,
    drop_remainder: bool = False,
):
    """((segments_a [B, frames, bins], segments_b [B, frames, bins]), labels [B] int32) batches.

    `references` is a PairReferences or the pair job's files (pairs/<split>/pairs-*.tfrecord.gz).
    Training visits the pairs in a full permutation drawn from (seed, epoch) and crops from
    (seed, epoch, batch); `repeat=True` runs epoch, epoch + 1, ... with new permutations and
    crops (use steps_per_epoch), or pass another `epoch` to each call. Evaluation keeps the file
    order and uses centred segments. Everything is stateless: a seed gives the same batches on
    every run, whatever the parallelism."""
    import tensorflow as tf

    if not isinstance(references, PairReferences):
        references = PairReferences.read(list(references), table, segment_frames)
    n = len(references)
    if n == 0:
        raise ValueError("pair_dataset: no pairs")
    rows_a = tf.constant(references.rows_a)
    rows_b = tf.constant(references.rows_b)
    labels = tf.constant(references.labels)
    starts = tf.constant(table.starts, tf.int64)
    lengths = tf.constant(table.lengths, tf.int64)
    dtype = tf.as_dtype(table.frames.dtype)
    bins = table.n_bins
    window = tf.range(segment_frames, dtype=tf.int64)
    if table.memory_mapped:
        mapped = table.frames

        def gather(index):  # [B, frames] rows -> [B, frames, bins], read from the mapped file
            out = tf.numpy_function(lambda i: np.ascontiguousarray(mapped[i]), [index], dtype, stateful=False)
            out.set_shape([None, segment_frames, bins])
            return out
    else:
        # A variable, not a constant: a captured constant is copied into the dataset's graph,
        # which protobuf limits to 2 GB.
        with tf.device("/cpu:0"):
            frames = tf.Variable(table.frames, trainable=False, name="segment_table")

        def gather(index):
            # sparse_read gathers from the variable in place; tf.gather would first read
            # (snapshot) the whole table for every batch.
            return frames.sparse_read(index)

    def resolve(epoch_number, positions):
        if training:
            index = tf.random.experimental.index_shuffle(
                positions, tf.stack([tf.constant(seed, tf.int64), epoch_number]), tf.constant(n - 1, tf.int64)
            )
        else:
            index = positions
        segments = []
        for stream, rows_of in enumerate((rows_a, rows_b)):
            rows = tf.cast(tf.gather(rows_of, index), tf.int64)
            length = tf.gather(lengths, rows)
            if training:
                uniform = tf.random.stateless_uniform(
                    tf.shape(rows),
                    dtype=tf.float64,
                    seed=tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + epoch_number, positions[0] * 2 + stream]),
                )
                span = length - segment_frames + 1
                offset = tf.minimum(tf.cast(uniform * tf.cast(span, tf.float64), tf.int64), span - 1)
            else:
                offset = (length - segment_frames) // 2
            first = tf.gather(starts, rows) + offset
            segments.append(gather(first[:, None] + window[None, :]))
        return (segments[0], segments[1]), tf.cast(tf.gather(labels, index), tf.int32)

    def one_epoch(epoch_number):
        positions = tf.data.Dataset.range(n).batch(batch_size, drop_remainder=drop_remainder)
        return positions.map(lambda p: (epoch_number, p))

    if repeat:
        dataset = tf.data.Dataset.range(epoch, 1 << 62).flat_map(one_epoch)
    else:
        dataset = one_epoch(tf.constant(epoch, tf.int64))
    dataset = dataset.map(resolve, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
