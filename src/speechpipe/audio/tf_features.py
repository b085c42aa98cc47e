"""The feature job's features inside a TensorFlow graph, for serving signatures that take raw
waveforms: tf.signal.stft with librosa's window, framing and mel matrix, then the same
normalisation. `tests/test_feature_parity.py` holds the two implementations together."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from speechpipe.audio.features import CMVN_STD_FLOOR, GLOBAL_STD_FLOOR, mel_basis
from speechpipe.config import FeatureConfig
from speechpipe.filenames import GLOBAL_STATS_FILE


def frame_lengths(sample_lengths: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Frames per waveform: 1 + (n - n_fft) // hop, and 0 below one window (no centring)."""
    n = tf.cast(sample_lengths, tf.int32)
    return tf.where(n >= config.n_fft, 1 + (n - config.n_fft) // config.hop_length, tf.zeros_like(n))


class GraphFeatures(tf.Module):
    """Callable: (waveforms [batch, samples] float32, lengths [batch]) -> (features
    [batch, frames, bins] float32, frame lengths [batch] int32). Padded frames are zero."""

    def __init__(self, config: FeatureConfig, global_stats: Optional[Dict[str, object]] = None) -> None:
        super().__init__(name="graph_features")
        self.config = config
        if config.kind == "logmel":
            basis = mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
            self.mel_basis = tf.constant(basis.T, tf.float32)  # [fft bins, mels]
        else:
            self.mel_basis = None
        if config.normalization == "global":
            if global_stats is None:
                raise ValueError("global normalisation needs the feature job's global_stats.json")
            self.mean = tf.constant(np.asarray(global_stats["mean"], np.float32))
            self.std = tf.constant(np.maximum(np.asarray(global_stats["std"], np.float32), GLOBAL_STD_FLOOR))

    def write_global_stats(self, saved_model_dir: str) -> None:
        """With global normalisation, its statistics as assets.extra/global_stats.json beside the
        export: chunked serving normalises features outside the signature and reads them there."""
        if self.config.normalization != "global":
            return
        import json

        folder = f"{saved_model_dir.rstrip('/')}/assets.extra"
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(f"{folder}/{GLOBAL_STATS_FILE}", "w") as f:
            f.write(json.dumps({"mean": self.mean.numpy().tolist(), "std": self.std.numpy().tolist()}))

    def __call__(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        c = self.config
        features = self.log_features(waveforms)
        n_frames = frame_lengths(lengths, c)
        mask = tf.sequence_mask(n_frames, tf.shape(features)[1], dtype=tf.float32)[:, :, None]
        features = self._normalise(features, mask, n_frames) * mask
        return features[:, : tf.reduce_max(tf.concat([n_frames, [0]], 0))], n_frames

    def log_features(self, waveforms: tf.Tensor) -> tf.Tensor:
        """Unnormalised log features [batch, frames, bins] of every whole window: frame t depends
        on samples [t hop, t hop + n_fft) alone, which lets chunked serving compute a long
        recording's frames piece by piece and normalise them with the whole recording's statistics."""
        c = self.config
        waveforms = tf.convert_to_tensor(waveforms, tf.float32)
        # A batch shorter than one window still yields a [batch, 0, bins] tensor.
        padding = tf.maximum(c.n_fft - tf.shape(waveforms)[1], 0)
        waveforms = tf.pad(waveforms, [[0, 0], [0, padding]])
        spectrum = tf.signal.stft(
            waveforms,
            frame_length=c.n_fft,
            frame_step=c.hop_length,
            fft_length=c.n_fft,
            window_fn=tf.signal.hann_window,
            pad_end=False,
        )
        power = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
        if self.mel_basis is not None:
            power = tf.matmul(power, self.mel_basis)
        return tf.math.log(power + c.log_floor)

    def _normalise(self, features: tf.Tensor, mask: tf.Tensor, n_frames: tf.Tensor) -> tf.Tensor:
        mode = self.config.normalization
        count = tf.maximum(tf.cast(n_frames, tf.float32), 1.0)[:, None, None]
        if mode == "cmvn":
            mean = tf.reduce_sum(features * mask, axis=1, keepdims=True) / count
            variance = tf.reduce_sum(((features - mean) * mask) ** 2, axis=1, keepdims=True) / count
            return (features - mean) / tf.maximum(tf.sqrt(variance), CMVN_STD_FLOOR)
        if mode == "minmax":
            big = tf.constant(1e30, tf.float32)
            low = tf.reduce_min(features * mask + (1.0 - mask) * big, axis=[1, 2], keepdims=True)
            high = tf.reduce_max(features * mask - (1.0 - mask) * big, axis=[1, 2], keepdims=True)
            return 2.0 * (features - low) / tf.maximum(high - low, 1e-12) - 1.0
        if mode == "global":
            return (features - self.mean) / self.std
        return features
