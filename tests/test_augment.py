"""speechpipe.audio.augment: measured behaviour of each augmentation (SNR, the image-source RIR's
delay and decay, alignment of reverberated audio, speed and pitch), determinism, validation."""

import math

import numpy as np
import pytest

from speechpipe.audio import augment as A
from speechpipe.validation import ConfigError

RATE = 16000


def _speech_like(seconds=1.5, seed=0):
    """Harmonics with a syllable-rate envelope and a little noise: not stationary, like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * envelope * voiced + 0.01 * rng.standard_normal(t.shape[0])).astype(np.float32)


def _snr_db(clean, mixed):
    clean = np.asarray(clean, np.float64)
    noise = np.asarray(mixed, np.float64) - clean
    return 10 * math.log10(np.mean(clean**2) / np.mean(noise**2))


def _t30(rir, rate):
    """RT60 from a line through the Schroeder decay between -5 and -35 dB (ISO 3382's T30), written
    here apart from the module's T20 so the test does not check the code against itself."""
    e = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    level = 10 * np.log10(e / e[0])
    i, j = np.argmax(level <= -5), np.argmax(level <= -35)
    slope = np.polyfit(np.arange(i, j) / rate, level[i:j], 1)[0]
    return -60 / slope


def _frequency(x, rate):
    """The frequency of a sine, from the peak of a zero-padded, windowed FFT (0.1 Hz bins)."""
    n = 10 * rate
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    return np.argmax(spectrum) * rate / n


# ------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [0.0, 7.5, 15.0])
def test_mixed_signal_has_the_asked_snr(colour, snr):
    speech = _speech_like()
    noise = A.coloured_noise(len(speech), colour, np.random.default_rng(1))
    mixed = A.mix_at_snr(speech, noise, snr)
    assert mixed.dtype == np.float32 and mixed.shape == speech.shape
    assert abs(_snr_db(speech, mixed) - snr) < 0.1


def test_short_noise_is_looped_to_the_speech_and_silent_noise_refused():
    speech = _speech_like()
    mixed = A.mix_at_snr(speech, A.coloured_noise(1000, "white", np.random.default_rng(0)), 5.0)
    assert mixed.shape == speech.shape and abs(_snr_db(speech, mixed) - 5.0) < 0.1
    with pytest.raises(ValueError, match="no energy"):
        A.mix_at_snr(speech, np.zeros(100), 5.0)


@pytest.mark.parametrize(("colour", "slope_db_per_octave"), [("white", 0.0), ("pink", -3.0), ("brown", -6.0)])
def test_noise_colours_have_their_spectral_slopes(colour, slope_db_per_octave):
    rng = np.random.default_rng(3)
    n = 2**16
    # averaged periodograms of 64 frames: a smooth spectrum to fit a line to
    psd = np.mean(
        [np.abs(np.fft.rfft(A.coloured_noise(n, colour, rng)[:4096] * np.hanning(4096))) ** 2 for _ in range(64)],
        axis=0,
    )
    f = np.fft.rfftfreq(4096, 1 / RATE)
    band = (f >= 100) & (f <= 6400)
    slope = np.polyfit(np.log2(f[band]), 10 * np.log10(psd[band]), 1)[0]
    assert abs(slope - slope_db_per_octave) < 0.5


def test_babble_sums_other_utterances_and_mixes_at_the_asked_snr():
    others = [_speech_like(1.0, seed=s) for s in range(4)]
    speech = _speech_like(2.0, seed=9)
    noise = A.babble(len(speech), others, np.random.default_rng(0))
    assert noise.shape == speech.shape
    # each source enters at unit mean square: the sum's power is near the number of sources
    assert 1.5 < np.mean(noise**2) < 8
    assert abs(_snr_db(speech, A.mix_at_snr(speech, noise, 13.0)) - 13.0) < 0.1
    with pytest.raises(ValueError):
        A.babble(100, [], np.random.default_rng(0))


# ------------------------------------------------------------------------------ reverberation


def _rooms(count=8, seed=0):
    config = A.AugmentConfig(copies=1)
    rng = np.random.default_rng(seed)
    return [A.draw_room(config, rng) for _ in range(count)]


def test_rir_direct_path_is_at_distance_over_c_within_a_sample():
    for room in _rooms():
        rir = A.room_impulse_response(room, RATE)
        expected = room.distance_m / A.SPEED_OF_SOUND * RATE
        first = int(np.argmax(np.abs(rir) > 0))  # nothing arrives before the direct sound
        assert abs(first - expected) <= 1
        assert A.direct_path_delay(room, RATE) == first
        assert rir[first] == pytest.approx(1 / (4 * math.pi * room.distance_m), rel=1e-9)


def test_rir_energy_decay_gives_the_asked_rt60():
    """T30 measured on an RIR 1.5 x RT60 long (so that the truncation does not bend the decay
    between -5 and -35 dB) within 10 % of the asked RT60. 10 %: the decay of a shoebox with
    specular walls is not a straight line (early reflections, then the slower grazing images),
    so T20 (which the module matches to 2 %) and T30 differ by up to 7 % over the default rooms;
    ISO 3382 reports T20 and T30 separately for this reason. Without the module's correction the
    Eyring coefficient alone gives 1.4-1.9 times the asked RT60, which this test would catch."""
    for room in _rooms(10, seed=1):
        rir = A.room_impulse_response(room, RATE, seconds=1.5 * room.rt60_s)
        assert abs(_t30(rir, RATE) / room.rt60_s - 1) < 0.10, room
        assert abs(A.decay_rt60(rir, RATE) / room.rt60_s - 1) < 0.03, room


def test_longer_rt60_decays_more_slowly():
    room = _rooms(1)[0]
    short = A.room_impulse_response(A.Room(room.size_m, room.source_m, room.mic_m, 0.25), RATE)
    long = A.room_impulse_response(A.Room(room.size_m, room.source_m, room.mic_m, 0.75), RATE)
    assert len(long) == math.ceil(0.75 * RATE) and len(short) == math.ceil(0.25 * RATE)  # default: RT60 long
    assert _t30(long, RATE) > 2.5 * _t30(short, RATE)


def test_reverberated_output_has_the_same_length_and_is_aligned():
    # Noise bursts, not harmonics: a periodic signal's cross-correlation peaks every period.
    rng = np.random.default_rng(5)
    t = np.arange(2 * RATE) / RATE
    speech = (rng.standard_normal(t.shape[0]) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    for room in _rooms(4, seed=2):
        rir = A.room_impulse_response(room, RATE)
        delay = A.direct_path_delay(room, RATE)
        assert delay > 20  # a real delay to undo
        wet = A.reverberate(speech, rir, delay)
        assert wet.shape == speech.shape and wet.dtype == np.float32
        assert np.mean(wet.astype(np.float64) ** 2) == pytest.approx(np.mean(speech.astype(np.float64) ** 2), rel=1e-6)
        lags = np.arange(-400, 401)
        xcorr = [
            np.dot(speech[max(0, -k) : len(speech) - max(0, k)], wet[max(0, k) : len(wet) - max(0, -k)]) for k in lags
        ]
        assert lags[int(np.argmax(xcorr))] == 0
        assert not np.allclose(wet, speech, atol=1e-3)  # and it did reverberate


def test_reverberate_refuses_a_delay_outside_the_rir():
    with pytest.raises(ValueError, match="outside the RIR"):
        A.reverberate(np.ones(100), np.ones(10), 10)


# ------------------------------------------------------------------------------------- speed


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_by_one_over_factor_and_pitch_by_factor(factor):
    t = np.arange(2 * RATE) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    out = A.speed_perturb(sine, factor, RATE)
    assert abs(len(out) - len(sine) / factor) <= 1
    assert _frequency(out, RATE) == pytest.approx(440.0 * factor, abs=0.5)


# ------------------------------------------------------------------------------ copies, seeds


def test_copies_are_deterministic_and_depend_on_seed_utterance_and_copy():
    config = A.AugmentConfig(copies=3, rir_bank=4)
    speech = _speech_like()
    others = [_speech_like(1.0, seed=s) for s in range(1, 8)]
    first = [A.augment(speech, RATE, config, "spk/s/u1", k, others) for k in range(3)]
    again = [A.augment(speech, RATE, config, "spk/s/u1", k, others) for k in range(3)]
    assert [c.samples.tobytes() for c in first] == [c.samples.tobytes() for c in again]
    assert [c.detail for c in first] == [c.detail for c in again]
    # copies = len(kinds): one of each kind
    assert sorted(c.kind for c in first) == sorted(A.KINDS)
    other_utterance = [A.augment(speech, RATE, config, "spk/s/u2", k, others) for k in range(3)]
    other_seed = [
        A.augment(speech, RATE, A.AugmentConfig(copies=3, rir_bank=4, seed=1), "spk/s/u1", k, others) for k in range(3)
    ]
    by_kind = lambda copies: {c.kind: c.samples.tobytes() for c in copies}  # noqa: E731
    for changed in (other_utterance, other_seed):
        assert any(by_kind(changed)[k] != by_kind(first)[k] for k in A.KINDS)


def test_copy_kinds_spread_evenly_over_utterances():
    config = A.AugmentConfig(copies=1)
    kinds = [A.copy_kind(config, f"u{i}", 0) for i in range(3000)]
    counts = {k: kinds.count(k) for k in A.KINDS}
    assert all(900 < n < 1100 for n in counts.values()), counts


def test_speed_copy_is_a_new_speaker_unless_asked_otherwise():
    speech = _speech_like()
    config = A.AugmentConfig(copies=1, kinds=("speed",))
    made = A.augment(speech, RATE, config, "u", 0)
    assert made.kind == "speed" and made.speaker_suffix in ("-speed0.9", "-speed1.1")
    same = A.augment(speech, RATE, A.AugmentConfig(copies=1, kinds=("speed",), speed_new_speaker=False), "u", 0)
    assert same.speaker_suffix == ""


def test_babble_is_used_only_when_other_speakers_are_offered():
    speech = _speech_like()
    config = A.AugmentConfig(copies=1, kinds=("noise",))
    details = {A.augment(speech, RATE, config, f"u{i}", 0).detail.split(":")[1] for i in range(40)}
    assert "babble" not in " ".join(details) and details <= {"white", "pink", "brown"}
    others = [_speech_like(1.0, seed=s) for s in range(1, 8)]
    details = [A.augment(speech, RATE, config, f"u{i}", 0, others).detail for i in range(40)]
    assert any(d.startswith("noise:babble") for d in details)
    only_babble = A.AugmentConfig(copies=1, kinds=("noise",), noise_types=("babble",))
    with pytest.raises(ValueError, match="babble"):
        A.augment(speech, RATE, only_babble, "u", 0)


def test_noise_copy_snr_is_within_the_configured_range():
    speech = _speech_like()
    config = A.AugmentConfig(copies=1, kinds=("noise",), noise_types=("pink",), snr_db=(3.0, 6.0))
    for i in range(10):
        made = A.augment(speech, RATE, config, f"u{i}", 0)
        assert 3.0 <= made.extra["snr_db"] <= 6.0
        assert abs(_snr_db(speech, made.samples) - made.extra["snr_db"]) < 0.1


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"copies": -1}, "copies"),
        ({"copies": 1.5}, "copies"),
        ({"kinds": ()}, "kinds"),
        ({"kinds": ("noise", "echo")}, "kinds"),
        ({"kinds": ("noise", "noise")}, "kinds"),
        ({"noise_types": ("pink", "violet")}, "noise_types"),
        ({"snr_db": (15.0, 0.0)}, "snr_db"),
        ({"snr_db": (0.0, float("nan"))}, "snr_db"),
        ({"babble_speakers": (0, 3)}, "babble_speakers"),
        ({"babble_pool": 2}, "babble_pool"),
        ({"speed_factors": (1.0,)}, "speed_factors"),
        ({"speed_factors": (0.3,)}, "speed_factors"),
        ({"speed_factors": ()}, "speed_factors"),
        ({"room_min_m": (1.0, 3.0, 2.5)}, "room side 0"),
        ({"room_min_m": (5.0, 3.0, 2.5), "room_max_m": (4.0, 8.0, 4.0)}, "room side 0"),
        ({"rt60_s": (0.0, 0.5)}, "rt60_s"),
        ({"rir_bank": 0}, "rir_bank"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_settings_raise_config_errors_naming_them(changes, message):
    with pytest.raises(ConfigError, match=message):
        A.AugmentConfig(**{"copies": 1, **changes}).validate()


def test_defaults_are_valid_off_and_round_trip_through_json():
    default = A.AugmentConfig()
    assert default.validate() is default and not default.enabled
    config = A.AugmentConfig(copies=2, kinds=("reverb", "speed"), seed=4)
    assert A.AugmentConfig.from_json(config.to_json()) == config
    assert A.parse_kinds("noise, speed") == ("noise", "speed") and A.parse_kinds("") == () == A.parse_kinds("none")
    with pytest.raises(ConfigError, match="echo"):
        A.parse_kinds("noise,echo")
