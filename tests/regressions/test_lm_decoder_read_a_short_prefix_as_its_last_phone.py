"""The LM-scored beam search cut a prefix shorter than the LM's history to its last phone (a
negative slice start): after "<s> a b" an order-4 LM was asked about "<s> b". Every utterance's
third phone, and with higher orders the next ones up to the LM's history, was scored with the
wrong context."""

import numpy as np

from speechpipe.phones.ctc_lm_decoder import LMBeamDecoder
from speechpipe.phones.phone_lm import PhoneLM

PHONES = ["a", "b", "c", "d"]
BLANK = 4


def test_the_third_phone_is_scored_after_the_whole_sentence_start():
    # After "<s> a b" the corpus always said "c"; "b" alone was followed by "c" and "a" alike.
    lm = PhoneLM.fit([["a", "b", "c"]] * 3 + [["d", "b", "a"]] * 3, 4, PHONES)
    rows = [[0.96, 0.01, 0.01, 0.01, 0.01], [0.01, 0.96, 0.01, 0.01, 0.01], [0.5, 0.01, 0.4, 0.01, 0.08]]
    decoder = LMBeamDecoder(lm, PHONES, BLANK, lm_weight=1.0, insertion_bonus=0.0)
    assert decoder.decode(np.log(np.asarray(rows))) == [0, 1, 2]
