import os

import numpy as np

from speechpipe.io import records
from speechpipe.io.schema import load_schema
from speechpipe.jobs.schema_check import anomalies_in


def test_schema_matches_the_inventory_and_record_keys():
    schema = load_schema()
    names = {f.name for f in schema.feature}
    assert names == {
        records.UTTERANCE,
        records.SPEAKER,
        records.SESSION,
        records.SPLIT,
        records.NUM_FRAMES,
        records.NUM_BINS,
        records.FEATURES,
        records.DURATION,
        records.PHONE_IDS,
        records.PHONES,
        records.TEXT,
    }
    # One schema for every language: ids are bounded below here, and by the span's inventory in
    # the CTC trainer (inventories differ in size).
    phone_ids = next(f for f in schema.feature if f.name == records.PHONE_IDS)
    assert phone_ids.int_domain.min == 0 and not phone_ids.int_domain.HasField("max")


def test_feature_records_conform_to_the_schema(tiny_features):
    assert anomalies_in(os.path.join(tiny_features, "Split-*", "data_tfrecord-*")) == []


def test_bad_records_raise_anomalies(tmp_path):
    import tensorflow as tf

    bad = records.UtteranceFeatures(
        utterance="u",
        speaker="s",
        session="x",
        split="dev",
        features=np.zeros((3, 80), np.float32),
        duration=1.0,
        phone_ids=[-1],
        phones=["?"],
        text="t",
    )
    path = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(records.encode_example(bad))
    found = "\n".join(anomalies_in(path))
    assert "phone_ids" in found and "split" in found
