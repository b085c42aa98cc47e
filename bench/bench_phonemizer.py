"""Phonemiser throughput, one process, German and English, against baselines measured in the same run.

    .venv/bin/python -m bench bench_phonemizer
    .venv/bin/python -m bench.bench_phonemizer --seconds 0.5      # shorter timing windows

Rows per language, in utterances and words per second of one process (the feature job runs one
phonemiser per worker, so a machine's rate is this times its workers):
- naive, per word: what a script that maps each word to its phones writes: one espeak-ng call
  per whitespace word, tokenised by the inventory (the engine is the same; only the calls differ).
  It is also less right: the bench prints in how many utterances its phones differ.
- espeak-ng CLI, per utterance: `espeak-ng -q --ipa -v LANG TEXT` in a subprocess, where the
  command is installed (it is not part of the project: the engine comes in the espeakng-loader
  wheel); skipped otherwise.
- floor: the bare engine call per utterance (EspeakEngine.phonemize), no checks, no tokens.
- speechpipe: Phonemizer.phones, which adds the text checks, the flush espeak-ng needs between
  texts and the tokenisation.
- speechpipe, dead-letter path (German): every utterance carries an English word that espeak-ng
  switches voice for, so each one is searched word by word before its error is raised.
Each row is the best of three timing windows after a warm-up pass. Nothing is asserted: the
figures and their ratios are printed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

# Varied English utterances (statements, questions, numbers, abbreviations, names, loanwords).
ENGLISH = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "The juice of lemons makes fine punch.",
    "Four hours of steady work faced us.",
    "Could you please pass me the butter and the jam?",
    "The weather forecast says it will rain tomorrow afternoon.",
    "She measured the leisure time of the usual worker.",
    "Thousands of birds flew north over the frozen lake.",
    "Joy and noise filled the toy shop on Sunday.",
    "Why would anyone buy a bicycle without brakes?",
    "Their poor cousin was sure the tour would be cancelled.",
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "The North Wind and the Sun were disputing which was the stronger.",
    "The invoice for 1,250 dollars is due on the 3rd of May.",
    "In 1969 the first humans walked on the Moon.",
    "Call me at 555 0199 after 6 pm.",
    "Dr. Jones and Mr. Smith met Mrs. Brown at St. Paul's.",
    "NASA launched a new satellite last week.",
    "Let's meet at the café near the opera house.",
    "They drove from Munich to Zurich in four hours.",
    "Environmental protection requires international cooperation.",
    "The archaeologist discovered an extraordinary artifact.",
    "Excuse me, where is the nearest bank?",
    "I wouldn't have done that if I'd known.",
    "The months are January, February, March and April.",
    "William Shakespeare wrote Hamlet and Macbeth.",
    "Peter Piper picked a peck of pickled peppers.",
    "How much wood would a woodchuck chuck?",
    "The queen requested a quiet quarter of an hour.",
    "Garage, beige and rouge are borrowed words.",
    "Through the rough cough, though thorough.",
    "The colonel's island is in the aisle.",
    "Strengths and lengths are hard to say.",
    "She sells seashells by the seashore.",
    "A picture is worth a thousand words.",
    "Curiosity killed the cat.",
    "Unfortunately the experiment was unsuccessful.",
    "We ate sushi, tacos and spaghetti on the same day.",
]

Row = Tuple[str, int, int, float]  # name, utterances, words, best seconds for them


def _best(run: Callable[[], None], seconds: float) -> float:
    """Seconds per pass: the best of three windows, each at least `seconds` long."""
    run()  # warm-up: engine start, voice load, caches
    best = None
    for _ in range(3):
        passes, started = 0, time.perf_counter()
        while True:
            run()
            passes += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
        per_pass = elapsed / passes
        best = per_pass if best is None else min(best, per_pass)
    return best


def _measure(name: str, texts: Sequence[str], one: Callable[[str], object], seconds: float) -> Row:
    words = sum(len(t.split()) for t in texts)

    def run() -> None:
        for text in texts:
            one(text)

    return name, len(texts), words, _best(run, seconds)


def _cli_rows(language: str, texts: Sequence[str], seconds: float) -> List[Row]:
    command = shutil.which("espeak-ng")
    if command is None:
        return []

    def one(text: str) -> None:
        subprocess.run([command, "-q", "--ipa", "-v", language, text], capture_output=True, check=True)

    # A subprocess per utterance is slow: a tenth of the texts gives the rate.
    subset = list(texts[: max(10, len(texts) // 10)])
    return [_measure("espeak-ng CLI, per utterance", subset, one, seconds)]


def language_rows(language: str, texts: Sequence[str], seconds: float) -> List[Row]:
    from speechpipe.phones.espeak import EspeakEngine, EspeakVoice
    from speechpipe.phones.phonemizer import PhonemizeError, Phonemizer

    phonemizer = Phonemizer(language)
    engine = EspeakEngine.get()
    voice = EspeakVoice(language=language)
    inventory = phonemizer.inventory

    def per_word(text: str) -> List[str]:
        phones: List[str] = []
        for word in text.split():
            phones.extend(inventory.tokenize(engine.phonemize(word + " ", voice)))
        return phones

    rows = [_measure("naive, one engine call per word", texts, per_word, seconds)]
    rows += _cli_rows(language, texts, seconds)
    rows.append(_measure("floor: bare engine call per utterance", texts, lambda t: engine.phonemize(t, voice), seconds))
    rows.append(_measure("speechpipe Phonemizer.phones", texts, phonemizer.phones, seconds))
    if language == "de":
        failing = [t.rstrip(".!?") + ", cool." for t in texts]

        def dead_letter(text: str) -> None:
            try:
                phonemizer.phones(text)
            except PhonemizeError:
                return
            raise AssertionError(f"{text!r} was expected to fail")  # the row would measure the wrong path

        rows.append(_measure("speechpipe, dead-letter path (word search)", failing, dead_letter, seconds))
    # The naive rows are also wrong, not only slower: a word read alone loses its context
    # (espeak-ng reduces and joins function words, and stresses by the phrase).
    differ = sum(per_word(t) != phonemizer.phones(t) for t in texts)
    print(f"{language}: per-word phones differ from the in-context phones in {differ} of {len(texts)} utterances")
    return rows


def _print(language: str, rows: List[Row]) -> None:
    print(f"\n{language}: {rows[0][1]} utterances, {rows[0][2] / rows[0][1]:.1f} words each")
    print(f"{'':46} {'utt/s':>10} {'words/s':>10} {'ms/utt':>8}")
    for name, utterances, words, seconds in rows:
        print(f"{name:46} {utterances / seconds:10.0f} {words / seconds:10.0f} {1000 * seconds / utterances:8.3f}")
    rate = {name: utterances / seconds for name, utterances, _, seconds in rows}
    ours = rate["speechpipe Phonemizer.phones"]
    print(
        f"speechpipe / naive per word: {ours / rate['naive, one engine call per word']:.1f}x   "
        f"speechpipe / floor: {ours / rate['floor: bare engine call per utterance']:.2f}"
        + (
            f"   speechpipe / espeak-ng CLI: {ours / rate['espeak-ng CLI, per utterance']:.0f}x"
            if "espeak-ng CLI, per utterance" in rate
            else "   (espeak-ng CLI not installed: no CLI row)"
        )
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_phonemizer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each timing window, default 1")
    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] if __name__ == "__main__" else []))
    from speechpipe.corpus.synth import load_sentences

    for language, texts in (("de", load_sentences()), ("en-us", ENGLISH)):
        _print(language, language_rows(language, texts, args.seconds))


if __name__ == "__main__":
    main()
