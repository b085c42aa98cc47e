"""The pair job's speaker blocks (format and sampling rules: speechpipe.speakers.block_records):
the embedder's training input, written so that tf.data streams it with bounded memory
(speechpipe.speakers.speaker_blocks); and its back-end sample (speechpipe.speakers.backend_sample).

    feature shard paths -> SpreadShards -> CropUtterances (side input: eligible counts)
      -> GroupBySpeaker -> BuildBlocks (side inputs: counts, shard count)   [BLOCKS | BLOCK_STATS]
      BLOCKS -> GroupByShard -> WriteShard -> ListShards -> FillEmptyShards        [BLOCK_FILES]
    counts -> EstimateBytes -> ShardCount

Memory: utterances never cross a shuffle. Each utterance is cropped where its shard is read,
into the few `stored_frames` crops its speaker's blocks will take (float16), and only those
crops are grouped by speaker; blocks are then grouped by a random shard, one shard (about
`shard_mb`) per group, and each shard is written in a seeded random order.

The eligible counts (speaker -> utterances of at least one segment, from the feature job's
index, which is metadata only) tell each utterance how many crops to cut before anything is
grouped, and give the speaker labels and the shard count.

The back-end sample (rule: speechpipe.speakers.backend_sample) is drawn from the same index and
copied from the same feature shards, whole records unchanged:

    index -> KeepSplit -> IdAndFrames -> OnePerUtterance -> CountPerSpeaker -> ListCounts
      -> Plan                                            (the quotas: one small dict)
    IdAndFrames -> GroupIds -> Choose (side input: Plan) -> ListChosen -> ChosenIds -> ShardCount
    feature shard paths -> SpreadShards -> KeepChosen (side inputs: ChosenIds, ShardCount)
      -> GroupByShard -> WriteShard -> ListShards -> FillEmptyShards
      -> CheckWritten (side inputs: Plan, ChosenIds)     [one dict of counts]

Only ids, frame counts and the chosen records cross a shuffle; the chosen ids (at most the cap)
are a side input of the read.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, Iterator, List, Mapping, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsDict, AsSingleton, TaggedOutput

from speechpipe.io import records, storage
from speechpipe.speakers import backend_sample
from speechpipe.speakers.block_records import (
    BlockConfig,
    SpeakerBlock,
    block_order,
    block_positions,
    crop_utterance,
    encode_block,
    keyed_hash,
    rng_for,
    shard_name,
    shard_of,
)
from speechpipe.speakers.pairs import PairsInputError

# Tagged outputs of SpeakerBlocksFromRecords.
BLOCKS = "blocks"  # (shard, (sort key, serialised block))
BLOCK_STATS = "block_stats"  # dicts of counts, summed by the caller
# Output of WriteSpeakerBlocks: (shard path, blocks, bytes) per shard.
BLOCK_FILES = "block_files"


class EligibleCounts(beam.PTransform):
    """Index elements (speaker, (utterance, session, split, num_frames)) -> (speaker, utterances
    of `split` with at least `segment_frames` frames), the rule the pairs use too."""

    def __init__(self, split: str, segment_frames: int) -> None:
        super().__init__()
        self._split, self._segment_frames = split, segment_frames

    def expand(self, utterances):
        split, minimum = self._split, self._segment_frames
        return (
            utterances
            | "KeepEligible" >> beam.Filter(lambda e: e[1][2] == split and e[1][3] >= minimum)
            | "OnePerUtterance" >> beam.Map(lambda e: (e[0], 1))
            | "CountPerSpeaker" >> beam.CombinePerKey(sum)
        )


class CropUtterances(beam.DoFn):
    """A feature shard -> per eligible utterance (speaker, (utterance, session, lengths, crops)):
    as many float16 crops of `stored_frames` as its speaker's blocks take from it. Utterances
    shorter than one segment are counted (the pair job lists them in excluded/)."""

    def __init__(self, config: BlockConfig, n_bins: int) -> None:
        self._config, self._n_bins = config, n_bins

    def process(self, path: str, counts: Dict[str, int]) -> Iterator[object]:
        from speechpipe.io.example_proto import read_tfrecord_file

        config = self._config
        for serialized in read_tfrecord_file(path):
            utterance = records.decode_example(serialized)
            frames, bins = utterance.features.shape
            if bins != self._n_bins:
                raise PairsInputError(
                    f"{path}: utterance {utterance.utterance!r} has {bins} bins, expected {self._n_bins}"
                )
            if frames < config.segment_frames:
                yield TaggedOutput(BLOCK_STATS, {"excluded_short": 1})
                continue
            if utterance.speaker not in counts:
                raise PairsInputError(
                    f"{path}: utterance {utterance.utterance!r} of speaker {utterance.speaker!r} is not in the "
                    "feature job's index beside these records: records and index disagree"
                )
            uses = config.uses_per_utterance(counts[utterance.speaker])
            rng = rng_for(config.seed, "crop", utterance.speaker, utterance.utterance)
            lengths, crops = crop_utterance(utterance.features, uses, config.stored_frames, rng)
            yield utterance.speaker, (utterance.utterance, utterance.session, lengths, crops)
            yield TaggedOutput(BLOCK_STATS, {"utterances": 1, "crops": uses})


class BuildBlocks(beam.DoFn):
    """A speaker's crops -> its `blocks_per_speaker` blocks, each keyed by a random shard, and its
    counts (BLOCK_STATS)."""

    def __init__(self, config: BlockConfig) -> None:
        self._config = config
        self._labels: Dict[str, int] = {}
        self._labels_of: object = None

    def _label(self, speaker: str, counts: Dict[str, int]) -> int:
        if self._labels_of is not counts:  # the side input, sorted once per worker
            self._labels = {name: index for index, name in enumerate(sorted(counts))}
            self._labels_of = counts
        return self._labels[speaker]

    def process(self, element: Tuple[str, Iterable[tuple]], counts: Dict[str, int], shards: int):
        speaker, items = element
        config = self._config
        items = sorted(items, key=lambda item: item[0])  # the grouping's order is the runner's
        n = len(items)
        if n != counts[speaker]:
            raise PairsInputError(
                f"speaker {speaker!r}: {n} eligible utterances in the feature records, {counts[speaker]} in "
                "the index: records and index disagree"
            )
        order = block_order([(item[0], item[1]) for item in items], config.seed, speaker)
        used = [0] * n
        label = self._label(speaker, counts)
        positions = block_positions(n, config)
        size = 0
        for b, window in enumerate(positions):
            picks: List[Tuple[int, int]] = []
            for position in window:
                index = order[position]
                picks.append((index, used[index]))
                used[index] += 1
            block = SpeakerBlock(
                speaker=speaker,
                label=label,
                block=b,
                utterances=[items[i][0] for i, _ in picks],
                sessions=[items[i][1] for i, _ in picks],
                lengths=np.array([items[i][2][c] for i, c in picks], np.int64),
                segments=np.stack([items[i][3][c] for i, c in picks]),
                max_segments=config.stored_segments,
            )
            payload = encode_block(block)
            size += len(payload)
            yield shard_of(config.seed, speaker, b, shards), (keyed_hash(config.seed, "place", speaker, b), payload)
        segments = len(positions) * len(positions[0])
        yield TaggedOutput(
            BLOCK_STATS,
            {
                "speakers": 1,
                "blocks": len(positions),
                "segments": segments,
                "bytes": size,
                "crops_unused": sum(len(item[2]) for item in items) - segments,
                # Speakers with fewer utterances than K repeat some (with other crops) in a block.
                "speakers_repeating_utterances": int(n < config.segments_per_speaker),
                "sessions_per_block": sum(len({items[order[p]][1] for p in w}) for w in positions),
            },
        )


def _total_bytes(counts: Iterable[Tuple[str, int]], config: BlockConfig, n_bins: int) -> int:
    return sum(config.blocks_per_speaker * config.block_bytes(n, n_bins) for _, n in counts)


class SpeakerBlocksFromRecords(beam.PTransform):
    """Feature shard paths -> {BLOCKS: (shard, (sort key, block)), BLOCK_STATS: counts, "shards":
    the shard count (one element)}. `counts`: (speaker, eligible utterances) of the same split."""

    def __init__(self, config: BlockConfig, counts: beam.PCollection, n_bins: int) -> None:
        super().__init__()
        self._config = config.validate()
        self._counts = counts
        self._n_bins = n_bins

    def expand(self, paths):
        config, n_bins = self._config, self._n_bins
        shards = (
            self._counts
            | "ListCounts" >> beam.combiners.ToList()
            | "ShardCount" >> beam.Map(lambda counts: config.shard_count(_total_bytes(counts, config, n_bins)))
        )
        crops = (
            paths
            | "SpreadShards" >> beam.Reshuffle()
            | "CropUtterances"
            >> beam.ParDo(CropUtterances(config, n_bins), counts=AsDict(self._counts)).with_outputs(
                BLOCK_STATS, main="crops"
            )
        )
        blocks = (
            crops["crops"]
            | "GroupBySpeaker" >> beam.GroupByKey()
            | "BuildBlocks"
            >> beam.ParDo(BuildBlocks(config), counts=AsDict(self._counts), shards=AsSingleton(shards)).with_outputs(
                BLOCK_STATS, main=BLOCKS
            )
        )
        stats = (crops[BLOCK_STATS], blocks[BLOCK_STATS]) | "FlattenStats" >> beam.Flatten()
        return {BLOCKS: blocks[BLOCKS], BLOCK_STATS: stats, "shards": shards}


def write_shard(
    element: Tuple[int, Iterable[Tuple[bytes, bytes]]], prefix: str, shards: int, gzip: bool
) -> Tuple[str, int, int]:
    """One shard's blocks, in the order of their keyed hashes (a seeded shuffle, the same on
    every run whatever order the grouping gave), as a TFRecord file; (path, blocks, bytes).
    The shard is held while it is written: about `shard_mb`."""
    from apache_beam.io.filesystems import FileSystems

    from speechpipe.io.example_proto import frame_record

    index, blocks = element
    path = shard_name(prefix, index, shards, gzip)
    count = size = 0
    if not storage.is_uri(path):
        import os

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with FileSystems.create(path, compression_type=_compression(gzip)) as f:
        for _, payload in sorted(blocks):
            f.write(frame_record(payload))
            count += 1
            size += len(payload)
    return path, count, size


def _compression(gzip: bool):
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED


def fill_empty_shards(
    written: List[Tuple[str, int, int]], prefix: str, shards: int, gzip: bool
) -> Iterator[Tuple[str, int, int]]:
    """Every shard name exists, also those no block was drawn for (an empty file), so that
    `-of-NNNNN` is the whole set."""
    from apache_beam.io.filesystems import FileSystems

    done = {path for path, _, _ in written}
    yield from written
    for index in range(shards):
        path = shard_name(prefix, index, shards, gzip)
        if path not in done:
            FileSystems.create(path, compression_type=_compression(gzip)).close()
            yield path, 0, 0


class WriteSpeakerBlocks(beam.PTransform):
    """Feature shard paths of one split -> blocks under `<prefix>-SSSSS-of-NNNNN.tfrecord[.gz]`;
    returns {BLOCK_FILES: (path, blocks, bytes) per shard, BLOCK_STATS: counts}."""

    def __init__(self, config: BlockConfig, counts: beam.PCollection, n_bins: int, prefix: str) -> None:
        super().__init__()
        self._config, self._counts, self._n_bins, self._prefix = config, counts, n_bins, prefix

    def expand(self, paths):
        prefix, gzip = self._prefix, self._config.gzip
        made = paths | "Blocks" >> SpeakerBlocksFromRecords(self._config, self._counts, self._n_bins)
        shards = AsSingleton(made["shards"])
        files = (
            made[BLOCKS]
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(write_shard, prefix=prefix, shards=shards, gzip=gzip)
            | "ListShards" >> beam.combiners.ToList()
            | "FillEmptyShards" >> beam.FlatMap(fill_empty_shards, prefix=prefix, shards=shards, gzip=gzip)
        )
        return {BLOCK_FILES: files, BLOCK_STATS: made[BLOCK_STATS]}


# ---------------------------------------------------------------------------------- back-end sample


def backend_plan(counts: List[Tuple[str, int]], max_utterances: int, seed: int) -> Dict[str, object]:
    """A split's (speaker, utterances) -> {"quotas": speaker -> utterances to take, "counts": the
    summary's counts}: one small dict (a few entries per speaker), a singleton side input."""
    by_speaker = dict(counts)
    quotas = backend_sample.speaker_quotas(by_speaker, max_utterances, seed)
    return {"quotas": quotas, "counts": backend_sample.sample_counts(by_speaker, quotas)}


def choose_utterances(
    element: Tuple[str, Iterable[Tuple[str, int]]], plan: Mapping[str, object], seed: int
) -> Iterator[Tuple[str, Tuple[str, int]]]:
    """A speaker's (utterance, num_frames) -> its chosen (utterance, (speaker, num_frames))."""
    speaker, items = element
    quota = plan["quotas"].get(speaker, 0)
    if not quota:
        return
    frames = dict(items)
    for utterance in backend_sample.pick_utterances(speaker, frames, quota, seed):
        yield utterance, (speaker, frames[utterance])


class KeepChosen(beam.DoFn):
    """A feature shard -> (shard, (utterance, record)) for each chosen utterance, the record's
    bytes unchanged (so that the sample reads as the feature records do)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed

    def process(self, path: str, chosen: Mapping[str, Tuple[str, int]], shards: int):
        from speechpipe.io.example_proto import Example, read_tfrecord_file

        if not chosen:
            return
        for serialized in read_tfrecord_file(path):
            # The ids only; the features stay bytes.
            feature = Example.FromString(serialized).features.feature
            utterance = feature[records.UTTERANCE].bytes_list.value[0].decode("utf-8")
            if utterance not in chosen:
                continue
            speaker = feature[records.SPEAKER].bytes_list.value[0].decode("utf-8")
            if speaker != chosen[utterance][0]:
                raise PairsInputError(
                    f"{path}: utterance {utterance!r} is of speaker {speaker!r} in the feature records, "
                    f"{chosen[utterance][0]!r} in the index: records and index disagree"
                )
            yield backend_sample.shard_of(self._seed, utterance, shards), (utterance, serialized)


def write_backend_shard(
    element: Tuple[int, Iterable[Tuple[str, bytes]]], prefix: str, shards: int
) -> Tuple[str, List[str], int]:
    """One shard's records, sorted by utterance id (the same file on every run), uncompressed;
    (path, utterance ids, bytes on disk). The shard is held while it is written: about `shard_mb`."""
    from apache_beam.io.filesystems import FileSystems

    from speechpipe.io.example_proto import frame_record

    index, items = element
    path = backend_sample.backend_shard_name(prefix, index, shards)
    ids: List[str] = []
    size = 0
    if not storage.is_uri(path):
        import os

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with FileSystems.create(path, compression_type=_compression(False)) as f:
        for utterance, serialized in sorted(items, key=lambda item: item[0]):
            framed = frame_record(serialized)
            f.write(framed)
            ids.append(utterance)
            size += len(framed)
    return path, ids, size


def fill_empty_backend_shards(
    written: List[Tuple[str, List[str], int]], prefix: str, shards: int
) -> List[Tuple[str, List[str], int]]:
    """Every shard name exists, also those no chosen utterance hashed to (an empty file), so
    that `-of-NNNNN` is the whole set."""
    from apache_beam.io.filesystems import FileSystems

    done = {path for path, _, _ in written}
    files = list(written)
    for index in range(shards):
        path = backend_sample.backend_shard_name(prefix, index, shards)
        if path not in done:
            FileSystems.create(path, compression_type=_compression(False)).close()
            files.append((path, [], 0))
    return sorted(files)


def check_written(
    files: List[Tuple[str, List[str], int]], plan: Mapping[str, object], chosen: Mapping[str, object], split: str
) -> Dict[str, object]:
    """The split's summary counts, once every chosen utterance is written exactly once. Else an
    error: a smaller sample than the index promises would fit the back end on other data than
    the summary says (Beam's multi_processing DirectRunner can lose a bundle; records that lack
    an indexed utterance, or hold one twice, disagree with their index)."""
    expected = sum(plan["quotas"].values())
    written = [utterance for _, ids, _ in files for utterance in ids]
    missing = sorted(set(chosen) - set(written))
    twice = sorted(u for u, n in Counter(written).items() if n > 1)
    if len(chosen) != expected or missing or twice or len(written) != expected:
        raise PairsInputError(
            f"back-end sample of {split}: {expected} utterances planned, {len(chosen)} chosen, {len(written)} "
            f"written ({len(missing)} missing{', e.g. ' + ', '.join(missing[:3]) if missing else ''}; "
            f"{len(twice)} written twice{', e.g. ' + ', '.join(twice[:3]) if twice else ''}): the feature records "
            "and their index disagree, or the runner lost a bundle (rerun with --direct_running_mode=in_memory)"
        )
    return {
        **plan["counts"],
        "shards": len(files),
        "bytes": sum(size for _, _, size in files),
    }


class WriteBackendSample(beam.PTransform):
    """{"index": the index elements (speaker, (utterance, session, split, num_frames)), "shards":
    the split's feature shard paths} -> one dict of the split's sample counts, after writing the
    chosen records under `<folder>/data_tfrecord-SSSSS-of-NNNNN.tfrecord`
    (speechpipe.speakers.backend_sample). Every utterance of the split counts, short ones too:
    the back end embeds a short utterance with one zero-padded window."""

    def __init__(self, split: str, max_utterances: int, seed: int, n_bins: int, folder: str, shard_mb: float) -> None:
        super().__init__()
        if backend_sample.check_max_utterances(max_utterances) == 0:
            raise ValueError("max_utterances=0: no sample to write")
        self._split, self._max, self._seed = split, max_utterances, seed
        self._n_bins, self._folder, self._shard_mb = n_bins, folder, shard_mb

    def expand(self, inputs):
        from apache_beam.io.filesystems import FileSystems

        split, seed, n_bins, shard_mb, cap = self._split, self._seed, self._n_bins, self._shard_mb, self._max
        prefix = FileSystems.join(self._folder, backend_sample.BACKEND_PREFIX)
        of_split = (
            inputs["index"]
            | "KeepSplit" >> beam.Filter(lambda e: e[1][2] == split)
            | "IdAndFrames" >> beam.Map(lambda e: (e[0], (e[1][0], e[1][3])))
        )
        plan = AsSingleton(
            of_split
            | "OnePerUtterance" >> beam.Map(lambda e: (e[0], 1))
            | "CountPerSpeaker" >> beam.CombinePerKey(sum)
            | "ListCounts" >> beam.combiners.ToList()
            | "Plan" >> beam.Map(backend_plan, max_utterances=cap, seed=seed)
        )
        chosen_pc = (
            of_split
            | "GroupIds" >> beam.GroupByKey()
            | "Choose" >> beam.FlatMap(choose_utterances, plan=plan, seed=seed)
            | "ListChosen" >> beam.combiners.ToList()
            | "ChosenIds" >> beam.Map(dict)
        )
        chosen = AsSingleton(chosen_pc)
        shards = AsSingleton(
            chosen_pc
            | "ShardCount"
            >> beam.Map(
                lambda ids: backend_sample.shard_count(
                    sum(backend_sample.utterance_bytes(frames, n_bins) for _, frames in ids.values()), shard_mb
                )
            )
        )
        return (
            inputs["shards"]
            | "SpreadShards" >> beam.Reshuffle()
            | "KeepChosen" >> beam.ParDo(KeepChosen(seed), chosen=chosen, shards=shards)
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(write_backend_shard, prefix=prefix, shards=shards)
            | "ListShards" >> beam.combiners.ToList()
            | "FillEmptyShards" >> beam.Map(fill_empty_backend_shards, prefix=prefix, shards=shards)
            | "CheckWritten" >> beam.Map(check_written, plan=plan, chosen=chosen, split=split)
        )
