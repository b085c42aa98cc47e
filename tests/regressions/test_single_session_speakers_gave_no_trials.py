"""Bug (issue #26): on a VoxCeleb-layout root whose test speakers each had one session (LibriSpeech
clips, one chapter per speaker), PairGen printed `test: 0 same + 0 different pairs from 10
speakers` without a warning (positives came only from two different sessions), the trainer ran,
and the speaker evaluator failed with `ValueError: no trials`. A speaker with one session now
pairs utterances of that session, counted apart as same-session positives, and the evaluator
scores the list."""

import json
import os

from tests.regressions import speaker_chain


def test_one_session_per_test_speaker_gives_a_scored_trial_list(tmp_path):
    utterances = [
        (f"id{10270 + s}/c{130732 + s}/{n:05d}", f"id{10270 + s}", f"c{130732 + s}")
        for s in range(4)
        for n in range(1, 5)
    ]
    span = speaker_chain.write_span(str(tmp_path / "span"), utterances)
    pairs = speaker_chain.pair_gen(span, str(tmp_path / "pairs"))
    with open(os.path.join(pairs.uri, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    test = summary["splits"]["test"]
    # 4 speakers of 4 utterances in one session: 6 positives each, as many negatives.
    assert test["pairs"]["same"] == test["same_session_positives"] == 24
    assert test["pairs"]["different"] == 24 and test["no_pairs"] == {}
    assert any(
        line.startswith("test: 24 of 24 same-speaker pairs are within one session") for line in summary["warnings"]
    )
    lines = speaker_chain.trial_lines(pairs)
    assert sorted({line[0] for line in lines}) == ["0", "1"]
    evaluation = speaker_chain.evaluate(
        span, pairs, speaker_chain.untrained_embedder(str(tmp_path / "model")), str(tmp_path / "blessing")
    )
    assert evaluation["candidate"]["trials"] == 48
