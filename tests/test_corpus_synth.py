import math
import os
from collections import defaultdict

import pytest
import soundfile as sf

from speechpipe.config import DEMO_CORPUS, CorpusConfig
from speechpipe.corpus.synth import load_sentences, plan_corpus
from speechpipe.corpus.voices import MAX_SPEAKERS, design_speakers, validate_corpus_config
from speechpipe.validation import ConfigError
from tests.helpers import make_tiny_corpus, read_manifest, read_speakers, tree_bytes


def test_same_seed_gives_byte_identical_corpus(tiny_corpus, tmp_path):
    again = make_tiny_corpus(str(tmp_path / "again"), workers=1)
    assert tree_bytes(again) == tree_bytes(tiny_corpus)


def test_other_seed_gives_other_audio(tiny_corpus, tmp_path):
    other = make_tiny_corpus(str(tmp_path / "other"), seed=1)
    ours, theirs = tree_bytes(tiny_corpus), tree_bytes(other)
    assert ours["manifest.jsonl"] != theirs["manifest.jsonl"]


def test_audio_is_16k_mono_pcm16_in_voxceleb_layout(tiny_corpus):
    manifest = read_manifest(tiny_corpus)
    assert len(manifest) == 6 * 4
    for record in manifest:
        speaker, session, number = record["utterance"].split("/")
        assert record["audio"] == f"wav/{speaker}/{session}/{number}.wav"
        assert speaker.startswith("id1") and len(session) == 11 and len(number) == 5
        info = sf.info(os.path.join(tiny_corpus, record["audio"]))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")


def test_manifest_matches_audio(tiny_corpus):
    manifest = read_manifest(tiny_corpus)
    listed = {r["audio"] for r in manifest}
    on_disk = {
        os.path.relpath(os.path.join(folder, name), tiny_corpus)
        for folder, _, files in os.walk(os.path.join(tiny_corpus, "wav"))
        for name in files
    }
    assert listed == on_disk
    for record in manifest:
        audio, rate = sf.read(os.path.join(tiny_corpus, record["audio"]), dtype="int16")
        assert record["duration"] == pytest.approx(len(audio) / rate, abs=1e-6)
        assert 0.5 < record["duration"] < 15
        assert abs(audio).max() > 1000, "speech, not silence"
        assert set(record) >= {"utterance", "audio", "speaker", "session", "text", "phones", "duration"}
        assert record["speaker"] == record["utterance"].split("/")[0]
        assert record["session"] == record["utterance"].split("/")[1]


def test_splits_are_speaker_disjoint_and_test_sentences_held_out(tiny_corpus):
    manifest = read_manifest(tiny_corpus)
    speakers = {s["speaker"]: s["split"] for s in read_speakers(tiny_corpus)}
    split_of = defaultdict(set)
    for record in manifest:
        split_of[record["speaker"]].add(record["split"])
        assert record["split"] == speakers[record["speaker"]]
    assert all(len(s) == 1 for s in split_of.values())
    assert set(speakers.values()) == {"train", "validation", "test"}
    trained = {r["text"] for r in manifest if r["split"] == "train"}
    tested = {r["text"] for r in manifest if r["split"] == "test"}
    assert tested and not (trained & tested)


def test_plan_holds_out_sentences_at_demo_size():
    sentences = load_sentences()
    config = CorpusConfig()
    voices, splits, plans, sentence_split = plan_corpus(config, sentences)
    heldout = set(sentence_split["heldout"])
    assert len(heldout) == math.ceil(0.15 * len(sentences))
    for plan in plans:
        assert (plan.sentence_id in heldout) == (plan.split == "test")
    assert len({p.utterance for p in plans}) == config.speakers * config.utterances


def test_speaker_ids_stable_and_voices_distinct():
    small, large = design_speakers(10, seed=3), design_speakers(MAX_SPEAKERS, seed=3)
    assert small == large[:10]
    # seed 3 numbers its speakers in its own block (tests/regressions/test_corpus_seeds_share_speaker_ids.py)
    assert [v.speaker for v in small] == [f"id{13001 + i}" for i in range(10)]
    assert MAX_SPEAKERS >= DEMO_CORPUS.speakers  # the demo corpus has distinct voices
    cells = {(v.variant, v.pitch) for v in large}
    assert len(cells) == MAX_SPEAKERS
    first_60 = design_speakers(60, seed=0)
    assert len({v.variant for v in first_60}) == 60, "60 speakers, 60 different variants"


def test_sentence_set():
    sentences = load_sentences()
    assert len(sentences) >= 300
    assert len(set(sentences)) == len(sentences)
    for s in sentences:
        assert 4 <= len(s.split()) <= 12, s
        assert not any(c.isdigit() for c in s), s


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"speakers": 2}, "speakers=2"),
        ({"utterances": 0}, "utterances=0"),
        ({"sessions": 5, "utterances": 4}, "sessions=5"),
        ({"test_fraction": 0.6}, "test_fraction"),
        ({"sentences": "/no/such/file"}, "no such file"),
    ],
)
def test_bad_config_is_refused_with_the_setting_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_corpus_config(CorpusConfig(**overrides))


def test_existing_corpus_is_not_overwritten(tiny_corpus):
    with pytest.raises(FileExistsError):
        make_tiny_corpus(tiny_corpus)
