"""The bounded reader of a split (speechpipe.speakers.split_stream): an index of ids in one pass,
and the features of chosen rows streamed in record order, the others skipped before decoding."""

import os

import numpy as np
import pytest

from speechpipe.io import records
from speechpipe.io.example_proto import Example, frame_record
from speechpipe.speakers.split_stream import read_index, stream_features

BINS = 5


def _example(k: int, frames: int) -> records.UtteranceFeatures:
    features = np.full((frames, BINS), k, np.float32) + np.arange(BINS, dtype=np.float32)
    return records.UtteranceFeatures(
        f"spk{k % 3}/s{k % 2}/{k:03d}", f"spk{k % 3}", f"s{k % 2}", "train", features, frames / 100
    )


def _write(folder: str, shards, corrupt=()) -> list:
    """Shards of encoded examples; each (shard, position) in `corrupt` gets a features blob of
    the wrong size, which decoding would refuse."""
    os.makedirs(folder, exist_ok=True)
    for s, examples in enumerate(shards):
        payloads = []
        for p, example in enumerate(examples):
            payload = records.encode_example(example)
            if (s, p) in corrupt:  # the features blob cut short: decoding it would fail
                proto = Example.FromString(payload)
                blob = proto.features.feature[records.FEATURES].bytes_list.value[0]
                proto.features.feature[records.FEATURES].bytes_list.value[0] = blob[: len(blob) // 2]
                payload = proto.SerializeToString()
            payloads.append(payload)
        with open(os.path.join(folder, f"{records.SHARD_PREFIX}-{s:05d}-of-{len(shards):05d}"), "wb") as f:
            f.write(b"".join(frame_record(p) for p in payloads))
    return [e for examples in shards for e in examples]


def test_the_index_holds_every_id_in_record_order(tmp_path):
    examples = _write(
        str(tmp_path), [[_example(k, 3 + k) for k in range(5)], [_example(k, 3 + k) for k in range(5, 9)]]
    )
    index = read_index(str(tmp_path))
    assert len(index) == 9 and index.utterances == [e.utterance for e in examples]
    assert index.speakers == [e.speaker for e in examples] and index.sessions == [e.session for e in examples]
    assert index.frames.tolist() == [3 + k for k in range(9)]
    with pytest.raises(ValueError, match="at least 4 speakers"):
        read_index(str(tmp_path), min_speakers=4)


def test_chosen_rows_stream_in_order_and_the_rest_are_never_decoded(tmp_path):
    shards = [[_example(k, 4) for k in range(4)], [_example(k, 4) for k in range(4, 8)]]
    examples = _write(str(tmp_path), shards)
    index = read_index(str(tmp_path))
    rows = [1, 4, 6]
    got = list(stream_features(index, rows))
    assert len(got) == 3
    for row, features in zip(rows, got):
        np.testing.assert_array_equal(features, examples[row].features)
    # A record outside the chosen rows whose features cannot be decoded does not matter.
    corrupt = str(tmp_path / "corrupt")
    _write(corrupt, shards, corrupt={(0, 2)})
    index = read_index(corrupt)
    assert [f.shape for f in stream_features(index, rows)] == [(4, BINS)] * 3
    with pytest.raises(Exception):  # noqa: B017, PT011 - TensorFlow's own error for the bad blob
        list(stream_features(index, [2]))


def test_rows_must_be_ascending_and_shards_unchanged(tmp_path):
    _write(str(tmp_path), [[_example(k, 4) for k in range(4)]])
    index = read_index(str(tmp_path))
    with pytest.raises(ValueError, match="ascending"):
        list(stream_features(index, [2, 1]))
    # The shards rewritten after indexing (another utterance in a row) are an error, never other data.
    _write(str(tmp_path), [[_example(k, 4) for k in (0, 9, 2, 3)]])
    with pytest.raises(RuntimeError, match="changed since they were indexed"):
        list(stream_features(index, [1]))
