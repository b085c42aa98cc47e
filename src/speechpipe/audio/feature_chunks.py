"""A recording's normalised features, frame range by frame range, never all at once.

The serving signatures normalise each waveform with statistics of the whole waveform (`cmvn`:
per-bin mean and deviation over all its frames; `minmax`: its lowest and highest value). To give
a long recording the features its whole-file call would give, it is read twice:

1. `scan`: every block once, through the in-graph log features (`GraphFeatures.log_features`,
   the ops of the exported signature), summing what the normalisation needs (in float64) and
   checking the samples as `check_usable` does;
2. `frames`: the frame ranges the network asks for, in order, each computed from just the samples
   its windows cover (frame t covers samples [t hop, t hop + n_fft)) and normalised with the
   whole recording's statistics.

Held in memory: one block of samples and the frames of one range; the statistics are a few
vectors of `bins` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from speechpipe.audio.features import CMVN_STD_FLOOR
from speechpipe.audio.stream import AudioStream, UsabilityCheck
from speechpipe.config import FeatureConfig

# Frames per call of the log features in the first pass (60 s at a 10 ms hop).
SCAN_FRAMES = 6000


def frames_of(samples: int, config: FeatureConfig) -> int:
    """Whole windows in `samples` (no centring): 1 + (n - n_fft) // hop, 0 below one window."""
    return 1 + (samples - config.n_fft) // config.hop_length if samples >= config.n_fft else 0


@dataclass(frozen=True)
class FileScan:
    """What the first pass learnt of a recording: its length and its normalisation."""

    samples: int
    frames: int
    shift: np.ndarray  # subtracted from every frame ([bins] or a scalar)
    scale: np.ndarray  # then divided by

    def seconds(self, rate: int) -> float:
        return self.samples / rate

    def normalise(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.shift) / self.scale).astype(np.float32)


class _SampleWindow:
    """Samples [start, end) of a stream read once, for ranges whose starts never go back: what
    lies before the latest start is dropped, so that it holds one range plus one block."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self._held = np.zeros(0, np.float32)
        self._offset = 0  # the sample index of _held[0]
        self.exhausted = False

    def take(self, start: int, end: int) -> np.ndarray:
        if start < self._offset:
            raise ValueError(f"samples from {start} asked after {self._offset}: ranges must not go back")
        while self._offset + self._held.shape[0] < start and not self.exhausted:  # a gap: read past it
            self._offset += self._held.shape[0]
            block = next(self._blocks, None)
            if block is None:
                self.exhausted = True
                self._held = np.zeros(0, np.float32)
            else:
                self._held = block
        self._held = self._held[start - self._offset :]
        self._offset = start
        pieces: List[np.ndarray] = [self._held]
        have = self._held.shape[0]
        while have < end - start and not self.exhausted:
            block = next(self._blocks, None)
            if block is None:
                self.exhausted = True
                break
            pieces.append(block)
            have += block.shape[0]
        if len(pieces) > 1:
            self._held = np.concatenate(pieces)
        return self._held[: max(0, end - start)]


class ChunkFeatures:
    """The in-graph features of `config` (and `global_stats` for global normalisation) for
    recordings read in blocks. `scan` then `frames`, once each per recording."""

    def __init__(
        self, config: FeatureConfig, global_stats: Optional[Dict[str, object]] = None, min_samples: int = 400
    ) -> None:
        import tensorflow as tf

        from speechpipe.audio.tf_features import GraphFeatures

        self.config = config
        self.min_samples = min_samples
        self._graph = GraphFeatures(config, global_stats)
        self._log_features = tf.function(
            lambda w: self._graph.log_features(w), input_signature=[tf.TensorSpec([1, None], tf.float32)]
        )

    def _compute(self, samples: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._log_features(tf.constant(samples[None, :]))[0].numpy()

    def scan(self, source: AudioStream) -> FileScan:
        """The first pass: raises `AudioRejected` for a recording the whole-file path refuses."""
        c = self.config
        check = UsabilityCheck(self.min_samples)
        mode = c.normalization
        count, total, squares = 0, np.zeros(c.n_bins), np.zeros(c.n_bins)
        low, high = np.inf, -np.inf

        def observed(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            for block in blocks:
                check.update(block)
                yield block

        window = _SampleWindow(observed(source.blocks()))
        first = 0
        while True:
            samples = window.take(first * c.hop_length, (first + SCAN_FRAMES - 1) * c.hop_length + c.n_fft)
            n = frames_of(samples.shape[0], c)
            if n and mode in ("cmvn", "minmax"):
                features = self._compute(samples[: (n - 1) * c.hop_length + c.n_fft])
                if mode == "cmvn":
                    f64 = features.astype(np.float64)
                    count += n
                    total += f64.sum(axis=0)
                    squares += (f64 * f64).sum(axis=0)
                else:
                    low, high = min(low, float(features.min())), max(high, float(features.max()))
            first += n
            if n < SCAN_FRAMES:
                break
        position = first * c.hop_length
        while not window.exhausted:  # the tail after the last whole window still counts
            position += window.take(position, position + (1 << 20)).shape[0]
        samples = check.finish()
        frames = frames_of(samples, c)
        shift, scale = np.zeros((), np.float32), np.ones((), np.float32)
        if mode == "cmvn" and frames:
            mean = total / count
            variance = np.maximum(squares / count - mean * mean, 0.0)
            shift = mean.astype(np.float32)
            scale = np.maximum(np.sqrt(variance).astype(np.float32), np.float32(CMVN_STD_FLOOR))
        elif mode == "minmax" and frames:
            # 2 (f - low) / (high - low) - 1 = (f - (low + high) / 2) / ((high - low) / 2)
            shift = np.float32(low + (high - low) / 2.0)
            scale = np.float32(max(high - low, 1e-12) / 2.0)
        elif mode == "global":
            shift, scale = self._graph.mean.numpy(), self._graph.std.numpy()
        return FileScan(samples=samples, frames=frames, shift=np.asarray(shift), scale=np.asarray(scale))

    def frames(self, source: AudioStream, scan: FileScan, ranges: Iterable[Tuple[int, int]]) -> Iterator[np.ndarray]:
        """Normalised features [end - start, bins] of each frame range (start, end), in order;
        starts must not decrease. A range past the last frame is cut at it."""
        c = self.config
        window = _SampleWindow(source.blocks())
        for start, end in ranges:
            end = min(end, scan.frames)
            if end <= start:
                yield np.zeros((0, c.n_bins), np.float32)
                continue
            samples = window.take(start * c.hop_length, (end - 1) * c.hop_length + c.n_fft)
            features = self._compute(samples)
            if features.shape[0] != end - start:
                raise ValueError(
                    f"{source.path}: frames {start}-{end} asked, {features.shape[0]} read: the file changed "
                    "between the two passes"
                )
            yield scan.normalise(features)
