"""speechpipe.audio.decode's direct reader of plain 16-bit PCM WAV: libsndfile's samples, bit for bit, and
libsndfile (or a dead-letter reason) for everything else."""

import io
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from speechpipe.audio.decode import TOO_LONG, TRUNCATED, AudioRejected, _decode_soundfile, _scan_wav, decode
from tests.audio_inputs import write_bytes, write_wav


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_U8", "FLOAT", "PCM_32"])
def test_every_wav_layout_decodes_as_libsndfile_does(tmp_path, channels, rate, subtype):
    path = write_wav(str(tmp_path / "a.wav"), seconds=0.37, rate=rate, channels=channels, subtype=subtype)
    truncation, layout = _scan_wav(path)
    assert truncation == "" and (layout is not None) == (subtype == "PCM_16")  # only PCM_16 read directly
    expected = sf.read(path, dtype="float32", always_2d=True)[0]
    for source in (path, io.BytesIO(open(path, "rb").read())):  # a local file, an object's bytes
        data, got_rate = _decode_soundfile(source, 30.0)
        assert got_rate == rate and data.dtype == np.float32 and np.array_equal(data, expected)


def test_full_scale_and_extreme_samples_are_libsndfiles_bits(tmp_path):
    ints = np.array([-32768, -32767, -1, 0, 1, 12345, 32767] * 100, np.int16)
    path = str(tmp_path / "x.wav")
    sf.write(path, ints, 16000, subtype="PCM_16")
    assert np.array_equal(_decode_soundfile(path, 30.0)[0], sf.read(path, dtype="float32", always_2d=True)[0])


def _with_data_size(path: str, declared: int) -> bytes:
    data = bytearray(open(path, "rb").read())
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", declared)
    return bytes(data)


def test_truncated_too_long_and_streaming_headers(tmp_path):
    good = write_wav(str(tmp_path / "good.wav"), seconds=1.0)
    size = os.path.getsize(good)
    # a data chunk that runs past the end is truncated, as before
    cut = write_bytes(str(tmp_path / "cut.wav"), open(good, "rb").read()[: size - 1000])
    with pytest.raises(AudioRejected) as rejected:
        decode(cut, 16000)
    assert rejected.value.reason == TRUNCATED
    # too long is refused from the header, before the samples are read
    with pytest.raises(AudioRejected) as rejected:
        decode(good, 16000, max_seconds=0.5)
    assert rejected.value.reason == TOO_LONG
    # a streaming writer's size (0xFFFFFFFF) is left to libsndfile, which reads to the end
    streamed = write_bytes(str(tmp_path / "streamed.wav"), _with_data_size(good, 0xFFFFFFFF))
    assert _scan_wav(streamed)[1] is None
    np.testing.assert_array_equal(decode(streamed, 16000).samples, decode(good, 16000).samples)
    # a data size that is not whole frames is left to libsndfile too
    odd = write_bytes(str(tmp_path / "odd.wav"), _with_data_size(good, 2 * 16000 - 1))
    assert _scan_wav(odd)[1] is None


def test_resampled_and_downmixed_pcm16_matches_libsndfile_path(tmp_path):
    path = write_wav(str(tmp_path / "s.wav"), seconds=0.8, rate=22050, channels=2)
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    import soxr

    expected = soxr.resample(samples.mean(axis=1, dtype=np.float32), rate, 16000, quality="HQ").astype(np.float32)
    np.testing.assert_array_equal(decode(path, 16000).samples, expected)
