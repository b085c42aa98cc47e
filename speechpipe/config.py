"""Typed configurations with their defaults. Checks live in `speechpipe.validation`."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

SPLITS: Tuple[str, str, str] = ("train", "validation", "test")


@dataclass(frozen=True)
class CorpusConfig:
    """The synthesised German demo corpus (`speechpipe corpus synth`)."""

    speakers: int = 60
    utterances: int = 40  # per speaker
    sessions: int = 4  # per speaker; like VoxCeleb's videos, each with its own channel
    seed: int = 0
    sample_rate: int = 16000
    validation_fraction: float = 0.15  # of the speakers
    test_fraction: float = 0.15  # of the speakers
    heldout_sentence_fraction: float = 0.15  # sentences only test speakers say
    sentences: Optional[str] = None  # a sentence file; None = the packaged German set
    workers: Optional[int] = None  # None = one per core

    def to_json(self) -> Dict[str, object]:
        return asdict(self)


# The default demo corpus, and the tiny one the tests use.
DEMO_CORPUS = CorpusConfig()
TINY_CORPUS = CorpusConfig(speakers=6, utterances=4, sessions=2, workers=2)


@dataclass(frozen=True)
class SplitCounts:
    train: int
    validation: int
    test: int

    def as_dict(self) -> Dict[str, int]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def speaker_split_counts(config: CorpusConfig) -> SplitCounts:
    """At least one speaker in each split; training gets the rest."""
    n = config.speakers
    validation = max(1, round(n * config.validation_fraction))
    test = max(1, round(n * config.test_fraction))
    return SplitCounts(train=n - validation - test, validation=validation, test=test)

