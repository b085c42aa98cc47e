"""Speaker blocks: the embedder's streamed training input, written by the pair job
(speechpipe.jobs.speaker_blocks) and read by tf.data (speechpipe.speakers.speaker_blocks).

Shards: `blocks/<split>/blocks-SSSSS-of-NNNNN.tfrecord` (`.tfrecord.gz` when written with gzip).

A block is `stored_segments` crops of ONE speaker, each from a different utterance where the
speaker has that many (sessions interleaved, so a block spans as many sessions as it can), each
`stored_frames` long so that the reader can pick `segments_per_speaker` (K) of them and jitter a
`segment_frames` crop inside each. A batch of P blocks is then P speakers x K segments, as the
in-batch loss wants, read from shards in any order: the trainer's memory is its shuffle buffer,
not the corpus.

Record: a tf.train.Example, framed as TFRecord, built here without TensorFlow (the Beam workers
stay light; speechpipe.io.example_proto):

    speaker        bytes           the speaker id
    label          int64           the speaker's index among the split's speakers, sorted by id
                                   (what the loss compares; < 2^31, so int32 holds it)
    block          int64           0 .. blocks_per_speaker - 1
    utterances     bytes [S]       the utterance of each stored segment
    sessions       bytes [S]       its session
    lengths        int64 [S]       valid frames of each segment: stored_frames, or fewer for an
                                   utterance shorter than that (zero-padded up to stored_frames)
    segments       bytes           float16 little-endian [S, stored_frames, num_bins], row-major
    num_segments   int64           S: min(stored_segments, max(K, utterances of the speaker))
    max_segments   int64           stored_segments (the largest S of any block), for the reader's
                                   fixed shapes
    stored_frames  int64
    num_bins       int64

Every random draw comes from a generator seeded by a keyed hash of the seed and what is drawn
(speaker, utterance), so a seed gives the same blocks on any runner and worker layout, and
another seed gives fresh ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from speechpipe.validation import ConfigError

# Output layout, under the pair job's --out.
BLOCKS_DIR = "blocks"
BLOCKS_PREFIX = "blocks"
BLOCKS_SUFFIX = ".tfrecord"
GZIP_SUFFIX = ".gz"
BLOCKS_PATTERN = f"{BLOCKS_PREFIX}-*-of-*{BLOCKS_SUFFIX}*"  # either

# Example keys.
SPEAKER_KEY = "speaker"
LABEL_KEY = "label"
BLOCK_KEY = "block"
UTTERANCES_KEY = "utterances"
SESSIONS_KEY = "sessions"
LENGTHS_KEY = "lengths"
SEGMENTS_KEY = "segments"
NUM_SEGMENTS_KEY = "num_segments"
MAX_SEGMENTS_KEY = "max_segments"
STORED_FRAMES_KEY = "stored_frames"
NUM_BINS_KEY = "num_bins"
SEGMENTS_DTYPE = "<f2"  # half the bytes of the feature records; log-spectra need no more precision

# Bytes a block holds besides its segments (ids, lengths, framing), for the shard-size estimate.
BLOCK_OVERHEAD_BYTES = 256
SEGMENT_OVERHEAD_BYTES = 64


@dataclass(frozen=True)
class BlockConfig:
    """How the pair job writes speaker blocks. Sizes per block and per corpus: docs/pairs.md."""

    segments_per_speaker: int = 8  # K: the segments per speaker a batch takes (the trainer's K)
    # Segments stored per block (at most; fewer for a speaker with fewer utterances, never fewer
    # than K): 2K, so the reader picks a fresh K-subset on every pass over the block.
    stored_segments: int = 16
    # Every speaker gets the same number of blocks, so sampling blocks uniformly samples speakers
    # uniformly. 16 stores each demo utterance (10 per speaker) 16 times at 60 frames, more
    # than its ~270 frames; VoxCeleb2 (~180 utterances per speaker) gets 1.4 crops per utterance
    # and is better served by 64 (docs/pairs.md).
    blocks_per_speaker: int = 16
    segment_frames: int = 40  # the embedder's segment; shorter utterances are excluded
    # Frames stored per segment: 1.5 segments, so that the reader's crop moves by up to 20 frames.
    stored_frames: int = 60
    # Shards of about this size: large enough for object storage's per-request cost, small enough
    # that a pass over the file list visits many of them.
    shard_mb: float = 128.0
    # GZIP saves ~12 % on float16 spectra and costs the reader most of its speed (2 cores: 42k
    # segments/s uncompressed, 5-10k with GZIP; bench/bench_speaker_blocks.py): off by default.
    gzip: bool = False
    seed: int = 0

    def validate(self) -> "BlockConfig":
        if self.segments_per_speaker < 1 or self.blocks_per_speaker < 1:
            raise ConfigError(
                f"segments_per_speaker={self.segments_per_speaker}, blocks_per_speaker={self.blocks_per_speaker}: "
                "need >= 1"
            )
        if self.stored_segments < self.segments_per_speaker:
            raise ConfigError(
                f"stored_segments={self.stored_segments}: need >= segments_per_speaker ({self.segments_per_speaker})"
            )
        if self.segment_frames < 1 or self.stored_frames < self.segment_frames:
            raise ConfigError(
                f"stored_frames={self.stored_frames}, segment_frames={self.segment_frames}: "
                "need 1 <= segment_frames <= stored_frames"
            )
        if not self.shard_mb > 0:
            raise ConfigError(f"shard_mb={self.shard_mb}: need > 0")
        return self

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    def segments_for(self, utterances: int) -> int:
        """S for a speaker with `utterances` usable utterances: one segment each, up to
        stored_segments; K at least (repeating utterances, with other crops)."""
        return min(self.stored_segments, max(self.segments_per_speaker, utterances))

    def uses_per_utterance(self, utterances: int) -> int:
        """Crops each utterance of such a speaker gives: enough for every block (the block plan
        uses each utterance floor or ceil of B*S/n times; a crop left over is dropped)."""
        return math.ceil(self.blocks_per_speaker * self.segments_for(utterances) / utterances)

    def block_bytes(self, utterances: int, n_bins: int) -> int:
        """A block's size on disk, uncompressed, for a speaker with `utterances` utterances."""
        segments = self.segments_for(utterances)
        return BLOCK_OVERHEAD_BYTES + segments * (self.stored_frames * n_bins * 2 + SEGMENT_OVERHEAD_BYTES)

    def shard_count(self, total_bytes: int) -> int:
        return max(1, math.ceil(total_bytes / (self.shard_mb * (1 << 20))))


# ---------------------------------------------------------------------------------- sampling


def keyed_hash(seed: int, *parts: object) -> bytes:
    """A stable 16-byte hash of the seed and `parts` (the same on every machine and run)."""
    text = "/".join(["speechpipe.speakers.block_records", str(seed), *map(str, parts)])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(keyed_hash(seed, *parts), "little"))


def crop_offsets(frames: int, stored_frames: int, uses: int, rng: np.random.Generator) -> np.ndarray:
    """`uses` crop starts over an utterance of `frames` frames, stratified: one uniform draw in
    each of `uses` equal parts of [0, frames - stored_frames], so the crops cover the utterance
    instead of bunching. 0 for an utterance no longer than one stored segment."""
    span = frames - stored_frames
    if span <= 0:
        return np.zeros(uses, np.int64)
    edges = (span + 1) * np.arange(uses + 1) / uses
    return np.minimum(np.floor(edges[:-1] + rng.random(uses) * np.diff(edges)).astype(np.int64), span)


def crop_utterance(
    features: np.ndarray, uses: int, stored_frames: int, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """An utterance's stored crops: (lengths [uses] int64, float16 [uses, stored_frames, bins]).
    An utterance shorter than stored_frames is stored whole, zero-padded, with its length."""
    frames, bins = features.shape
    offsets = crop_offsets(frames, stored_frames, uses, rng)
    length = min(frames, stored_frames)
    crops = np.zeros((uses, stored_frames, bins), SEGMENTS_DTYPE)
    for i, start in enumerate(offsets):
        crops[i, :length] = features[start : start + length]
    if not np.isfinite(crops).all():
        raise ValueError("features overflow float16 (|value| > 65504): are they log-spectra?")
    return np.full(uses, length, np.int64), crops


def block_order(utterances: Sequence[Tuple[str, str]], seed: int, speaker: str) -> List[int]:
    """A seeded order of a speaker's (utterance, session) items with its sessions interleaved
    (one of each session in turn, sessions and utterances in random order), so that consecutive
    items, hence each block, come from as many sessions as the speaker has."""
    rng = rng_for(seed, "order", speaker)
    by_session: Dict[str, List[int]] = {}
    for index in sorted(range(len(utterances)), key=lambda i: utterances[i]):
        by_session.setdefault(utterances[index][1], []).append(index)
    queues = [list(rng.permutation(by_session[s])) for s in sorted(by_session)]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    order: List[int] = []
    while queues:
        order += [int(q.pop(0)) for q in queues]
        queues = [q for q in queues if q]
    return order


def block_positions(utterances: int, config: BlockConfig) -> List[List[int]]:
    """Positions in `block_order` of each block's segments: block b takes the S consecutive
    positions from b*S on, cyclically. S <= n gives S distinct utterances per block, and every
    utterance is used floor or ceil of B*S/n times (at most `uses_per_utterance`)."""
    s = config.segments_for(utterances)
    return [[(b * s + j) % utterances for j in range(s)] for b in range(config.blocks_per_speaker)]


def shard_of(seed: int, speaker: str, block: int, shards: int) -> int:
    """The shard a block goes to: uniform at random (a keyed hash), independent of its speaker's."""
    return int.from_bytes(keyed_hash(seed, "shard", speaker, block)[:8], "little") % shards


def shard_name(prefix: str, index: int, count: int, gzip: bool = False) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}{BLOCKS_SUFFIX}{GZIP_SUFFIX if gzip else ''}"


# ---------------------------------------------------------------------------------- the record


@dataclass
class SpeakerBlock:
    """One decoded block (for tests and tools; the trainer reads blocks with tf.data)."""

    speaker: str
    label: int
    block: int
    utterances: List[str]
    sessions: List[str]
    lengths: np.ndarray  # int64 [S]
    segments: np.ndarray  # float16 [S, stored_frames, bins]
    max_segments: int


def encode_block(block: SpeakerBlock) -> bytes:
    """A serialised tf.train.Example (keys above), deterministic."""
    from speechpipe.io.example_proto import BytesList, Example, Feature, Features, Int64List

    def _strings(values: Sequence[str]) -> Feature:
        return Feature(bytes_list=BytesList(value=[v.encode("utf-8") for v in values]))

    def _ints(values: Sequence[int]) -> Feature:
        return Feature(int64_list=Int64List(value=[int(v) for v in values]))

    segments, stored_frames, bins = block.segments.shape
    feature = {
        SPEAKER_KEY: _strings([block.speaker]),
        LABEL_KEY: _ints([block.label]),
        BLOCK_KEY: _ints([block.block]),
        UTTERANCES_KEY: _strings(block.utterances),
        SESSIONS_KEY: _strings(block.sessions),
        LENGTHS_KEY: _ints(block.lengths),
        SEGMENTS_KEY: Feature(
            bytes_list=BytesList(value=[np.ascontiguousarray(block.segments, SEGMENTS_DTYPE).tobytes()])
        ),
        NUM_SEGMENTS_KEY: _ints([segments]),
        MAX_SEGMENTS_KEY: _ints([block.max_segments]),
        STORED_FRAMES_KEY: _ints([stored_frames]),
        NUM_BINS_KEY: _ints([bins]),
    }
    return Example(features=Features(feature=feature)).SerializeToString(deterministic=True)


def decode_block(serialized: bytes) -> SpeakerBlock:
    from speechpipe.io.example_proto import Example

    f = Example.FromString(serialized).features.feature

    def _int(key: str) -> int:
        return int(f[key].int64_list.value[0])

    def _strings(key: str) -> List[str]:
        return [v.decode("utf-8") for v in f[key].bytes_list.value]

    shape = (_int(NUM_SEGMENTS_KEY), _int(STORED_FRAMES_KEY), _int(NUM_BINS_KEY))
    return SpeakerBlock(
        speaker=_strings(SPEAKER_KEY)[0],
        label=_int(LABEL_KEY),
        block=_int(BLOCK_KEY),
        utterances=_strings(UTTERANCES_KEY),
        sessions=_strings(SESSIONS_KEY),
        lengths=np.array(f[LENGTHS_KEY].int64_list.value, np.int64),
        segments=np.frombuffer(f[SEGMENTS_KEY].bytes_list.value[0], SEGMENTS_DTYPE).reshape(shape),
        max_segments=_int(MAX_SEGMENTS_KEY),
    )


def read_block_file(path: str) -> List[SpeakerBlock]:
    """Every block of one shard, local or on any filesystem Beam knows."""
    from speechpipe.io.example_proto import read_tfrecord_file

    return [decode_block(record) for record in read_tfrecord_file(path)]
