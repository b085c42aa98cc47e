"""The pipeline on object storage: inputs, audio, Beam outputs and TFX artifacts under a URI.

There is no cloud here. TensorFlow's gfile has an in-memory filesystem, `ram://`, which TFX's
fileio (gfile underneath, as for gs://) reads and writes; tests/ramfs.py gives Beam's FileSystems
the same scheme, answering like GCS (no folders, prefix listings). So the feature job, the pair
job, the custom components' executors and a whole LocalDagRunner run are run here with every path
under ram://, in one process (DirectRunner in_memory), and compared with the same work on local
folders. Anything that fell back to a local file call on a URI would fail to find its data, or
leave a local folder named `ram:` behind, which every test checks for.
"""

import glob
import io
import json
import os
import uuid
from dataclasses import dataclass, replace

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from speechpipe.audio.decode import AudioRejected, check_usable, decode
from speechpipe.audio.sources import (
    OUTSIDE_ROOT,
    count_ignored_files,
    expand_input,
    make_spec,
    parse_input,
    resolve_inside,
)
from speechpipe.config import FeatureConfig
from speechpipe.io import records, storage
from speechpipe.jobs import features_job, pairs_job
from tests import ramfs
from tests.audio_inputs import BAD_AUDIO, GOOD_PHONES, UNUSUAL, build_mixed_manifest, write_wav

IN_MEMORY = ["--direct_running_mode=in_memory"]
CONFIG = FeatureConfig(max_seconds=2.0)
SPLITS = ("train", "validation", "test")


@pytest.fixture(autouse=True)
def no_local_fallback():
    """A URI handed to os.makedirs or open() creates a local folder named `ram:`: none may appear."""
    yield
    assert not os.path.exists("ram:"), "something wrote a ram:// URI to the local disk"


@pytest.fixture(scope="module")
def bucket():
    """A fresh ram:// bucket for this module, emptied afterwards."""
    name = f"ram://speechpipe-{uuid.uuid4().hex[:8]}"
    yield name
    ramfs.clear(name)


def _examples(out: str):
    """{utterance: UtteranceFeatures} of a feature job's output, local or URI (read by TensorFlow)."""
    import tensorflow as tf

    found = {}
    for split in SPLITS:
        for path in records.shard_paths(out, split):
            for record in tf.data.TFRecordDataset(
                path, compression_type=records.compression_of(path)
            ).as_numpy_iterator():
                example = records.decode_example(record)
                found[example.utterance] = example
    return found


def _jsonl(prefix_pattern: str):
    return [
        json.loads(line)
        for path in storage.beam_match(prefix_pattern)
        for line in storage.beam_read_bytes(path).decode("utf-8").splitlines()
        if line.strip()
    ]


# ----------------------------------------------------------------------------------------------
# Inputs: confinement to the data root, listing, decoding


def test_paths_are_confined_to_a_data_root_on_object_storage():
    root = "ram://b/spans/s0"
    inside = {
        "wav/a.wav": "ram://b/spans/s0/wav/a.wav",
        "wav/../wav/./a.wav": "ram://b/spans/s0/wav/a.wav",
        "wav//a.wav": "ram://b/spans/s0/wav/a.wav",
        "ram://b/spans/s0/wav/a.wav": "ram://b/spans/s0/wav/a.wav",
        "RAM://b/spans/s0/x/../a.wav": "ram://b/spans/s0/a.wav",
    }
    for path, resolved in inside.items():
        assert resolve_inside(root, path) == (resolved, ""), path
    outside = [
        "../s1/a.wav",  # a sibling span
        "wav/../../s1/a.wav",
        "../../../../other/a.wav",  # climbs above the bucket: another bucket
        "ram://other/spans/s0/a.wav",  # another bucket
        "ram://b/spans/s0-old/a.wav",  # a sibling whose name starts like the root
        "ram://b/spans/s0/../s1/a.wav",
        "memfs://b/spans/s0/a.wav",  # another scheme
        "gs://b/spans/s0/a.wav",
        "/etc/passwd",  # a local absolute path
    ]
    for path in outside:
        resolved, why = resolve_inside(root, path)
        assert resolved is None and "outside the data root" in why, path
    # The local rules are unchanged: a relative path joins the root, '..' out of it is refused.
    assert resolve_inside("/data/root", "a.wav")[0] == os.path.realpath("/data/root/a.wav")
    assert resolve_inside("/data/root", "../x.wav")[0] is None


def test_inputs_on_object_storage_are_listed_like_local_ones(tmp_path, bucket):
    local = tmp_path / "inputs"
    # VoxCeleb layout, with a stray file, a non-audio file and nested folders to order.
    for rel in ("id10002/vidC/00001.wav", "id10001/vidB/00002.wav", "id10001/vidA/00001.wav", "stray.wav"):
        write_wav(str(local / "vox" / rel))
    (local / "vox" / "id10001" / "notes.txt").write_text("not audio")
    # A Kaldi data dir.
    write_wav(str(local / "kaldi" / "wav" / "a.wav"))
    (local / "kaldi" / "wav.scp").write_text("uttA wav/a.wav\nuttB ../escape.wav\nuttC sox x.wav -t wav - |\n")
    (local / "kaldi" / "utt2spk").write_text("uttA spk1\nuttB spk1\nuttC spk1\n")
    (local / "kaldi" / "phones").write_text("uttA ˈapfəl\n")
    # A manifest.
    write_wav(str(local / "man" / "audio" / "a.wav"))
    (local / "man" / "manifest.jsonl").write_text(
        json.dumps({"utterance": "u1", "audio": "audio/a.wav", "speaker": "s1"})
        + "\n\n"
        + json.dumps({"utterance": "u2", "audio": "../../x.wav", "speaker": "s1"})
        + "\n"
    )
    remote = f"{bucket}/inputs"
    ramfs.upload_tree(str(local), remote)

    for name, kind in (("vox", "voxceleb"), ("kaldi", "kaldi"), ("man/manifest.jsonl", "manifest")):
        here, there = make_spec(str(local / name)), make_spec(f"{remote}/{name}")
        assert here.kind == there.kind == kind
        assert there.path == f"{remote}/{name}" and there.data_root.startswith(remote)
        local_items, remote_items = list(expand_input(here)), list(expand_input(there))
        # Same items in the same order; only where they came from differs.
        assert [(i.order, i.payload) for i in remote_items] == [(i.order, i.payload) for i in local_items], name
        parsed_here = [parse_input(i, here) for i in local_items]
        parsed_there = [parse_input(i, there) for i in remote_items]
        assert [type(p).__name__ for p in parsed_there] == [type(p).__name__ for p in parsed_here], name
        assert [getattr(p, "reason", None) for p in parsed_there] == [
            getattr(p, "reason", None) for p in parsed_here
        ], name
        for record in parsed_there:
            if hasattr(record, "audio_path"):
                assert record.audio_path.startswith(there.data_root + "/")
    vox = make_spec(f"{remote}/vox")
    assert [i.source for i in expand_input(vox)][0] == f"{remote}/vox/stray.wav"
    assert count_ignored_files(vox) == count_ignored_files(make_spec(str(local / "vox"))) == 1
    with pytest.raises(ValueError, match="neither a manifest object nor a prefix"):
        make_spec(f"{remote}/nothing-here")


def test_audio_objects_decode_like_local_files(tmp_path, bucket):
    remote = f"{bucket}/audio"
    for name, writer in UNUSUAL.items():
        path = writer(str(tmp_path / name))
        uri = f"{remote}/{os.path.basename(path)}"
        ramfs.put(uri, open(path, "rb").read())
        here, there = decode(path, 16000, 2.0), decode(uri, 16000, 2.0)
        assert (there.source_rate, there.source_channels) == (here.source_rate, here.source_channels), name
        np.testing.assert_array_equal(there.samples, here.samples, err_msg=name)
    for name, (writer, reason) in BAD_AUDIO.items():
        path = writer(str(tmp_path / name))
        uri = f"{remote}/{os.path.basename(path)}"
        ramfs.put(uri, open(path, "rb").read())
        with pytest.raises(AudioRejected) as rejected:
            check_usable(decode(uri, 16000, 2.0), 400, 2.0)
        assert rejected.value.reason == reason, name
    with pytest.raises(AudioRejected, match="no such object") as missing:
        decode(f"{remote}/missing.wav", 16000)
    assert missing.value.reason == "missing_file"


# ----------------------------------------------------------------------------------------------
# The feature job


@pytest.fixture(scope="module")
def remote_features(tiny_corpus, bucket):
    """The tiny corpus uploaded to ram://, and the feature job run on it into ram://."""
    span = f"{bucket}/corpus"
    ramfs.upload_tree(tiny_corpus, span)
    out = f"{bucket}/features"
    summary = features_job.run_job(
        make_spec(f"{span}/manifest.jsonl"), FeatureConfig(), out, PipelineOptions(IN_MEMORY)
    )
    return span, out, summary


def test_feature_job_reads_and_writes_object_storage(remote_features, tiny_features, tiny_corpus):
    span, out, summary = remote_features
    local_summary = json.load(open(os.path.join(tiny_features, "summary.json")))
    for key in ("inputs", "good", "dead_letter", "frames", "audio_seconds", "features"):
        assert summary[key] == local_summary[key], key
    assert summary["input"]["path"] == f"{span}/manifest.jsonl" and summary["input"]["data_root"] == span
    assert json.loads(storage.beam_read_bytes(f"{out}/summary.json")) == summary
    # The same features, bit for bit, as the job on the local copy of the corpus.
    here, there = _examples(tiny_features), _examples(out)
    assert sorted(there) == sorted(here) and len(there) == sum(summary["good"].values())
    for utterance, example in there.items():
        assert records.encode_example(example) == records.encode_example(here[utterance]), utterance
    for name in ("global_stats.json", "counts/counts.json"):
        assert storage.beam_exists(f"{out}/{name}"), name
    assert len(_jsonl(f"{out}/index/utterances-*")) == len(there)
    # A second run into the same output is refused, as on a local folder.
    with pytest.raises(FileExistsError):
        features_job.run_job(make_spec(f"{span}/manifest.jsonl"), FeatureConfig(), out, PipelineOptions(IN_MEMORY))


def test_feature_job_on_object_storage_dead_letters_paths_outside_the_root(tmp_path, bucket):
    base = f"{bucket}/mixed"
    manifest, expected, good = build_mixed_manifest(str(tmp_path / "data"))
    root = f"{base}/data"
    extra = {  # utterance -> (audio path, expected reason or None for good)
        "uri_inside": (f"{root}/audio/good1.wav", None),
        "dotdot_inside": ("audio/../audio/good2.wav", None),
        "other_bucket": (f"{bucket}-other/secret.wav", OUTSIDE_ROOT),
        "climbs_out_of_the_bucket": ("../../../../" + bucket[len("ram://") :] + "-other/secret.wav", OUTSIDE_ROOT),
        "sibling_prefix": (f"{base}/data-old/audio/good0.wav", OUTSIDE_ROOT),
        "other_scheme": (f"memfs://{root[len('ram://') :]}/audio/good0.wav", OUTSIDE_ROOT),
    }
    lines = [
        json.dumps(
            {
                "utterance": u,
                "audio": a,
                "speaker": f"spk_{u}",
                "session": "s1",
                "text": "t",
                "phones": GOOD_PHONES,
                "split": "train",
            }
        )
        for u, (a, _) in extra.items()
    ]
    # Uploaded as `gsutil cp -r` would: the tree (data/ and outside/), without its symlink.
    ramfs.upload_tree(str(tmp_path), base)
    ramfs.put(f"{bucket}-other/secret.wav", open(str(tmp_path / "outside" / "secret.wav"), "rb").read())
    ramfs.put(f"{base}/data-old/audio/good0.wav", open(str(tmp_path / "data" / "audio" / "good0.wav"), "rb").read())
    ramfs.put(f"{root}/manifest.jsonl", open(manifest, "rb").read() + "\n".join(lines).encode() + b"\n")
    try:
        out = f"{base}/out"
        summary = features_job.run_job(make_spec(f"{root}/manifest.jsonl"), CONFIG, out, PipelineOptions(IN_MEMORY))
    finally:
        ramfs.clear(f"{bucket}-other")
    # Object stores have no symlinks: the link was not uploaded, so its line names a missing object.
    expected = {**expected, "symlink": "missing_file"}
    expected.update({u: reason for u, (_, reason) in extra.items() if reason})
    good = good + [u for u, (_, reason) in extra.items() if not reason]
    dead = _jsonl(f"{out}/dead_letter/dead_letter-*")
    by_utterance = {d["utterance"]: d for d in dead if d["utterance"] and d["reason"] != "duplicate_utterance"}
    for key, reason in expected.items():
        if not key.startswith("line:") and "#" not in key:
            assert by_utterance[key]["reason"] == reason, (key, by_utterance[key])
    for key in ("dotdot", "absolute", "other_bucket", "climbs_out_of_the_bucket", "sibling_prefix", "other_scheme"):
        assert "outside the data root" in by_utterance[key]["detail"], by_utterance[key]
    assert summary["inputs"] == summary["dead_letter"]["total"] + sum(summary["good"].values())
    assert summary["dead_letter"]["total"] == len(expected)
    assert sorted(_examples(out)) == sorted(good)


# ----------------------------------------------------------------------------------------------
# The custom components' executors with their artifact URIs under ram://


def _artifact(cls, uri: str, **custom):
    artifact = cls()
    artifact.uri = uri
    for key, value in custom.items():
        if isinstance(value, int):
            artifact.set_int_custom_property(key, value)
        else:
            artifact.set_string_custom_property(key, value)
    return artifact


def test_validation_gate_reads_and_writes_object_storage(bucket):
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx.types import standard_artifacts

    from speechpipe.components.validation_gate import ValidationGate, ValidationGateError, ValidationResult

    base = f"{bucket}/gate"
    counts = dict(
        inputs=10,
        dead_letter=json.dumps({"total": 1, "by_reason": {"silent": 1}}),
        good=json.dumps({"train": 7, "validation": 1, "test": 1}),
    )
    examples = _artifact(standard_artifacts.Examples, f"{base}/examples", **counts)
    clean = _artifact(standard_artifacts.ExampleAnomalies, f"{base}/clean")
    ramfs.put(f"{base}/clean/Split-train/SchemaDiff.pb", anomalies_pb2.Anomalies().SerializeToString())
    passed = _artifact(ValidationResult, f"{base}/passed")
    ValidationGate.test_call(examples=examples, anomalies=clean, result=passed)
    assert passed.get_int_custom_property("passed") == 1
    assert storage.read_json(f"{base}/passed/validation.json")["passed"] is True

    anomalies = anomalies_pb2.Anomalies()
    anomalies.anomaly_info["num_frames"].short_description = "Out-of-range values"
    anomalies.anomaly_info["num_frames"].description = "Unexpectedly large value: 9999."
    ramfs.put(f"{base}/bad/Split-train/SchemaDiff.pb", anomalies.SerializeToString())
    failed = _artifact(ValidationResult, f"{base}/failed")
    with pytest.raises(ValidationGateError, match="train: num_frames: Out-of-range values"):
        ValidationGate.test_call(
            examples=examples, anomalies=_artifact(standard_artifacts.ExampleAnomalies, f"{base}/bad"), result=failed
        )
    verdict = storage.read_json(f"{base}/failed/validation.json")
    assert verdict["passed"] is False and "num_frames" in verdict["reasons"][0]


def test_pair_gen_reads_and_writes_object_storage(remote_features, tiny_features, tmp_path, bucket):
    from tfx.types import standard_artifacts

    from speechpipe.components.pair_gen import PairGen, SpeakerPairs
    from speechpipe.speakers.pairs import read_pair_file

    _, features, _ = remote_features
    examples = _artifact(standard_artifacts.Examples, features)
    examples.span = 0
    pairs = _artifact(SpeakerPairs, f"{bucket}/pairs")
    PairGen.test_call(examples=examples, pairs=pairs, beam_args=json.dumps(IN_MEMORY), seed=0)
    local = str(tmp_path / "pairs")
    pairs_job.run(["--features", tiny_features, "--out", local, "--seed", "0"] + IN_MEMORY)
    here = json.load(open(os.path.join(local, pairs_job.SUMMARY)))
    there = storage.read_json(f"{bucket}/pairs/{pairs_job.SUMMARY}")
    assert json.loads(pairs.get_string_custom_property("pairs")) == {s: c["pairs"] for s, c in here["splits"].items()}
    assert pairs.get_int_custom_property("span") == 0
    # PairGen: the same counts and test trial list as the job on the local copy, and no pair
    # records (the trainer draws its own pairs).
    for split in SPLITS:
        assert there["splits"][split]["pairs"] == here["splits"][split]["pairs"], split
        assert not storage.beam_match(f"{bucket}/pairs/pairs/{split}/pairs-*"), split
    assert pairs.get_string_custom_property("test_trials_file") == "trials_test.txt"
    assert (
        storage.beam_read_bytes(f"{bucket}/pairs/trials_test.txt")
        == open(os.path.join(local, "trials_test.txt"), "rb").read()
    )
    assert not storage.beam_match(f"{bucket}/pairs/trials_train.txt")
    # The job itself writes every split's pair records to object storage, as it does locally.
    pairs_job.run(["--features", features, "--out", f"{bucket}/all_pairs", "--seed", "0"] + IN_MEMORY)
    for split in SPLITS:
        drawn = sorted(
            p for f in storage.beam_match(f"{bucket}/all_pairs/pairs/{split}/pairs-*") for p in read_pair_file(f)
        )
        assert drawn and drawn == sorted(
            p for f in here["splits"][split]["pair_files"] for p in read_pair_file(os.path.join(local, f))
        ), split


def _write_test_split(uri: str, speakers: int = 3, utterances: int = 4, frames: int = 120, bins: int = 80):
    """A Split-test of synthetic utterances (speaker-dependent spectra) written by TensorFlow to a
    URI, and every trial between them; ids are VoxCeleb-shaped."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    ids = []
    with tf.io.TFRecordWriter(f"{uri}/Split-test/data_tfrecord-00000-of-00001") as writer:
        for s in range(speakers):
            profile = rng.normal(0, 1, bins)
            for n in range(utterances):
                utterance = f"id1000{s + 1}/abcdefghij{s}/{n + 1:05d}"
                features = (profile + 0.3 * rng.normal(0, 1, (frames, bins))).astype(np.float32)
                writer.write(
                    records.encode_example(
                        records.UtteranceFeatures(
                            utterance=utterance,
                            speaker=f"id1000{s + 1}",
                            session=f"abcdefghij{s}",
                            split="test",
                            features=features,
                            duration=frames / 100,
                        )
                    )
                )
                ids.append(utterance)
    return [(int(a.split("/")[0] == b.split("/")[0]), a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]


def test_speaker_evaluator_and_registry_pusher_on_object_storage(tmp_path, bucket):
    import tensorflow as tf
    import tf_keras as keras
    from tfx.types import standard_artifacts

    from speechpipe.components.pair_gen import SpeakerPairs
    from speechpipe.components.registry_pusher import PUSH_FILE, Executor
    from speechpipe.components.speaker_evaluator import SpeakerEvaluator
    from speechpipe.results.registry import CHAMPION, Registry
    from speechpipe.speakers import embedder
    from speechpipe.speakers.embedder import EmbedderConfig
    from speechpipe.speakers.trials import write_trials

    base = f"{bucket}/speaker"
    trials = _write_test_split(f"{base}/examples")
    text = io.StringIO()
    write_trials(text, trials)
    ramfs.put(f"{base}/pairs/trials_test.txt", text.getvalue().encode())
    # An untrained tiny embedder, exported locally and uploaded as a Trainer's Model artifact.
    keras.utils.set_random_seed(0)
    config = EmbedderConfig(
        lstm_units=8, dense_units=(16,), output_dim=8, dropout=0.1, backend="none", embedding="hidden"
    )
    exported = embedder.export_embedder(
        str(tmp_path / "model"), embedder.build_base_network(config), config, FeatureConfig()
    )
    ramfs.upload_tree(exported, f"{base}/model/Format-Serving")
    model = _artifact(standard_artifacts.Model, f"{base}/model")
    model.id = 7
    examples = _artifact(standard_artifacts.Examples, f"{base}/examples")
    examples.span, examples.id = 0, 3
    blessing = _artifact(standard_artifacts.ModelBlessing, f"{base}/blessing")
    blessing.id = 9
    SpeakerEvaluator.test_call(
        model=model,
        examples=examples,
        pairs=_artifact(SpeakerPairs, f"{base}/pairs"),
        blessing=blessing,
        champion=None,
        max_eer=1.0,
        data_key="key",
    )
    evaluation = storage.read_json(f"{base}/blessing/evaluation.json")
    assert evaluation["blessed"] and evaluation["candidate"]["trials"] == len(trials)
    assert evaluation["candidate"]["speakers"] == 3 and 0.0 <= evaluation["candidate"]["eer"] <= 1.0
    for name in ("BLESSED", "det.png", "candidate_embeddings.png"):
        assert storage.exists(f"{base}/blessing/{name}"), name
    assert storage.read_bytes(f"{base}/blessing/det.png").startswith(b"\x89PNG")
    assert blessing.get_int_custom_property("blessed") == 1

    # The pusher: reads the blessing and the model from ram://, registers (MLflow, local), loads
    # the version back, smoke-tests `embed`, writes push.json to ram://.
    home = tmp_path / "mlflow"
    tracking = f"sqlite:///{home}/mlflow.db"
    pushed = _artifact(standard_artifacts.PushedModel, f"{base}/pushed")
    Executor().Do(
        {"model": [model], "model_blessing": [blessing], "examples": [examples]},
        {"pushed_model": [pushed]},
        {
            "tracking_uri": tracking,
            "artifact_root": str(home / "artifacts"),
            "model_name": "ram-embedder",
            "pipeline_name": "p",
            "feature_config": json.dumps(FeatureConfig().to_json()),
            "model_kind": "speaker",
            "data_key": "key",
        },
    )
    push = storage.read_json(f"{base}/pushed/{PUSH_FILE}")
    assert push["pushed"] is True and push["version"] == "1", push
    assert push["smoke_test"]["signature"] == "embed"
    registry = Registry(tracking)
    assert registry.champion("ram-embedder") == "1"
    from speechpipe.results.resolve import saved_model_in

    downloaded = saved_model_in(registry.download("ram-embedder", "1", str(tmp_path / "downloaded")))
    # The whole SavedModel was staged and logged (inside the MLflow model), the embedder's config included.
    assert os.path.exists(os.path.join(downloaded, "assets.extra", embedder.CONFIG_FILE))
    assert "embed" in tf.saved_model.load(downloaded).signatures
    (model_info,) = [m for m in registry.list() if m["name"] == "ram-embedder"]
    assert model_info["aliases"] == {CHAMPION: "1"}
    run = registry.client.get_run(model_info["versions"][0]["run_id"])
    artifacts = {a.path for a in registry.client.list_artifacts(run.info.run_id)}
    assert "evaluation" in artifacts  # the blessing's evaluation.json, staged from ram://


@pytest.mark.slow  # runs a trainer
def test_embedder_trainer_reads_and_exports_on_object_storage(remote_features, tiny_training_input, bucket):
    """The speaker trainer's run_fn with its speaker blocks, back-end sample, validation split,
    serving folder and TensorBoard logs under ram://: the SavedModel, its assets.extra config and
    training_result.json land there, and the model loads back from the URI."""
    import tensorflow as tf
    from tfx.components.trainer.fn_args_utils import FnArgs

    from speechpipe.components import embedder_trainer, trainer_contract
    from speechpipe.components.embedder_trainer import EmbedderTrainConfig
    from speechpipe.speakers import embedder
    from speechpipe.speakers.embedder import EmbedderConfig

    _, features, summary = remote_features
    base = f"{bucket}/embedder_trainer"
    for part in ("blocks/train", "backend/train"):  # the pair job's output, as a cluster run leaves it
        for path in glob.glob(os.path.join(tiny_training_input, part, "*")):
            tf.io.gfile.makedirs(f"{base}/input/{part}")
            tf.io.gfile.copy(path, f"{base}/input/{part}/{os.path.basename(path)}")
    config = EmbedderTrainConfig(
        model=EmbedderConfig(lstm_units=8, dense_units=(16,), output_dim=8, dropout=0.1),
        speakers_per_batch=4,
        segments_per_speaker=2,
        eval_every_steps=2,
    )
    embedder_trainer.run_fn(
        FnArgs(
            train_files=[f"{base}/input/blocks/train/*"],
            eval_files=[f"{features}/Split-validation", f"{features}/Split-test"],
            serving_model_dir=f"{base}/serving",
            model_run_dir=f"{base}/run",
            train_steps=2,
            custom_config={"features": summary["features"], "embedder": config.to_json()},
        )
    )
    result = storage.read_json(f"{base}/serving/{trainer_contract.RESULT_FILE}")
    assert result["steps"] == 2
    assert storage.exists(f"{base}/serving/saved_model.pb")
    assert storage.glob(f"{base}/run/tensorboard/train/events.out.tfevents.*")
    loaded = embedder.load_embedder(f"{base}/serving")
    assert loaded.info["cluster_threshold"] == result["cluster_threshold"]
    waves = np.random.default_rng(0).normal(size=(1, 8000)).astype(np.float32) * 0.1
    # the default LDA back end, fitted on the training speakers, is part of the export
    assert result["backend"]["kind"] == "lda"
    assert loaded.embed(waves, np.array([8000])).shape == (1, result["backend"]["output_dims"])


def test_registry_hands_an_object_storage_artifact_root_to_mlflow(tmp_path):
    from speechpipe.results.registry import EXPERIMENT, Registry

    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", "gs://bucket/mlflow")
    experiment = registry.client.get_experiment(registry._experiment_id())
    assert experiment.name == EXPERIMENT and experiment.artifact_location == "gs://bucket/mlflow"
    assert not os.path.exists("gs:")


# ----------------------------------------------------------------------------------------------
# The whole TFX pipeline: span and pipeline root under ram://, ML Metadata and MLflow local


@pytest.mark.e2e
def test_tfx_pipeline_with_root_and_span_on_object_storage(remote_features, tmp_path, bucket):
    from speechpipe.pipeline.local_runner import run_pipeline
    from speechpipe.pipeline.run_config import DEMO_CTC, RunConfig
    from speechpipe.results import report
    from speechpipe.results.registry import Registry

    @dataclass(frozen=True)
    class RemoteRootConfig(RunConfig):
        """A local home (SQLite ML Metadata and MLflow, as `speechpipe run` needs) whose pipeline
        root, where every artifact goes, is on object storage as on a cluster."""

        remote_root: str = ""

        @property
        def pipeline_root(self) -> str:
            return self.remote_root

    span, _, _ = remote_features
    root = f"{bucket}/pipeline_root"
    config = RemoteRootConfig(
        home=str(tmp_path / "home"),
        spans=(f"{span}/manifest.jsonl",),
        branches=("ctc",),
        max_per=10.0,
        ctc=replace(
            DEMO_CTC,
            model=replace(DEMO_CTC.model, lstm_units=(16,)),
            max_epochs=1,
            max_minutes=1.0,
            batch_size=8,
            patience=1,
        ),
        beam_args=tuple(IN_MEMORY),
        remote_root=root,
    )
    summary = run_pipeline(config)
    assert summary["status"] == "succeeded", summary["error"]
    for node in (
        "CTCFeatureGen_span0",
        "CTCStatisticsGen_span0",
        "CTCExampleValidator_span0",
        "CTCValidationGate_span0",
        "CTCTrainer",
        "CTCEvaluator",
        "CTCRegistryPusher",
    ):
        assert node in summary["executed"], (node, summary["nodes"])
    # Every artifact of the run is under the remote root, and the report read them from there.
    nodes = report.run_nodes(config, summary["run_id"])
    uris = [a["uri"] for info in nodes.values() for artifacts in info["outputs"].values() for a in artifacts]
    assert uris and all(uri.startswith(root + "/") for uri in uris), uris
    assert summary["data"][0]["input"] == f"{span}/manifest.jsonl"
    assert summary["statistics"]["0"]["train"]["examples"] > 0
    assert summary["validation"]["0"]["passed"] is True
    assert summary["training"]["epochs"] == 1 and summary["warm_start"]["warm_start"] is False
    assert summary["evaluation"]["blessed"] is True
    assert summary["push"]["pushed"] is True and summary["push"]["version"] == "1"
    assert storage.exists(
        storage.join(nodes["CTCTrainer"]["outputs"]["model"][0]["uri"], "Format-Serving", "saved_model.pb")
    )
    (model,) = [m for m in Registry(config.registry_uri).list() if m["name"] == config.ctc_model_name]
    assert model["versions"][0]["tags"]["smoke_test"] == "passed"
