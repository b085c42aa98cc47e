"""ExamplesUnion (components/examples_union.py): two spans' feature outputs -> one Examples
artifact whose split folders list every span's shards (a manifest; nothing copied), locally and on
object storage (TensorFlow's ram://, as in tests/test_object_storage.py), read as the trainers read."""

import json
import os
import uuid
from collections import Counter

import pytest
from tfx.types import artifact_utils, standard_artifacts

from speechpipe.components import examples_union
from speechpipe.components.examples_union import ExamplesUnionError, Executor, member_spans
from speechpipe.io import records
from tests import ramfs
from tests.helpers import make_tiny_corpus

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def second_features(tmp_path_factory) -> str:
    """A second, different span: 3 new speakers x 3 utterances through the feature job."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.audio.sources import make_spec
    from speechpipe.config import FeatureConfig
    from speechpipe.jobs import features_job

    corpus = make_tiny_corpus(
        str(tmp_path_factory.mktemp("span1_corpus")), seed=1, speakers=3, utterances=3, sessions=1
    )
    out = str(tmp_path_factory.mktemp("span1_features"))
    features_job.run_job(
        make_spec(os.path.join(corpus, "manifest.jsonl")),
        FeatureConfig(),
        out,
        PipelineOptions(["--direct_running_mode=in_memory"]),
    )
    return out


def _member(uri: str, span: int, artifact_id: int, summary_dir: str = None) -> standard_artifacts.Examples:
    """An Examples artifact as FeatureGen publishes it (components/feature_gen.py)."""
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
    """Utterance ids of every record of a split, read as the trainers read it (local or URI):
    `record_dataset` on the split folder."""
    from speechpipe.training import record_dataset

    found = Counter()
    for example in record_dataset(f"{root}/Split-{split}").as_numpy_iterator():
        found[example["utterance"].decode("utf-8")] += 1
    return found


def _tree_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def _manifest(root: str, split: str) -> dict:
    with open(os.path.join(root, f"Split-{split}", records.SHARD_MANIFEST), encoding="utf-8") as f:
        return json.load(f)


def _union(members, uri: str) -> standard_artifacts.Examples:
    out = _output(uri)
    Executor().Do({f"span_{i}": [m] for i, m in enumerate(members)}, {"examples": [out]}, {})
    return out


def test_two_spans_become_one_examples_artifact(tiny_features, second_features, tmp_path):
    members = [_member(tiny_features, 0, 11), _member(second_features, 1, 12)]
    # Both feature jobs name their shards alike: the union lists them by URI, so they cannot collide.
    names = [{split: sorted(os.listdir(os.path.join(m.uri, f"Split-{split}"))) for split in SPLITS} for m in members]
    assert any(set(names[0][s]) & set(names[1][s]) for s in SPLITS), names
    out = _union(members, str(tmp_path / "union"))
    summaries = []
    for m in members:
        with open(os.path.join(m.uri, "summary.json"), encoding="utf-8") as f:
            summaries.append(json.load(f))

    # No shard bytes are copied: each split folder holds its manifest alone, and the whole
    # artifact is a few KB, far below one span's features.
    span_bytes = min(_tree_bytes(os.path.join(m.uri, f"Split-{s}")) for m in members for s in ("train",))
    assert _tree_bytes(out.uri) < 16 << 10 and _tree_bytes(out.uri) < span_bytes
    for split in SPLITS:
        assert os.listdir(os.path.join(out.uri, f"Split-{split}")) == [records.SHARD_MANIFEST]
        # The manifest lists every span's shards, where they are, with their bytes and records.
        manifest = _manifest(out.uri, split)
        expected = [
            {
                "uri": os.path.join(m.uri, f"Split-{split}", n),
                "bytes": os.path.getsize(os.path.join(m.uri, f"Split-{split}", n)),
                "records": summaries[i]["shards"][split][n],
                "span": i,
                "examples_id": m.id,
            }
            for i, m in enumerate(members)
            for n in names[i][split]
        ]
        assert manifest["shards"] == expected and manifest["format"] == records.MANIFEST_FORMAT
        assert manifest["files"] == len(expected) and manifest["bytes"] == sum(e["bytes"] for e in expected)
        assert manifest["records"] == sum(s["good"][split] for s in summaries)

        # Every record of both spans, once, read as the trainers read: nothing lost, nothing doubled.
        expected_ids = _utterances(tiny_features, split) + _utterances(second_features, split)
        assert _utterances(out.uri, split) == expected_ids and sum(expected_ids.values()) > 0
        # The trainers' view (TFX's split URIs, TFX's `<split>/*` patterns, speechpipe's shard globs)
        # and the Beam-side readers (records.shard_paths, read_split) see both spans' shards.
        (split_uri,) = artifact_utils.get_split_uris([out], split)
        from speechpipe.training import expand_files

        uris = [e["uri"] for e in expected]
        assert expand_files(split_uri) == uris
        assert expand_files(split_uri + "/*") == uris
        assert expand_files(os.path.join(split_uri, "data_tfrecord-*")) == uris
        assert records.shard_paths(out.uri, split) == uris
        assert Counter(u.utterance for u in records.read_split(out.uri, split)) == expected_ids

    # The trainer's segment table for pairs reads the union through the same resolver.
    from speechpipe.speakers.pair_dataset import SegmentTable

    table = SegmentTable.from_feature_records(out.uri, ["train"])
    assert Counter(table.utterances) == _utterances(tiny_features, "train") + _utterances(second_features, "train")

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
        sum(m.get_float_custom_property("audio_hours") for m in members)
    )
    assert out.get_string_custom_property("feature_config") == members[0].get_string_custom_property("feature_config")
    assert json.loads(out.get_string_custom_property("input_path")) == [
        "/spans/0/manifest.jsonl",
        "/spans/1/manifest.jsonl",
    ]
    # The first span's global statistics, where the trainers look for them (TFX's `<split>/*`).
    from speechpipe.training import find_global_stats

    with open(os.path.join(tiny_features, "global_stats.json"), encoding="utf-8") as f:
        assert find_global_stats([os.path.join(out.uri, "Split-train", "*")]) == json.load(f)
    with open(os.path.join(out.uri, "union.json"), encoding="utf-8") as f:
        union = json.load(f)
    assert [m["span"] for m in union["members"]] == [0, 1] and union["global_stats_from"] == 0
    assert union["totals"]["train"]["records"] == good["train"]
    # The registry pusher's lineage: the union stands for its members.
    assert member_spans([out]) == [("0", "11"), ("1", "12")]
    assert member_spans(members) == [("0", "11"), ("1", "12")]


def _copy_tree(source: str, target: str) -> str:
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_span_shard_is_an_error_naming_it(tiny_features, second_features, tmp_path, damage):
    """A span's shard deleted or rewritten after the union listed it: the trainers' reader (and
    the Beam-side one) refuse the union, naming the shard, instead of training on less."""
    from speechpipe.training import expand_files, record_dataset

    span1 = _copy_tree(second_features, str(tmp_path / "span1"))
    out = _union([_member(tiny_features, 0, 11), _member(span1, 1, 12)], str(tmp_path / "union"))
    victim = _manifest(out.uri, "train")["shards"][-1]["uri"]
    assert victim.startswith(span1)
    if damage == "deleted":
        os.remove(victim)
        match = "is missing"
    else:
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) - 7)
        match = "bytes where the manifest recorded"
    split_uri = os.path.join(out.uri, "Split-train")
    for read in (
        lambda: expand_files(split_uri),
        lambda: record_dataset(split_uri + "/*"),
        lambda: records.shard_paths(out.uri, "train"),
    ):
        with pytest.raises(records.ShardCheckError, match=match) as error:
            read()
        assert victim in str(error.value)
    # The other splits are untouched and still read.
    assert expand_files(os.path.join(out.uri, "Split-validation"))
    # Made again on damaged spans, the union lists what is there now (a deleted shard's records
    # are then missing from the span's own counts, which the union checks).
    if damage == "deleted":
        with pytest.raises(ExamplesUnionError, match="summary.json counted"):
            _union([_member(tiny_features, 0, 11), _member(span1, 1, 12)], str(tmp_path / "again"))


def test_mixed_compression_is_refused(tiny_features, second_features, tmp_path):
    span1 = _copy_tree(second_features, str(tmp_path / "span1"))
    folder = os.path.join(span1, "Split-train")
    summary_path = os.path.join(span1, "summary.json")
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    for name in list(summary["shards"]["train"]):  # renamed as if written with --compression gzip
        os.rename(os.path.join(folder, name), os.path.join(folder, name + ".gz"))
        summary["shards"]["train"][name + ".gz"] = summary["shards"]["train"].pop(name)
    with open(summary_path, "w", encoding="utf-8") as f:
        json.dump(summary, f)
    with pytest.raises(ExamplesUnionError, match="mixes GZIP"):
        _union([_member(tiny_features, 0, 11), _member(span1, 1, 12)], str(tmp_path / "union"))


def test_the_union_node_takes_every_span_as_an_input():
    """ML Metadata's lineage of the union: one input per span (each a single channel, which
    KubeflowV2DagRunner compiles), so every span's Examples is recorded as an input."""
    from tfx.types import Channel

    from speechpipe.components.examples_union import ExamplesUnion

    channels = [Channel(type=standard_artifacts.Examples) for _ in range(3)]
    node = ExamplesUnion(examples=channels)
    assert sorted(node.inputs) == ["span_0", "span_1", "span_2"]
    assert [node.inputs[f"span_{i}"] for i in range(3)] == channels
    with pytest.raises(ValueError, match="2 or more"):
        ExamplesUnion(examples=channels[:1])


def test_the_inputs_are_taken_in_span_order(tiny_features, tmp_path):
    """span_10 comes after span_2 (not in the keys' string order)."""
    members = {f"span_{i}": [_member(tiny_features, i, 100 + i)] for i in range(11)}
    assert [i for i, _ in examples_union._members(members)] == list(range(11))


def test_spans_with_other_feature_configs_are_refused(tiny_features, second_features, tmp_path):
    other = _member(second_features, 1, 12)
    other.set_string_custom_property("feature_config", json.dumps({"normalization": "global"}))
    with pytest.raises(ExamplesUnionError, match="different feature configs"):
        Executor().Do(
            {"span_0": [_member(tiny_features, 0, 11)], "span_1": [other]},
            {"examples": [_output(str(tmp_path / "union"))]},
            {},
        )


def test_the_union_on_object_storage(tiny_features, second_features, tmp_path):
    """The same union with every URI under ram:// (TFX's fileio, as on gs://): the manifests list
    the spans' ram:// shards, and the trainers' reader resolves them."""
    bucket = f"ram://speechpipe-union-{uuid.uuid4().hex[:8]}"
    try:
        ramfs.upload_tree(tiny_features, f"{bucket}/span0")
        ramfs.upload_tree(second_features, f"{bucket}/span1")
        members = [_member(f"{bucket}/span0", 0, 11, tiny_features), _member(f"{bucket}/span1", 1, 12, second_features)]
        out = _union(members, f"{bucket}/union")
        local = _union([_member(tiny_features, 0, 11), _member(second_features, 1, 12)], str(tmp_path / "union"))
        for split in SPLITS:
            assert _utterances(out.uri, split) == _utterances(local.uri, split)
            with open(os.path.join(local.uri, f"Split-{split}", records.SHARD_MANIFEST), encoding="utf-8") as f:
                local_manifest = json.load(f)
            remote_manifest = json.loads(
                ramfs._gfile().GFile(f"{out.uri}/Split-{split}/{records.SHARD_MANIFEST}", "rb").read()
            )
            assert all(s["uri"].startswith(bucket + "/span") for s in remote_manifest["shards"])
            assert [(s["bytes"], s["records"]) for s in remote_manifest["shards"]] == [
                (s["bytes"], s["records"]) for s in local_manifest["shards"]
            ]
        # The union's own objects: the manifests, union.json and global_stats.json; no shard.
        remote = sorted(o[len(out.uri) + 1 :] for o in ramfs.objects(out.uri + "/"))
        assert remote == sorted(
            os.path.relpath(os.path.join(d, f), local.uri) for d, _, fs in os.walk(local.uri) for f in fs
        )
        assert not [o for o in remote if "data_tfrecord" in o]
        assert out.get_string_custom_property("good") == local.get_string_custom_property("good")
        # A span shard gone from the bucket: an error naming it.
        victim = f"{bucket}/span1/Split-train/" + sorted(os.listdir(os.path.join(second_features, "Split-train")))[0]
        ramfs._gfile().remove(victim)
        from speechpipe.training import expand_files

        with pytest.raises(records.ShardCheckError, match="is missing") as error:
            expand_files(f"{out.uri}/Split-train/*")
        assert victim in str(error.value)
    finally:
        ramfs.clear(bucket)
    assert not os.path.exists("ram:"), "something wrote a ram:// URI to the local disk"


def test_a_retried_attempt_starts_clean(tiny_features, second_features, tmp_path):
    """A retry that finds an earlier attempt's files in its output folder replaces them: the
    union lists each member's shards once, and its split folders hold the manifest alone."""
    out = _output(str(tmp_path / "union"))
    os.makedirs(os.path.join(out.uri, "Split-train"))
    with open(os.path.join(out.uri, "Split-train", "data_tfrecord-span0-00000-of-00001"), "wb") as f:
        f.write(b"half a shard")
    with open(os.path.join(out.uri, "Split-train", records.SHARD_MANIFEST), "wb") as f:
        f.write(b'{"half": ')
    Executor().Do(
        {"span_0": [_member(tiny_features, 0, 11)], "span_1": [_member(second_features, 1, 12)]},
        {"examples": [out]},
        {},
    )
    assert os.listdir(os.path.join(out.uri, "Split-train")) == [records.SHARD_MANIFEST]
    assert _utterances(out.uri, "train") == _utterances(tiny_features, "train") + _utterances(second_features, "train")
