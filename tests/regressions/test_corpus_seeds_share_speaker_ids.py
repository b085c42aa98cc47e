"""Bug: corpora synthesised with different seeds named different voices with the same speaker
ids (id10001, ...). A new span made with `--seed 1` then put "id10005" in training in one span
and in validation in the other, and the speaker trainer refused the run (found by
tests/test_tfx_pipeline_speaker.py). Each seed now numbers its speakers in its own block."""

import pytest

from speechpipe.config import CorpusConfig
from speechpipe.corpus.voices import MAX_SEED, design_speakers, speaker_id, validate_corpus_config
from speechpipe.validation import ConfigError


def test_seeds_number_their_speakers_apart():
    ids = {seed: {v.speaker for v in design_speakers(246, seed)} for seed in (0, 1, 7)}
    assert not ids[0] & ids[1] and not ids[1] & ids[7]
    assert design_speakers(1, 0)[0].speaker == "id10001"  # seed 0 keeps VoxCeleb1's numbering
    assert design_speakers(1, 1)[0].speaker == "id11001"
    assert len(speaker_id(245, MAX_SEED)) == len("id10001")


def test_a_seed_beyond_the_id_blocks_is_refused():
    with pytest.raises(ConfigError, match="seed"):
        validate_corpus_config(CorpusConfig(seed=MAX_SEED + 1))
