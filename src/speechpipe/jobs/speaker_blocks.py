"""The pair job's speaker blocks (format and sampling rules: speechpipe.speakers.block_records):
the embedder's training input, written so that tf.data streams it with bounded memory
(speechpipe.speakers.speaker_blocks); and its back-end sample (speechpipe.speakers.backend_sample).

    index -> EligibleMembers (speaker -> its eligible (utterance, session), sorted: metadata)
    feature shard paths -> SpreadShards -> CropUtterances (side inputs: members, shard count)
      -> [(block shard, (staging file, crops)) | BLOCK_STATS]
      -> GroupByShard -> WriteShard (reads its staging files) -> ListShards -> FillEmptyShards
                                                                             [BLOCK_FILES]
    members -> ListMembers -> ShardCount;  members -> SpeakerStats           [BLOCK_STATS]

Memory: only metadata crosses a Beam shuffle, which the DirectRunner holds in memory whole. Each
speaker's blocks are planned from the index alone (`speaker_plan`: which crop of which
utterance goes to which slot of which block, and which shard each block lies in), so each
feature shard is cropped where it is read into exactly the crops the plan places (float16,
`stored_frames`), and those bound for one block shard are written to one staging file under
`_staging/<shard>/`; the block shard's writer reads its staging files back, assembles its blocks
(every slot filled, or the records and the index disagree), writes them in a seeded order and
deletes the staging files. A worker holds one feature shard's crops, or one block shard's:
the same on the DirectRunner and on a cluster, whatever the corpus's size.

The back-end sample (rule: speechpipe.speakers.backend_sample) is drawn from the same index and
copied from the same feature shards, whole records unchanged:

    index -> KeepSplit -> IdAndFrames -> OnePerUtterance -> CountPerSpeaker -> ListCounts
      -> Plan                                            (the quotas: one small dict)
    IdAndFrames -> GroupIds -> Choose (side input: Plan) -> ListChosen -> ChosenIds -> ShardCount
    feature shard paths -> ListFeatureShards -> NumberShards -> SpreadShards
      -> WriteChosen (side inputs: ChosenIds, CountShards) -> ListWritten -> SortWritten
      -> CheckWritten (side inputs: Plan, ChosenIds)     [one dict of counts]

Only ids and frame counts cross a shuffle; each feature shard's chosen records go to the
sample's shard of the same number, so a worker holds one feature shard's chosen records; the
chosen ids (at most the cap) are a side input of the read.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
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

# Outputs of WriteSpeakerBlocks: (shard path, blocks, bytes) per shard, and dicts of counts,
# summed by the caller.
BLOCK_FILES = "block_files"
BLOCK_STATS = "block_stats"
STAGING_DIR = "_staging"  # beside the shards while the job runs; removed at its end

Members = Dict[str, List[Tuple[str, str]]]  # speaker -> its eligible (utterance, session), sorted


class EligibleMembers(beam.PTransform):
    """Index elements (speaker, (utterance, session, split, num_frames)) -> (speaker, its
    utterances of `split` with at least `segment_frames` frames, as sorted (utterance, session)),
    the rule the pairs use too. Metadata only: a few dozen bytes per utterance."""

    def __init__(self, split: str, segment_frames: int) -> None:
        super().__init__()
        self._split, self._segment_frames = split, segment_frames

    def expand(self, utterances):
        split, minimum = self._split, self._segment_frames
        return (
            utterances
            | "KeepEligible" >> beam.Filter(lambda e: e[1][2] == split and e[1][3] >= minimum)
            | "IdAndSession" >> beam.Map(lambda e: (e[0], (e[1][0], e[1][1])))
            | "GroupBySpeaker" >> beam.GroupByKey()
            | "Sort" >> beam.MapTuple(lambda speaker, items: (speaker, sorted(items)))
        )


@dataclass(frozen=True)
class Placement:
    """Where one crop of an utterance goes: block `block` of its speaker, position `slot` in it,
    the utterance's `use`-th crop, and the shard the block lies in."""

    shard: int
    block: int
    slot: int
    use: int


@dataclass(frozen=True)
class SpeakerPlan:
    """A speaker's eligible utterances and where each one's crops go (utterances no block draws
    on, when the speaker has more than the blocks take, have no placement)."""

    members: frozenset
    placements: Dict[str, List[Placement]]


def speaker_plan(speaker: str, items: List[Tuple[str, str]], config: BlockConfig, shards: int) -> SpeakerPlan:
    """Where each crop goes, for a speaker's sorted eligible (utterance, session):
    the blocks' sessions interleaved (`block_order`), S consecutive positions a block
    (`block_positions`), each utterance's crops used in turn. Computed from the index alone, so
    every worker that reads one of the speaker's utterances places its crops the same way."""
    order = block_order(items, config.seed, speaker)
    used = [0] * len(items)
    plan: Dict[str, List[Placement]] = {}
    for b, window in enumerate(block_positions(len(items), config)):
        shard = shard_of(config.seed, speaker, b, shards)
        for slot, position in enumerate(window):
            index = order[position]
            plan.setdefault(items[index][0], []).append(Placement(shard, b, slot, used[index]))
            used[index] += 1
    return SpeakerPlan(frozenset(u for u, _ in items), plan)


def _stage_path(staging: str, shard: int) -> str:
    return FileSystems.join(staging, f"{shard:05d}", f"{uuid.uuid4().hex}.crops")


class CropUtterances(beam.DoFn):
    """A feature shard -> its eligible utterances' crops, staged: each crop (float16,
    `stored_frames`) is placed by `speaker_plan` and written, with the crops of this feature
    shard bound for the same block shard, to one staging file of that block shard; yields
    (block shard, (staging file, crops)) and counts (BLOCK_STATS). Memory: one feature shard's
    crops, whatever the corpus's size (the crops never cross a Beam shuffle, which the
    DirectRunner would hold in memory whole)."""

    def __init__(self, config: BlockConfig, n_bins: int, staging: str) -> None:
        self._config, self._n_bins, self._staging = config, n_bins, staging

    def process(self, path: str, members: Members, shards: int) -> Iterator[object]:
        from speechpipe.io.example_proto import read_tfrecord_file

        config = self._config
        staged: Dict[int, List[bytes]] = {}
        plans: Dict[str, SpeakerPlan] = {}  # this shard's speakers only: bounded

        def plan_of(speaker: str) -> SpeakerPlan:
            if speaker not in plans:
                plans[speaker] = speaker_plan(speaker, members[speaker], config, shards)
            return plans[speaker]

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
            plan = plan_of(utterance.speaker) if utterance.speaker in members else None
            if plan is None or utterance.utterance not in plan.members:
                raise PairsInputError(
                    f"{path}: utterance {utterance.utterance!r} of speaker {utterance.speaker!r} is not in the "
                    "feature job's index beside these records: records and index disagree"
                )
            placements = plan.placements.get(utterance.utterance, [])  # none: no block draws on it
            # The same crops as one draw of `uses` stratified crops would give, whatever the
            # worker: the generator is keyed by the utterance.
            uses = config.uses_per_utterance(len(members[utterance.speaker]))
            rng = rng_for(config.seed, "crop", utterance.speaker, utterance.utterance)
            lengths, crops = crop_utterance(utterance.features, uses, config.stored_frames, rng)
            for place in placements:
                crop = (
                    utterance.speaker,
                    place.block,
                    place.slot,
                    utterance.utterance,
                    utterance.session,
                    int(lengths[place.use]),
                    crops[place.use],
                )
                staged.setdefault(place.shard, []).append(pickle.dumps(crop, protocol=pickle.HIGHEST_PROTOCOL))
            yield TaggedOutput(BLOCK_STATS, {"utterances": 1, "crops": uses})
        for shard, payloads in staged.items():
            target = _stage_path(self._staging, shard)
            _write_framed(target, payloads)
            yield shard, (target, len(payloads))


def _write_framed(path: str, payloads: Iterable[bytes], gzip: bool = False) -> int:
    """TFRecord-framed payloads into a new file (local or on any filesystem Beam knows); bytes."""
    from speechpipe.io.example_proto import frame_record

    if not storage.is_uri(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    size = 0
    with FileSystems.create(path, compression_type=_compression(gzip)) as f:
        for payload in payloads:
            f.write(frame_record(payload))
            size += len(payload)
    return size


def speaker_stats(element: Tuple[str, List[Tuple[str, str]]], config: BlockConfig) -> Dict[str, int]:
    """The counts of one speaker's blocks that the index alone gives."""
    speaker, items = element
    n = len(items)
    positions = block_positions(n, config)
    order = block_order(items, config.seed, speaker)
    segments = len(positions) * len(positions[0])
    return {
        "speakers": 1,
        "blocks": len(positions),
        "segments": segments,
        "crops_unused": n * config.uses_per_utterance(n) - segments,
        # Speakers with fewer utterances than K repeat some (with other crops) in a block.
        "speakers_repeating_utterances": int(n < config.segments_per_speaker),
        "sessions_per_block": sum(len({items[order[p]][1] for p in w}) for w in positions),
    }


def write_shard(
    element: Tuple[int, Iterable[Tuple[str, int]]],
    members: Members,
    prefix: str,
    shards: int,
    config: BlockConfig,
) -> Tuple[str, int, int]:
    """One shard from its staged crops: each block assembled in slot order (every slot present,
    or the records and the index disagree), written in the order of the blocks' keyed hashes (a
    seeded shuffle, the same on every run whatever order the staging gave) as a TFRecord file;
    (path, blocks, bytes). The shard's crops are held while it is written: about `shard_mb`."""
    from speechpipe.io.example_proto import read_tfrecord_file

    index, staged = element
    crops: Dict[Tuple[str, int], Dict[int, tuple]] = {}
    for path, count in staged:
        found = 0
        for payload in read_tfrecord_file(path):
            speaker, block, slot, utterance, session, length, crop = pickle.loads(payload)
            crops.setdefault((speaker, block), {})[slot] = (utterance, session, length, crop)
            found += 1
        if found != count:
            raise PairsInputError(f"staged crops {path}: {found} read back, {count} written")
    labels = {name: k for k, name in enumerate(sorted(members))}  # the index among the split's speakers
    blocks: List[Tuple[bytes, bytes]] = []
    for (speaker, b), slots in crops.items():
        size = config.segments_for(len(members[speaker]))
        if sorted(slots) != list(range(size)):
            missing = sorted(set(range(size)) - set(slots))
            raise PairsInputError(
                f"speaker {speaker!r}, block {b}: crops for {len(slots)} of its {size} segments (missing "
                f"positions {missing[:5]}): an utterance in the feature job's index is not in its records"
            )
        ordered = [slots[j] for j in range(size)]
        block = SpeakerBlock(
            speaker=speaker,
            label=labels[speaker],
            block=b,
            utterances=[c[0] for c in ordered],
            sessions=[c[1] for c in ordered],
            lengths=np.array([c[2] for c in ordered], np.int64),
            segments=np.stack([c[3] for c in ordered]),
            max_segments=config.stored_segments,
        )
        blocks.append((keyed_hash(config.seed, "place", speaker, b), encode_block(block)))
    expected = sum(
        1
        for speaker in members
        for b in range(config.blocks_per_speaker)
        if shard_of(config.seed, speaker, b, shards) == index
    )
    if len(blocks) != expected:
        raise PairsInputError(f"shard {index}: {len(blocks)} blocks assembled, {expected} planned")
    path = shard_name(prefix, index, shards, config.gzip)
    size = _write_framed(path, (payload for _, payload in sorted(blocks)), config.gzip)
    for staged_path, _ in staged:
        FileSystems.delete([staged_path])
    return path, len(blocks), size


def _total_bytes(members: Members, config: BlockConfig, n_bins: int) -> int:
    return sum(config.blocks_per_speaker * config.block_bytes(len(items), n_bins) for items in members.values())


def _compression(gzip: bool):
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED


def fill_empty_shards(
    written: List[Tuple[str, int, int]], prefix: str, shards: int, gzip: bool, staging: str
) -> Iterator[Tuple[str, int, int]]:
    """Every shard name exists, also those no block was drawn for (an empty file), so that
    `-of-NNNNN` is the whole set; the staging folder goes (crops a retried worker staged and no
    shard read)."""
    done = {path for path, _, _ in written}
    yield from written
    for index in range(shards):
        path = shard_name(prefix, index, shards, gzip)
        if path not in done:
            FileSystems.create(path, compression_type=_compression(gzip)).close()
            yield path, 0, 0
    _remove_staging(staging)


def _remove_staging(staging: str) -> None:
    """The staging folder and whatever is left in it (a folder locally; names under a prefix on
    object storage, which has no folders)."""
    if not storage.is_uri(staging):
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        return
    left = [m.path for m in FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list]
    if left:
        FileSystems.delete(left)


class WriteSpeakerBlocks(beam.PTransform):
    """Feature shard paths of one split -> blocks under `<prefix>-SSSSS-of-NNNNN.tfrecord[.gz]`;
    returns {BLOCK_FILES: (path, blocks, bytes) per shard, BLOCK_STATS: counts}. `members`:
    (speaker, sorted eligible (utterance, session)) of the same split (EligibleMembers).

    Only metadata crosses a Beam shuffle: the crops go through staging files, one per (feature
    shard, block shard), which each block shard's writer reads back; so the job's memory is one
    feature shard's crops where it is read and one block shard's where it is written, on the
    DirectRunner as on a cluster."""

    def __init__(self, config: BlockConfig, members: beam.PCollection, n_bins: int, prefix: str) -> None:
        super().__init__()
        self._config, self._members, self._n_bins, self._prefix = config.validate(), members, n_bins, prefix

    def expand(self, paths):
        config, n_bins, prefix, gzip = self._config, self._n_bins, self._prefix, self._config.gzip
        staging = FileSystems.join(os.path.dirname(prefix), STAGING_DIR)
        members = AsDict(self._members)
        listed = self._members | "ListMembers" >> beam.combiners.ToDict()
        shard_count = listed | "ShardCount" >> beam.Map(lambda m: config.shard_count(_total_bytes(m, config, n_bins)))
        shards = AsSingleton(shard_count)
        crops = (
            paths
            | "SpreadShards" >> beam.Reshuffle()
            | "CropUtterances"
            >> beam.ParDo(CropUtterances(config, n_bins, staging), members=members, shards=shards).with_outputs(
                BLOCK_STATS, main="staged"
            )
        )
        files = (
            crops["staged"]
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(write_shard, members=members, prefix=prefix, shards=shards, config=config)
            | "ListShards" >> beam.combiners.ToList()
            | "FillEmptyShards"
            >> beam.FlatMap(fill_empty_shards, prefix=prefix, shards=shards, gzip=gzip, staging=staging)
        )
        per_speaker = self._members | "SpeakerStats" >> beam.Map(speaker_stats, config=config)
        stats = (crops[BLOCK_STATS], per_speaker) | "FlattenStats" >> beam.Flatten()
        return {BLOCK_FILES: files, BLOCK_STATS: stats}


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


class WriteChosen(beam.DoFn):
    """A feature shard (its index among the split's shards, its path) -> the chosen utterances'
    records, bytes unchanged (so that the sample reads as the feature records do), written in the
    shard's own order to the sample's shard of the same index; yields (path, utterance ids,
    bytes on disk). Memory: the chosen records of one feature shard; nothing crosses a shuffle
    (which the DirectRunner would hold in memory whole)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def process(self, element: Tuple[int, str], chosen: Mapping[str, Tuple[str, int]], shards: int):
        from speechpipe.io.example_proto import Example, frame_record, read_tfrecord_file

        index, path = element
        ids: List[str] = []
        payloads: List[bytes] = []
        for serialized in read_tfrecord_file(path) if chosen else ():
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
            ids.append(utterance)
            payloads.append(frame_record(serialized))
        # Every shard name exists, also a shard none of whose records was chosen (an empty file),
        # so that `-of-NNNNN` is the whole set.
        target = backend_sample.backend_shard_name(self._prefix, index, shards)
        if not storage.is_uri(target):
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with FileSystems.create(target, compression_type=_compression(False)) as f:
            for payload in payloads:
                f.write(payload)
        yield target, ids, sum(len(p) for p in payloads)


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

    def __init__(self, split: str, max_utterances: int, seed: int, folder: str) -> None:
        super().__init__()
        if backend_sample.check_max_utterances(max_utterances) == 0:
            raise ValueError("max_utterances=0: no sample to write")
        self._split, self._max, self._seed = split, max_utterances, seed
        self._folder = folder

    def expand(self, inputs):
        from apache_beam.io.filesystems import FileSystems

        split, seed, cap = self._split, self._seed, self._max
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
        # One sample shard per feature shard: the shards need no shuffle of the records.
        shards = AsSingleton(inputs["shards"] | "CountShards" >> beam.combiners.Count.Globally())
        return (
            inputs["shards"]
            | "ListFeatureShards" >> beam.combiners.ToList()
            | "NumberShards" >> beam.FlatMap(lambda paths: enumerate(sorted(paths)))
            | "SpreadShards" >> beam.Reshuffle()
            | "WriteChosen" >> beam.ParDo(WriteChosen(prefix), chosen=chosen, shards=shards)
            | "ListWritten" >> beam.combiners.ToList()
            | "SortWritten" >> beam.Map(sorted)
            | "CheckWritten" >> beam.Map(check_written, plan=plan, chosen=chosen, split=split)
        )
