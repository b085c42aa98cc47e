"""Spectrogram features with librosa, and their normalisations.

The in-graph serving features (TensorFlow, tf.signal) must reproduce `compute_features` within
the tolerance the parity tests state, so this module keeps to what tf.signal can mirror: a
periodic Hann window, no centring, power spectra, a Slaney mel filterbank and a natural log.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np

from speechpipe.config import FeatureConfig

CMVN_STD_FLOOR = 1e-5  # a constant bin divides by this, not by zero
GLOBAL_STD_FLOOR = 1e-5


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def num_frames(num_samples: int, config: FeatureConfig) -> int:
    return 0 if num_samples < config.n_fft else 1 + (num_samples - config.n_fft) // config.hop_length


def compute_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Unnormalised log features, float32 [frames, bins]."""
    import librosa

    spectrum = librosa.stft(
        np.asarray(samples, np.float32),
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        window="hann",
        center=False,
    )
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)  # [bins, frames]
    if config.kind == "logmel":
        power = _mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax) @ power
    return np.log(power + config.log_floor).T.astype(np.float32)


def minmax(features: np.ndarray) -> np.ndarray:
    """Seed 000's fix: each utterance scaled to exactly [-1, 1]."""
    low, high = float(features.min()), float(features.max())
    if high == low:
        raise ValueError("minmax of a constant spectrogram is undefined")
    return (2.0 * (features - low) / (high - low) - 1.0).astype(np.float32)


def cmvn(features: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation, per bin."""
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    return ((features - mean) / np.maximum(std, CMVN_STD_FLOOR)).astype(np.float32)


@dataclass
class GlobalStats:
    """Per-bin sums over many utterances; merged by a Beam combiner, saved for serving."""

    count: int
    total: np.ndarray  # float64 [bins]
    total_squares: np.ndarray  # float64 [bins]

    @classmethod
    def empty(cls, bins: int) -> "GlobalStats":
        return cls(0, np.zeros(bins, np.float64), np.zeros(bins, np.float64))

    @classmethod
    def of(cls, features: np.ndarray) -> "GlobalStats":
        f = features.astype(np.float64)
        return cls(f.shape[0], f.sum(axis=0), (f * f).sum(axis=0))

    def merge(self, other: "GlobalStats") -> "GlobalStats":
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        return GlobalStats(self.count + other.count, self.total + other.total, self.total_squares + other.total_squares)

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    @property
    def std(self) -> np.ndarray:
        variance = self.total_squares / self.count - self.mean**2
        return np.sqrt(np.maximum(variance, 0.0))

    def to_json(self) -> Dict[str, object]:
        return {
            "frames": int(self.count),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "std_floor": GLOBAL_STD_FLOOR,
        }


def global_mean_std(global_stats: Dict[str, object]) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, std) of global_stats.json as float32 bins, the std floored as `apply_global` does."""
    return (np.asarray(global_stats["mean"], np.float32),
            np.maximum(np.asarray(global_stats["std"], np.float32), GLOBAL_STD_FLOOR))


def apply_global(features: np.ndarray, mean: List[float], std: List[float]) -> np.ndarray:
    """Normalisation by the training split's per-bin statistics (also applied at serving)."""
    return ((features - np.asarray(mean)) / np.maximum(np.asarray(std), GLOBAL_STD_FLOOR)).astype(np.float32)


def normalise(features: np.ndarray, config: FeatureConfig, stats: Dict[str, object] = None) -> np.ndarray:
    mode = config.normalization
    if mode == "minmax":
        return minmax(features)
    if mode == "cmvn":
        return cmvn(features)
    if mode == "global":
        if stats is None:
            raise ValueError("global normalisation needs the training split's statistics")
        return apply_global(features, stats["mean"], stats["std"])
    if mode == "none":
        return features
    raise ValueError(f"unknown normalisation {mode!r}")
