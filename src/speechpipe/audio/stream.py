"""Audio read in blocks: a recording of any length as a sequence of mono float32 blocks at the
model's rate, so that what serving holds is a block, never the recording.

The samples are those `speechpipe.audio.decode.decode` returns for the same file (the same
downmix; soxr's streaming resampler gives the bits its one-shot call gives), and every way a file
can be unusable raises the same `AudioRejected` reasons: the header-level ones (missing, empty,
unreadable, truncated WAV) when the source is opened, the sample-level ones (NaN, FLAC shorter
than its header, too long) while it is read, and the whole-file ones (too short, digital silence)
by `UsabilityCheck` once every block has gone by. A source can be read more than once (`blocks()`
starts again from the beginning): the serving path reads a file twice, once for its statistics
and once for the network.
"""

from __future__ import annotations

import io
import os
from typing import Iterator, Optional, Union

import numpy as np

from speechpipe.audio.decode import (
    EMPTY,
    MISSING_FILE,
    NON_FINITE,
    SILENT,
    TOO_SHORT,
    TRUNCATED,
    UNREADABLE,
    AudioRejected,
    _read_object,
    _scan_wav,
    _too_long,
)
from speechpipe.io import storage

# Seconds of audio per block read from a file: large enough that the per-block cost (cffi, numpy
# calls) is noise, small enough to be nothing next to the network's chunk.
BLOCK_SECONDS = 10.0


class _Resampler:
    """Mono blocks at `rate` -> blocks at `target` (soxr's streaming resampler; nothing when equal)."""

    def __init__(self, rate: int, target: int) -> None:
        self._stream = None
        if rate != target:
            import soxr

            self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return np.asarray(self._stream.resample_chunk(block, last=last), np.float32).reshape(-1)


def _mono(data: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [frames], as `decode` downmixes (a float32 mean of the channels)."""
    if data.shape[1] > 1:
        return data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(data[:, 0])


def _finite(block: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(block)):
        raise AudioRejected(NON_FINITE, f"{int(np.count_nonzero(~np.isfinite(block)))} NaN or infinite samples")
    return block


class FileSource:
    """A local file or an object-storage URI, read in blocks of `block_seconds` at `target_rate`.

    Opening checks what the header tells (missing, empty, unreadable, a WAV data chunk running
    past the end of the file) and the declared length against `max_seconds`; `blocks()` checks
    the samples. An object on object storage is fetched whole as bytes (still encoded: a few
    hundred MB for hours of 16-bit WAV) because soundfile and PyAV seek; a local file is never
    read whole."""

    def __init__(
        self, path: str, target_rate: int, max_seconds: float = float("inf"), block_seconds: float = BLOCK_SECONDS
    ) -> None:
        self.path = path
        self.sample_rate = int(target_rate)
        self._max_seconds = max_seconds
        self._block_seconds = block_seconds
        self._bytes: Optional[io.BytesIO] = None
        if storage.is_uri(path):
            self._bytes = _read_object(path)
        else:
            if not os.path.isfile(path):
                raise AudioRejected(MISSING_FILE, f"no such file: {path}")
            if os.path.getsize(path) == 0:
                raise AudioRejected(EMPTY, "zero-byte file")
        self._soundfile = path.lower().endswith((".wav", ".flac"))
        if self._soundfile:
            truncation, _ = _scan_wav(self._source())
            if truncation:
                raise AudioRejected(TRUNCATED, truncation)
        # Opening once now reports an unreadable file before any work is done on it.
        for _ in self._open_blocks(probe=True):
            break

    def _source(self) -> Union[str, io.BytesIO]:
        if self._bytes is None:
            return self.path
        self._bytes.seek(0)
        return self._bytes

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks at `sample_rate`, from the start of the file."""
        return self._open_blocks(probe=False)

    def _open_blocks(self, probe: bool) -> Iterator[np.ndarray]:
        if self._soundfile:
            return self._soundfile_blocks(probe)
        return self._av_blocks(probe)

    def _soundfile_blocks(self, probe: bool) -> Iterator[np.ndarray]:
        import soundfile as sf

        try:
            f = sf.SoundFile(self._source())
        except (sf.LibsndfileError, RuntimeError, ValueError) as error:
            raise AudioRejected(UNREADABLE, f"soundfile: {error}") from None
        with f:
            frames, rate, container = f.frames, f.samplerate, f.format
            if rate > 0 and frames / rate > self._max_seconds:
                raise _too_long(frames / rate, self._max_seconds)
            if probe:
                return
            resample = _Resampler(rate, self.sample_rate)
            size, read = max(1, int(self._block_seconds * rate)), 0
            while True:
                try:
                    data = f.read(size, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError, ValueError) as error:
                    raise AudioRejected(UNREADABLE, f"soundfile: {error}") from None
                if data.shape[0] == 0:
                    break
                read += data.shape[0]
                out = resample(_finite(_mono(data)))
                if out.shape[0]:
                    yield out
            if container == "FLAC" and 0 < read < frames:
                raise AudioRejected(TRUNCATED, f"FLAC header declares {frames} frames, decoded {read}")
            tail = resample(np.zeros(0, np.float32), last=True)
            if tail.shape[0]:
                yield tail
        if read == 0:
            raise AudioRejected(EMPTY, "no samples")

    def _av_blocks(self, probe: bool) -> Iterator[np.ndarray]:
        """AAC (.m4a, VoxCeleb2) and anything else FFmpeg reads, through PyAV's bundled FFmpeg."""
        import av

        try:
            container = av.open(self._source())
        except (av.error.FFmpegError, ValueError, IndexError) as error:
            raise AudioRejected(UNREADABLE, f"ffmpeg: {error}") from None
        with container:
            if not container.streams.audio:
                raise AudioRejected(UNREADABLE, "no audio stream")
            if probe:
                return
            stream = container.streams.audio[0]
            rate = stream.rate
            # A resampler to planar float keeps every codec's sample format out of our way.
            converter = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
            resample = _Resampler(rate, self.sample_rate)
            size, pending, held, decoded = max(1, int(self._block_seconds * rate)), [], 0, 0
            try:
                frames = container.decode(stream)
                while True:
                    frame = next(frames, None)
                    outs = converter.resample(frame)
                    for out in outs:
                        pending.append(_finite(_mono(out.to_ndarray().T.astype(np.float32))))
                        held += out.samples
                        decoded += out.samples
                    if decoded > self._max_seconds * rate:  # stop decoding what will be refused
                        raise _too_long(decoded / rate, self._max_seconds)
                    if held >= size or (frame is None and held):
                        block = resample(np.concatenate(pending))
                        pending, held = [], 0
                        if block.shape[0]:
                            yield block
                    if frame is None:
                        break
            except (av.error.FFmpegError, ValueError, IndexError) as error:
                raise AudioRejected(UNREADABLE, f"ffmpeg: {error}") from None
            if decoded == 0:
                raise AudioRejected(EMPTY, "no samples decoded")
            tail = resample(np.zeros(0, np.float32), last=True)
            if tail.shape[0]:
                yield tail


class ArraySource:
    """Samples already in memory (the pyfunc flavor's rows), in blocks, resampled in the stream."""

    def __init__(self, samples: np.ndarray, rate: int, target_rate: int, block_seconds: float = BLOCK_SECONDS) -> None:
        self._samples = np.asarray(samples, np.float32).reshape(-1)
        self._rate = int(rate)
        self.sample_rate = int(target_rate)
        self._block = max(1, int(block_seconds * rate))
        self.path = "<array>"
        if self._samples.shape[0] == 0:
            raise AudioRejected(EMPTY, "no samples")

    def blocks(self) -> Iterator[np.ndarray]:
        resample = _Resampler(self._rate, self.sample_rate)
        for start in range(0, self._samples.shape[0], self._block):
            out = resample(_finite(self._samples[start : start + self._block]))
            if out.shape[0]:
                yield out
        tail = resample(np.zeros(0, np.float32), last=True)
        if tail.shape[0]:
            yield tail


AudioStream = Union[FileSource, ArraySource]


class UsabilityCheck:
    """What `check_usable` decides on a whole waveform, decided block by block: feed every block
    to `update`, then `finish` raises `AudioRejected` (too short, digital silence) or returns the
    sample count."""

    def __init__(self, min_samples: int) -> None:
        self._min_samples = min_samples
        self.samples = 0
        self._low, self._high, self._first = np.inf, -np.inf, 0.0

    def update(self, block: np.ndarray) -> None:
        if block.shape[0] == 0:
            return
        if self.samples == 0:
            self._first = float(block[0])
        self.samples += block.shape[0]
        self._low = min(self._low, float(block.min()))
        self._high = max(self._high, float(block.max()))

    def finish(self) -> int:
        if self.samples == 0:
            raise AudioRejected(EMPTY, "no samples")
        if self.samples < self._min_samples:
            raise AudioRejected(TOO_SHORT, f"{self.samples} samples < one analysis window ({self._min_samples})")
        if self._low == self._high:
            raise AudioRejected(SILENT, f"digital silence: every sample is {self._first:g}")
        return self.samples
