"""The feature job's record format: one tf.train.Example per utterance.

Layout of a feature job's output folder (TFX's Examples layout, so ImportExampleGen and the
trainers read it unchanged):
    <out>/Split-<split>/data_tfrecord-SSSSS-of-NNNNN[.gz]   TFRecords, GZIP when named .gz
    <out>/summary.json, <out>/global_stats.json, <out>/dead_letter/*.jsonl
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np

# Feature keys; src/speechpipe/schemas/features.pbtxt describes the same keys for TFDV.
UTTERANCE = "utterance"
SPEAKER = "speaker"
SESSION = "session"
SPLIT = "split"
NUM_FRAMES = "num_frames"
NUM_BINS = "num_bins"
# The feature matrix as raw little-endian float32 bytes, num_frames x num_bins, row-major: a
# FloatList costs more to build than decoding and computing the features together, and TF reads
# bytes back with tf.io.decode_raw.
FEATURES = "features"
FEATURES_DTYPE = "<f4"
DURATION = "duration"  # seconds of audio after resampling
PHONE_IDS = "phone_ids"  # int64 list; absent when the input has no transcript
PHONES = "phones"  # phones joined by spaces; absent when the input has no transcript
TEXT = "text"  # absent when the input has no text

SPLIT_DIR = "Split-{split}"
SHARD_PREFIX = "data_tfrecord"
# Uncompressed by default: GZIP saves 8 % on float spectrograms (146 -> 134 MB on the demo
# training split) and cost a quarter of the feature job's time.
COMPRESSIONS = ("none", "gzip")


def compression_of(path: str) -> str:
    """TF's compression_type for a shard, from its name (as TFX's readers decide too)."""
    return "GZIP" if path.endswith(".gz") else ""


@dataclass
class UtteranceFeatures:
    utterance: str
    speaker: str
    session: str
    split: str
    features: np.ndarray  # float32 [frames, bins]
    duration: float
    phone_ids: Optional[List[int]] = None
    phones: Optional[List[str]] = None
    text: Optional[str] = None


def encode_example(u: UtteranceFeatures) -> bytes:
    """A serialised tf.train.Example, built without importing TensorFlow (speechpipe.io.example_proto)."""
    from speechpipe.io.example_proto import BytesList, Example, Feature, Features, FloatList, Int64List

    def _bytes(value: str) -> Feature:
        return Feature(bytes_list=BytesList(value=[value.encode("utf-8")]))

    def _ints(values) -> Feature:
        return Feature(int64_list=Int64List(value=[int(v) for v in values]))

    frames, bins = u.features.shape
    feature = {
        UTTERANCE: _bytes(u.utterance),
        SPEAKER: _bytes(u.speaker),
        SESSION: _bytes(u.session),
        SPLIT: _bytes(u.split),
        NUM_FRAMES: _ints([frames]),
        NUM_BINS: _ints([bins]),
        FEATURES: Feature(bytes_list=BytesList(
            value=[np.ascontiguousarray(u.features, dtype=FEATURES_DTYPE).tobytes()]
        )),
        DURATION: Feature(float_list=FloatList(value=[u.duration])),
    }
    if u.phone_ids is not None:
        feature[PHONE_IDS] = _ints(u.phone_ids)
        feature[PHONES] = _bytes(" ".join(u.phones or []))
    if u.text is not None:
        feature[TEXT] = _bytes(u.text)
    # deterministic: map fields in key order, so the same input gives byte-identical records
    return Example(features=Features(feature=feature)).SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> UtteranceFeatures:
    from speechpipe.io.example_proto import Example

    example = Example.FromString(serialized)
    f = example.features.feature

    def _str(key: str) -> Optional[str]:
        return f[key].bytes_list.value[0].decode("utf-8") if key in f else None

    frames, bins = f[NUM_FRAMES].int64_list.value[0], f[NUM_BINS].int64_list.value[0]
    phones = _str(PHONES)
    return UtteranceFeatures(
        utterance=_str(UTTERANCE),
        speaker=_str(SPEAKER),
        session=_str(SESSION),
        split=_str(SPLIT),
        features=np.frombuffer(f[FEATURES].bytes_list.value[0], FEATURES_DTYPE).astype(np.float32).reshape(frames, bins),
        duration=float(f[DURATION].float_list.value[0]),
        phone_ids=list(f[PHONE_IDS].int64_list.value) if PHONE_IDS in f else None,
        phones=phones.split(" ") if phones else ([] if phones == "" else None),
        text=_str(TEXT),
    )


def split_dir(root: str, split: str) -> str:
    return os.path.join(root, SPLIT_DIR.format(split=split))  # "/"-joined: also right for URIs


def shard_paths(root: str, split: str) -> List[str]:
    """The split's shards, sorted; `root` is a local folder or a URI Beam's FileSystems knows."""
    from speechpipe.io.storage import beam_match, is_uri

    pattern = f"{split_dir(root, split)}/{SHARD_PREFIX}-*"
    return beam_match(pattern) if is_uri(root) else sorted(glob.glob(pattern))


def read_split(root: str, split: str) -> Iterator[UtteranceFeatures]:
    """Every example of one split, shard by shard (for tests, tools and read-back checks); every
    record's checksums are verified."""
    from speechpipe.io.example_proto import read_tfrecord_file

    for path in shard_paths(root, split):
        for record in read_tfrecord_file(path):
            yield decode_example(record)
