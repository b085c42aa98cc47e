"""The feature job on real speech: twelve recordings from two Debian packages
(tests/data/realspeech_debian/README.md: sources, licences, transcripts).

Six are 16 kHz read speech (pocketsphinx-testdata: LibriVox and two test speakers), six are
8 kHz telephone prompts (asterisk-core-sounds-en-wav). Everything else the project tests on is
espeak-ng's synthetic speech; these show what the job does with recorded audio: every file
becomes a record, the 8 kHz prompts are upsampled to 16 kHz (twice the samples, the same
duration, 100 frames a second, and nothing above 4 kHz, which an 8 kHz recording cannot hold),
and per-utterance CMVN gives unit variance wherever there is signal, but not in the empty band
above 4 kHz of the upsampled prompts.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf
from apache_beam.options.pipeline_options import PipelineOptions

from speechpipe.audio.decode import decode
from speechpipe.audio.features import compute_features, mel_basis, num_frames
from speechpipe.audio.sources import DeadLetter, expand_input, make_spec, parse_input
from speechpipe.config import SPLITS, FeatureConfig
from speechpipe.io import records
from speechpipe.jobs import features_job

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "realspeech_debian")
MANIFEST = os.path.join(DATA, "manifest.jsonl")
CONFIG = FeatureConfig()  # the defaults: 16 kHz, 80 log-mel bins up to 7.6 kHz, cmvn
IN_MEMORY = ["--direct_running_mode=in_memory"]


def _manifest():
    with open(MANIFEST, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ENTRIES = _manifest()
NARROWBAND = {e["utterance"] for e in ENTRIES if e["speaker"] == "asterisk_allison"}
WIDEBAND = {e["utterance"] for e in ENTRIES} - NARROWBAND


def _path(entry):
    return os.path.join(DATA, entry["audio"])


def _header(entry):
    """(sample rate, frames, channels, subtype) as the file's header gives them."""
    info = sf.info(_path(entry))
    return info.samplerate, info.frames, info.channels, info.subtype


def _band_edges():
    """Lowest and highest FFT frequency (Hz) each mel filter of CONFIG has weight on."""
    basis = mel_basis(CONFIG.sample_rate, CONFIG.n_fft, CONFIG.n_mels, CONFIG.fmin, CONFIG.fmax)
    freqs = np.fft.rfftfreq(CONFIG.n_fft, 1.0 / CONFIG.sample_rate)
    low = np.array([freqs[np.flatnonzero(row)[0]] for row in basis])
    high = np.array([freqs[np.flatnonzero(row)[-1]] for row in basis])
    return low, high


LOW_EDGE, HIGH_EDGE = _band_edges()
BELOW_3K8 = HIGH_EDGE <= 3800.0  # filters wholly inside a telephone band
ABOVE_4K2 = LOW_EDGE >= 4200.0  # filters wholly above what 8 kHz audio can hold


def _energy_fraction(samples, rate, low_hz, high_hz=None):
    power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(samples.shape[0], 1.0 / rate)
    band = (freqs >= low_hz) & (freqs < (high_hz if high_hz is not None else np.inf))
    return float(power[band].sum() / power.sum())


# ------------------------------------------------------------------------- the data itself


def test_committed_files_are_the_packaged_bytes_and_the_manifest_covers_them():
    sums = {}
    with open(os.path.join(DATA, "SHA256SUMS")) as f:
        for line in f:
            digest, name = line.split()
            sums[name] = digest
    on_disk = {
        os.path.relpath(os.path.join(folder, n), DATA)
        for folder, _, files in os.walk(DATA)
        for n in files
        if n.endswith(".wav")
    }
    assert on_disk == set(sums) == {e["audio"] for e in ENTRIES}
    for name, digest in sums.items():
        with open(os.path.join(DATA, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, f"{name} is not the packaged file"
    assert len(ENTRIES) == 12 and len(NARROWBAND) == 6 and len({e["speaker"] for e in ENTRIES}) == 4
    for entry in ENTRIES:
        rate, frames, channels, subtype = _header(entry)
        assert (channels, subtype) == (1, "PCM_16"), entry["audio"]
        assert rate == (8000 if entry["utterance"] in NARROWBAND else 16000), entry["audio"]
        assert entry["text"] and entry["session"], entry


def test_manifest_and_kaldi_dir_give_the_same_records():
    def parsed(spec):
        out = [parse_input(item, spec) for item in expand_input(spec)]
        assert not [r for r in out if isinstance(r, DeadLetter)]
        return sorted((r.utterance, r.audio_path, r.speaker, r.session, r.split, r.text, r.phones) for r in out)

    manifest_spec, kaldi_spec = make_spec(MANIFEST), make_spec(DATA)
    assert (manifest_spec.kind, kaldi_spec.kind) == ("manifest", "kaldi")
    from_manifest = parsed(manifest_spec)
    assert from_manifest == parsed(kaldi_spec)
    assert len(from_manifest) == len(ENTRIES)
    assert all(r[6] is None for r in from_manifest)  # no phones: English text, German inventory


# ------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["utterance"])
def test_decode_gives_16khz_float_mono_of_the_files_duration(entry):
    rate, frames, _, _ = _header(entry)
    audio = decode(_path(entry), CONFIG.sample_rate, CONFIG.max_seconds)
    samples = audio.samples
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.flags["C_CONTIGUOUS"]
    assert (audio.sample_rate, audio.source_rate, audio.source_channels) == (16000, rate, 1)
    assert samples.shape[0] == frames * 16000 // rate  # 8 kHz: exactly twice the samples
    assert np.all(np.isfinite(samples)) and float(np.abs(samples).max()) <= 1.0
    assert 0.01 < float(np.std(samples)) and 0.2 < float(np.abs(samples).max())  # speech, not near-silence


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["utterance"])
def test_8khz_prompts_have_nothing_above_4khz_after_upsampling(entry):
    audio = decode(_path(entry), CONFIG.sample_rate)
    above = _energy_fraction(audio.samples, 16000, 4200.0)
    if entry["utterance"] in WIDEBAND:
        # the control: a 16 kHz recording does have energy there (3e-3 to 7e-2 of it)
        assert above > 1e-3, above
        return
    # soxr's residue is ~1e-12 of the energy; a resampler that aliased or imaged would leave
    # a mirror of the 0-4 kHz speech here, a fraction near 1e-2 or more
    assert above < 1e-8, above
    assert _energy_fraction(audio.samples, 16000, 250.0, 3500.0) > 0.5  # the speech is in the telephone band
    # and it is the recording: every other upsampled sample is the original one, up to the filter
    original, _ = sf.read(_path(entry), dtype="float32")
    assert np.sqrt(np.mean((audio.samples[::2] - original) ** 2)) < 0.02 * np.std(original)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["utterance"])
def test_log_mel_of_the_empty_band_sits_at_the_log_floor(entry):
    features = compute_features(decode(_path(entry), CONFIG.sample_rate).samples, CONFIG)
    floor = np.log(CONFIG.log_floor)
    high = features[:, ABOVE_4K2]
    if entry["utterance"] in NARROWBAND:
        assert float(np.abs(high - floor).max()) < 5e-3
    else:
        assert float(high.mean()) > floor + 1.0  # real content, several nepers above the floor


# ------------------------------------------------------------------------- the feature job


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("real_features"))
    summary = features_job.run_job(make_spec(MANIFEST), CONFIG, out, PipelineOptions(IN_MEMORY))
    examples = {e.utterance: e for split in SPLITS for e in records.read_split(out, split)}
    return out, summary, examples


def test_every_real_recording_becomes_a_record(job):
    out, summary, examples = job
    assert summary["inputs"] == len(ENTRIES)
    assert summary["dead_letter"] == {"total": 0, "by_reason": {}}
    assert sum(summary["good"].values()) == len(ENTRIES)
    dead_lines = [
        line
        for name in os.listdir(os.path.join(out, "dead_letter"))
        for line in open(os.path.join(out, "dead_letter", name), encoding="utf-8")
        if line.strip()
    ]
    assert dead_lines == []
    assert set(examples) == {e["utterance"] for e in ENTRIES}
    total = sum(_header(e)[1] / _header(e)[0] for e in ENTRIES)
    assert abs(sum(summary["audio_seconds"].values()) - total) < 0.01


def test_records_keep_the_manifest_fields(job):
    _, _, examples = job
    for entry in ENTRIES:
        example = examples[entry["utterance"]]
        assert (example.speaker, example.session, example.text) == (entry["speaker"], entry["session"], entry["text"])
        assert example.phones is None and example.phone_ids is None


def test_durations_and_frames_follow_the_files_at_16khz(job):
    _, _, examples = job
    for entry in ENTRIES:
        rate, frames, _, _ = _header(entry)
        example = examples[entry["utterance"]]
        seconds = frames / rate
        assert abs(example.duration - seconds) < 1e-5, entry["audio"]
        # frames of the 16 kHz signal: an 8 kHz file decoded without upsampling would give half
        assert example.features.shape == (num_frames(frames * 16000 // rate, CONFIG), CONFIG.n_mels)
        assert abs(example.features.shape[0] - seconds * 100) <= 3, entry["audio"]


def test_features_are_finite_and_cmvn_normalised_where_there_is_signal(job):
    _, _, examples = job
    for entry in ENTRIES:
        features = examples[entry["utterance"]].features.astype(np.float64)
        assert examples[entry["utterance"]].features.dtype == np.float32
        assert np.all(np.isfinite(features)), entry["audio"]
        assert float(np.abs(features.mean(axis=0)).max()) < 1e-4, entry["audio"]
        std = features.std(axis=0)
        assert float(std.max()) < 1 + 1e-3, entry["audio"]
        if entry["utterance"] in WIDEBAND:
            assert float(np.abs(std - 1).max()) < 1e-3, entry["audio"]
            continue
        assert float(np.abs(std[BELOW_3K8] - 1).max()) < 1e-3, entry["audio"]
        # Above 4.2 kHz the upsampled prompts hold only soxr's residue: CMVN divides by
        # max(std, 1e-5), so the top bins stay at 0 and most of the band well below unit
        # variance (the lowest one to three are scaled up to 1: see the README).
        high = std[ABOVE_4K2]
        assert float(high[-1]) < 1e-3, entry["audio"]
        assert int(np.count_nonzero(high < 0.5)) >= 10, (entry["audio"], np.round(high, 3))


def test_the_real_transcripts_become_english_phones_in_the_feature_job(tmp_path):
    """The recordings' ordinary English text, phonemised by espeak-ng inside the job
    (--language en-us) and tokenised by phones_en.json: every utterance gets phones, none is
    dead-lettered, and every phone is in the English inventory."""
    from speechpipe.phones.inventory import load_inventory

    out = str(tmp_path / "features")
    summary = features_job.run_job(make_spec(MANIFEST), CONFIG, out, PipelineOptions(IN_MEMORY), language="en-us")
    assert summary["dead_letter"]["total"] == 0, summary["dead_letter"]
    assert summary["phone_inventory"] == "phones_en.json"
    english = set(load_inventory("phones_en.json").phones)
    examples = [example for split in SPLITS for example in records.read_split(out, split)]
    assert len(examples) == len(ENTRIES)
    for example in examples:
        assert example.phones and set(example.phones) <= english, (example.utterance, example.phones)
        assert len(example.phone_ids) == len(example.phones)
