"""speechpipe.io.example_proto: the Example messages and the TFRecord reader, against TensorFlow's."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from speechpipe.io import records
from speechpipe.io.example_proto import CorruptRecordError, read_tfrecord_file

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _utterances():
    rng = np.random.default_rng(7)
    yield records.UtteranceFeatures(
        "u1",
        "id10001",
        "sessA",
        "train",
        rng.normal(size=(13, 80)).astype(np.float32),
        1.25,
        phone_ids=[0, 58, 3],
        phones=["a", "tʃ", "ʏ"],
        text="Grüße, Äpfel",
    )
    yield records.UtteranceFeatures("u2", "id10002", "sessB", "test", np.zeros((1, 3), np.float32), 0.025)
    yield records.UtteranceFeatures(
        "u3",
        "id10003",
        "s",
        "validation",
        rng.normal(size=(5, 2)).astype(np.float32),
        3e-9,
        phone_ids=[],
        phones=[],
        text="",
    )


def _tf_encode(u: records.UtteranceFeatures) -> bytes:
    """The same record built with TensorFlow's own classes."""

    def _bytes(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8")]))

    def _ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    feature = {
        records.UTTERANCE: _bytes(u.utterance),
        records.SPEAKER: _bytes(u.speaker),
        records.SESSION: _bytes(u.session),
        records.SPLIT: _bytes(u.split),
        records.NUM_FRAMES: _ints([u.features.shape[0]]),
        records.NUM_BINS: _ints([u.features.shape[1]]),
        records.FEATURES: tf.train.Feature(bytes_list=tf.train.BytesList(value=[u.features.astype("<f4").tobytes()])),
        records.DURATION: tf.train.Feature(float_list=tf.train.FloatList(value=[u.duration])),
    }
    if u.phone_ids is not None:
        feature[records.PHONE_IDS] = _ints(u.phone_ids)
        feature[records.PHONES] = _bytes(" ".join(u.phones))
    if u.text is not None:
        feature[records.TEXT] = _bytes(u.text)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def test_records_are_byte_identical_to_tensorflows():
    for u in _utterances():
        assert records.encode_example(u) == _tf_encode(u)


def test_tensorflow_parses_our_records_and_we_parse_tensorflows():
    for u in _utterances():
        parsed = tf.train.Example.FromString(records.encode_example(u)).features.feature
        assert parsed[records.UTTERANCE].bytes_list.value[0].decode() == u.utterance
        assert list(parsed[records.NUM_FRAMES].int64_list.value) == [u.features.shape[0]]
        back = records.decode_example(_tf_encode(u))
        np.testing.assert_array_equal(back.features, u.features)
        assert (back.utterance, back.speaker, back.phone_ids, back.phones, back.text) == (
            u.utterance,
            u.speaker,
            u.phone_ids,
            u.phones,
            u.text,
        )


def test_negative_and_large_int64_values_round_trip():
    from speechpipe.io.example_proto import Example, Feature, Features, Int64List

    values = [-1, -(2**63), 2**63 - 1, 0, 300]
    ours = Example(features=Features(feature={"x": Feature(int64_list=Int64List(value=values))}))
    theirs = tf.train.Example(
        features=tf.train.Features(feature={"x": tf.train.Feature(int64_list=tf.train.Int64List(value=values))})
    )
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_reader_matches_tf_data(tmp_path, compression):
    path = str(tmp_path / ("r.tfrecord" + (".gz" if compression else "")))
    payloads = [b"", b"a", os.urandom(100_000), b"x" * 7]
    with tf.io.TFRecordWriter(path, options=compression or None) as w:
        for p in payloads:
            w.write(p)
    assert list(read_tfrecord_file(path)) == payloads
    assert list(read_tfrecord_file(path)) == list(
        tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator()
    )


def test_framed_records_are_tensorflows_bytes(tmp_path):
    """The feature job's own shard writer frames records as tf.io.TFRecordWriter does."""
    from speechpipe.io.example_proto import frame_record

    path = str(tmp_path / "tf.tfrecord")
    payloads = [b"", b"a", os.urandom(100_000), b"x" * 7]
    with tf.io.TFRecordWriter(path) as w:
        for p in payloads:
            w.write(p)
    assert b"".join(frame_record(p) for p in payloads) == open(path, "rb").read()


@pytest.mark.parametrize("damage", ["flip_payload", "flip_length", "truncate"])
def test_reader_refuses_damaged_files(tmp_path, damage):
    path = str(tmp_path / "r.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(b"first record")
        w.write(b"second record")
    data = bytearray(open(path, "rb").read())
    if damage == "flip_payload":
        data[-8] ^= 0x01
    elif damage == "flip_length":
        data[len(data) // 2 + 2] ^= 0x01
    else:
        data = data[:-3]
    open(path, "wb").write(bytes(data))
    with pytest.raises(CorruptRecordError, match="record 1"):
        list(read_tfrecord_file(path))


def test_encoding_and_reading_records_never_import_tensorflow(tmp_path):
    """The feature job's workers build and read back records without TensorFlow (4-6 s and
    ~600 MB per process)."""
    code = (
        "import sys, numpy as np\n"
        "from speechpipe.io import records\n"
        "from speechpipe.io.example_proto import iter_records\n"
        "u = records.UtteranceFeatures('u', 's', 'x', 'train', np.ones((2, 3), np.float32), 1.0)\n"
        "records.decode_example(records.encode_example(u))\n"
        "import speechpipe.jobs.features_job\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": os.path.join(_REPO, "src")},
    )
