"""Waveform augmentation for training speech: additive noise at a chosen SNR, reverberation by
simulated room impulse responses, and speed perturbation.

These are the three augmentations the speaker-recognition recipes this project measures itself
against train with (Kaldi's VoxCeleb x-vector recipe: MUSAN noise at 0-15 dB, babble at 13-20 dB
from 3-7 speakers, simulated RIRs; SpeechBrain and WeSpeaker: noise, reverberation and speed
perturbation 0.9/1.1). Nothing is downloaded: the noise is generated (white, pink, brown) or made
from other utterances of the same split (babble), and room impulse responses are simulated by
the image-source method (Allen & Berkley, 1979) for a shoebox room, with numpy only.

Every random choice comes from a generator seeded by (seed, utterance id, copy index), so a rerun
gives the same samples, bit for bit, whichever worker processes an utterance and in whatever
order.

Why one module of this size: the three kinds share the config, the seeding and the one entry
point the feature job calls (`augment`); the room simulation (a third of it) exists only to
make reverberated copies.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from speechpipe.validation import ConfigError, reject_unknown

NOISE, REVERB, SPEED = "noise", "reverb", "speed"
KINDS: Tuple[str, ...] = (NOISE, REVERB, SPEED)
WHITE, PINK, BROWN, BABBLE = "white", "pink", "brown", "babble"
NOISE_TYPES: Tuple[str, ...] = (WHITE, PINK, BROWN, BABBLE)
SPEED_OF_SOUND = 343.0  # m/s, air at 20 degrees C
WALL_MARGIN_M = 0.5  # source and microphone stay this far from every wall
MIN_SOURCE_MIC_M = 0.5


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmented copies the feature job adds to the training split, and how they are drawn.

    Each copy applies one kind. For utterance u, copy k gets kinds[(offset(u) + k) % len(kinds)]
    with a seeded per-utterance offset: `copies = len(kinds)` gives every utterance one copy of
    each kind, fewer copies spread the kinds evenly over the corpus."""

    copies: int = 0  # augmented copies per training utterance; 0 = augmentation off
    kinds: Tuple[str, ...] = KINDS
    noise_types: Tuple[str, ...] = NOISE_TYPES  # babble is skipped where no other speaker is in the pool
    snr_db: Tuple[float, float] = (0.0, 15.0)  # generated noise (Kaldi's MUSAN noise range)
    babble_snr_db: Tuple[float, float] = (13.0, 20.0)  # Kaldi's babble range
    babble_speakers: Tuple[int, int] = (3, 7)  # other speakers summed into one babble (Kaldi's)
    babble_pool: int = 200  # training utterances (a seeded choice) babble is drawn from
    speed_factors: Tuple[float, ...] = (0.9, 1.1)  # Kaldi's, SpeechBrain's and WeSpeaker's
    # A speed-perturbed copy is labelled as a new speaker (<speaker>-speed<factor>), as WeSpeaker
    # does: resampling by 0.9 or 1.1 moves the pitch and every formant by 10 %, which are what tell
    # speakers apart, so calling the copy the same speaker would teach the embedder to ignore
    # them. False keeps the original speaker (for the CTC branch, which ignores speakers).
    speed_new_speaker: bool = True
    room_min_m: Tuple[float, float, float] = (3.0, 3.0, 2.5)  # length, width, height
    room_max_m: Tuple[float, float, float] = (10.0, 8.0, 4.0)
    rt60_s: Tuple[float, float] = (0.2, 0.8)
    # Rooms are drawn from a bank of this many (seeded by `seed` and the room's index), each
    # simulated once per worker: an image-source RIR costs 0.1-0.5 s, more than an utterance's
    # features. Kaldi's recipe draws from a fixed set of simulated RIRs too.
    rir_bank: int = 100
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return self.copies > 0

    def validate(self) -> "AugmentConfig":
        """This config, or a `ConfigError` naming the setting and what it needs."""

        def _range(name: str, value: Sequence[float], low: float, high: float) -> None:
            if len(value) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
                raise ConfigError(f"{name}={value!r}: need two finite numbers (low, high)")
            if not low <= value[0] <= value[1] <= high:
                raise ConfigError(f"{name}={tuple(value)}: need {low:g} <= low <= high <= {high:g}")

        if not isinstance(self.copies, int) or not 0 <= self.copies <= 20:
            raise ConfigError(f"copies={self.copies!r}: need an integer 0..20 (0 = augmentation off)")
        if not self.kinds:
            raise ConfigError(f"kinds=(): name at least one of {KINDS}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or len(set(self.kinds)) != len(self.kinds):
            raise ConfigError(f"kinds={tuple(self.kinds)}: need distinct names from {KINDS}")
        if NOISE in self.kinds:
            bad = [t for t in self.noise_types if t not in NOISE_TYPES]
            if not self.noise_types or bad or len(set(self.noise_types)) != len(self.noise_types):
                raise ConfigError(f"noise_types={tuple(self.noise_types)}: need distinct names from {NOISE_TYPES}")
            _range("snr_db", self.snr_db, -20.0, 60.0)
            if BABBLE in self.noise_types:
                _range("babble_snr_db", self.babble_snr_db, -20.0, 60.0)
                lo, hi = self.babble_speakers
                if not 1 <= lo <= hi <= 50:
                    raise ConfigError(f"babble_speakers={tuple(self.babble_speakers)}: need 1 <= low <= high <= 50")
                if self.babble_pool < hi:
                    raise ConfigError(f"babble_pool={self.babble_pool}: need at least babble_speakers' high ({hi})")
        if SPEED in self.kinds:
            if not self.speed_factors:
                raise ConfigError("speed_factors=(): need at least one factor")
            for f in self.speed_factors:
                if not (isinstance(f, (int, float)) and 0.5 <= f <= 2.0) or f == 1.0:
                    raise ConfigError(
                        f"speed_factors={tuple(self.speed_factors)}: need factors in [0.5, 2], "
                        "other than 1 (a copy at 1.0 is the utterance itself)"
                    )
        if REVERB in self.kinds:
            if len(self.room_min_m) != 3 or len(self.room_max_m) != 3:
                raise ConfigError(f"room_min_m={self.room_min_m}, room_max_m={self.room_max_m}: need three sides each")
            for axis, (lo, hi) in enumerate(zip(self.room_min_m, self.room_max_m)):
                # Source and microphone keep WALL_MARGIN_M from the walls and MIN_SOURCE_MIC_M apart.
                if not 2 * WALL_MARGIN_M + MIN_SOURCE_MIC_M <= lo <= hi <= 100.0:
                    raise ConfigError(
                        f"room side {axis}: {lo}..{hi} m; need "
                        f"{2 * WALL_MARGIN_M + MIN_SOURCE_MIC_M:g} <= min <= max <= 100 m"
                    )
            _range("rt60_s", self.rt60_s, 0.05, 2.0)
            if not 1 <= self.rir_bank <= 100_000:
                raise ConfigError(f"rir_bank={self.rir_bank}: need 1..100000 rooms")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r}: need an integer >= 0")
        return self

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "AugmentConfig":
        """The inverse of `to_json` (lists back to tuples); an unknown setting is an error."""
        reject_unknown(data, cls.__dataclass_fields__, "augmentation")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**values)


def parse_kinds(text: str) -> Tuple[str, ...]:
    """`"noise,reverb,speed"` -> the kinds tuple (empty or "none" -> ()). Unknown names raise
    ConfigError."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise ConfigError(f"augmentation kinds {unknown}: choose from {KINDS}")
    return names


# ------------------------------------------------------------------------------ seeding


def _words(text: str) -> Tuple[int, ...]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def rng_for(seed: int, utterance: str, copy: int) -> np.random.Generator:
    """The generator of one copy: a function of (seed, utterance id, copy index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *_words(utterance), int(copy)]))


def copy_kind(config: AugmentConfig, utterance: str, copy: int) -> str:
    """The kind copy `copy` of `utterance` applies (see AugmentConfig)."""
    offset = _words(f"{config.seed}:kinds:{utterance}")[0] % len(config.kinds)
    return config.kinds[(offset + copy) % len(config.kinds)]


def augmented_id(utterance: str, copy: int, kind: str) -> str:
    return f"{utterance}-aug{copy}-{kind}"


# ------------------------------------------------------------------------------ noise


def power(x: np.ndarray) -> float:
    """Mean square, in float64."""
    x = np.asarray(x, np.float64)
    return float(np.mean(x * x)) if x.size else 0.0


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of Gaussian noise whose power spectrum falls as 1/f^a: white a=0, pink a=1
    (-3 dB per octave), brown a=2 (-6 dB per octave); float64, unit mean square. Shaped in the
    frequency domain (the DC bin is zeroed for pink and brown, whose spectra diverge there)."""
    exponents = {WHITE: 0.0, PINK: 1.0, BROWN: 2.0}
    if colour not in exponents:
        raise ValueError(f"colour {colour!r}: expected one of {tuple(exponents)}")
    if n < 1:
        raise ValueError(f"n={n}: need at least one sample")
    white = rng.standard_normal(n)
    if colour != WHITE:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        scale = np.zeros_like(f)
        scale[1:] = f[1:] ** (-exponents[colour] / 2.0)
        white = np.fft.irfft(spectrum * scale, n)
    p = power(white)
    return white / math.sqrt(p) if p > 0 else white


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that 10 log10(P_speech / P_noise) = snr_db, with P the mean
    square over the whole utterance (Kaldi's and torchaudio's definition). `noise` is looped or
    cut to the speech's length. float32 out, same length as `speech`."""
    speech = np.asarray(speech, np.float64)
    noise = np.asarray(noise, np.float64)
    if noise.size == 0 or power(noise) == 0:
        raise ValueError("noise has no energy")
    if speech.size == 0:
        raise ValueError("speech has no samples")
    if noise.shape[0] < speech.shape[0]:
        noise = np.tile(noise, -(-speech.shape[0] // noise.shape[0]))
    noise = noise[: speech.shape[0]]
    gain = math.sqrt(power(speech) / (power(noise) * 10.0 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(np.float32)


def babble(length: int, others: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The sum of `others` (utterances of other speakers), each at unit mean square and looped
    from a random offset to `length` samples; float64."""
    if not others:
        raise ValueError("babble needs at least one other utterance")
    out = np.zeros(length, np.float64)
    for wave in others:
        wave = np.asarray(wave, np.float64)
        p = power(wave)
        if p == 0:
            continue
        start = int(rng.integers(0, wave.shape[0]))
        looped = np.tile(np.roll(wave, -start), -(-length // wave.shape[0]))[:length]
        out += looped / math.sqrt(p)
    return out


# ------------------------------------------------------------------------------ reverberation


@dataclass(frozen=True)
class Room:
    """A shoebox room with one source and one microphone; uniform wall absorption set from RT60
    by Eyring's formula."""

    size_m: Tuple[float, float, float]
    source_m: Tuple[float, float, float]
    mic_m: Tuple[float, float, float]
    rt60_s: float

    @property
    def distance_m(self) -> float:
        return float(np.linalg.norm(np.subtract(self.source_m, self.mic_m)))

    def reflection_coefficient(self) -> float:
        """The wall's pressure reflection coefficient beta for the room's RT60, by Eyring:
        RT60 = 0.161 V / (-S ln(1 - alpha)), alpha = 1 - beta^2. Eyring's rather than Sabine's
        formula because it holds for any absorption (Sabine's asks for alpha > 1 in small,
        dry rooms) and is the closer one for the image-source method's specular decay."""
        lx, ly, lz = self.size_m
        volume, surface = lx * ly * lz, 2 * (lx * ly + lx * lz + ly * lz)
        return math.exp(-0.161 * volume / (2 * surface * self.rt60_s))


def draw_room(config: AugmentConfig, rng: np.random.Generator) -> Room:
    """A room of the config's ranges, with source and microphone at least WALL_MARGIN_M from the
    walls and MIN_SOURCE_MIC_M apart."""
    size = tuple(float(rng.uniform(lo, hi)) for lo, hi in zip(config.room_min_m, config.room_max_m))
    rt60 = float(rng.uniform(*config.rt60_s))
    while True:
        source = tuple(float(rng.uniform(WALL_MARGIN_M, s - WALL_MARGIN_M)) for s in size)
        mic = tuple(float(rng.uniform(WALL_MARGIN_M, s - WALL_MARGIN_M)) for s in size)
        if np.linalg.norm(np.subtract(source, mic)) >= MIN_SOURCE_MIC_M:
            return Room(size, source, mic, rt60)


def _image_sources(room: Room, beta: float, sample_rate: int, length: int) -> np.ndarray:
    """The image-source sum for one reflection coefficient (see `room_impulse_response`)."""
    radius = SPEED_OF_SOUND * length / sample_rate
    axes = []
    for side, s, m in zip(room.size_m, room.source_m, room.mic_m):
        n_max = int(math.ceil(radius / (2 * side))) + 1
        n = np.arange(-n_max, n_max + 1)
        offsets = np.concatenate([s + 2 * n * side - m, -s + 2 * n * side - m])
        reflections = np.concatenate([np.abs(n) + np.abs(n), np.abs(n - 1) + np.abs(n)])
        keep = np.abs(offsets) < radius
        axes.append((offsets[keep], reflections[keep]))
    (dx, kx), (dy, ky), (dz, kz) = axes
    plane_d2 = dy[:, None] ** 2 + dz[None, :] ** 2
    plane_k = ky[:, None] + kz[None, :]
    rir = np.zeros(length, np.float64)
    log_beta = math.log(beta)
    for x, k in zip(dx, kx):
        d = np.sqrt(x * x + plane_d2)
        delay = np.rint(d * (sample_rate / SPEED_OF_SOUND)).astype(np.int64)
        inside = delay < length
        if not inside.any():
            continue
        dd = d[inside]
        amplitude = np.exp((k + plane_k[inside]) * log_beta) / (4 * math.pi * dd)
        rir += np.bincount(delay[inside], weights=amplitude, minlength=length)
    return rir


def decay_rt60(rir: np.ndarray, sample_rate: int, start_db: float = -5.0, stop_db: float = -25.0) -> float:
    """RT60 from the energy decay: Schroeder's backward integral of rir^2 in dB, a least-squares
    line between `start_db` and `stop_db` (T20 by default, ISO 3382), extrapolated to -60 dB."""
    energy = np.cumsum(np.square(np.asarray(rir, np.float64))[::-1])[::-1]
    if energy[0] <= 0:
        raise ValueError("the impulse response has no energy")
    level = 10 * np.log10(np.maximum(energy / energy[0], 1e-300))
    first, last = int(np.argmax(level <= start_db)), int(np.argmax(level <= stop_db))
    if level[-1] > stop_db or last - first < 2:
        raise ValueError(f"the decay does not reach {stop_db:g} dB within {rir.shape[0]} samples")
    t = np.arange(first, last) / sample_rate
    slope = np.polyfit(t, level[first:last], 1)[0]
    return -60.0 / slope


def room_impulse_response(room: Room, sample_rate: int, seconds: Optional[float] = None) -> np.ndarray:
    """The image-source RIR of a shoebox room (Allen & Berkley): every image of the source within
    c * `seconds` of the microphone contributes beta^reflections / (4 pi d) at delay d / c,
    rounded to the nearest sample. Length `seconds` (default the room's RT60, where the decay
    reaches -60 dB) at `sample_rate`; float64, unnormalised (the direct path is 1 / (4 pi d)).

    Image positions per axis are (-1)^q s + 2 n L, with |n - q| + |n| reflections, q in {0, 1};
    the three axes are combined one x-image at a time to keep memory at a plane of images.

    The reflection coefficient starts from Eyring's formula and is then corrected until the
    RIR's own decay (`decay_rt60`, T20) is within 2 % of the room's RT60: a shoebox of uniform,
    specular walls decays more slowly than the diffuse field Eyring assumes (measured 1.4-1.9
    times the asked RT60 over this module's default rooms: the grazing images between walls far
    apart lose energy at few reflections), and the asked RT60 is what the option promises."""
    seconds = room.rt60_s if seconds is None else seconds
    length = int(math.ceil(seconds * sample_rate))
    if length < 1:
        raise ValueError(f"seconds={seconds}: the RIR would have no samples")
    measure_length = max(length, int(math.ceil(room.rt60_s * sample_rate)))
    log_beta = math.log(room.reflection_coefficient())
    rir = _image_sources(room, math.exp(log_beta), sample_rate, measure_length)
    for _ in range(8):
        measured = decay_rt60(rir, sample_rate)
        if abs(measured / room.rt60_s - 1) <= 0.02:
            break
        # The decay rate in dB/s is close to proportional to -log(beta).
        log_beta = max(log_beta * measured / room.rt60_s, math.log(1e-6))
        rir = _image_sources(room, math.exp(log_beta), sample_rate, measure_length)
    return rir[:length]


def direct_path_delay(room: Room, sample_rate: int) -> int:
    """The direct sound's delay in samples (rounded as `room_impulse_response` rounds it)."""
    return int(np.rint(room.distance_m * sample_rate / SPEED_OF_SOUND))


@lru_cache(maxsize=512)
def _bank_rir(config: AugmentConfig, index: int, sample_rate: int) -> Tuple[np.ndarray, int]:
    rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), 0x5EB, int(index)]))
    room = draw_room(config, rng)
    rir = room_impulse_response(room, sample_rate)
    rir.setflags(write=False)
    return rir, direct_path_delay(room, sample_rate)


def reverberate(speech: np.ndarray, rir: np.ndarray, direct_delay: int) -> np.ndarray:
    """speech convolved with `rir`, cut so that the direct path lands where the dry sound was
    (the utterance does not shift; output[t] = sum_j rir[direct_delay + j] speech[t - j]), same
    length as the input, scaled to the input's mean square (so that reverberation changes the
    sound, not the level). float32."""
    import scipy.signal

    speech = np.asarray(speech, np.float64)
    if not 0 <= direct_delay < rir.shape[0]:
        raise ValueError(f"direct_delay={direct_delay} outside the RIR ({rir.shape[0]} samples)")
    wet = scipy.signal.fftconvolve(speech, rir)[direct_delay : direct_delay + speech.shape[0]]
    p_dry, p_wet = power(speech), power(wet)
    if p_wet > 0:
        wet *= math.sqrt(p_dry / p_wet)
    return wet.astype(np.float32)


# ------------------------------------------------------------------------------ speed


def speed_perturb(speech: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """sox's `speed factor`, as Kaldi's and WeSpeaker's recipes apply it: the audio resampled as
    if it had been recorded at sample_rate * factor, so it plays `factor` times faster, its
    length divided by `factor`, and every frequency (pitch and formants) multiplied by `factor`.
    soxr, HQ, as the decoder resamples. float32."""
    import soxr

    if not 0.1 <= factor <= 10:
        raise ValueError(f"speed factor {factor}: need 0.1..10")
    return np.asarray(
        soxr.resample(np.asarray(speech, np.float32), sample_rate * factor, sample_rate, quality="HQ"), np.float32
    )


# ------------------------------------------------------------------------------ one copy


@dataclass(frozen=True)
class AugmentedCopy:
    """One augmented copy: its samples, kind, a short description (for the index) and, for a
    speed copy that becomes a new speaker, the speaker suffix."""

    samples: np.ndarray
    kind: str
    detail: str
    speaker_suffix: str = ""
    extra: Dict[str, float] = field(default_factory=dict)


def augment(
    samples: np.ndarray,
    sample_rate: int,
    config: AugmentConfig,
    utterance: str,
    copy: int,
    babble_sources: Optional[Sequence[np.ndarray]] = None,
) -> AugmentedCopy:
    """Copy `copy` of one utterance, a function of (config, utterance id, copy index, samples,
    and the babble sources offered) only. `babble_sources`: utterances of other speakers of the
    same split to draw babble from; the caller has already excluded the utterance's own speaker.
    Babble is one of the noise types only when at least one is offered."""
    kind = copy_kind(config, utterance, copy)
    rng = rng_for(config.seed, utterance, copy)
    if kind == NOISE:
        types = [t for t in config.noise_types if t != BABBLE or babble_sources]
        if not types:
            raise ValueError("noise_types has only babble and no other speaker's utterance is offered")
        noise_type = types[int(rng.integers(len(types)))]
        if noise_type == BABBLE:
            lo, hi = config.babble_speakers
            count = min(int(rng.integers(lo, hi + 1)), len(babble_sources))
            chosen = rng.choice(len(babble_sources), size=count, replace=False)
            noise = babble(samples.shape[0], [babble_sources[int(i)] for i in sorted(chosen)], rng)
            snr = float(rng.uniform(*config.babble_snr_db))
            detail = f"noise:babble{count}:snr={snr:.2f}"
        else:
            noise = coloured_noise(samples.shape[0], noise_type, rng)
            snr = float(rng.uniform(*config.snr_db))
            detail = f"noise:{noise_type}:snr={snr:.2f}"
        return AugmentedCopy(mix_at_snr(samples, noise, snr), kind, detail, extra={"snr_db": snr})
    if kind == REVERB:
        index = int(rng.integers(config.rir_bank))
        rir, delay = _bank_rir(config, index, sample_rate)
        rt60 = _bank_room(config, index).rt60_s
        return AugmentedCopy(
            reverberate(samples, rir, delay), kind, f"reverb:room{index}:rt60={rt60:.2f}", extra={"rt60_s": rt60}
        )
    if kind == SPEED:
        factor = float(config.speed_factors[int(rng.integers(len(config.speed_factors)))])
        suffix = f"-speed{factor:g}" if config.speed_new_speaker else ""
        return AugmentedCopy(
            speed_perturb(samples, factor, sample_rate),
            kind,
            f"speed:{factor:g}",
            speaker_suffix=suffix,
            extra={"factor": factor},
        )
    raise ValueError(f"unknown augmentation kind {kind!r}")


def _bank_room(config: AugmentConfig, index: int) -> Room:
    rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), 0x5EB, int(index)]))
    return draw_room(config, rng)
