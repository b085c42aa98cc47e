"""Validation of configurations: one place that says what a valid setting is, with clear errors."""
from __future__ import annotations

import os

from speechpipe.config import CorpusConfig, speaker_split_counts


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent with another."""


def validate_corpus_config(config: CorpusConfig) -> CorpusConfig:
    from speechpipe.corpus.voices import MAX_SPEAKERS

    if not 3 <= config.speakers <= MAX_SPEAKERS:
        raise ConfigError(
            f"speakers={config.speakers}: need 3..{MAX_SPEAKERS} (one per split at least)"
        )
    if config.utterances < 1:
        raise ConfigError(f"utterances={config.utterances}: need at least 1 per speaker")
    if not 1 <= config.sessions <= config.utterances:
        raise ConfigError(
            f"sessions={config.sessions}: need 1..utterances ({config.utterances})"
        )
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
