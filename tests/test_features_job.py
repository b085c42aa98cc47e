import json
import os
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from speechpipe.audio.decode import decode
from speechpipe.audio.features import compute_features
from speechpipe.audio.sources import make_spec
from speechpipe.config import FeatureConfig
from speechpipe.io import records
from speechpipe.jobs import features_job
from tests.audio_inputs import BAD_AUDIO, UNUSUAL, build_mixed_manifest, write_m4a, write_wav
from tests.helpers import read_manifest

CONFIG = FeatureConfig(max_seconds=2.0)
IN_MEMORY = ["--direct_running_mode=in_memory"]


def _expected_pairs(expected):
    return [(None if k.startswith("line:") else k.split("#")[0], reason) for k, reason in expected.items()]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mixed") / "data")
    return build_mixed_manifest(root)


@pytest.fixture(scope="module")
def mixed_run(mixed, tmp_path_factory):
    manifest, expected, good = mixed
    out = str(tmp_path_factory.mktemp("mixed_out"))
    summary = features_job.run_job(make_spec(manifest), CONFIG, out, PipelineOptions(IN_MEMORY))
    return out, summary


def test_every_bad_input_is_dead_lettered_and_every_unusual_format_accepted(mixed):
    manifest, expected, good = mixed
    with TestPipeline(options=PipelineOptions(IN_MEMORY)) as p:
        outputs = features_job.build(p, make_spec(manifest), CONFIG)
        assert_that(
            outputs["dead_letter"] | "Reasons" >> beam.Map(lambda d: (d.utterance, d.reason)),
            equal_to(_expected_pairs(expected)),
            label="DeadLetterReasons",
        )
        assert_that(
            outputs["examples"] | "Ids" >> beam.Map(lambda e: e.utterance), equal_to(good), label="GoodUtterances"
        )
    reasons = set(expected.values())
    assert {r for _, r in BAD_AUDIO.values()} <= reasons
    assert {
        "missing_file",
        "outside_root",
        "unknown_phone",
        "duplicate_utterance",
        "invalid_json",
        "invalid_utf8",
        "missing_field",
    } <= reasons
    assert set(UNUSUAL) <= set(good)


def test_summary_accounts_for_every_input(mixed, mixed_run):
    manifest, expected, good = mixed
    out, summary = mixed_run
    with open(manifest, "rb") as f:
        n_lines = sum(1 for line in f if line.strip())
    assert summary["inputs"] == n_lines
    assert sum(summary["good"].values()) == len(good)
    assert summary["dead_letter"]["total"] == len(expected)
    assert summary["dead_letter"]["by_reason"] == dict(Counter(expected.values()))
    assert sum(summary["good"].values()) + summary["dead_letter"]["total"] == summary["inputs"]
    assert summary["good"] == {"train": len(good) - 2, "validation": 1, "test": 1}
    assert summary["features"]["n_mels"] == CONFIG.n_mels
    assert json.load(open(os.path.join(out, "summary.json"))) == summary


def test_dead_letter_records_name_source_stage_and_reason(mixed_run):
    out, _ = mixed_run
    lines = []
    for name in os.listdir(os.path.join(out, "dead_letter")):
        with open(os.path.join(out, "dead_letter", name), encoding="utf-8") as f:
            lines += [json.loads(line) for line in f]
    by_utt = {d["utterance"]: d for d in lines if d["utterance"]}
    assert by_utt["badphone"]["reason"] == "unknown_phone" and "'ʘ'" in by_utt["badphone"]["detail"]
    assert by_utt["long"]["detail"].startswith("3.00 s > max 2 s")
    assert by_utt["symlink"]["stage"] == "input" and "symlink" in by_utt["symlink"]["detail"]
    assert by_utt["truncated"]["stage"] == "audio"
    assert all(d["source"] and d["stage"] and d["reason"] and d["detail"] for d in lines)
    assert any(d["source"].endswith("manifest.jsonl:%d" % i) for d in lines for i in range(1, 100))


def test_records_read_back_with_phones_and_shapes(mixed_run):
    out, summary = mixed_run
    examples = [e for split in ("train", "validation", "test") for e in records.read_split(out, split)]
    assert len(examples) == sum(summary["good"].values())
    for e in examples:
        assert e.features.shape[1] == CONFIG.n_mels and e.features.dtype == np.float32
        assert e.phones == ["a", "pf", "ə", "l", "ʃ", "t", "ɾ", "ʊ", "m", "pf"]
        assert len(e.phone_ids) == len(e.phones)
        assert e.split in ("train", "validation", "test")
    index = [
        json.loads(line) for n in os.listdir(os.path.join(out, "index")) for line in open(os.path.join(out, "index", n))
    ]
    assert sorted(i["utterance"] for i in index) == sorted(e.utterance for e in examples)


def test_unusual_formats_decode_to_the_same_signal(tmp_path):
    reference = decode(write_wav(str(tmp_path / "ref.wav")), 16000).samples
    for name, writer in UNUSUAL.items():
        samples = decode(writer(str(tmp_path / name)), 16000).samples
        if name == "m4a":  # AAC adds encoder priming: compare levels only
            assert abs(np.std(samples[2048:16000]) - np.std(reference[2048:16000])) < 0.02
            continue
        assert abs(len(samples) - len(reference)) <= 2, name
        n = min(len(samples), len(reference))
        # the test signal's 1 % noise is drawn per sample, so it differs between rates (rms 0.014)
        tolerance = 0.05 if name in ("pcm8", "rate8k") else 0.02 if name.startswith("rate") else 0.01
        assert np.sqrt(np.mean((samples[:n] - reference[:n]) ** 2)) < tolerance, name


def test_voxceleb_layout_input(tmp_path):
    root = tmp_path / "vox"
    write_wav(str(root / "id10001" / "vidA" / "00001.wav"))
    write_wav(str(root / "id10001" / "vidB" / "00001.flac"), fmt="FLAC")
    write_m4a(str(root / "id10002" / "vidC" / "00001.m4a"))
    write_wav(str(root / "stray.wav"))  # not <speaker>/<session>/<file>
    (root / "README.txt").write_text("not audio")
    summary = features_job.run_job(make_spec(str(root)), CONFIG, str(tmp_path / "out"), PipelineOptions(IN_MEMORY))
    assert summary["input"]["kind"] == "voxceleb"
    assert sum(summary["good"].values()) == 3
    assert summary["dead_letter"]["by_reason"] == {"bad_layout": 1}
    assert summary["input"]["ignored_non_audio_files"] == 1
    ids = {e.utterance for s in ("train", "validation", "test") for e in records.read_split(str(tmp_path / "out"), s)}
    assert ids == {"id10001/vidA/00001", "id10001/vidB/00001", "id10002/vidC/00001"}


def test_kaldi_data_dir_input(tmp_path):
    root = tmp_path / "kaldi"
    write_wav(str(root / "wav" / "a.wav"))
    write_wav(str(root / "wav" / "b.wav"), seed=1)
    (root / "wav.scp").write_text("uttA wav/a.wav\nuttB wav/b.wav\nuttC sox x.wav -t wav - |\nuttD wav/a.wav\n")
    (root / "utt2spk").write_text("uttA spk1\nuttB spk2\nuttC spk1\n")
    (root / "phones").write_text("uttA ˈapfəl\n")
    summary = features_job.run_job(make_spec(str(root)), CONFIG, str(tmp_path / "out"), PipelineOptions(IN_MEMORY))
    assert summary["input"]["kind"] == "kaldi"
    assert sum(summary["good"].values()) == 2
    assert summary["dead_letter"]["by_reason"] == {"command_not_supported": 1, "missing_speaker": 1}
    examples = {
        e.utterance: e for s in ("train", "validation", "test") for e in records.read_split(str(tmp_path / "out"), s)
    }
    assert examples["uttA"].phones == ["a", "pf", "ə", "l"] and examples["uttB"].phone_ids is None


def test_job_is_deterministic(tiny_corpus, tmp_path):
    spec = make_spec(os.path.join(tiny_corpus, "manifest.jsonl"))
    serialized = []
    for run in ("a", "b"):
        out = str(tmp_path / run)
        features_job.run_job(spec, FeatureConfig(), out, PipelineOptions(IN_MEMORY))
        serialized.append(
            {
                s: sorted(records.encode_example(e) for e in records.read_split(out, s))
                for s in ("train", "validation", "test")
            }
        )
    assert serialized[0] == serialized[1]
    corpus_splits = {r["utterance"]: r["split"] for r in read_manifest(tiny_corpus)}
    assert {
        u: s for s, items in serialized[0].items() for u in (records.decode_example(b).utterance for b in items)
    } == corpus_splits


def test_global_statistics_equal_numpy(tiny_corpus, tmp_path):
    config = FeatureConfig(normalization="global")
    out = str(tmp_path / "global")
    features_job.run_job(
        make_spec(os.path.join(tiny_corpus, "manifest.jsonl")), config, out, PipelineOptions(IN_MEMORY)
    )
    train = [r for r in read_manifest(tiny_corpus) if r["split"] == "train"]
    frames = np.concatenate(
        [compute_features(decode(os.path.join(tiny_corpus, r["audio"]), 16000).samples, config) for r in train]
    ).astype(np.float64)
    stats = json.load(open(os.path.join(out, "global_stats.json")))
    assert stats["frames"] == frames.shape[0]
    np.testing.assert_allclose(stats["mean"], frames.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats["std"], frames.std(axis=0), rtol=1e-6, atol=1e-9)
    # and the records were normalised with them
    train_frames = np.concatenate([e.features for e in records.read_split(out, "train")]).astype(np.float64)
    np.testing.assert_allclose(train_frames.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train_frames.std(axis=0), 1.0, atol=1e-4)


def test_output_folder_with_a_summary_is_refused(mixed, mixed_run):
    out, _ = mixed_run
    with pytest.raises(FileExistsError):
        features_job.run_job(make_spec(mixed[0]), CONFIG, out, PipelineOptions(IN_MEMORY))


def test_fixed_shard_count_and_no_temporary_files_left(tiny_corpus, tmp_path):
    out = str(tmp_path / "sharded")
    summary = features_job.run_job(
        make_spec(os.path.join(tiny_corpus, "manifest.jsonl")),
        FeatureConfig(),
        out,
        PipelineOptions(IN_MEMORY),
        num_shards=2,
    )
    for split in ("train", "validation", "test"):
        assert sorted(summary["shards"][split]) == [f"data_tfrecord-{k:05d}-of-00002" for k in range(2)]
        assert sum(summary["shards"][split].values()) == summary["good"][split]
    assert not [name for name in os.listdir(out) if name.startswith(".temp")]


def test_direct_runs_use_the_fn_api_runner_and_other_runners_stay_as_given():
    """No Prism attempt (a binary downloaded at run time) for the DirectRunner; other runners as
    their options say."""
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    assert isinstance(features_job.local_runner(PipelineOptions(IN_MEMORY)), FnApiRunner)
    assert isinstance(features_job.local_runner(PipelineOptions(["--runner=DirectRunner"])), FnApiRunner)
    assert features_job.local_runner(PipelineOptions(["--runner=PortableRunner"])) is None


# ------------------------------------------------------------------- augmentation of the train split


def _split_bytes(out):
    return {
        s: sorted(records.encode_example(e) for e in records.read_split(out, s))
        for s in ("train", "validation", "test")
    }


def _index(out):
    lines = []
    for name in sorted(os.listdir(os.path.join(out, "index"))):
        with open(os.path.join(out, "index", name), encoding="utf-8") as f:
            lines += [json.loads(line) for line in f]
    return lines


@pytest.fixture(scope="module")
def augmented_runs(tiny_corpus, tmp_path_factory):
    """The tiny corpus through the job with global normalisation, clean and with one copy of
    each kind per training utterance (twice, for determinism)."""
    from speechpipe.audio.augment import AugmentConfig

    spec = make_spec(os.path.join(tiny_corpus, "manifest.jsonl"))
    config = FeatureConfig(normalization="global")
    augment = AugmentConfig(copies=3, rir_bank=8, babble_speakers=(1, 2), babble_pool=10)
    root = tmp_path_factory.mktemp("augmented")
    clean = features_job.run_job(spec, config, str(root / "clean"), PipelineOptions(IN_MEMORY))
    runs = [
        features_job.run_job(spec, config, str(root / name), PipelineOptions(IN_MEMORY), augment=augment)
        for name in ("a", "b")
    ]
    return root, clean, runs, augment


def test_augmented_copies_go_to_the_train_split_only_and_are_counted(augmented_runs, tiny_corpus):
    from speechpipe.audio.augment import KINDS

    root, clean, (summary, _), augment = augmented_runs
    out = str(root / "a")
    manifest = read_manifest(tiny_corpus)
    train = [r for r in manifest if r["split"] == "train"]
    assert summary["good"] == clean["good"]  # the inputs' accounting is unchanged
    assert summary["inputs"] == clean["inputs"] == sum(summary["good"].values()) + summary["dead_letter"]["total"]
    block = summary["augmentation"]
    assert block["asked"] == block["train"] == 3 * len(train)
    assert block["by_kind"] == {k: len(train) for k in KINDS}
    assert block["refused"] == {"total": 0, "by_reason": {}}
    assert sum(summary["shards"]["train"].values()) == len(train) * 4
    for split in ("validation", "test"):
        assert sum(summary["shards"][split].values()) == clean["good"][split]
    examples = {e.utterance: e for e in records.read_split(out, "train")}
    speakers = {r["utterance"]: r["speaker"] for r in train}
    for r in train:
        copies = [u for u in examples if u.startswith(r["utterance"] + "-aug")]
        assert sorted(u.rsplit("-", 1)[1] for u in copies) == sorted(KINDS)
        for u in copies:
            e = examples[u]
            assert e.phones == examples[r["utterance"]].phones and e.text == examples[r["utterance"]].text
            expected_speaker = speakers[r["utterance"]]
            if u.endswith("-speed"):
                assert e.speaker in (expected_speaker + "-speed0.9", expected_speaker + "-speed1.1")
            else:
                assert e.speaker == expected_speaker
    # the index names each copy's source and what was done to it
    index = {line["utterance"]: line for line in _index(out)}
    assert len(index) == sum(sum(v.values()) for v in summary["shards"].values())
    copies = [line for line in index.values() if "augmented_from" in line]
    assert len(copies) == block["train"] and all(line["split"] == "train" for line in copies)
    assert {line["augmentation"].split(":")[0] for line in copies} == set(KINDS)
    assert any(line["augmentation"].startswith("noise:babble") for line in copies)


def test_augmentation_leaves_statistics_validation_and_test_as_without_it(augmented_runs):
    """The global statistics come from the clean training audio, so the clean splits are the
    bytes a run without augmentation writes, and serving normalises as the model trained."""
    root, _, _, _ = augmented_runs
    clean, augmented = _split_bytes(str(root / "clean")), _split_bytes(str(root / "a"))
    with open(root / "clean" / "global_stats.json") as f, open(root / "a" / "global_stats.json") as g:
        assert f.read() == g.read()
    assert augmented["validation"] == clean["validation"] and augmented["test"] == clean["test"]
    assert set(clean["train"]) < set(augmented["train"])


def test_augmented_job_is_deterministic(augmented_runs):
    root, _, _, _ = augmented_runs
    assert _split_bytes(str(root / "a")) == _split_bytes(str(root / "b"))


def test_augmentation_off_writes_the_same_bytes(tiny_corpus, tmp_path):
    from speechpipe.audio.augment import AugmentConfig

    spec = make_spec(os.path.join(tiny_corpus, "manifest.jsonl"))
    plain = features_job.run_job(spec, FeatureConfig(), str(tmp_path / "plain"), PipelineOptions(IN_MEMORY))
    off = features_job.run_job(
        spec, FeatureConfig(), str(tmp_path / "off"), PipelineOptions(IN_MEMORY), augment=AugmentConfig(copies=0)
    )
    assert "augmentation" not in off and set(off) == set(plain)
    assert _split_bytes(str(tmp_path / "plain")) == _split_bytes(str(tmp_path / "off"))
    assert _index(str(tmp_path / "plain")) == _index(str(tmp_path / "off"))


def test_a_copy_the_checks_refuse_is_dead_lettered_and_counted_apart(tmp_path):
    """Speed 0.9 makes a 1.9 s utterance 2.1 s, over max_seconds=2: that copy is refused (never
    cut), in the dead letter with stage "augment", and the inputs' accounting is unchanged."""
    from speechpipe.audio.augment import AugmentConfig

    root = tmp_path / "data"
    lines = []
    for utt, seconds, split in (("long", 1.9, "train"), ("short", 1.0, "train"), ("val", 1.9, "validation")):
        write_wav(str(root / "audio" / f"{utt}.wav"), seconds=seconds)
        lines.append(json.dumps({"utterance": utt, "audio": f"audio/{utt}.wav", "speaker": f"s{utt}", "split": split}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    augment = AugmentConfig(copies=1, kinds=("speed",), speed_factors=(0.9,))
    summary = features_job.run_job(
        make_spec(str(root / "manifest.jsonl")),
        CONFIG,
        str(tmp_path / "out"),
        PipelineOptions(IN_MEMORY),
        augment=augment,
    )
    assert summary["good"] == {"train": 2, "validation": 1, "test": 0} and summary["dead_letter"]["total"] == 0
    block = summary["augmentation"]
    assert (
        block["asked"] == 2 and block["train"] == 1 and block["refused"] == {"total": 1, "by_reason": {"too_long": 1}}
    )
    assert sum(summary["shards"]["train"].values()) == 3
    dead = [
        json.loads(line)
        for name in os.listdir(tmp_path / "out" / "dead_letter")
        for line in open(tmp_path / "out" / "dead_letter" / name, encoding="utf-8")
    ]
    assert [(d["stage"], d["reason"], d["utterance"]) for d in dead] == [("augment", "too_long", "long-aug0-speed")]


def test_augment_flags_make_the_config_and_bad_flags_are_refused():
    from speechpipe.audio.augment import AugmentConfig
    from speechpipe.validation import ConfigError

    def config(*flags):
        args, _ = features_job.parse_args(["--input", "x", "--out", "y", *flags])
        return features_job.augment_config_from_args(args)

    assert config() is None
    assert config("--augment", "noise,reverb,speed") == AugmentConfig(copies=1)
    made = config(
        "--augment",
        "reverb,speed",
        "--augment-copies",
        "2",
        "--augment-seed",
        "7",
        "--augment-speed",
        "0.95,1.05",
        "--augment-rt60",
        "0.3,0.5",
        "--augment-speed-speaker",
        "same",
    )
    assert made == AugmentConfig(
        copies=2,
        kinds=("reverb", "speed"),
        seed=7,
        speed_factors=(0.95, 1.05),
        rt60_s=(0.3, 0.5),
        speed_new_speaker=False,
    )
    with pytest.raises(ConfigError, match="--augment-copies needs --augment"):
        config("--augment-copies", "2")
    with pytest.raises(ConfigError, match="echo"):
        config("--augment", "noise,echo")
    with pytest.raises(ConfigError, match="snr_db"):
        config("--augment", "noise", "--augment-snr", "20,5")
    with pytest.raises(ConfigError, match="--augment-snr"):
        config("--augment", "noise", "--augment-snr", "low,high")
