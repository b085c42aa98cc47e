import os

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from speechpipe import records
from speechpipe.config import FeatureConfig
from speechpipe.phones import default_inventory
from speechpipe.pipeline import features_job
from speechpipe.schema import anomalies_in, load_schema
from speechpipe.sources import make_spec


@pytest.fixture(scope="module")
def tiny_features(tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("features"))
    features_job.run_job(make_spec(os.path.join(tiny_corpus, "manifest.jsonl")), FeatureConfig(), out,
                         PipelineOptions(["--direct_running_mode=in_memory"]))
    return out


def test_schema_matches_the_inventory_and_record_keys():
    schema = load_schema()
    names = {f.name for f in schema.feature}
    assert names == {records.UTTERANCE, records.SPEAKER, records.SESSION, records.SPLIT, records.NUM_FRAMES,
                     records.NUM_BINS, records.FEATURES, records.DURATION, records.PHONE_IDS, records.PHONES,
                     records.TEXT}
    phone_ids = next(f for f in schema.feature if f.name == records.PHONE_IDS)
    assert phone_ids.int_domain.max == default_inventory().size - 1


def test_feature_records_conform_to_the_schema(tiny_features):
    assert anomalies_in(os.path.join(tiny_features, "Split-*", "data_tfrecord-*")) == []


def test_bad_records_raise_anomalies(tmp_path):
    import tensorflow as tf

    bad = records.UtteranceFeatures(utterance="u", speaker="s", session="x", split="dev",
                                    features=np.zeros((3, 80), np.float32), duration=1.0,
                                    phone_ids=[99], phones=["?"], text="t")
    path = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(records.encode_example(bad))
    found = "\n".join(anomalies_in(path))
    assert "phone_ids" in found and "split" in found
