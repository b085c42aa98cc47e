"""Bug (issue #26): with two sessions per test speaker named by LibriSpeech chapter (`c142285`),
the speaker evaluator rejected the trial list PairGen had just written: `TrialFormatError: ...
path 'id00367/c130732/00001.wav' is not idXXXXX/<11-char video>/<nnnnn>.wav`. The VoxCeleb
reader accepts any session name, the trial reader took only VoxCeleb's 11-character videos. The
evaluator now holds only an official list to VoxCeleb's shape, and reads the product's own list
whatever its ids are."""

import os

import pytest

from speechpipe.speakers.trials import TrialFormatError
from tests.regressions import speaker_chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chapters")
    utterances = [
        (f"{speaker}/{chapter}/{n:05d}", speaker, chapter)
        for speaker, chapters in (
            ("id00367", ("c130732", "c142285")),
            ("id00368", ("c130733", "c142286")),
            ("id00369", ("c7", "c142287")),
        )
        for chapter in chapters
        for n in range(1, 4)
    ]
    span = speaker_chain.write_span(str(root / "span"), utterances)
    pairs = speaker_chain.pair_gen(span, str(root / "pairs"))
    model = speaker_chain.untrained_embedder(str(root / "model"))
    return {"root": root, "span": span, "pairs": pairs, "model": model}


def test_the_evaluator_reads_the_list_pair_gen_wrote(chain):
    lines = speaker_chain.trial_lines(chain["pairs"])
    assert lines and any("/c130732/" in line for line in lines)
    evaluation = speaker_chain.evaluate(chain["span"], chain["pairs"], chain["model"], str(chain["root"] / "blessing"))
    assert evaluation["candidate"]["trials"] == len(lines) == chain["pairs"].get_int_custom_property("test_trials")
    assert evaluation["trial_list"] == "built from the test split"


def test_an_official_list_is_still_held_to_voxcelebs_shape(chain):
    """The same ids given as an official list (the artifact names one) are refused, as before."""
    pairs = chain["pairs"]
    pairs.set_string_custom_property("official_trials", "veri_test2.txt")
    try:
        with pytest.raises(TrialFormatError, match=r"is not idXXXXX/<11-char video>/<nnnnn>\.wav"):
            speaker_chain.evaluate(chain["span"], pairs, chain["model"], os.path.join(chain["root"], "official"))
    finally:
        pairs.set_string_custom_property("official_trials", "")
