"""The embedder's training input streamed from the pair job's speaker blocks
(speechpipe.speakers.block_records): batches of P speakers x K segments, as
the in-batch loss wants, with memory bounded by the buffers below
whatever the corpus's size, from local disk or object storage alike (tf.data reads both).

    block files -> shuffle (seeded, every pass) -> repeat -> interleave(cycle_length files)
      -> shuffle(shuffle_blocks) -> batch(P) -> pick K of each block's S segments, crop
      `segment_frames` at random inside each -> (x [P*K, F, bins] float32, labels [P*K] int32)

Memory: `shuffle_blocks` serialised blocks (1,024 by default: 158 MB of 16-segment blocks at 80
bins, 99 MB of the demo's 10-segment ones), `cycle_length` open files with their read buffers
(and GZIP state), and a few batches in flight; not the number or size of the files. Measured on
2 cores (bench/bench_speaker_blocks.py): 270-380 MB above TensorFlow's own 590 MB, and 47k-64k
segments/s from uncompressed shards (8k with GZIP).

Two blocks of one speaker can land in one batch: they carry the same label, so the loss takes
their pairs as same-speaker pairs, which they are. With uniform draws that happens for
C(P, 2) / speakers speaker pairs per batch: 0.71 on the demo's 168 training speakers (P = 16),
0.02 on VoxCeleb2's 5,994.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import tensorflow as tf

from speechpipe.speakers import block_records as fmt
from speechpipe.validation import ConfigError

SHUFFLE_BLOCKS = 1024  # 64 batches of P = 16
CYCLE_LENGTH = 8  # files read at once; each shard is already in random order
READ_BUFFER_BYTES = 1 << 20


def block_files(patterns: Union[str, Sequence[str]]) -> List[str]:
    """The block shards of one or more folders (the pair job's --out, its blocks/<split>/, a shard
    folder, or an Examples artifact's Split-train whose manifest lists them) or globs, local or
    URI, sorted; FileNotFoundError when there are none."""
    from speechpipe.io import records

    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: List[str] = []
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        folder = pattern.removesuffix("/*")
        if tf.io.gfile.exists(records.manifest_path(folder)):  # a split folder listing shards elsewhere
            found = records.split_shards(folder, records.FILEIO, fmt.BLOCKS_PATTERN)
        elif tf.io.gfile.isdir(pattern):
            found = tf.io.gfile.glob(f"{pattern}/{fmt.BLOCKS_PATTERN}")
            if not found:  # the pair job's --out: the training split's blocks
                found = tf.io.gfile.glob(f"{pattern}/{fmt.BLOCKS_DIR}/train/{fmt.BLOCKS_PATTERN}")
        else:
            found = tf.io.gfile.glob(pattern)
        files += sorted(found)
    if not files:
        raise FileNotFoundError(f"no speaker blocks ({fmt.BLOCKS_PATTERN}) in {patterns}")
    return files


def compression_of(files: Sequence[str]) -> str:
    """TF's compression_type of the shards, from their names (GZIP when they end in .gz)."""
    kinds = {"GZIP" if f.endswith(fmt.GZIP_SUFFIX) else "" for f in files}
    if len(kinds) != 1:
        raise ValueError(f"mixed compressed and uncompressed block shards: {list(files)[:4]} ...")
    return kinds.pop()


def block_header(files: Sequence[str]) -> Dict[str, int]:
    """max_segments, stored_frames and num_bins of the first block: the shapes every block has."""
    for path in files:
        for serialized in tf.data.TFRecordDataset(path, compression_of([path])).take(1):
            block = fmt.decode_block(serialized.numpy())
            return {
                "max_segments": block.max_segments,
                "stored_frames": int(block.segments.shape[1]),
                "num_bins": int(block.segments.shape[2]),
            }
    raise FileNotFoundError(f"no block in any of the {len(files)} files (all empty)")


def _parse_batch(
    index: tf.Tensor,
    serialized: tf.Tensor,
    seed: int,
    segment_frames: int,
    k: int,
    header: Dict[str, int],
) -> Tuple[tf.Tensor, tf.Tensor]:
    """P serialised blocks -> K segments of each, speaker-major: ([P*K, F, bins], [P*K])."""
    s_max, stored, bins = header["max_segments"], header["stored_frames"], header["num_bins"]
    spec = {
        fmt.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        fmt.NUM_SEGMENTS_KEY: tf.io.FixedLenFeature([], tf.int64),
        fmt.LENGTHS_KEY: tf.io.VarLenFeature(tf.int64),
        fmt.SEGMENTS_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    parsed = tf.io.parse_example(serialized, spec)
    p = tf.shape(serialized)[0]
    counts = tf.cast(parsed[fmt.NUM_SEGMENTS_KEY], tf.int32)
    checks = [
        tf.debugging.assert_greater_equal(
            counts, k, message=f"a block holds fewer segments than segments_per_speaker={k}"
        )
    ]
    with tf.control_dependencies(checks):
        # Blocks of speakers with fewer than max_segments utterances are shorter: padded with zeros.
        # As uint16 (the padded decoder has no float16 kernel), then reinterpreted.
        segments = tf.io.decode_raw(
            parsed[fmt.SEGMENTS_KEY], tf.uint16, little_endian=True, fixed_length=s_max * stored * bins * 2
        )
    segments = tf.bitcast(segments, tf.float16)
    segments = tf.reshape(segments, [-1, bins])  # [P * s_max * stored, bins]
    lengths = tf.sparse.to_dense(parsed[fmt.LENGTHS_KEY])  # [P, S of the longest block]
    lengths = tf.pad(lengths, [[0, 0], [0, s_max - tf.shape(lengths)[1]]])
    seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), index]), 2)
    # K of each block's S segments without replacement: the K smallest of S uniform draws.
    draws = tf.random.stateless_uniform([p, s_max], seeds[0])
    draws = tf.where(tf.range(s_max)[None, :] < counts[:, None], draws, 2.0)
    picked = tf.math.top_k(-draws, k, sorted=False).indices  # [P, K]
    valid = tf.cast(tf.gather(lengths, picked, batch_dims=1), tf.int32)  # frames of each picked segment
    span = valid - segment_frames + 1
    with tf.control_dependencies(
        [
            tf.debugging.assert_positive(
                span, message=f"a stored segment is shorter than segment_frames={segment_frames}"
            )
        ]
    ):
        span = tf.identity(span)
    offsets = tf.minimum(
        tf.cast(tf.random.stateless_uniform([p, k], seeds[1]) * tf.cast(span, tf.float32), tf.int32), span - 1
    )
    first_row = ((tf.range(p)[:, None] * s_max + picked) * stored + offsets)[:, :, None]  # [P, K, 1]
    x = tf.gather(segments, first_row + tf.range(segment_frames)[None, None, :])  # [P, K, F, bins]
    x = tf.reshape(tf.cast(x, tf.float32), [-1, segment_frames, bins])
    labels = tf.repeat(tf.cast(parsed[fmt.LABEL_KEY], tf.int32), k)
    return x, labels


def block_dataset(
    patterns: Union[str, Sequence[str]],
    segment_frames: int,
    speakers_per_batch: int,
    segments_per_speaker: int,
    seed: int = 0,
    shuffle_blocks: int = SHUFFLE_BLOCKS,
    cycle_length: int = CYCLE_LENGTH,
) -> tf.data.Dataset:
    """Endless batches (x [P*K, segment_frames, bins] float32, speaker labels [P*K] int32),
    speaker-major (K rows per block), from the block shards `patterns` name (`block_files`): a
    the embedder trainer's input. The same seed gives the same batches."""
    if speakers_per_batch < 1 or segments_per_speaker < 1 or shuffle_blocks < 1 or cycle_length < 1:
        raise ConfigError(
            f"speakers_per_batch={speakers_per_batch}, segments_per_speaker={segments_per_speaker}, "
            f"shuffle_blocks={shuffle_blocks}, cycle_length={cycle_length}: need >= 1"
        )
    files = block_files(patterns)
    compression = compression_of(files)
    header = block_header(files)
    if segments_per_speaker > header["max_segments"]:
        raise ConfigError(
            f"segments_per_speaker={segments_per_speaker}, but the blocks hold at most {header['max_segments']} "
            "segments: write them with --segments_per_speaker to match"
        )
    if not 1 <= segment_frames <= header["stored_frames"]:
        raise ConfigError(f"segment_frames={segment_frames}: the blocks store {header['stored_frames']} frames")
    p, k = speakers_per_batch, segments_per_speaker
    shapes = ([p * k, segment_frames, header["num_bins"]], [p * k])

    def parse(index: tf.Tensor, serialized: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        x, labels = _parse_batch(index, serialized, seed, segment_frames, k, header)
        return tf.ensure_shape(x, shapes[0]), tf.ensure_shape(labels, shapes[1])

    return (
        tf.data.Dataset.from_tensor_slices(files)
        .shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .interleave(
            lambda path: tf.data.TFRecordDataset(path, compression, buffer_size=READ_BUFFER_BYTES),
            cycle_length=min(cycle_length, len(files)),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .shuffle(shuffle_blocks, seed=seed, reshuffle_each_iteration=True)
        .batch(p, drop_remainder=True)
        .enumerate()
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(2)
    )
