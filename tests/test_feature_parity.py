"""Training features (librosa, in the Beam job) and serving features (tf.signal, in the graph)
must agree, or a model meets other inputs in production than in training.

Stated tolerance: max |difference| <= 1e-3 in every mode (measured: 5.5e-5 on raw log-mel, 3.7e-4
with cmvn on the linear STFT, both float32 FFTs since the job stopped using librosa's float64 one,
which measured 7.3e-5 and 3.9e-4; float32 FFTs differ in rounding, and normalising divides by
per-bin deviations of order 1)."""

import os

import numpy as np
import pytest

from speechpipe.audio.decode import decode
from speechpipe.audio.features import GlobalStats, compute_features, normalise
from speechpipe.config import FeatureConfig
from tests.helpers import read_manifest

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def waveforms(tiny_corpus):
    items = read_manifest(tiny_corpus)[:6]
    return [decode(os.path.join(tiny_corpus, r["audio"]), 16000).samples for r in items]


def _batch(waves):
    longest = max(len(w) for w in waves)
    batch = np.zeros((len(waves), longest), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch, np.array([len(w) for w in waves], np.int32)


@pytest.mark.parametrize(
    ("kind", "normalization"),
    [("logmel", "cmvn"), ("logmel", "minmax"), ("logmel", "global"), ("logmel", "none"), ("stft", "cmvn")],
)
def test_graph_features_equal_librosa_features(waveforms, kind, normalization):
    from speechpipe.audio.tf_features import GraphFeatures

    config = FeatureConfig(kind=kind, normalization=normalization)
    raw = [compute_features(w, config) for w in waveforms]
    stats = None
    if normalization == "global":
        merged = GlobalStats.empty(config.n_bins)
        for r in raw:
            merged = merged.merge(GlobalStats.of(r))
        stats = merged.to_json()
    expected = [normalise(r, config, stats) for r in raw]
    batch, lengths = _batch(waveforms)
    features, n_frames = GraphFeatures(config, stats)(batch, lengths)
    features, n_frames = features.numpy(), n_frames.numpy()
    for i, e in enumerate(expected):
        assert n_frames[i] == e.shape[0]
        got = features[i, : n_frames[i]]
        assert np.max(np.abs(got - e)) <= TOLERANCE, (kind, normalization, float(np.max(np.abs(got - e))))
        assert np.all(features[i, n_frames[i] :] == 0.0), "padded frames are zero"


def test_short_waveforms_give_no_frames():
    from speechpipe.audio.tf_features import GraphFeatures

    features, n = GraphFeatures(FeatureConfig())(np.zeros((2, 100), np.float32), np.array([100, 50]))
    assert features.shape[1] == 0 and list(n.numpy()) == [0, 0]
