"""An official trial list as the speaker branch's test protocol (PairGen's `trials_file`): a list
that names utterances the corpus lacks, or pairs speakers outside the test split, is an error that
names what is wrong, never a silently smaller list."""

import json
import os

import pytest

from speechpipe.components.pair_gen import TrialListError, check_official_coverage
from speechpipe.jobs import pairs_job
from tests.helpers import read_jsonl


def _index(features_dir: str):
    folder = os.path.join(features_dir, "index")
    return [line for name in sorted(os.listdir(folder)) for line in read_jsonl(os.path.join(folder, name))]


def _coverage(tiny_features, tmp_path, lines):
    trials = tmp_path / "veri_test2.txt"
    trials.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = str(tmp_path / "pairs")
    pairs_job.run(
        ["--features", tiny_features, "--out", out, "--official_trials", str(trials), "--direct_running_mode=in_memory"]
    )
    with open(os.path.join(out, pairs_job.SUMMARY), encoding="utf-8") as f:
        (official,) = json.load(f)["official_trials"]
    return official, str(trials)


def _by_split(tiny_features):
    found = {}
    for line in _index(tiny_features):
        found.setdefault(line["split"], {}).setdefault(line["speaker"], []).append(line["utterance"])
    return found


def test_a_list_of_test_utterances_is_accepted(tiny_features, tmp_path):
    test = _by_split(tiny_features)["test"]
    ((speaker, utterances),) = list(test.items())[:1]
    lines = [f"1 {utterances[0]}.wav {utterances[1]}.wav"]
    official, path = _coverage(tiny_features, tmp_path, lines)
    check_official_coverage(official, path)
    assert official["covered"] == 1 and official["missing_utterances"] == 0


def test_an_utterance_the_corpus_lacks_is_named(tiny_features, tmp_path):
    test = _by_split(tiny_features)["test"]
    utterances = next(iter(test.values()))
    lines = [f"1 {utterances[0]}.wav {utterances[1]}.wav", f"0 {utterances[0]}.wav id99999/NoSuchVideo/00007.wav"]
    official, path = _coverage(tiny_features, tmp_path, lines)
    with pytest.raises(TrialListError, match=r"names 1 utterance\(s\).*id99999/NoSuchVideo/00007.*1 of 2 trials"):
        check_official_coverage(official, path)


def test_a_list_over_training_speakers_is_refused(tiny_features, tmp_path):
    train = _by_split(tiny_features)["train"]
    utterances = next(iter(train.values()))
    official, path = _coverage(tiny_features, tmp_path, [f"1 {utterances[0]}.wav {utterances[1]}.wav"])
    with pytest.raises(TrialListError, match="outside the test split"):
        check_official_coverage(official, path)
