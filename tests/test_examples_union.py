"""ExamplesUnion (src/speechpipe/components/examples_union.py): two spans' feature outputs -> one Examples
artifact holding every shard, locally and on object storage (TensorFlow's ram://, as in
tests/test_object_storage.py)."""
import json
import os
import uuid
from collections import Counter

import pytest
from tfx.types import artifact_utils, standard_artifacts

from speechpipe.io import records
from speechpipe.components import examples_union
from speechpipe.components.examples_union import ExamplesUnionError, Executor, member_spans
from tests import ramfs
from tests.helpers import make_tiny_corpus

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def second_features(tmp_path_factory) -> str:
    """A second, different span: 3 new speakers x 3 utterances through the feature job."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.config import FeatureConfig
    from speechpipe.pipeline import features_job
    from speechpipe.audio.sources import make_spec

    corpus = make_tiny_corpus(str(tmp_path_factory.mktemp("span1_corpus")), seed=1, speakers=3, utterances=3,
                              sessions=1)
    out = str(tmp_path_factory.mktemp("span1_features"))
    features_job.run_job(make_spec(os.path.join(corpus, "manifest.jsonl")), FeatureConfig(), out,
                         PipelineOptions(["--direct_running_mode=in_memory"]))
    return out


def _member(uri: str, span: int, artifact_id: int, summary_dir: str = None) -> standard_artifacts.Examples:
    """An Examples artifact as FeatureGen publishes it (src/speechpipe/components/feature_gen.py)."""
    with open(os.path.join(summary_dir or uri, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    artifact.id = artifact_id
    artifact.span = span
    artifact.version = 0
    artifact.split_names = artifact_utils.encode_split_names(list(SPLITS))
    artifact.set_string_custom_property("input_path", f"/spans/{span}/manifest.jsonl")
    artifact.set_string_custom_property("input_fingerprint", f"fp{span}")
    artifact.set_string_custom_property("feature_config", json.dumps(summary["features"], sort_keys=True))
    artifact.set_string_custom_property("good", json.dumps(summary["good"], sort_keys=True))
    artifact.set_string_custom_property("dead_letter", json.dumps(summary["dead_letter"], sort_keys=True))
    artifact.set_int_custom_property("inputs", int(summary["inputs"]))
    artifact.set_float_custom_property("audio_hours", sum(summary["audio_seconds"].values()) / 3600)
    return artifact


def _output(uri: str) -> standard_artifacts.Examples:
    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    return artifact


def _utterances(root: str, split: str) -> Counter:
    """Utterance ids of every record of a split, read by TensorFlow (local or URI)."""
    import tensorflow as tf

    from speechpipe.io.storage import glob, join

    found = Counter()
    for path in glob(join(root, f"Split-{split}", "*")):
        dataset = tf.data.TFRecordDataset(path, compression_type=records.compression_of(path))
        for record in dataset.as_numpy_iterator():
            found[records.decode_example(record).utterance] += 1
    return found


def test_two_spans_become_one_examples_artifact(tiny_features, second_features, tmp_path):
    members = [_member(tiny_features, 0, 11), _member(second_features, 1, 12)]
    # Both feature jobs name their shards alike: copied as they are, they would collide.
    names = [{split: sorted(os.listdir(os.path.join(m.uri, f"Split-{split}"))) for split in SPLITS} for m in members]
    assert any(set(names[0][s]) & set(names[1][s]) for s in SPLITS), names
    out = _output(str(tmp_path / "union"))
    Executor().Do({"span_0": [members[0]], "span_1": [members[1]]}, {"examples": [out]}, {})

    for split in SPLITS:
        # Every record of both spans, once: nothing lost, nothing doubled.
        expected = _utterances(tiny_features, split) + _utterances(second_features, split)
        assert _utterances(out.uri, split) == expected and sum(expected.values()) > 0
        files = sorted(os.listdir(os.path.join(out.uri, f"Split-{split}")))
        assert files == sorted([examples_union.shard_name(0, n) for n in names[0][split]]
                               + [examples_union.shard_name(1, n) for n in names[1][split]])
        assert all(f.startswith(("data_tfrecord-span0-", "data_tfrecord-span1-")) for f in files)
        # The trainers' view (TFX's split URIs, speechpipe's shard globs) sees both spans' shards.
        (split_uri,) = artifact_utils.get_split_uris([out], split)
        from speechpipe.training import expand_files

        assert sorted(os.path.basename(p) for p in expand_files(split_uri)) == files
        assert sorted(os.path.basename(p) for p in expand_files(split_uri + "/*")) == files

    # The properties FeatureGen sets, for both spans together.
    assert artifact_utils.decode_split_names(out.split_names) == list(SPLITS)
    assert out.span == 1 and out.version == 0
    assert out.get_string_custom_property("spans") == "0,1"
    assert out.get_string_custom_property("span_examples_ids") == "11,12"
    good = json.loads(out.get_string_custom_property("good"))
    for split in SPLITS:
        assert good[split] == sum(json.loads(m.get_string_custom_property("good"))[split] for m in members)
        assert good[split] == sum(_utterances(out.uri, split).values())
    assert out.get_int_custom_property("inputs") == sum(m.get_int_custom_property("inputs") for m in members)
    assert out.get_float_custom_property("audio_hours") == pytest.approx(
        sum(m.get_float_custom_property("audio_hours") for m in members))
    assert out.get_string_custom_property("feature_config") == members[0].get_string_custom_property("feature_config")
    assert json.loads(out.get_string_custom_property("input_path")) == ["/spans/0/manifest.jsonl",
                                                                         "/spans/1/manifest.jsonl"]
    # The first span's global statistics, where the trainers look for them.
    from speechpipe.training import find_global_stats

    with open(os.path.join(tiny_features, "global_stats.json"), encoding="utf-8") as f:
        assert find_global_stats([os.path.join(out.uri, "Split-train", "*")]) == json.load(f)
    with open(os.path.join(out.uri, "union.json"), encoding="utf-8") as f:
        union = json.load(f)
    assert [m["span"] for m in union["members"]] == [0, 1] and union["global_stats_from"] == 0
    # The registry pusher's lineage: the union stands for its members.
    assert member_spans([out]) == [("0", "11"), ("1", "12")]
    assert member_spans(members) == [("0", "11"), ("1", "12")]


def test_the_inputs_are_taken_in_span_order(tiny_features, tmp_path):
    """span_10 comes after span_2 (not in the keys' string order)."""
    members = {f"span_{i}": [_member(tiny_features, i, 100 + i)] for i in range(11)}
    assert [i for i, _ in examples_union._members(members)] == list(range(11))


def test_spans_with_other_feature_configs_are_refused(tiny_features, second_features, tmp_path):
    other = _member(second_features, 1, 12)
    other.set_string_custom_property("feature_config", json.dumps({"normalization": "global"}))
    with pytest.raises(ExamplesUnionError, match="different feature configs"):
        Executor().Do({"span_0": [_member(tiny_features, 0, 11)], "span_1": [other]},
                      {"examples": [_output(str(tmp_path / "union"))]}, {})


def test_the_union_on_object_storage(tiny_features, second_features, tmp_path):
    """The same union with every URI under ram:// (TFX's fileio, as on gs://)."""
    bucket = f"ram://speechpipe-union-{uuid.uuid4().hex[:8]}"
    try:
        ramfs.upload_tree(tiny_features, f"{bucket}/span0")
        ramfs.upload_tree(second_features, f"{bucket}/span1")
        members = [_member(f"{bucket}/span0", 0, 11, tiny_features), _member(f"{bucket}/span1", 1, 12, second_features)]
        out = _output(f"{bucket}/union")
        Executor().Do({"span_0": [members[0]], "span_1": [members[1]]}, {"examples": [out]}, {})
        local = _output(str(tmp_path / "union"))
        Executor().Do({"span_0": [_member(tiny_features, 0, 11)], "span_1": [_member(second_features, 1, 12)]},
                      {"examples": [local]}, {})
        for split in SPLITS:
            assert _utterances(out.uri, split) == _utterances(local.uri, split)
        remote = sorted(o[len(out.uri) + 1:] for o in ramfs.objects(out.uri + "/"))
        assert remote == sorted(os.path.relpath(os.path.join(d, f), local.uri)
                                for d, _, fs in os.walk(local.uri) for f in fs)
        assert out.get_string_custom_property("good") == local.get_string_custom_property("good")
    finally:
        ramfs.clear(bucket)
    assert not os.path.exists("ram:"), "something wrote a ram:// URI to the local disk"


def test_a_retried_attempt_starts_clean(tiny_features, second_features, tmp_path):
    """A retry that finds an earlier attempt's files in its output folder replaces them: the
    union holds each member's files once."""
    out = _output(str(tmp_path / "union"))
    os.makedirs(os.path.join(out.uri, "Split-train"))
    with open(os.path.join(out.uri, "Split-train", "data_tfrecord-span0-00000-of-00001"), "wb") as f:
        f.write(b"half a shard")
    Executor().Do({"span_0": [_member(tiny_features, 0, 11)], "span_1": [_member(second_features, 1, 12)]},
                  {"examples": [out]}, {})
    assert _utterances(out.uri, "train") == _utterances(tiny_features, "train") + _utterances(second_features, "train")
