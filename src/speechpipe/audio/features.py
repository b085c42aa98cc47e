"""Spectrogram features (librosa's definition, computed with numpy), and their normalisations.

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


# Slaney's mel scale, as librosa.hz_to_mel / mel_to_hz (htk=False) define it.
_MEL_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MEL_MIN_LOG_HZ = 1000.0  # where the log part starts
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz >= _MEL_MIN_LOG_HZ:
        return _MEL_MIN_LOG_MEL + np.log(hz / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return hz / _MEL_F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freqs = _MEL_F_SP * mels
    log_part = mels >= _MEL_MIN_LOG_MEL
    freqs[log_part] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels[log_part] - _MEL_MIN_LOG_MEL))
    return freqs


@lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The mel filterbank, [n_mels, 1 + n_fft // 2] float32: librosa.filters.mel(sr, n_fft, n_mels,
    fmin, fmax) (Slaney scale and norm), the same operations in the same order, so the same bits
    (`tests/test_features.py` compares them). The numpy features and the in-graph ones
    (speechpipe.audio.tf_features) both take it from here. Cached and shared, so read-only.
    Written out because importing librosa (numba, scipy.signal, audioread) cost each Beam worker
    3-5 s before its first record, a fifth of a run on the demo corpus."""
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=8)
def _sparse_mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    """`mel_basis` as a CSR matrix: each filter spans a few FFT bins (2 % of the dense matrix is
    non-zero), and the dense product was half of the feature time (OpenBLAS falls back to its
    generic kernel on CPUs it does not recognise). Only the summation order differs from the
    dense product: float rounding."""
    import scipy.sparse

    return scipy.sparse.csr_matrix(mel_basis(sample_rate, n_fft, n_mels, fmin, fmax))


@lru_cache(maxsize=8)
def _hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window, float64, as scipy.signal.get_window("hann", n_fft, fftbins=True)
    (librosa's window="hann") computes it."""
    fac = np.linspace(-np.pi, np.pi, n_fft + 1)
    w = np.zeros(n_fft + 1)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    return w[:-1]


@lru_cache(maxsize=8)
def _hann_window32(n_fft: int) -> np.ndarray:
    return _hann_window(n_fft).astype(np.float32)


def num_frames(num_samples: int, config: FeatureConfig) -> int:
    return 0 if num_samples < config.n_fft else 1 + (num_samples - config.n_fft) // config.hop_length


def compute_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Unnormalised log features, float32 [frames, bins].

    The definition is librosa's: librosa.stft(window="hann", center=False), power, the
    librosa.filters.mel matrix, log(power + floor). It is computed here with numpy and scipy.fft
    in float32, as the serving graph's tf.signal does: librosa multiplies the frames by a float64
    window and transforms in float64, which took two thirds of the feature time (measured on
    the demo corpus: 0.91 s against 0.33 s for 800 utterances). The difference is float
    rounding, largest in the quietest bins: measured on 240 demo utterances against librosa, at
    most 1.3e-4 on log-mel values (9e-5 after cmvn) and 1.5e-3 on the linear STFT's (1.1e-3
    after cmvn); against the serving graph the job's features moved closer (see
    tests/test_feature_parity.py). The mel product sums only the filters' non-zero terms, which
    changes rounding only too."""
    import scipy.fft

    samples = np.ascontiguousarray(samples, np.float32)
    if samples.ndim != 1 or samples.shape[0] < config.n_fft:
        raise ValueError(f"need mono audio of at least n_fft={config.n_fft} samples, got shape {samples.shape}")
    n = num_frames(samples.shape[0], config)
    step = samples.strides[0]
    # [n_fft, frames], a view: column t is samples[t * hop: t * hop + n_fft], librosa.util.frame's layout
    frames = np.lib.stride_tricks.as_strided(
        samples, (config.n_fft, n), (step, step * config.hop_length), writeable=False
    )
    spectrum = scipy.fft.rfft(_hann_window32(config.n_fft)[:, np.newaxis] * frames, axis=0)  # complex64
    # In place where the values allow (same operations, same rounding, fewer temporaries).
    power = np.square(spectrum.real)  # float32 [bins, frames]
    power += np.square(spectrum.imag)
    if config.kind == "logmel":
        power = _sparse_mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax) @ power
    power += np.float32(config.log_floor)
    np.log(power, out=power)
    # [frames, bins] as a transposed view, the memory layout librosa's result had: the
    # normalisations' per-bin sums run over contiguous memory, in the same order as before.
    return power.T


def minmax(features: np.ndarray) -> np.ndarray:
    """Seed 000's fix: each utterance scaled to exactly [-1, 1]."""
    low, high = float(features.min()), float(features.max())
    if high == low:
        raise ValueError("minmax of a constant spectrogram is undefined")
    return (2.0 * (features - low) / (high - low) - 1.0).astype(np.float32)


def cmvn(features: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation, per bin."""
    # numpy's mean and std, step for step (the same bits), with the centred values computed
    # once instead of twice (std centres them again) and divided in place.
    n = features.shape[0]
    mean = np.add.reduce(features, axis=0, dtype=np.float64) / n
    centred = features - mean  # float64
    std = np.sqrt(np.add.reduce(np.multiply(centred, centred), axis=0, dtype=np.float64) / n)
    centred /= np.maximum(std, CMVN_STD_FLOOR)
    return centred.astype(np.float32)


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
    return (
        np.asarray(global_stats["mean"], np.float32),
        np.maximum(np.asarray(global_stats["std"], np.float32), GLOBAL_STD_FLOOR),
    )


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
