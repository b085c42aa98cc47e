"""Validation of configurations: the error every bad setting raises (`ConfigError`), the policy
for settings read from json (`reject_unknown`), and the checks of the feature config
in speechpipe.config (the corpus config's checks need the voices' limits and live with the
synthesiser, in speechpipe.corpus.voices). A config defined in another module (the run config, the
model and trainer configs, the pair config, the augmentation config) is checked by a
`validate` next to its fields, so that a field and its rule change together; each raises
ConfigError with the value and what it needs."""

from __future__ import annotations

from typing import Iterable, Mapping

from speechpipe.config import FEATURE_KINDS, NORMALISATIONS, ChunkConfig, FeatureConfig


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent with another."""


def reject_unknown(data: Mapping[str, object], fields: Iterable[str], what: str) -> None:
    """The policy for settings read from json (custom_config, exports, run files): an unknown key
    is an error, so that a misspelt setting never trains silently on its default."""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {what} setting(s): {', '.join(unknown)}")


def validate_feature_config(config: FeatureConfig) -> FeatureConfig:
    if config.kind not in FEATURE_KINDS:
        raise ConfigError(f"kind={config.kind!r}: expected one of {FEATURE_KINDS}")
    if config.normalization not in NORMALISATIONS:
        raise ConfigError(f"normalization={config.normalization!r}: expected one of {NORMALISATIONS}")
    if config.sample_rate < 4000:
        raise ConfigError(f"sample_rate={config.sample_rate}: below 4 kHz")
    if not 16 <= config.n_fft <= 8192:
        raise ConfigError(f"n_fft={config.n_fft}: need 16..8192 samples")
    if not 1 <= config.hop_length <= config.n_fft:
        raise ConfigError(f"hop_length={config.hop_length}: need 1..n_fft ({config.n_fft})")
    if config.kind == "logmel":
        if not 1 <= config.n_mels <= config.n_fft // 2 + 1:
            raise ConfigError(f"n_mels={config.n_mels}: need 1..n_fft/2+1 ({config.n_fft // 2 + 1})")
        if not 0 <= config.fmin < config.fmax <= config.sample_rate / 2:
            raise ConfigError(
                f"fmin={config.fmin}, fmax={config.fmax}: need 0 <= fmin < fmax <= {config.sample_rate / 2:g}"
            )
    if config.max_seconds <= config.n_fft / config.sample_rate:
        raise ConfigError(f"max_seconds={config.max_seconds}: shorter than one window")
    if config.log_floor <= 0:
        raise ConfigError(f"log_floor={config.log_floor}: must be positive")
    return config


def validate_chunk_config(config: ChunkConfig) -> ChunkConfig:
    if config.chunk_seconds < 0:
        raise ConfigError(f"chunk_seconds={config.chunk_seconds}: need >= 0 (0 = whole files)")
    if config.chunked and config.chunk_seconds < 0.5:
        raise ConfigError(f"chunk_seconds={config.chunk_seconds}: need at least 0.5 s (or 0 for whole files)")
    if config.overlap_seconds < 0:
        raise ConfigError(f"overlap_seconds={config.overlap_seconds}: need >= 0")
    if config.batch_seconds <= 0:
        raise ConfigError(f"batch_seconds={config.batch_seconds}: must be positive")
    return config
