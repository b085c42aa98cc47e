"""Regression: espeak-ng seeds its own noise generator (breath noise, the Klatt voices' noise
source) from the clock in espeak_Initialize, so voices with breath (Alicia, f2, f3, f5, sandro,
victor) gave other bytes in every run, and so did a corpus using them. Fixed by seeding that
generator for every utterance (EspeakEngine.synthesize's `seed`, from the corpus seed).

Every variant the corpus synthesiser can choose is synthesised in two fresh processes that start
in different seconds (what made the clock seed differ), in the same order with the same seeds:
the bytes must be the same."""

import hashlib
import json
import subprocess
import sys
import time

from speechpipe.corpus.voices import HUMAN_VARIANTS
from tests.helpers import make_tiny_corpus, tree_bytes

_SYNTHESISE_EVERY_VARIANT = """
import hashlib, json, sys
from speechpipe.phones.espeak import EspeakEngine, EspeakVoice
from speechpipe.corpus.voices import HUMAN_VARIANTS
engine = EspeakEngine.get()
print(json.dumps({v: hashlib.sha256(engine.synthesize("Der Wind pfeift laut.", EspeakVoice(variant=v), seed=7)
                                    .tobytes()).hexdigest() for v in HUMAN_VARIANTS}))
"""


def _digests() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _SYNTHESISE_EVERY_VARIANT], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_variant_gives_the_same_bytes_in_every_process():
    first = _digests()
    time.sleep(1.2)  # the second process initialises espeak-ng in another second of the clock
    second = _digests()
    assert set(first) == set(HUMAN_VARIANTS)
    differing = sorted(v for v in HUMAN_VARIANTS if first[v] != second[v])
    assert not differing, f"variants whose samples changed between two processes: {differing}"


def test_the_seed_decides_the_noise_of_a_breathy_voice():
    from speechpipe.phones.espeak import EspeakEngine, EspeakVoice

    engine = EspeakEngine.get()
    voice = EspeakVoice(variant="Alicia")
    # A fresh voice setting before each call, so only the seed differs between the two.
    a = engine.synthesize("Guten Morgen.", voice, seed=1)
    b = engine.synthesize("Guten Morgen.", voice, seed=2)
    assert a.shape == b.shape and hashlib.sha256(a.tobytes()).digest() != hashlib.sha256(b.tobytes()).digest()


def test_a_corpus_with_breathy_voices_is_the_same_in_every_run(tmp_path):
    """The issue's reproduction: 4 speakers of seed 11 include Alicia (id21004)."""
    runs = []
    for i in range(2):
        runs.append(
            tree_bytes(make_tiny_corpus(str(tmp_path / f"run{i}"), speakers=4, utterances=2, sessions=2, seed=11))
        )
        time.sleep(1.2)
    assert runs[0] == runs[1]
