"""bench/bench_realspeech_training.py's data stage on generated clips (no training): the chunking
of one-recording speakers into pseudo-utterances, the seeded validation speakers, the real
corpus's manifest and WAV pieces (read back by the feature job's manifest parser), the mixed
manifest, the report table, and that the trainer's sampler can draw K segments of a speaker
that has a single utterance."""

import os

import numpy as np
import pytest
import soundfile as sf

from bench import bench_realspeech as rs
from bench import bench_realspeech_training as rst

RATE = 16000


def _clips(clean_speakers=6, other_speakers=2, other_utterances=3):
    clips = []
    for s in range(other_speakers):
        for u in range(other_utterances):
            utt = f"{700 + s}-5000-{u:04d}"
            clips.append(rs.Clip(utt, str(700 + s), rs.TEST_OTHER, f"/x/test-other/{700 + s}/{utt}.flac"))
    for s in range(clean_speakers):
        utt = f"{100 + s}-200{s}-0001"
        clips.append(rs.Clip(utt, str(100 + s), rs.TRAIN_CLEAN, f"/x/train-clean-100/{100 + s}/200{s}/{utt}.flac"))
    return clips


@pytest.mark.parametrize(("seconds", "pieces"), [(14.0, 4), (13.9, 3), (3.5, 1), (2.0, 1), (7.2, 2)])
def test_chunk_bounds_cover_the_recording_in_pieces_of_at_least_one_chunk(seconds, pieces):
    n = int(seconds * RATE)
    bounds = rst.chunk_bounds(n, 3.5)
    assert len(bounds) == pieces
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a == b for (_, a), (b, _) in zip(bounds[:-1], bounds[1:]))  # contiguous, no overlap
    if n >= 3.5 * RATE:
        assert min(b - a for a, b in bounds) >= int(3.5 * RATE) - 1
    assert rst.chunk_bounds(0, 3.5) == []
    with pytest.raises(ValueError):
        rst.chunk_bounds(n, 0)


def test_validation_speakers_are_seeded_and_order_free():
    speakers = [str(i) for i in range(50)]
    first = rst.validation_speakers(speakers, 10, seed=0)
    assert len(first) == 10 and first == sorted(first)
    assert rst.validation_speakers(list(reversed(speakers)) + speakers[:5], 10, seed=0) == first
    assert rst.validation_speakers(speakers, 10, seed=1) != first
    with pytest.raises(ValueError):
        rst.validation_speakers(speakers, 50)


def test_plan_cuts_train_clean_and_keeps_test_other_whole():
    clips = _clips()
    lengths = [int(4.0 * RATE) if c.subset == rs.TEST_OTHER else int(14.2 * RATE) for c in clips]
    items = rst.plan_real_corpus(clips, lengths, 3.5, n_validation=2, seed=0)
    test = [i for i in items if i.split == "test"]
    assert len(test) == 6 and all(i.start == 0 and i.end == int(4.0 * RATE) for i in test)
    clean = [i for i in items if i.split != "test"]
    assert len(clean) == 6 * 4  # 14.2 s -> four pieces of 3.55 s
    by_speaker = {}
    for i in clean:
        by_speaker.setdefault(i.speaker, set()).add(i.split)
    assert all(len(s) == 1 for s in by_speaker.values())  # a speaker is in one split only
    assert sum(s == {"validation"} for s in by_speaker.values()) == 2
    assert all(i.speaker.startswith(rst.REAL_PREFIX) for i in items)
    assert len({i.utterance for i in items}) == len(items)
    # every piece of one recording shares the recording's session (its chapter)
    assert {i.session for i in clean if i.speaker == "ls100"} == {"100-2000"}


def test_write_real_corpus_writes_pieces_the_manifest_parser_accepts(tmp_path):
    from speechpipe.audio.sources import MANIFEST, make_spec

    clips = _clips(clean_speakers=4, other_speakers=2, other_utterances=2)
    rng = np.random.default_rng(0)
    waves = [
        (0.1 * rng.standard_normal(int((1.5 if c.subset == rs.TEST_OTHER else 7.5) * RATE))).astype(np.float32)
        for c in clips
    ]
    out = tmp_path / "real"
    items = rst.write_real_corpus(clips, waves, str(out), 3.5, n_validation=1)
    lines = rst.read_manifest(str(out / rst.MANIFEST))
    assert len(lines) == len(items) == 4 + 4 * 2
    for line, item in zip(lines, items):
        samples, rate = sf.read(str(out / line["audio"]), dtype="float32")
        assert rate == RATE and len(samples) == item.end - item.start
        source = waves[[c.path for c in clips].index(item.source)]
        np.testing.assert_allclose(samples, source[item.start : item.end], atol=1 / 32768 + 1e-6)
        assert {"utterance", "audio", "speaker", "split", "session"} <= set(line)
    spec = make_spec(str(out / rst.MANIFEST))
    assert spec.kind == MANIFEST and spec.data_root == str(out)
    counts = rst.split_counts(lines)
    assert counts["test"] == {"utterances": 4, "speakers": 2}
    assert counts["validation"]["speakers"] == 1 and counts["train"]["speakers"] == 3


def test_mixed_manifest_rebases_audio_and_refuses_clashes(tmp_path):
    a, b = tmp_path / "real", tmp_path / "synth"
    a.mkdir()
    b.mkdir()
    rst.write_manifest(
        str(a / "manifest.jsonl"), [{"utterance": "ls1/c/u1", "audio": "x/u1.wav", "speaker": "ls1", "split": "train"}]
    )
    rst.write_manifest(
        str(b / "manifest.jsonl"), [{"utterance": "id1/s/u1", "audio": "wav/u1.wav", "speaker": "id1", "split": "test"}]
    )
    lines = rst.mixed_manifest(
        [(str(a), str(a / "manifest.jsonl")), (str(b), str(b / "manifest.jsonl"))], str(tmp_path)
    )
    assert [x["audio"] for x in lines] == [os.path.join("real", "x", "u1.wav"), os.path.join("synth", "wav", "u1.wav")]
    rst.write_manifest(
        str(b / "manifest.jsonl"), [{"utterance": "id1/s/u1", "audio": "wav/u1.wav", "speaker": "ls1", "split": "test"}]
    )
    with pytest.raises(ValueError, match="speakers in two corpora"):
        rst.mixed_manifest([(str(a), str(a / "manifest.jsonl")), (str(b), str(b / "manifest.jsonl"))], str(tmp_path))
    with pytest.raises(ValueError, match="not inside"):
        rst.mixed_manifest([(str(a), str(a / "manifest.jsonl"))], str(b))


def test_table_marks_protocol_c_unfair_for_real_trained_models():
    def figures(eer):
        row = {"eer": eer, "min_dcf": 0.5}
        return {
            "b_test_other": {**row, "eer_ci95": [eer / 2, eer * 2]},
            "c_impostors": row,
            "synthetic_test": row,
            "a_all": row,
        }

    rows = [
        {"run": "floor", "system": "floor", "figures": figures(0.13)},
        {"run": "synthetic", "system": "synthetic-only", "steps": 10, "best_step": 5, "figures": figures(0.2)},
        {"run": "real", "system": "real-only", "steps": 10, "best_step": 10, "figures": figures(0.05)},
    ]
    table = rst.format_table(rows).splitlines()
    assert len(table) == 5
    assert "n/a" not in table[3] and "20.00 %" in table[3]
    assert "n/a (trained on them)" in table[4] and "5.00 %" in table[4] and "10 (10)" in table[4]


def test_main_skips_without_the_default_data(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(rs, "DEFAULT_DATA", str(tmp_path / "absent"))
    monkeypatch.delenv("BENCH_REALSPEECH_DATA", raising=False)
    rst.main(["--out", str(tmp_path / "out")])
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rst.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        rst.main(["--runs", "nope"])


def test_steps_budget_trains_exactly_n_steps_without_early_stopping():
    by_time = rst.train_config(8, seed=0)
    assert by_time.max_steps == 0 and by_time.max_seconds == 480
    by_steps = rst.train_config(60, seed=1, steps=800)
    assert by_steps.max_steps == 800 and by_steps.patience_evals == 0 and by_steps.max_seconds == 3600
    assert by_steps.seed == 1
    with pytest.raises(ValueError):
        rst.train_config(8, 0, steps=-1)


def test_augmented_runs_share_the_manifest_and_get_their_own_features(tmp_path):
    assert rst.base_run("real_aug") == "real" and rst.base_run("mixed") == "mixed"
    assert {"real_aug", "mixed_aug", "synthetic_aug"} <= set(rst.RUNS)
    augment = rst.augment_config("noise,reverb,speed", 3, seed=0)
    assert augment.copies == 3 and augment.kinds == ("noise", "reverb", "speed")
    manifest = str(tmp_path / "manifest.jsonl")
    clean = rst.feature_folder(str(tmp_path), manifest, "real")
    augmented = rst.feature_folder(str(tmp_path), manifest, "real_aug", augment)
    other_seed = rst.feature_folder(str(tmp_path), manifest, "real_aug", rst.augment_config("noise,reverb,speed", 3, 1))
    assert len({clean, augmented, other_seed}) == 3
    assert (
        rst.system_name("real_aug", {"config": augment.to_json()})
        == "real-only + augmentation (noise, reverb, speed; 3 copies)"
    )
    assert rst.system_name("real") == "real-only"


def test_table_shows_train_time_and_marks_augmented_real_runs_unfair_for_protocol_c():
    row = {"eer": 0.05, "min_dcf": 0.5}
    figures = {"b_test_other": {**row, "eer_ci95": [0.01, 0.1]}, "c_impostors": row, "synthetic_test": row}
    table = rst.format_table(
        [
            {
                "run": "real_aug",
                "system": "real-only + augmentation",
                "steps": 800,
                "best_step": 600,
                "train_seconds": 450.0,
                "figures": figures,
            }
        ]
    ).splitlines()
    assert "n/a (trained on them)" in table[2] and "800 (600)" in table[2] and "7.5 min" in table[2]


def test_main_refuses_bad_steps_and_augmentation(tmp_path):
    with pytest.raises(SystemExit, match="steps"):
        rst.main(["--runs", "real", "--steps", "-5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="kinds"):
        rst.main(["--runs", "real_aug", "--augment", "echo", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="copies"):
        rst.main(["--runs", "real_aug", "--augment-copies", "0", "--out", str(tmp_path)])
