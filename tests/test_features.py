import numpy as np
import pytest

from speechpipe.audio.features import GlobalStats, cmvn, compute_features, minmax, normalise, num_frames
from speechpipe.config import FeatureConfig
from speechpipe.validation import ConfigError, validate_feature_config
from tests.audio_inputs import tone


@pytest.fixture(scope="module")
def logmel():
    return compute_features(tone(1.0, 16000), FeatureConfig())


def test_shapes_and_frame_count():
    for kind, bins in (("logmel", 80), ("stft", 201)):
        config = FeatureConfig(kind=kind)
        samples = tone(0.5, 16000)
        f = compute_features(samples, config)
        assert f.shape == (num_frames(len(samples), config), bins) == (1 + (8000 - 400) // 160, bins)
        assert np.all(np.isfinite(f))
    assert num_frames(399, FeatureConfig()) == 0


def test_minmax_spans_exactly_minus_one_to_one(logmel):
    x = minmax(logmel)
    assert x.min() == -1.0 and x.max() == 1.0


def test_cmvn_zero_mean_unit_variance_per_bin(logmel):
    x = cmvn(logmel).astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-4)


def test_global_stats_merge_equals_numpy():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3, 2, size=(n, 5)).astype(np.float32) for n in (7, 1, 30)]
    merged = GlobalStats.empty(5)
    for p in parts:
        merged = merged.merge(GlobalStats.of(p))
    whole = np.concatenate(parts).astype(np.float64)
    np.testing.assert_allclose(merged.mean, whole.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, whole.std(axis=0), rtol=1e-9)
    assert merged.count == 38


def test_normalise_modes(logmel):
    assert normalise(logmel, FeatureConfig(normalization="none")) is logmel
    with pytest.raises(ValueError, match="statistics"):
        normalise(logmel, FeatureConfig(normalization="global"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_fft", 8),
        ("hop_length", 0),
        ("n_mels", 500),
        ("fmax", 9000.0),
        ("normalization", "zscore"),
        ("kind", "mfcc"),
        ("max_seconds", 0.01),
    ],
)
def test_bad_feature_config_names_the_setting(field, value):
    with pytest.raises(ConfigError, match=field):
        validate_feature_config(FeatureConfig(**{field: value}))


def _librosa_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The definition compute_features implements, written with librosa as it once was."""
    import librosa

    spectrum = librosa.stft(samples, n_fft=config.n_fft, hop_length=config.hop_length, window="hann", center=False)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    if config.kind == "logmel":
        power = (
            librosa.filters.mel(
                sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax
            )
            @ power
        )
    return np.log(power + config.log_floor).T.astype(np.float32)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "hop", "n_mels", "fmax"),
    [(16000, 400, 160, 80, 7600.0), (8000, 256, 80, 40, 4000.0), (22050, 512, 128, 64, 11025.0)],
)
def test_mel_basis_and_window_are_librosas_bits(sample_rate, n_fft, hop, n_mels, fmax):
    import librosa

    from speechpipe.audio.features import _hann_window, mel_basis

    assert np.array_equal(
        mel_basis(sample_rate, n_fft, n_mels, 20.0, fmax),
        librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=20.0, fmax=fmax),
    )
    assert np.array_equal(_hann_window(n_fft), librosa.filters.get_window("hann", n_fft, fftbins=True))


@pytest.mark.parametrize("kind", ["stft", "logmel"])
def test_features_equal_librosa(kind):
    """librosa's definition, computed in float32 instead of librosa's float64 FFT: float rounding
    only, largest in the quietest bins (1.5e-4 measured on the demo corpus)."""
    rng = np.random.default_rng(3)
    for seconds in (0.025, 0.5, 3.3):
        samples = (tone(seconds, 16000) + 0.01 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        config = FeatureConfig(kind=kind)
        ours, theirs = compute_features(samples, config), _librosa_features(samples, config)
        assert ours.shape == theirs.shape == (num_frames(len(samples), config), config.n_bins)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=5e-4)


def test_shorter_than_one_window_is_refused():
    with pytest.raises(ValueError, match="n_fft"):
        compute_features(np.ones(399, np.float32), FeatureConfig())


@pytest.mark.parametrize("order", ["C", "F"])
def test_cmvn_is_numpys_mean_and_std_bit_for_bit(order):
    x = np.asarray(np.random.default_rng(5).normal(3, 2, size=(301, 80)), np.float32, order=order)
    x[:, 7] = 1.5  # a constant bin: divided by the floor
    expected = ((x - x.mean(axis=0, dtype=np.float64)) / np.maximum(x.std(axis=0, dtype=np.float64), 1e-5)).astype(
        np.float32
    )
    assert np.array_equal(cmvn(x), expected)
