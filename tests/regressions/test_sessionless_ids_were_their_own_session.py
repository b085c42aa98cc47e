"""Regression: an utterance whose input names no session (a Kaldi data dir, a manifest line
without `session`) was given its own id as its session. Every pair of a speaker's utterances was
then a cross-session pair, so same-recording trials (one LibriSpeech chapter, one telephone call)
were neither drawn by the single-session rule nor counted apart, and flattered the EER unreported.
Now the session comes from the id (`<spk>-<chapter>-<n>`: the chapter) or is the speaker."""

import json
import os

from speechpipe.audio.sources import SourceRecord, expand_input, make_spec, parse_input
from tests.audio_inputs import write_wav


def _sessions(spec) -> dict:
    found = {}
    for item in expand_input(spec):
        record = parse_input(item, spec)
        assert isinstance(record, SourceRecord), record
        found[record.utterance] = record.session
    return found


def test_kaldi_ids_give_their_chapter_or_the_speaker_as_session(tmp_path):
    ids = {"1089-134686-0000": "1089", "1089-134686-0001": "1089", "1089-134691-0000": "1089", "spk2_a": "spk2"}
    for name in ids:
        write_wav(str(tmp_path / f"{name}.wav"), seconds=0.5)
    (tmp_path / "wav.scp").write_text("".join(f"{u} {u}.wav\n" for u in ids))
    (tmp_path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in ids.items()))
    sessions = _sessions(make_spec(str(tmp_path)))
    assert sessions == {
        "1089-134686-0000": "1089-134686",
        "1089-134686-0001": "1089-134686",
        "1089-134691-0000": "1089-134691",
        "spk2_a": "spk2",  # nothing in the id: one session per speaker
    }


def test_manifest_lines_without_a_session_share_their_speakers_session(tmp_path):
    lines = [
        {"utterance": "clip000", "audio": "a.wav", "speaker": "alice"},
        {"utterance": "clip001", "audio": "b.wav", "speaker": "alice"},
        {"utterance": "bob/s1/0001", "audio": "c.wav", "speaker": "bob"},
        {"utterance": "carol-day2-07", "audio": "d.wav", "speaker": "carol"},
    ]
    for line in lines:
        write_wav(str(tmp_path / line["audio"]), seconds=0.5)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    sessions = _sessions(make_spec(os.fspath(manifest)))
    assert sessions == {"clip000": "alice", "clip001": "alice", "bob/s1/0001": "s1", "carol-day2-07": "carol-day2"}
