"""The CTC recogniser on recordings of any length: chunks of bounded length with context on both
sides, merged into one best path, with each phone's times from the alignment.

- The network (the SavedModel's `logits` signature) runs on chunks of `chunk` network frames;
  each chunk is given `context` frames more on each side (the BLSTMs read both ways), and only its
  own `chunk` frames are kept. Every frame of the recording is kept from exactly one chunk.
- The kept frames' best classes are collapsed as one path across the seams (`GreedyAlignment`
  carries the last class over): a phone spoken across a seam is one phone, started in the chunk
  where its run starts. On the same frame classes this is `tf.nn.ctc_greedy_decoder`'s output,
  which the `transcribe` signature gives, so chunked and whole-file transcripts differ only where
  a frame's best class changes for want of context beyond `context` frames.
- A phone's times are its run of frames in the best path: from the start of its first frame to
  the end of its last (`frame_seconds` each), the way CTC toolkits time tokens; CTC's peaky
  outputs make these runs short, so a phone's interval marks where it was recognised rather than
  its whole duration.
- Chunks of several recordings share a network call (up to `batch_frames` padded frames), so a
  corpus of short utterances is still batched as the whole-file path batches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from speechpipe.audio.feature_chunks import ChunkFeatures, FileScan
from speechpipe.audio.stream import AudioStream


@dataclass(frozen=True)
class Chunk:
    """Network frames [keep_start, keep_end) kept from a run on [start, end)."""

    start: int
    end: int
    keep_start: int
    keep_end: int


def chunk_plan(frames: int, chunk: int, context: int) -> List[Chunk]:
    """The chunks covering `frames` network frames: `chunk` kept frames each (the last may be
    shorter), run with up to `context` frames either side. chunk <= 0: one chunk, the whole."""
    if frames <= 0:
        return []
    if chunk <= 0 or chunk >= frames:
        return [Chunk(0, frames, 0, frames)]
    out = []
    for keep_start in range(0, frames, chunk):
        keep_end = min(keep_start + chunk, frames)
        out.append(Chunk(max(0, keep_start - context), min(frames, keep_end + context), keep_start, keep_end))
    return out


class GreedyAlignment:
    """Best-path collapse (repeats merged, blanks dropped) of a path fed in consecutive pieces,
    with each phone's run [start, end) of frames. The class of the run in progress is carried
    from one piece to the next, so that a run across a seam is one phone."""

    def __init__(self, blank_id: int) -> None:
        self.blank_id = blank_id
        self._run_class = blank_id  # the class of the last frame fed (a blank before the first)
        self._run_start = 0
        self._frames = 0
        self.ids: List[int] = []
        self.starts: List[int] = []
        self.ends: List[int] = []

    def feed(self, best: np.ndarray) -> None:
        """The next frames' best classes."""
        best = np.asarray(best, np.int64).reshape(-1)
        if best.shape[0] == 0:
            return
        before = np.concatenate([[self._run_class], best[:-1]])
        for i in np.flatnonzero(best != before):
            at = self._frames + int(i)
            self._close(at)
            self._run_class, self._run_start = int(best[i]), at
        self._frames += best.shape[0]

    def finish(self) -> None:
        """Ends the run in progress: call once after the last piece."""
        self._close(self._frames)
        self._run_class, self._run_start = self.blank_id, self._frames

    def _close(self, end: int) -> None:
        if self._run_class != self.blank_id and end > self._run_start:
            self.ids.append(self._run_class)
            self.starts.append(self._run_start)
            self.ends.append(end)


@dataclass
class Transcript:
    """A recording's phones, each with its run of network frames, and the chunks it was run in."""

    samples: int
    frame_seconds: float
    phones: Sequence[str]  # the inventory: ids index it
    ids: np.ndarray
    starts: np.ndarray  # first frame of each phone's run
    ends: np.ndarray  # one past its last frame
    chunks: List[Tuple[int, int]]  # kept frame ranges
    seconds: float  # the recording's length

    @property
    def num_phones(self) -> int:
        return int(self.ids.shape[0])

    def text(self) -> str:
        return " ".join(self.phones[i] for i in self.ids)

    def timed_phones(self, first: int = 0, last: Optional[int] = None) -> List[Dict[str, object]]:
        """[{phone, start, end}] (seconds, rounded to the frame) of the phones whose runs start in
        frames [first, last)."""
        lo = int(np.searchsorted(self.starts, first, "left"))
        hi = self.num_phones if last is None else int(np.searchsorted(self.starts, last, "left"))
        s = self.frame_seconds
        return [
            {"phone": self.phones[int(i)], "start": round(float(a) * s, 3), "end": round(float(b) * s, 3)}
            for i, a, b in zip(self.ids[lo:hi], self.starts[lo:hi], self.ends[lo:hi])
        ]

    def chunk_entries(self) -> Iterator[Dict[str, object]]:
        """Per chunk: its kept interval and the phones whose runs start in it, timed."""
        s, seconds = self.frame_seconds, self.seconds
        for index, (first, last) in enumerate(self.chunks):
            timed = self.timed_phones(first, last)
            end = seconds if index == len(self.chunks) - 1 else round(last * s, 3)
            yield {
                "chunk": index,
                "start": round(first * s, 3),
                "end": round(end, 3),
                "phones": " ".join(p["phone"] for p in timed),
                "phone_times": timed,
            }


class ChunkedTranscriber:
    """A CTC SavedModel (its `logits` signature) on streamed recordings, chunk by chunk."""

    def __init__(
        self,
        logits: Callable[..., Dict[str, object]],
        features: ChunkFeatures,
        phones: Sequence[str],
        frame_stack: int,
        chunk_seconds: float,
        context_seconds: float,
        batch_seconds: float,
        max_rows: int = 16,
    ) -> None:
        c = features.config
        self._logits = logits
        self.features = features
        self.phones = list(phones)
        self.blank_id = len(self.phones)
        self.frame_stack = frame_stack
        self.frame_seconds = frame_stack * c.hop_length / c.sample_rate
        self.chunk = int(round(chunk_seconds / self.frame_seconds)) if chunk_seconds > 0 else 0
        self.context = int(round(context_seconds / self.frame_seconds))
        self.batch_frames = max(1, int(round(batch_seconds / self.frame_seconds)))
        self.max_rows = max_rows

    def transcribe(self, items: Iterable[Tuple[object, AudioStream, FileScan]]) -> Iterator[Tuple[object, Transcript]]:
        """(key, transcript) for each (key, source, scan), in order; `scan` is
        `self.features.scan(source)`."""
        order: List[_FileState] = []
        batch: List[Tuple[_FileState, Chunk, np.ndarray]] = []
        longest = 0
        for state, chunk, features in self._tasks(items, order):
            if chunk is not None:
                rows = chunk.end - chunk.start
                if batch and (len(batch) >= self.max_rows or (len(batch) + 1) * max(longest, rows) > self.batch_frames):
                    self._run(batch)
                    batch, longest = [], 0
                batch.append((state, chunk, features))
                longest = max(longest, rows)
            while order and order[0].done:
                done = order.pop(0)
                yield done.key, done.transcript()
        if batch:
            self._run(batch)
        for state in order:
            yield state.key, state.transcript()

    def _tasks(self, items, order: List["_FileState"]):
        s = self.frame_stack
        for key, source, scan in items:
            plan = chunk_plan(scan.frames // s, self.chunk, self.context)
            state = _FileState(key, scan, self, len(plan))
            order.append(state)
            if not plan:
                state.alignment.finish()
                yield state, None, None
                continue
            ranges = [(s * c.start, s * c.end) for c in plan]
            for chunk, features in zip(plan, self.features.frames(source, scan, ranges)):
                yield state, chunk, features

    def _run(self, batch: List[Tuple["_FileState", Chunk, np.ndarray]]) -> None:
        import tensorflow as tf

        c = self.features.config
        lengths = np.array([f.shape[0] for _, _, f in batch], np.int32)
        padded = np.zeros((len(batch), int(lengths.max()), c.n_bins), np.float32)
        for row, (_, _, f) in enumerate(batch):
            padded[row, : f.shape[0]] = f
        logits = self._logits(features=tf.constant(padded), num_frames=tf.constant(lengths))["logits"].numpy()
        for row, (state, chunk, _) in enumerate(batch):
            kept = logits[row, chunk.keep_start - chunk.start : chunk.keep_end - chunk.start]
            state.add(chunk, np.argmax(kept, axis=-1))


class _FileState:
    def __init__(self, key: object, scan: FileScan, owner: ChunkedTranscriber, chunks: int) -> None:
        self.key, self.scan, self.owner = key, scan, owner
        self.alignment = GreedyAlignment(owner.blank_id)
        self.kept: List[Tuple[int, int]] = []
        self.remaining = chunks

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def add(self, chunk: Chunk, best: np.ndarray) -> None:
        self.alignment.feed(best)
        self.kept.append((chunk.keep_start, chunk.keep_end))
        self.remaining -= 1
        if self.remaining == 0:
            self.alignment.finish()

    def transcript(self) -> Transcript:
        a, o = self.alignment, self.owner
        return Transcript(
            samples=self.scan.samples,
            frame_seconds=o.frame_seconds,
            phones=o.phones,
            ids=np.asarray(a.ids, np.int32),
            starts=np.asarray(a.starts, np.int32),
            ends=np.asarray(a.ends, np.int32),
            chunks=self.kept,
            seconds=self.scan.samples / o.features.config.sample_rate,
        )
