"""The trainer's side of the pairs: pair records in TensorFlow, the segment table and the
tf.data pipeline that resolves references into 40-frame segment pairs."""

from __future__ import annotations

import glob
import os
from collections import Counter

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from speechpipe.io import records  # noqa: E402
from speechpipe.speakers.pair_dataset import (  # noqa: E402
    MissingUtteranceError,
    PairReferences,
    SegmentTable,
    evaluation_offsets,
    pair_dataset,
    training_offsets,
    utterance_windows,
)
from speechpipe.speakers.pairs import (  # noqa: E402
    DIFFERENT,
    SAME,
    decode_pair_example,
    encode_pair_block,
    encode_pair_example,
    read_pair_file,
)
from tests.test_pairs import index_records, run_job, write_index  # noqa: E402

BINS = 3


def identity_features(row: int, frames: int) -> np.ndarray:
    """Frame t of utterance `row` is [row, t, 0]: a segment tells where it was cut from."""
    out = np.zeros((frames, BINS), np.float32)
    out[:, 0] = row
    out[:, 1] = np.arange(frames)
    return out


def make_table(lengths):
    names = [f"id{10001 + k // 5}/abcdefghijk/{k % 5 + 1:05d}" for k in range(len(lengths))]
    return names, SegmentTable.from_arrays((n, identity_features(k, L)) for k, (n, L) in enumerate(zip(names, lengths)))


def write_pairs(path, pairs):
    import gzip

    with gzip.open(path, "wb") as f:
        f.write(encode_pair_block(pairs))
    return str(path)


def cut(segment: np.ndarray):
    """(table row, first frame) of a segment, checking it is 40 consecutive frames of one row."""
    rows, frames = segment[:, 0], segment[:, 1]
    assert (rows == rows[0]).all() and (np.diff(frames) == 1).all()
    return int(rows[0]), int(frames[0])


def test_pair_example_is_a_tensorflow_example():
    record = encode_pair_example(SAME, "id10270/x6uYqmx31kE/00001", "id10270/8jEAjG6SegY/00008")
    example = tf.train.Example.FromString(record)
    f = example.features.feature
    assert f["label"].int64_list.value == [1]
    assert f["utterance_a"].bytes_list.value == [b"id10270/x6uYqmx31kE/00001"]
    assert f["utterance_b"].bytes_list.value == [b"id10270/8jEAjG6SegY/00008"]
    assert set(f) == {"label", "utterance_a", "utterance_b"}
    theirs = tf.train.Example(
        features=tf.train.Features(
            feature={
                "utterance_b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"b/c/d"])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),
                "utterance_a": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a/b/c"])),
            }
        )
    ).SerializeToString()
    assert decode_pair_example(theirs) == (DIFFERENT, "a/b/c", "b/c/d")


def test_job_files_are_tfrecords(tmp_path):
    path = write_pairs(tmp_path / "p.tfrecord.gz", [(SAME, "a/b/c", "a/b/d"), (DIFFERENT, "a/b/c", "e/f/g")])
    parsed = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    assert [e.features.feature["label"].int64_list.value[0] for e in parsed] == [1, 0]


def test_segment_table_from_feature_records_and_memory_map(tmp_path):
    folder = tmp_path / "features" / "Split-train"
    folder.mkdir(parents=True)
    arrays = {
        f"id10001/abcdefghijk/{k:05d}": np.random.default_rng(k).standard_normal((50 + k, 4)).astype(np.float32)
        for k in range(1, 4)
    }
    with tf.io.TFRecordWriter(str(folder / "data_tfrecord-00000-of-00001.gz"), options="GZIP") as w:  # GZIP: .gz
        for name, array in arrays.items():
            w.write(
                records.encode_example(
                    records.UtteranceFeatures(
                        utterance=name,
                        speaker="id10001",
                        session="abcdefghijk",
                        split="train",
                        features=array,
                        duration=1.0,
                    )
                )
            )
    table = SegmentTable.from_feature_records(str(tmp_path / "features"), ["train"])
    for name, array in arrays.items():
        np.testing.assert_array_equal(table.features(name), array)
    table.save(str(tmp_path / "table"))
    mapped = SegmentTable.load(str(tmp_path / "table"), mmap=True)
    assert mapped.memory_mapped and mapped.utterances == table.utterances
    np.testing.assert_array_equal(mapped.features("id10001/abcdefghijk/00002"), arrays["id10001/abcdefghijk/00002"])
    cropped = SegmentTable.from_arrays(arrays.items(), max_frames=50)
    assert set(cropped.lengths) == {50}
    np.testing.assert_array_equal(
        cropped.features("id10001/abcdefghijk/00003"), arrays["id10001/abcdefghijk/00003"][1:51]
    )
    with pytest.raises(MissingUtteranceError):
        table.row("id10001/abcdefghijk/00009")


def test_references_to_unknown_or_short_utterances_fail_before_training(tmp_path):
    names, table = make_table([60, 39, 80])
    good = write_pairs(tmp_path / "good.gz", [(SAME, names[0], names[2])])
    assert len(PairReferences.read([good], table)) == 1
    missing = write_pairs(tmp_path / "missing.gz", [(SAME, names[0], "id19999/abcdefghijk/00001")])
    with pytest.raises(MissingUtteranceError, match="id19999"):
        PairReferences.read([missing], table)
    short = write_pairs(tmp_path / "short.gz", [(SAME, names[1], names[2])])
    with pytest.raises(ValueError, match="shorter than one segment"):
        PairReferences.read([short], table)


def test_training_epoch_is_a_seeded_permutation_with_valid_crops(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 200, 30)
    names, table = make_table(lengths)
    pairs = [
        (k % 2, names[a], names[b]) for k, (a, b) in enumerate((a, b) for a in range(30) for b in range(a + 1, 30))
    ][:300]
    path = write_pairs(tmp_path / "pairs.gz", pairs)
    references = PairReferences.read([path], table)

    def epoch(seed, number):
        seen, crops = [], []
        for (seg_a, seg_b), labels in pair_dataset(references, table, batch_size=64, seed=seed, epoch=number):
            for sa, sb, label in zip(seg_a.numpy(), seg_b.numpy(), labels.numpy()):
                (ra, oa), (rb, ob) = cut(sa), cut(sb)
                assert 0 <= oa <= lengths[ra] - 40 and 0 <= ob <= lengths[rb] - 40
                seen.append((int(label), names[ra], names[rb]))
                crops.append((oa, ob))
        return seen, crops

    first, crops = epoch(1, 0)
    assert sorted(first) == sorted(pairs)  # every pair once, labels kept
    assert first != pairs  # shuffled
    assert epoch(1, 0) == (first, crops)  # deterministic
    second, second_crops = epoch(1, 1)
    assert sorted(second) == sorted(pairs) and (second, second_crops) != (first, crops)
    assert len(set(crops)) > 50  # crops vary


def test_evaluation_keeps_order_and_centres_segments(tmp_path):
    lengths = [40, 41, 100, 257]
    names, table = make_table(lengths)
    pairs = [(SAME, names[0], names[1]), (DIFFERENT, names[2], names[3])]
    dataset = pair_dataset([write_pairs(tmp_path / "p.gz", pairs)], table, training=False, batch_size=8)
    (((seg_a, seg_b), labels),) = list(dataset)
    assert labels.numpy().tolist() == [1, 0]
    assert [cut(s) for s in seg_a.numpy()] == [(0, 0), (2, 30)]
    assert [cut(s) for s in seg_b.numpy()] == [(1, 0), (3, 108)]
    np.testing.assert_array_equal(evaluation_offsets(np.array(lengths)), [0, 0, 30, 108])
    assert (training_offsets(np.array(lengths), np.array([0.0, 0.999, 0.5, 0.999])) == [0, 1, 30, 217]).all()


def test_repeat_runs_successive_epochs(tmp_path):
    names, table = make_table([50] * 6)
    pairs = [(SAME, names[a], names[b]) for a in range(6) for b in range(a + 1, 6)]
    references = PairReferences.read([write_pairs(tmp_path / "p.gz", pairs)], table)
    batches = list(pair_dataset(references, table, batch_size=5, repeat=True).take(6))
    assert sum(int(labels.shape[0]) for _, labels in batches) == 30  # two epochs of 15


def test_utterance_windows_hop_and_tail():
    features = identity_features(0, 101)
    windows = utterance_windows(features, 40, 20)
    assert [int(w[0, 1]) for w in windows] == [0, 20, 40, 60, 61]  # and one aligned to the end
    assert windows.shape == (5, 40, BINS)
    assert [int(w[0, 1]) for w in utterance_windows(identity_features(0, 100), 40, 20)] == [0, 20, 40, 60]
    assert len(utterance_windows(identity_features(0, 40))) == 1
    with pytest.raises(ValueError, match="shorter than one segment"):
        utterance_windows(identity_features(0, 39))


def test_job_output_feeds_the_trainer(tmp_path):
    rec = index_records({"train": 5, "validation": 2, "test": 2}, utterances=8, sessions=2, short_every=7)
    features = write_index(str(tmp_path / "features"), rec)
    out = str(tmp_path / "out")
    run_job(features, out, "--speaker_cap", "6")
    eligible = [r for r in rec if r["split"] == "train" and r["num_frames"] >= 40]
    table = SegmentTable.from_arrays(
        (r["utterance"], identity_features(k, r["num_frames"])) for k, r in enumerate(eligible)
    )
    files = sorted(glob.glob(os.path.join(out, "pairs", "train", "*.tfrecord.gz")))
    expected = sorted(p for f in files for p in read_pair_file(f))
    got = []
    for (seg_a, seg_b), labels in pair_dataset(files, table, batch_size=16, seed=3):
        for sa, sb, label in zip(seg_a.numpy(), seg_b.numpy(), labels.numpy()):
            got.append((int(label), eligible[cut(sa)[0]]["utterance"], eligible[cut(sb)[0]]["utterance"]))
    assert sorted(got) == expected
    assert Counter(label for label, _, _ in got) == {SAME: 30, DIFFERENT: 30}
