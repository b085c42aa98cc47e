"""The phone n-gram LM (speechpipe.phones.phone_lm) and the LM-scored CTC beam search
(speechpipe.phones.ctc_lm_decoder), on small cases worked out by hand or by enumeration."""

import itertools
import math
import random

import numpy as np
import pytest

from speechpipe.phones.ctc_config import PhoneLMConfig
from speechpipe.phones.ctc_lm_decoder import LMBeamDecoder, export_phone_lm, load_lm_decoder, log_softmax
from speechpipe.phones.phone_lm import SENTENCE_END, SENTENCE_START, PhoneLM

VOCABULARY = ["a", "b", "c", "d", "e"]


def _random_sentences(seed: int, count: int = 40):
    rng = random.Random(seed)
    return [[rng.choice(VOCABULARY[:4]) for _ in range(rng.randint(1, 9))] for _ in range(count)]


# ------------------------------------------------------------------------------------ the LM


def test_unigram_kneser_ney_by_hand():
    # "a a b": counts a 2, b 1, </s> 1 (4 in all); Ney's discount n1 / (n1 + 2 n2) = 2 / 4; the
    # discounts set aside 0.5 * 3 types / 4 = 0.375, spread uniformly over 5 phones + </s>.
    lm = PhoneLM.fit([["a", "a", "b"]], 1, VOCABULARY)
    floor = 0.375 / 6
    expected = {"a": 1.5 / 4 + floor, "b": 0.5 / 4 + floor, SENTENCE_END: 0.5 / 4 + floor, "c": floor}
    for phone, p in expected.items():
        assert math.exp(lm.log_prob([SENTENCE_START], phone)) == pytest.approx(p)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_context_gives_a_distribution(order):
    lm = PhoneLM.fit(_random_sentences(order), order, VOCABULARY)
    contexts = [[SENTENCE_START], [SENTENCE_START, "a", "b"], ["c", "c", "c", "c"], ["e", "e"], ["d", "a", "b", "c"]]
    for context in contexts:
        total = sum(math.exp(lm.log_prob(context, p)) for p in [*VOCABULARY, SENTENCE_END])
        assert total == pytest.approx(1.0, abs=1e-12), context


def test_continuation_counts_rank_a_phone_seen_after_many_phones_above_a_frequent_one_seen_after_one():
    # "e" is frequent but only ever follows "d"; "c" is rarer but follows everything. After a
    # context never seen, the bigram backs off to continuation counts: "c" must win (plain
    # unigram counts would choose "e").
    sentences = [["d", "e"]] * 6 + [["a", "c"], ["b", "c"], ["d", "c"]]
    lm = PhoneLM.fit(sentences, 2, VOCABULARY)
    assert lm.log_prob(["a"], "c") > lm.log_prob(["a"], "e")
    assert lm.log_prob(["d"], "e") > lm.log_prob(["d"], "c")  # where the context was seen, counts rule


def test_arpa_round_trip_keeps_every_probability():
    lm = PhoneLM.fit(_random_sentences(7), 4, VOCABULARY)
    text = lm.to_arpa()
    assert text.startswith("\\data\\\nngram 1=") and text.rstrip().endswith("\\end\\")
    again = PhoneLM.from_arpa(text, VOCABULARY)
    assert again.order == 4 and again.counts == lm.counts
    rng = random.Random(1)
    for _ in range(200):
        context = [SENTENCE_START] + [rng.choice(VOCABULARY) for _ in range(rng.randint(0, 5))]
        phone = rng.choice([*VOCABULARY, SENTENCE_END])
        assert again.log_prob(context, phone) == pytest.approx(lm.log_prob(context, phone), abs=1e-6)


def test_a_broken_arpa_file_is_refused_with_the_reason():
    text = PhoneLM.fit([["a", "b"]], 2, VOCABULARY).to_arpa()
    with pytest.raises(ValueError, match="counts disagree"):
        PhoneLM.from_arpa(text.replace("ngram 2=", "ngram 2=9"), VOCABULARY)
    with pytest.raises(ValueError, match="not an ARPA model"):
        PhoneLM.from_arpa(text.replace("\\end\\", ""), VOCABULARY)
    with pytest.raises(ValueError, match="fields"):
        PhoneLM.from_arpa(text.replace("\t<s> a", "\t<s> a b c d"), VOCABULARY)


def test_phones_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"\['x'\] are not in the vocabulary"):
        PhoneLM.fit([["a", "x"]], 2, VOCABULARY)
    lm = PhoneLM.fit([["a", "b"]], 2, ["a", "b"])
    with pytest.raises(ValueError, match=r"no unigram for \['c'\]"):
        PhoneLM.from_arpa(lm.to_arpa(), ["a", "b", "c"])
    with pytest.raises(ValueError, match="no sentence"):
        PhoneLM.fit([], 3, VOCABULARY)


# ------------------------------------------------------------------------------- the decoder

PHONES = ["a", "b", "c"]
BLANK = 3


def _best_labelling_by_enumeration(log_probs):
    """Sums every frame path's probability into its labelling (repeats merged, blanks dropped)."""
    totals = {}
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        labelling = tuple(k for i, k in enumerate(path) if k != BLANK and (i == 0 or path[i - 1] != k))
        p = sum(log_probs[t, k] for t, k in enumerate(path))
        totals[labelling] = np.logaddexp(totals.get(labelling, -np.inf), p)
    return list(max(totals, key=totals.get))


def test_without_the_lm_a_wide_beam_finds_the_most_probable_labelling():
    lm = PhoneLM.fit([["a"]], 1, PHONES)
    decoder = LMBeamDecoder(
        lm, PHONES, BLANK, lm_weight=0.0, insertion_bonus=0.0, beam_width=10_000, prune_log_prob=-np.inf
    )
    rng = np.random.default_rng(0)
    for _ in range(12):
        log_probs = log_softmax(rng.normal(0, 1.5, (5, 4)))
        assert decoder.decode(log_probs) == _best_labelling_by_enumeration(log_probs)


def _ambiguous_frames():
    """'a', then 'b' and 'c' equally likely, then 'a' again: the acoustics cannot choose."""
    rows = [[0.9, 0.0, 0.0, 0.1], [0.0, 0.45, 0.45, 0.1], [0.9, 0.0, 0.0, 0.1]]
    return np.log(np.maximum(np.asarray(rows), 1e-9))


@pytest.mark.parametrize(("taught", "expected"), [("b", [0, 1, 0]), ("c", [0, 2, 0])])
def test_the_lm_decides_what_the_acoustics_leave_open(taught, expected):
    lm = PhoneLM.fit([["a", taught, "a"]] * 5, 3, PHONES)
    assert LMBeamDecoder(lm, PHONES, BLANK, lm_weight=0.5).decode(_ambiguous_frames()) == expected


def test_the_insertion_bonus_keeps_a_phone_the_acoustics_barely_prefer_to_drop():
    # The middle frame says blank 0.6, "b" 0.4: best path drops "b"; a bonus per phone keeps it.
    rows = np.log(np.asarray([[0.98, 0.005, 0.005, 0.01], [0.0001, 0.4, 0.0001, 0.5998], [0.005, 0.005, 0.98, 0.01]]))
    lm = PhoneLM.fit([["a", "c"], ["a", "b", "c"]], 2, PHONES)
    assert LMBeamDecoder(lm, PHONES, BLANK, lm_weight=0.0, insertion_bonus=0.0).decode(rows) == [0, 2]
    assert LMBeamDecoder(lm, PHONES, BLANK, lm_weight=0.0, insertion_bonus=1.0).decode(rows) == [0, 1, 2]


def test_a_batch_is_decoded_up_to_each_length():
    lm = PhoneLM.fit([["a", "b"]], 2, PHONES)
    decoder = LMBeamDecoder(lm, PHONES, BLANK)
    frames = np.log(np.full((2, 4, 4), 1e-6))
    frames[:, :, BLANK] = 0.0
    frames[0, 0], frames[0, 2] = np.log([0.97, 0.01, 0.01, 0.01]), np.log([0.01, 0.97, 0.01, 0.01])
    frames[1, 0], frames[1, 3] = np.log([0.97, 0.01, 0.01, 0.01]), np.log([0.01, 0.01, 0.97, 0.01])
    assert decoder.decode_batch(frames, [4, 2]) == [[0, 1], [0]]  # the padding's "c" is not read


def test_the_decoder_refuses_an_lm_without_the_recognisers_phones():
    lm = PhoneLM.fit([["a"]], 2, ["a", "b"])
    with pytest.raises(ValueError, match=r"does not know the recogniser's phones \['c'\]"):
        LMBeamDecoder(lm, PHONES, BLANK)


def test_a_model_carries_its_lm_and_weights(tmp_path):
    model_dir = str(tmp_path / "model")
    assert load_lm_decoder(model_dir, PHONES, BLANK) is None  # a model exported without an LM
    lm = PhoneLM.fit([["a", "b", "c"], ["a", "c"]], 3, PHONES)
    export_phone_lm(model_dir, lm, PhoneLMConfig(order=3, lm_weight=0.7, insertion_bonus=0.2, beam_width=5), 2)
    decoder = load_lm_decoder(model_dir, PHONES, BLANK)
    assert (decoder.lm_weight, decoder.insertion_bonus, decoder.beam_width) == (0.7, 0.2, 5)
    assert decoder.lm.counts == lm.counts
    assert decoder.lm.log_prob([SENTENCE_START, "a"], "c") == pytest.approx(
        lm.log_prob([SENTENCE_START, "a"], "c"), abs=1e-6
    )


# ------------------------------------------------------------------ the trainer and the evaluator


@pytest.mark.slow  # trains a tiny model for one epoch
@pytest.mark.parametrize("order", [0, 3])
def test_the_trainer_exports_the_lm_of_its_transcripts_and_the_evaluator_scores_with_it(tmp_path, order):
    import json
    import os

    from speechpipe.components import ctc_trainer
    from speechpipe.components.ctc_evaluator import transcriber_per
    from speechpipe.config import FeatureConfig
    from speechpipe.phones.ctc_config import CTCModelConfig, CTCTrainConfig
    from speechpipe.phones.inventory import default_inventory
    from tests.helpers import write_feature_split

    bins = FeatureConfig().n_bins
    # The too-short utterance is not trained on, but its transcript is text the LM learns from.
    train = write_feature_split(
        str(tmp_path / "Split-train"),
        [
            ("a", 60, [1, 2, 3]),
            ("b", 50, [1, 2]),
            ("a2", 60, [1, 2, 3]),
            ("silent", 40, []),
            ("short", 4, [1, 2, 3, 4]),
        ],
        bins=bins,
    )
    validation = write_feature_split(str(tmp_path / "Split-validation"), [("v", 60, [1, 2])], bins=bins)
    config = CTCTrainConfig(
        model=CTCModelConfig(lstm_units=(4,)),
        batch_size=2,
        max_epochs=1,
        patience=0,
        phone_lm=PhoneLMConfig(order=order),
    )
    model_dir = str(tmp_path / "model")
    result = ctc_trainer.train([train], [validation], FeatureConfig(), model_dir, None, config)
    assets = os.path.join(model_dir, "assets")
    figures = transcriber_per(model_dir, validation)
    if not order:
        assert "phone_lm" not in result and not os.path.exists(os.path.join(assets, "phone_lm.arpa"))
        assert "per_lm" not in figures
        return
    # Four transcripts, three sentences: the repeated one counts once.
    assert result["phone_lm"] == {"order": 3, "transcripts": 4, "sentences": 3, "ngrams": {1: 61, 2: 7, 3: 6}}
    with open(os.path.join(model_dir, "training_result.json")) as f:
        assert json.load(f)["phone_lm"]["sentences"] == 3
    phones = default_inventory().phones
    lm = PhoneLM.from_arpa(open(os.path.join(assets, "phone_lm.arpa"), encoding="utf-8").read(), phones)
    distinct = [[phones[k] for k in ids] for ids in ([1, 2, 3], [1, 2], [1, 2, 3, 4])]
    assert lm.to_arpa() == PhoneLM.fit(distinct, 3, phones).to_arpa()
    # After <s> p1 the corpus said p2 every time; nothing else was ever said there.
    assert math.exp(lm.log_prob([SENTENCE_START, phones[1]], phones[2])) > 0.5
    assert math.isfinite(figures["per_lm"]) and figures["per_lm"] >= 0.0  # an untrained model: any PER
