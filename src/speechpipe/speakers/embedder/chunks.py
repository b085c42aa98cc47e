"""The embedder on recordings of any length: window embeddings streamed from chunks of features
and pooled per recording, or per segment of a recording.

The `embed` signature's embedding of a waveform is the mean of its window embeddings: windows of
`segment_frames` frames starting every `hop` frames, one more aligned to the end when the hop
does not land there, and one zero-padded window when the waveform is shorter than one window.
`window_starts` is that layout; `ChunkedEmbedder` cuts the same windows out of features read a
chunk of frames at a time (normalised with the whole recording's statistics, see
speechpipe.audio.feature_chunks) and runs them through `embed_segments`, so the embedding is the
whole-file one up to float rounding, and memory holds one chunk of windows.

With `segment_seconds`, a recording is cut into consecutive segments of that length (the last
one shorter) and each gets the embedding `embed` would give it as an utterance of its own, with
its start and end times: the input of "who speaks when" within one recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from speechpipe.audio.feature_chunks import ChunkFeatures, FileScan
from speechpipe.audio.stream import AudioStream


def window_starts(frames: int, segment_frames: int, hop: int) -> np.ndarray:
    """The `embed` signature's window starts over `frames` frames (none for no frames)."""
    if frames <= 0:
        return np.zeros(0, np.int64)
    last = max(frames - segment_frames, 0)
    starts = np.arange(0, last + 1, hop, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


@dataclass
class Pooled:
    """A recording's embeddings: one row per group (the whole recording, or each segment)."""

    seconds: float
    embeddings: np.ndarray  # [groups, E] float32: the mean of the group's windows (zeros for none)
    windows: np.ndarray  # [groups] int: windows averaged
    spans: List[Tuple[float, float]]  # each group's start and end, seconds


class ChunkedEmbedder:
    """An embedder SavedModel (its `embed_segments` signature) on streamed recordings."""

    def __init__(
        self,
        embed_segments: Callable[..., Dict[str, object]],
        features: ChunkFeatures,
        segment_frames: int,
        hop: int,
        chunk_seconds: float,
        max_windows: int = 512,
    ) -> None:
        c = features.config
        self._embed_segments = embed_segments
        self.features = features
        self.segment_frames = segment_frames
        self.hop = hop
        self.frame_seconds = c.hop_length / c.sample_rate
        # The frames of window starts read at once (whole-file: all of them).
        self.chunk_frames = int(round(chunk_seconds / self.frame_seconds)) if chunk_seconds > 0 else 0
        self.max_windows = max_windows

    def segment_frames_of(self, segment_seconds: float) -> int:
        return max(1, int(round(segment_seconds / self.frame_seconds)))

    def groups(self, scan: FileScan, segment_seconds: Optional[float]) -> List[Tuple[int, int]]:
        """Frame ranges pooled separately: the whole recording, or its segments."""
        if not segment_seconds:
            return [(0, scan.frames)]
        size = self.segment_frames_of(segment_seconds)
        return [(start, min(start + size, scan.frames)) for start in range(0, max(scan.frames, 1), size)]

    def embed(
        self, items: Iterable[Tuple[object, AudioStream, FileScan]], segment_seconds: Optional[float] = None
    ) -> Iterator[Tuple[object, Pooled]]:
        """(key, pooled) for each (key, source, scan), in order."""
        order: List[_Sums] = []
        batch: List[Tuple[_Sums, int, np.ndarray]] = []
        held = 0
        for sums, windows in self._pieces(items, segment_seconds, order):
            if windows is not None:
                if batch and held + windows[1].shape[0] > self.max_windows:
                    self._run(batch)
                    batch, held = [], 0
                batch.append((sums, *windows))
                held += windows[1].shape[0]
            while order and order[0].done:
                done = order.pop(0)
                yield done.key, done.pooled()
        if batch:
            self._run(batch)
        for sums in order:
            yield sums.key, sums.pooled()

    def _pieces(self, items, segment_seconds: Optional[float], order: List["_Sums"]):
        """(sums, (group of each window, windows [n, f, bins])) per piece of each recording."""
        f = self.segment_frames
        for key, source, scan in items:
            groups = self.groups(scan, segment_seconds)
            starts, owners = [], []
            for g, (first, last) in enumerate(groups):
                s = first + window_starts(last - first, f, self.hop)
                starts.append(s)
                owners.append(np.full(s.shape[0], g, np.int64))
            all_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
            all_owners = np.concatenate(owners) if owners else np.zeros(0, np.int64)
            sums = _Sums(key, scan, groups, self)
            order.append(sums)
            pieces = self._split(all_starts)
            sums.remaining = len(pieces)
            if not pieces:
                yield sums, None
                continue
            ranges = [(int(all_starts[a]), int(all_starts[b - 1]) + f) for a, b in pieces]
            for (a, b), frames in zip(pieces, self.features.frames(source, scan, ranges)):
                offset = int(all_starts[a])
                local = all_starts[a:b] - offset
                if frames.shape[0] < int(local[-1]) + f:  # windows past the last frame: zeros, as `embed` pads
                    frames = np.concatenate(
                        [frames, np.zeros((int(local[-1]) + f - frames.shape[0], frames.shape[1]), np.float32)]
                    )
                windows = frames[local[:, None] + np.arange(f)[None, :]]
                yield sums, (all_owners[a:b], windows)

    def _split(self, starts: np.ndarray) -> List[Tuple[int, int]]:
        """Consecutive runs [a, b) of window indexes whose starts span at most `chunk_frames`
        (and at most `max_windows` windows)."""
        pieces, a = [], 0
        n = starts.shape[0]
        while a < n:
            if self.chunk_frames <= 0:
                b = n
            else:
                b = int(np.searchsorted(starts, starts[a] + self.chunk_frames, "left"))
                b = max(b, a + 1)
            b = min(b, a + self.max_windows)
            pieces.append((a, b))
            a = b
        return pieces

    def _run(self, batch: List[Tuple["_Sums", np.ndarray, np.ndarray]]) -> None:
        import tensorflow as tf

        windows = np.concatenate([w for _, _, w in batch])
        out = self._embed_segments(segments=tf.constant(windows))["embeddings"].numpy()
        row = 0
        for sums, owners, w in batch:
            sums.add(owners, out[row : row + w.shape[0]])
            row += w.shape[0]


class _Sums:
    def __init__(self, key: object, scan: FileScan, groups: List[Tuple[int, int]], owner: ChunkedEmbedder) -> None:
        self.key, self.scan, self.groups, self.owner = key, scan, groups, owner
        self.total: Optional[np.ndarray] = None
        self.count = np.zeros(len(groups), np.int64)
        self.remaining = 0  # pieces not yet through the network

    def add(self, owners: np.ndarray, embeddings: np.ndarray) -> None:
        if self.total is None:
            self.total = np.zeros((len(self.groups), embeddings.shape[1]), np.float64)
        np.add.at(self.total, owners, embeddings.astype(np.float64))
        np.add.at(self.count, owners, 1)
        self.remaining -= 1

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def pooled(self) -> Pooled:
        o, rate = self.owner, self.owner.features.config.sample_rate
        seconds = self.scan.samples / rate
        if self.total is None:  # no window at all: `embed` gives zeros
            dim = self._dimension()
            embeddings = np.zeros((len(self.groups), dim), np.float32)
        else:
            embeddings = (self.total / np.maximum(self.count, 1)[:, None]).astype(np.float32)
        spans = [
            (
                round(first * o.frame_seconds, 3),
                round(seconds if i == len(self.groups) - 1 else last * o.frame_seconds, 3),
            )
            for i, (first, last) in enumerate(self.groups)
        ]
        return Pooled(seconds=seconds, embeddings=embeddings, windows=self.count.copy(), spans=spans)

    def _dimension(self) -> int:
        import tensorflow as tf

        f, bins = self.owner.segment_frames, self.owner.features.config.n_bins
        return int(self.owner._embed_segments(segments=tf.zeros([1, f, bins]))["embeddings"].shape[1])
