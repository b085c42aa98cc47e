"""Waveforms of different lengths as one batch, the way both serving signatures take them."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def pad_waveforms(waveforms: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Zero-padded [rows, samples] float32 and the real lengths (int32): the signatures compute
    features on each row's real samples only."""
    lengths = np.array([w.shape[0] for w in waveforms], np.int32)
    out = np.zeros((len(waveforms), int(lengths.max()) if len(waveforms) else 0), np.float32)
    for row, w in enumerate(waveforms):
        out[row, : w.shape[0]] = w
    return out, lengths
