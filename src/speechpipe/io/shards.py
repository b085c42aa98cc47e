"""One Beam sink for several sharded outputs at once: the feature job's TFRecords per split, its
utterance index and its dead letter.

Beam's WriteToTFRecord / WriteToText expand to 12 transforms each; with five of them the feature
job's graph had 131 transforms, 82 of them in sinks, and the runner pays for every transform at
translation and again for every bundle processor (DoFn signature inspection, pickling): about
2 s of every run, whatever the corpus's size (a 20-utterance run: 3.7 s before, 1.7 s after). This sink does the same work with one write step,
one side input and one finalize step:

1. `_WriteTempShardsFn`: per bundle, one temporary file per output it saw, under
   `<out>/.temp-shards-<uuid>/`; at the end of the bundle it reports (output, temp path, records).
   A bundle that fails leaves only temporary files behind, which nobody reports.
2. `_finalize` runs once, after every bundle, with the reports as a side input: per output the
   temporary files become `<prefix>-SSSSS-of-NNNNN<suffix>` (Beam's default shard names), an
   output without records gets one empty shard (as Beam's sinks do), and the temporary folder is
   deleted. Run again after a partial rename (a retry), a missing temporary file whose final
   name exists counts as renamed.

Shards: by default one per bundle and output (the runner decides, as Beam's sinks with
num_shards=0 do); which bundle becomes shard 0 depends on the temporary names, not on the data,
which Beam's sinks do not promise either. With `num_shards` = N every output gets exactly N
shards, a record going to shard crc32(payload) % N (through a GroupByKey, as Beam's sinks do
for a fixed count). Paths go through Beam's FileSystems: local, gs://, s3://, ...
"""

from __future__ import annotations

import logging
import os
import uuid
import zlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from speechpipe.io import storage

_LOGGER = logging.getLogger(__name__)

TFRECORD = "tfrecord"  # payloads are serialised records, framed as TFRecords
LINES = "lines"  # payloads are str, one line each, UTF-8


@dataclass(frozen=True)
class ShardedOutput:
    """One output of the sink: its files are `<prefix>-SSSSS-of-NNNNN<suffix>`."""

    prefix: str
    suffix: str = ""
    framing: str = TFRECORD
    gzip: bool = False


def shard_name(output: ShardedOutput, index: int, count: int) -> str:
    return f"{output.prefix}-{index:05d}-of-{count:05d}{output.suffix}"


def _compression(output: ShardedOutput):
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.GZIP if output.gzip else CompressionTypes.UNCOMPRESSED


def _ensure_parent(path: str) -> None:
    """Local renames need the destination folder; object stores have no folders."""
    if not storage.is_uri(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


class _WriteTempShardsFn(beam.DoFn):
    """(output index, payload) -> per bundle and output, one temporary file; emits
    (output index, None, temporary path, records) when the bundle ends."""

    def __init__(self, outputs: Sequence[ShardedOutput], temp_dir: str) -> None:
        self._outputs = tuple(outputs)
        self._temp_dir = temp_dir
        self._open: Dict[int, list] = {}

    def start_bundle(self) -> None:
        self._open = {}

    def _writer(self, index: int) -> list:
        from apache_beam.io.filesystems import FileSystems

        output = self._outputs[index]
        path = storage.join(self._temp_dir, f"{index}-{uuid.uuid4().hex}{output.suffix}")
        writer = [FileSystems.create(path, compression_type=_compression(output)), path, 0]
        self._open[index] = writer
        return writer

    def process(self, element: Tuple[int, object]) -> Iterable[None]:
        index, payload = element
        writer = self._open.get(index) or self._writer(index)
        if self._outputs[index].framing == TFRECORD:
            from speechpipe.io.example_proto import frame_record

            writer[0].write(frame_record(payload))
        else:
            writer[0].write(payload.encode("utf-8") + b"\n")
        writer[2] += 1
        return ()

    def finish_bundle(self):
        opened, self._open = self._open, {}
        for index, (handle, path, count) in sorted(opened.items()):
            handle.close()  # an object store publishes the object here
            yield GlobalWindows.windowed_value((index, None, path, count))

    def teardown(self) -> None:
        # A failed bundle's files stay temporary: closed here, never reported, deleted by _finalize.
        for handle, _, _ in self._open.values():
            try:
                handle.close()
            except Exception:  # best effort on a bundle that already failed
                pass
        self._open = {}


def _write_group(
    element: Tuple[Tuple[int, int], Iterable[object]], outputs: Sequence[ShardedOutput], temp_dir: str
) -> Iterable[Tuple[int, int, str, int]]:
    """((output index, shard), payloads) -> one temporary file; yields
    (output index, shard, temporary path, records)."""
    (index, shard), payloads = element
    writer = _WriteTempShardsFn(outputs, temp_dir)
    writer.start_bundle()
    for payload in payloads:
        writer.process((index, payload))
    for report in writer.finish_bundle():
        yield (index, shard) + report.value[2:]


def _finalize(
    _, reports: List[Tuple[int, object, str, int]], outputs: Sequence[ShardedOutput], temp_dir: str, num_shards: int
) -> Iterable[Tuple[str, int]]:
    """Renames every reported temporary file to its shard name, writes an empty file for every
    shard without records (at least one shard per output); yields (shard path, records)."""
    from apache_beam.io.filesystems import FileSystems

    by_output: Dict[int, List[Tuple[object, str, int]]] = {i: [] for i in range(len(outputs))}
    for index, shard, path, count in reports:
        by_output[index].append((shard, path, count))
    for index, output in enumerate(outputs):
        if num_shards:
            total = num_shards
            temps = {shard: (path, count) for shard, path, count in by_output[index]}
        else:
            total = max(1, len(by_output[index]))
            temps = {
                shard: (path, count)
                for shard, (_, path, count) in enumerate(sorted(by_output[index], key=lambda r: r[1]))
            }
        for shard in range(total):
            final = shard_name(output, shard, total)
            _ensure_parent(final)
            if shard not in temps:
                FileSystems.create(final, compression_type=_compression(output)).close()
                yield final, 0
                continue
            temp, count = temps[shard]
            if FileSystems.exists(temp):
                FileSystems.rename([temp], [final])
            elif not FileSystems.exists(final):
                raise FileNotFoundError(f"temporary shard {temp} is gone and {final} was never written")
            yield final, count
    leftovers = storage.beam_match(storage.join(temp_dir, "*"))  # failed bundles' files
    if leftovers:
        # Expected after a failed or retried bundle; said out loud so that a read-back mismatch
        # can tell "a report went missing" (files deleted here) from "records never reached the
        # sink" (nothing deleted here).
        _LOGGER.warning(
            "WriteShards: deleting %d unreported temporary file(s) in %s: %s",
            len(leftovers),
            temp_dir,
            ", ".join(f"{storage.basename(p)} ({_size(p)} bytes)" for p in leftovers),
        )
        FileSystems.delete(leftovers)
    if not storage.is_uri(temp_dir) and os.path.isdir(temp_dir):
        os.rmdir(temp_dir)


class WriteShards(beam.PTransform):
    """(output index, payload) elements -> the outputs' shard files; returns a PCollection of
    (shard path, records) for the shards written."""

    def __init__(self, outputs: Sequence[ShardedOutput], temp_root: str, num_shards: int = 0) -> None:
        super().__init__()
        if not outputs:
            raise ValueError("WriteShards needs at least one output")
        if num_shards < 0:
            raise ValueError(f"num_shards must be >= 0 (0: one per bundle), got {num_shards}")
        self._outputs = tuple(outputs)
        self._num_shards = num_shards
        # A fresh folder per pipeline: two jobs writing next to each other never share one.
        self._temp_dir = storage.join(temp_root, f".temp-shards-{uuid.uuid4().hex}")

    def expand(self, inputs) -> beam.PCollection:
        """`inputs`: a PCollection of (output index, payload), or a tuple of them. Each is written
        where it is produced, in its own stage: flattening big payloads from several stages first
        would make the runner buffer them all (measured: 1.4 GB instead of 0.45 GB on the demo
        corpus), so only the small reports are flattened."""
        inputs = (inputs,) if isinstance(inputs, beam.PCollection) else tuple(inputs)
        pipeline = inputs[0].pipeline
        if self._num_shards:
            n = self._num_shards
            reports = (
                inputs
                | "AllPayloads" >> beam.Flatten()
                | "KeyByShard" >> beam.Map(lambda e: ((e[0], zlib.crc32(_as_bytes(e[1])) % n), e[1]))
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShardFiles" >> beam.FlatMap(_write_group, outputs=self._outputs, temp_dir=self._temp_dir)
            )
        else:
            reports = [
                payloads | f"WriteTempShards{i}" >> beam.ParDo(_WriteTempShardsFn(self._outputs, self._temp_dir))
                for i, payloads in enumerate(inputs)
            ] | "AllReports" >> beam.Flatten()
        return (
            pipeline
            | "Once" >> beam.Impulse()  # one element: Finalize runs once, also without payloads
            | "Finalize"
            >> beam.FlatMap(
                _finalize,
                beam.pvalue.AsList(reports),
                outputs=self._outputs,
                temp_dir=self._temp_dir,
                num_shards=self._num_shards,
            )
        )


def _size(path: str) -> object:
    """A file's size in bytes for a log line, "?" when the filesystem cannot say."""
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    except Exception:  # only for a log line
        return "?"


def _as_bytes(payload: object) -> bytes:
    return payload if isinstance(payload, bytes) else str(payload).encode("utf-8")
