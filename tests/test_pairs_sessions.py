"""Positives of speakers with one session (speechpipe.speakers.pairs and the pair job): drawn
within that session, counted apart, and never changing what multi-session speakers give.

Reports of splits short of a label (summary.json's `no_pairs`, the printed warnings) are here
too, as one-utterance speakers are their usual cause."""

from __future__ import annotations

import glob
import hashlib
import itertools
import logging
import os
import random
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import pytest

from speechpipe.jobs import pairs_job
from speechpipe.speakers.pairs import (
    DIFFERENT,
    SAME,
    PairConfig,
    SpeakerUtterances,
    SplitPlan,
    read_pair_file,
    sample_negatives,
    sample_positives,
)
from speechpipe.speakers.trials import Trial, format_trial, read_trials
from tests.test_pairs import run_job, write_index


def one_session(speaker: str, utterances: int, split: str = "test") -> SpeakerUtterances:
    """A LibriSpeech-like speaker: one chapter, ids <speaker>/c<chapter>/<speaker>-<chapter>-<nnnn>."""
    chapter = f"{int(speaker) * 7 % 100000:06d}"
    return SpeakerUtterances.build(
        split,
        speaker,
        [(f"{speaker}/c{chapter}/{speaker}-{chapter}-{k:04d}", f"c{chapter}") for k in range(utterances)],
    )


def key(a: str, b: str) -> Tuple[str, str]:
    return (a, b) if a <= b else (b, a)


# ----------------------------------------------------------------------------------------------
# The rule


def test_a_single_session_speaker_pairs_utterances_of_its_session():
    g = one_session("1089", 6)
    config = PairConfig(speaker_cap=100)
    assert g.single_session_fallback(config.cross_session) and not g.positives_across_sessions(True)
    pairs, available = sample_positives(g, config)
    assert available == g.positives_available(True) == 15
    assert {key(a, b) for a, b in pairs} == {key(a, b) for a, b in itertools.combinations(g.utterances, 2)}
    assert g.same_session(pairs) == 15
    # The cap holds as for any speaker.
    capped, _ = sample_positives(g, PairConfig(speaker_cap=4))
    assert len(capped) == 4 and len({key(a, b) for a, b in capped}) == 4


def test_a_single_session_speaker_draws_what_same_session_positives_would():
    """Within its one session, the fallback is the same rule as --same_session_positives, so a
    speaker's positives do not depend on which of the two brought it there."""
    g = one_session("1089", 9)
    assert sample_positives(g, PairConfig(seed=4, speaker_cap=10)) == sample_positives(
        g, PairConfig(seed=4, speaker_cap=10, cross_session=False)
    )


def test_a_one_utterance_speaker_has_no_positive():
    g = one_session("1090", 1)
    assert g.positives_available(True) == g.positives_available(False) == 0
    assert sample_positives(g, PairConfig()) == ([], 0)


def test_multi_session_speakers_keep_the_cross_session_rule():
    items = [(f"id10001/s{s}/{k:05d}", f"s{s}") for s in range(3) for k in range(4)]
    g = SpeakerUtterances.build("train", "id10001", items)
    assert g.positives_across_sessions(True) and not g.single_session_fallback(True)
    pairs, available = sample_positives(g, PairConfig(speaker_cap=1000))
    assert available == 48 == len(pairs)
    assert g.same_session(pairs) == 0
    anywhere, _ = sample_positives(g, PairConfig(speaker_cap=1000, cross_session=False))
    assert g.same_session(anywhere) == 3 * 6


def test_single_session_speakers_join_their_splits_plan():
    """Their positives count toward the split's negative target, and they take part in negatives
    like any speaker (another speaker's positives come from its own seeded draw either way)."""
    multi = [
        SpeakerUtterances.build(
            "test", f"id{20001 + k}", [(f"id{20001 + k}/s{s}/{j:05d}", f"s{s}") for s in range(2) for j in range(3)]
        )
        for k in range(4)
    ]
    single = [one_session(str(1089 + k), 5) for k in range(3)]
    config = PairConfig(seed=2, speaker_cap=5)
    alone = SplitPlan.build("test", multi, config)
    mixed = SplitPlan.build("test", multi + single, config)
    assert mixed.positives == alone.positives + 3 * 5 and mixed.negatives == mixed.positives
    negatives = [p for g in multi + single for p in sample_negatives(g, mixed, config)[0]]
    assert len(negatives) == mixed.negatives and all(a.split("/")[0] != b.split("/")[0] for a, b in negatives)


# ----------------------------------------------------------------------------------------------
# Today's output for multi-session speakers, pinned


def pinned_groups() -> List[SpeakerUtterances]:
    """Nine speakers of 2 to 4 sessions of 1 to 6 utterances: a fixed example of the cross-session rule."""
    rng = random.Random("pin")
    groups = []
    for k in range(9):
        speaker = f"id{20001 + k}"
        sessions = [f"{speaker[-2:]}{c}" for c in "abcd"][: 2 + k % 3]
        sizes = [1 + rng.randrange(6) for _ in sessions]
        items = [(f"{speaker}/{s}/{i + 1:05d}", s) for s, n in zip(sessions, sizes) for i in range(n)]
        groups.append(SpeakerUtterances.build("test", speaker, items))
    return groups


# sha256 of the trial lines drawn for pinned_groups(), and their count, computed with the rule as
# it was before single-session speakers were paired: these speakers all have 2+ sessions, so
# not one line may change.
PINNED_DRAWS = [
    (PairConfig(seed=5, speaker_cap=7), "8d2639885021f784a784b87310eb1536703b816aa3649e22df1cb8ca043532af", 120),
    (
        PairConfig(seed=5, speaker_cap=7, cross_session=False),
        "18e5a797f36d24e8caaf1ebab473aaeb697290e0af8d54d281e8e0e01cca398d",
        124,
    ),
    (PairConfig(seed=1, same=1, different=3), "d58dd621b1ffa37b2f945ff5333693fdc293fddba4c29d236558c069c4f50111", 1289),
]


@pytest.mark.parametrize(("config", "digest", "count"), PINNED_DRAWS)
def test_multi_session_draws_are_pinned(config, digest, count):
    groups = pinned_groups()
    plan = SplitPlan.build("test", groups, config)
    lines = []
    for g in groups:
        lines += [format_trial(SAME, a, b) for a, b in sample_positives(g, config)[0]]
        lines += [format_trial(DIFFERENT, a, b) for a, b in sample_negatives(g, plan, config)[0]]
    assert (hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)) == (digest, count)


def demo_like_records() -> List[Dict]:
    """12 speakers of 4 sessions (the demo corpus's shape), 10 utterances each, 8/2/2 over the splits."""
    rng = random.Random("demo-like")
    records = []
    for k in range(12):
        speaker = f"id{30001 + k}"
        split = "train" if k < 8 else "validation" if k < 10 else "test"
        sessions = ["".join(rng.choice("abcdefghijkXYZ019_-") for _ in range(11)) for _ in range(4)]
        for j in range(10):
            s = sessions[j % 4]
            records.append(
                {
                    "utterance": f"{speaker}/{s}/{j // 4 + 1:05d}",
                    "speaker": speaker,
                    "session": s,
                    "split": split,
                    "num_frames": rng.randint(41, 600),
                }
            )
    return records


# sha256 of each trial list's lines, sorted (the order of the lines is the runner's), from the
# job as it was before single-session speakers were paired: --seed 3 --speaker_cap 6.
PINNED_LISTS = {
    (): {
        "train": "5f44ac1717111334b6a2b0adb512fd36c8cf4b95fc27c402ef574b28df7cc8f1",
        "validation": "b354e6ac1eeb01f193f388613924c742d20f208600fe799dace1d84ac68c906d",
        "test": "304e59fc4db798d31ecfe89666a8a129319224a3b27fe9a03849f8a1f4f324da",
    },
    ("--same_session_positives",): {
        "train": "4614a54855f35b024ce06b89ed482c65407fb0bb071c148f8a2b4e541f5e11cd",
        "validation": "5d99aa9489fa7c2431bc5b64f2b2fb3707dc81e36251269b497bf5ad5df05450",
        "test": "5521ac9893d9fbe55a115ce4670df162f8788e39d150b43b3620f9b7a26bd0f2",
    },
}


@pytest.mark.parametrize("extra", sorted(PINNED_LISTS))
def test_the_job_gives_multi_session_corpora_todays_trial_lists(tmp_path, extra: Sequence[str]):
    features = write_index(str(tmp_path / "features"), demo_like_records(), shards=1)
    out = str(tmp_path / "out")
    summary = run_job(features, out, "--seed", "3", "--speaker_cap", "6", *extra)
    for split, digest in PINNED_LISTS[extra].items():
        with open(os.path.join(out, f"trials_{split}.txt"), "rb") as f:
            lines = sorted(f.read().splitlines(keepends=True))
        assert hashlib.sha256(b"".join(lines)).hexdigest() == digest, split
        # The pair records hold the same pairs as the list.
        records = [
            p for path in glob.glob(os.path.join(out, "pairs", split, "*.tfrecord.gz")) for p in read_pair_file(path)
        ]
        assert sorted(format_trial(*p).encode() + b"\n" for p in records) == lines
        assert summary["splits"][split]["speakers_single_session"] == 0
        assert summary["splits"][split]["no_pairs"] == {}
    assert summary["warnings"] == []
    if not extra:
        assert summary["same_session_positives"] == 0


# ----------------------------------------------------------------------------------------------
# The job on one session per speaker


def librispeech_records(split_speakers: Dict[str, Sequence[Tuple[str, int]]]) -> List[Dict]:
    """Index lines of LibriSpeech-like speakers, one chapter each: {split: [(speaker, utterances)]}."""
    records = []
    for split, speakers in split_speakers.items():
        for speaker, count in speakers:
            chapter = f"{int(speaker) * 7 % 100000:06d}"
            for k in range(count):
                records.append(
                    {
                        "utterance": f"{speaker}/c{chapter}/{speaker}-{chapter}-{k:04d}",
                        "speaker": speaker,
                        "session": f"c{chapter}",
                        "split": split,
                        "num_frames": 300 + k,
                    }
                )
    return records


@pytest.fixture(scope="module")
def single_session_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("single_session")
    records = librispeech_records(
        {
            "train": [(str(19 + k), 6) for k in range(5)],
            "validation": [("2300", 4), ("2301", 1), ("2302", 3)],
            "test": [(str(1089 + k), 10) for k in range(10)],
        }
    )
    features = write_index(str(root / "features"), records)
    out = str(root / "out")
    return {"records": records, "out": out, "summary": run_job(features, out, "--seed", "1")}


def test_single_session_speakers_give_trials_of_both_labels(single_session_job):
    out, summary = single_session_job["out"], single_session_job["summary"]
    test = summary["splits"]["test"]
    # 10 speakers of 10 utterances: 45 pairs each, under the cap of 200.
    assert test["pairs"] == {"same": 450, "different": 450, "total": 900}
    assert test["same_session_positives"] == 450
    assert test["speakers_single_session"] == test["speakers_single_session_positives"] == 10
    assert test["no_pairs"] == {}
    trials = read_trials(os.path.join(out, "trials_test.txt"), voxceleb_ids=False)
    labels = Counter(t.label for t in trials)
    assert labels == {SAME: 450, DIFFERENT: 450}
    for label, a, b in trials:
        assert (label == SAME) == (a.split("/")[0] == b.split("/")[0])
        if label == SAME:
            assert a.split("/")[1] == b.split("/")[1] and a != b
    assert len({key(a, b) for _, a, b in trials}) == len(trials)


def test_same_session_positives_are_counted_per_split(single_session_job):
    summary = single_session_job["summary"]
    train, validation = summary["splits"]["train"], summary["splits"]["validation"]
    assert train["same_session_positives"] == train["pairs"]["same"] == 5 * 15
    # A one-utterance speaker trains but gives no positive; the others still do.
    assert validation["speakers_single_utterance"] == 1 and validation["speakers_without_positives"] == 1
    assert validation["same_session_positives"] == validation["pairs"]["same"] == 6 + 3
    assert summary["same_session_positives"] == 450 + 75 + 9
    assert summary["config"]["cross_session"] is True and "one session" in summary["positives"]


def test_the_printed_summary_says_positives_are_within_one_session(tmp_path, capsys, caplog):
    records = librispeech_records({"test": [(str(1089 + k), 4) for k in range(3)]})
    features = write_index(str(tmp_path / "features"), records)
    with caplog.at_level(logging.WARNING, logger=pairs_job.__name__):
        run_job(features, str(tmp_path / "out"))
    printed = capsys.readouterr().out.splitlines()
    (test_line,) = [line for line in printed if line.startswith("test: ")]
    assert test_line.startswith("test: 18 same (18 within one session: they flatter the EER) + 18 different pairs")
    assert any(m.startswith("test: 18 of 18 same-speaker pairs are within one session") for m in caplog.messages)


# ----------------------------------------------------------------------------------------------
# Splits short of a label are said so, with the reason


def test_splits_short_of_a_label_say_why(tmp_path, caplog):
    records = librispeech_records(
        {
            "train": [(str(19 + k), 1) for k in range(4)],  # one utterance each: no positive
            "validation": [("2300", 5)],  # one speaker: no negative
        }
    )
    short = {"utterance": "1/c1/1-1-0000", "speaker": "1", "session": "c1", "split": "test", "num_frames": 10}
    records.append(short)  # the test split's one speaker has no utterance of one segment
    features = write_index(str(tmp_path / "features"), records)
    with caplog.at_level(logging.WARNING, logger=pairs_job.__name__):
        summary = run_job(features, str(tmp_path / "out"))
    splits = summary["splits"]
    assert "no speaker has two utterances" in splits["train"]["no_pairs"]["same"]
    assert "(4 speaker(s) with one)" in splits["train"]["no_pairs"]["same"]
    assert "in proportion to same-speaker ones" in splits["train"]["no_pairs"]["different"]
    assert set(splits["validation"]["no_pairs"]) == {"different"}
    assert "only 1 speaker" in splits["validation"]["no_pairs"]["different"]
    assert "shorter than one segment" in splits["test"]["no_pairs"]["same"]
    logged = [m for m in caplog.messages if ": no " in m]
    assert logged == [w for w in summary["warnings"] if ": no " in w] and len(logged) == 5
    for split, counts in splits.items():
        for label, reason in counts["no_pairs"].items():
            assert f"{split}: no {label}-speaker pairs (no {label}-speaker trials): {reason}" in logged


def test_a_split_without_speakers_is_said_so(tmp_path):
    records = librispeech_records({"train": [("19", 3), ("20", 3)]})
    summary = run_job(write_index(str(tmp_path / "features"), records), str(tmp_path / "out"))
    assert summary["splits"]["test"]["no_pairs"] == {
        "same": "the split has no speakers",
        "different": "the split has no speakers",
    }
    assert summary["splits"]["train"]["no_pairs"] == {}


def test_a_ratio_without_negatives_is_the_reason_given(tmp_path):
    records = librispeech_records({"train": [("19", 3), ("20", 3)]})
    summary = run_job(write_index(str(tmp_path / "features"), records), str(tmp_path / "out"), "--ratio", "1:0")
    assert summary["splits"]["train"]["no_pairs"] == {"different": "the ratio 1:0 asks for none"}


def test_trials_match_pairs_for_single_session_speakers(single_session_job):
    out = single_session_job["out"]
    for split in ("train", "validation", "test"):
        listed = read_trials(os.path.join(out, f"trials_{split}.txt"), voxceleb_ids=False)
        records = [
            Trial(*p)
            for path in glob.glob(os.path.join(out, "pairs", split, "*.tfrecord.gz"))
            for p in read_pair_file(path)
        ]
        assert sorted(listed) == sorted(records)


def test_job_help_names_the_single_session_rule():
    text = pairs_job.build_parser().format_help()
    assert "one session" in text
