"""Speaker design for the demo corpus: each speaker is an espeak-ng variant plus prosody and a
vocal-tract scaling, drawn so that no two speakers of one corpus share a variant-and-pitch cell.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Dict, List

import numpy as np

from speechpipe.config import CorpusConfig, speaker_split_counts
from speechpipe.phones.espeak import EspeakVoice
from speechpipe.validation import ConfigError

# espeak-ng variants that sound like people. Left out: whisper/whisperf (unvoiced), croak,
# Demonic, the robot variants and the novelty voices, which no real corpus has.
HUMAN_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "klatt6",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "Denis",
    "Diogo",
    "Gene",
    "Gene2",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Marco",
    "Mario",
    "Michael",
    "Mike",
    "Nguyen",
    "Reed",
    "Storm",
    "adam",
    "anika",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "ed",
    "edward",
    "edward2",
    "gustave",
    "ian",
    "iven",
    "iven2",
    "iven3",
    "iven4",
    "john",
    "linda",
    "max",
    "michel",
    "miguel",
    "mike2",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "sandro",
    "shelby",
    "steph",
    "steph2",
    "steph3",
    "travis",
    "victor",
    "zac",
    "grandma",
    "grandpa",
    "marcelo",
    "announcer",
)
# Pitch bands: a variant is used at most once per band, so two speakers that share a variant
# differ by at least one band in pitch.
PITCH_BANDS = ((15, 35), (38, 58), (61, 81))
MAX_SPEAKERS = len(HUMAN_VARIANTS) * len(PITCH_BANDS)
FIRST_SPEAKER_NUMBER = 10001  # VoxCeleb numbers its speakers id10001, id10002, ...
# Each seed draws other voices, so it numbers them in its own block: seed 0 gives id10001...,
# seed 1 id11001..., and corpora of different seeds never give two voices one id (a new span
# synthesised with another seed holds new speakers, as the pipeline's speaker branch assumes).
SEED_ID_BLOCK = 1000
MAX_SEED = (99999 - FIRST_SPEAKER_NUMBER) // SEED_ID_BLOCK  # ids keep VoxCeleb's five digits


@dataclass(frozen=True)
class SpeakerVoice:
    """Everything that makes one synthetic speaker sound like themself."""

    speaker: str
    variant: str
    pitch: int
    pitch_range: int
    rate_wpm: int
    # Vocal-tract length factor: > 1 raises formants (shorter tract), < 1 lowers them. Applied
    # by reinterpreting the synthesiser's sample rate before resampling.
    vtl_factor: float
    word_gap_10ms: int

    def espeak_voice(self, language: str = "de") -> EspeakVoice:
        return EspeakVoice(
            language=language,
            variant=self.variant,
            rate_wpm=self.rate_wpm,
            pitch=self.pitch,
            pitch_range=self.pitch_range,
            word_gap_10ms=self.word_gap_10ms,
        )

    def to_json(self) -> Dict[str, object]:
        return asdict(self)


def speaker_id(index: int, seed: int = 0) -> str:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed}: need 0..{MAX_SEED} (speaker ids are id<5 digits>, one block per seed)")
    return f"id{FIRST_SPEAKER_NUMBER + SEED_ID_BLOCK * seed + index}"


def design_speakers(count: int, seed: int) -> List[SpeakerVoice]:
    """`count` distinct speakers; the same (count, seed) always gives the same voices and ids,
    and a smaller count gives a prefix of a larger one."""
    if not 1 <= count <= MAX_SPEAKERS:
        raise ValueError(f"speakers must be between 1 and {MAX_SPEAKERS}, got {count}")
    rng = np.random.default_rng([seed, 0x5EEC])
    # Every (variant, band) cell once, in a seeded order that visits all variants before
    # reusing one.
    order = []
    for band in rng.permutation(len(PITCH_BANDS)):
        order += [(int(v), int(band)) for v in rng.permutation(len(HUMAN_VARIANTS))]
    voices = []
    for index in range(count):
        variant_index, band = order[index]
        # An independent stream per speaker keeps voice i fixed whatever `count` is.
        srng = np.random.default_rng([seed, 0x5EEC, index])
        low, high = PITCH_BANDS[band]
        voices.append(
            SpeakerVoice(
                speaker=speaker_id(index, seed),
                variant=HUMAN_VARIANTS[variant_index],
                pitch=int(srng.integers(low, high + 1)),
                pitch_range=int(srng.integers(20, 91)),
                rate_wpm=int(srng.integers(140, 196)),
                vtl_factor=round(float(srng.uniform(0.9, 1.1)), 3),
                word_gap_10ms=int(srng.integers(0, 3)),
            )
        )
    return voices


def validate_corpus_config(config: CorpusConfig) -> CorpusConfig:
    """Checks a demo-corpus config against the voices there are; raises ConfigError."""
    if not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(
            f"seed={config.seed}: need 0..{MAX_SEED} (each seed numbers its speakers in its own id block)"
        )

    if not 3 <= config.speakers <= MAX_SPEAKERS:
        raise ConfigError(f"speakers={config.speakers}: need 3..{MAX_SPEAKERS} (one per split at least)")
    if config.utterances < 1:
        raise ConfigError(f"utterances={config.utterances}: need at least 1 per speaker")
    if not 1 <= config.sessions <= config.utterances:
        raise ConfigError(f"sessions={config.sessions}: need 1..utterances ({config.utterances})")
    if config.sample_rate not in (8000, 16000, 22050, 24000, 44100, 48000):
        raise ConfigError(f"sample_rate={config.sample_rate}: not a supported rate")
    for name in ("validation_fraction", "test_fraction", "heldout_sentence_fraction"):
        value = getattr(config, name)
        if not 0.0 < value < 0.5:
            raise ConfigError(f"{name}={value}: need a fraction in (0, 0.5)")
    if speaker_split_counts(config).train < 1:
        raise ConfigError(f"speakers={config.speakers}: no speaker left for training")
    if config.sentences is not None and not os.path.isfile(config.sentences):
        raise ConfigError(f"sentences={config.sentences!r}: no such file")
    if config.workers is not None and config.workers < 1:
        raise ConfigError(f"workers={config.workers}: need at least 1")
    return config
