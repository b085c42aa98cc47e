"""VoxCeleb trial lists (speechpipe.speakers.trials): strict reading of official lists, reading of
our own lists whatever the utterance ids, writing, round trips."""

from __future__ import annotations

import io
import itertools
import random

import pytest

from speechpipe.speakers.trials import (
    Trial,
    TrialFormatError,
    format_trial,
    list_description,
    parse_trial_line,
    path_to_utterance,
    read_trials,
    trial_stats,
    utterance_to_path,
    write_trials,
)

_VIDEO = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def official_lines(count: int = 200, seed: int = 0):
    """Lines in the format of veri_test2.txt: `<1|0> idXXXXX/<video>/<nnnnn>.wav ...`, with
    VoxCeleb1's test speakers (id10270..id10309) and 11-character YouTube ids."""
    rng = random.Random(seed)
    videos = {s: ["".join(rng.choice(_VIDEO) for _ in range(11)) for _ in range(4)] for s in range(10270, 10310)}

    def path(speaker: int) -> str:
        return f"id{speaker}/{rng.choice(videos[speaker])}/{rng.randint(1, 40):05d}.wav"

    lines = []
    for k in range(count):
        a = rng.randint(10270, 10309)
        b = a if k % 2 == 0 else rng.choice([s for s in videos if s != a])
        lines.append(f"{int(a == b)} {path(a)} {path(b)}")
    return lines


@pytest.mark.parametrize("name", ["veri_test.txt", "veri_test2.txt", "list_test_all2.txt", "list_test_hard2.txt"])
def test_official_format_round_trip(tmp_path, name):
    lines = official_lines()
    original = tmp_path / name
    original.write_text("".join(line + "\n" for line in lines))
    trials = read_trials(str(original))
    assert len(trials) == len(lines)
    first = lines[0].split(" ")
    assert trials[0] == Trial(int(first[0]), first[1][:-4], first[2][:-4])  # ids carry no .wav
    copy = tmp_path / "copy.txt"
    assert write_trials(str(copy), trials) == len(lines)
    assert copy.read_bytes() == original.read_bytes()
    assert list_description(str(original)).startswith("VoxCeleb1-")


def test_crlf_and_missing_final_newline_are_read(tmp_path):
    lines = official_lines(5)
    path = tmp_path / "veri_test2.txt"
    path.write_bytes(("\r\n".join(lines)).encode())
    assert [format_trial(*t) for t in read_trials(str(path))] == lines


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("1 id10270/x6uYqmx31kE/00001.wav", "expected '<label> <path-a> <path-b>'"),
        ("1  id10270/x6uYqmx31kE/00001.wav id10271/x6uYqmx31kE/00001.wav", "single spaces"),
        ("1\tid10270/x6uYqmx31kE/00001.wav\tid10271/x6uYqmx31kE/00001.wav", "single spaces"),
        ("2 id10270/x6uYqmx31kE/00001.wav id10271/x6uYqmx31kE/00001.wav", "label '2'"),
        ("true id10270/x6uYqmx31kE/00001.wav id10271/x6uYqmx31kE/00001.wav", "label 'true'"),
        ("1 id10270/x6uYqmx31kE/00001.flac id10271/x6uYqmx31kE/00001.wav", "is not idXXXXX"),
        ("1 id10270/x6uYqmx31kE/1.wav id10271/x6uYqmx31kE/00001.wav", "is not idXXXXX"),
        ("1 id10270/x6uYqmx31k/00001.wav id10271/x6uYqmx31kE/00001.wav", "is not idXXXXX"),
        ("", "expected"),
        ("1 id10270/x6uYqmx31kE/00001.wav id10271/x6uYqmx31kE/00001.wav ", "single spaces"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
    lines = official_lines(6)
    lines.insert(3, bad)
    path = tmp_path / "list_test_hard2.txt"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(TrialFormatError, match=message) as error:
        read_trials(str(path))
    assert f"{path}:4:" in str(error.value)


def test_generic_ids_need_the_flag(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_text("1 spk1/sessA/utt1.wav spk1/sessB/utt2.wav\n")
    with pytest.raises(TrialFormatError):
        read_trials(str(path))
    assert read_trials(str(path), voxceleb_ids=False) == [Trial(1, "spk1/sessA/utt1", "spk1/sessB/utt2")]


# Utterance ids each corpus reader (speechpipe.audio.sources) can produce, and the pair job accepts.
ANY_FORM_IDS = {
    # A VoxCeleb-layout root whose sessions are LibriSpeech chapters: <speaker>/<session>/<file stem>.
    "chapter sessions": ["id00367/c130732/00001", "id00367/c142285/00002", "id00368/c130733/00001"],
    "librispeech": ["1089/134686/1089-134686-0000", "1089/134686/1089-134686-0001", "121/121726/121-121726-0000"],
    # A manifest of CN-Celeb: idNNNNN/<genre>-<nn>-<nnn>, no session folder.
    "cn-celeb": ["id00800/singing-01-001", "id00800/interview-02-013", "id00801/vlog-01-002"],
    # Deeper folders, dots, a trailing .wav in the id itself, non-ASCII names.
    "unusual": ["spk/a/b/c/0001", "spk.1/sess.v2/utt.3", "spk/s/name.wav", "спикер/сессия/0001", "spk/s/a\u200db"],
    # A Kaldi id (no '/'), and one shaped like VoxCeleb but with a 10-character video.
    "kaldi": ["1089-134686-0000", "id10270/x6uYqmx31k/00001"],
}


@pytest.mark.parametrize("kind", sorted(ANY_FORM_IDS))
def test_ids_of_any_form_round_trip_through_our_own_lists(tmp_path, kind):
    ids = ANY_FORM_IDS[kind]
    trials = [Trial(label, a, b) for label, (a, b) in zip([1, 0, 1, 0, 1, 0], itertools.combinations(ids, 2))]
    path = tmp_path / "trials_test.txt"
    assert write_trials(str(path), trials) == len(trials)
    assert read_trials(str(path), voxceleb_ids=False) == trials
    for trial in trials:
        assert parse_trial_line(format_trial(*trial), "x:1", voxceleb_ids=False) == trial


@pytest.mark.parametrize("kind", ["chapter sessions", "cn-celeb", "kaldi"])
def test_official_lists_keep_the_voxceleb_shape(tmp_path, kind):
    a, b = ANY_FORM_IDS[kind][:2]
    path = tmp_path / "veri_test2.txt"
    write_trials(str(path), [Trial(1, a, b)])
    with pytest.raises(TrialFormatError, match=r"veri_test2\.txt:1: path .* is not idXXXXX/<11-char video>"):
        read_trials(str(path))


@pytest.mark.parametrize("bad", ["id00367/c130732/000 01", "id00367/c130732/00001\t", "a\nb", "a\u00a0b", ""])
def test_ids_that_cannot_be_written_are_refused_by_name(tmp_path, bad):
    message = "it is empty" if not bad else "holds whitespace"
    with pytest.raises(TrialFormatError, match=message) as error:
        format_trial(1, "id00367/c130732/00002", bad)
    assert repr(bad) in str(error.value)
    stream = io.StringIO()
    with pytest.raises(TrialFormatError, match=message):
        write_trials(stream, [Trial(1, "id00367/c130732/00002", "id00367/c130732/00003"), Trial(0, bad, "x/y/z")])


def test_our_own_reading_still_refuses_malformed_lines(tmp_path):
    for bad, message in (
        ("1 a/b/c.wav", "expected"),
        ("1 a/b/c.flac a/b/d.wav", "is not <utterance id>.wav"),
        ("1 .wav a/b/d.wav", "is not <utterance id>.wav"),
        ("1 a/b/c.wav\ta/b/d.wav x.wav", "is not <utterance id>.wav"),
        ("3 a/b/c.wav a/b/d.wav", "label '3'"),
    ):
        with pytest.raises(TrialFormatError, match=message):
            parse_trial_line(bad, "trials_test.txt:1", voxceleb_ids=False)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="veri_test2.txt"):
        read_trials(str(tmp_path / "veri_test2.txt"))


def test_ids_and_paths():
    assert utterance_to_path("id10270/x6uYqmx31kE/00001") == "id10270/x6uYqmx31kE/00001.wav"
    assert path_to_utterance("id10270/x6uYqmx31kE/00001.wav") == "id10270/x6uYqmx31kE/00001"
    with pytest.raises(ValueError):
        path_to_utterance("id10270/x6uYqmx31kE/00001.flac")
    with pytest.raises(ValueError):
        format_trial(2, "a/b/c", "a/b/d")


def test_trial_stats():
    trials = [
        Trial(1, "id1/a/1", "id1/b/2"),
        Trial(1, "id1/b/2", "id1/a/1"),
        Trial(0, "id1/a/1", "id2/c/1"),
        Trial(1, "id2/c/1", "id2/c/1"),
    ]
    stats = trial_stats(trials)
    assert (stats.trials, stats.same, stats.different) == (4, 3, 1)
    assert (stats.duplicates, stats.self_trials, stats.utterances, stats.speakers) == (1, 1, 3, 2)
