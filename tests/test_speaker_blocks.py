"""Speaker blocks: the rules (speechpipe.speakers.block_records), the Beam writer
(speechpipe.jobs.speaker_blocks, in the pair job), and the tf.data reader
(speechpipe.speakers.speaker_blocks).

Feature records are generated here (`write_features`) in the feature job's layout, with features
that say where they come from (every frame holds its utterance's number and its frame index), so
that a stored or read segment can be traced back to its utterance and offset."""

from __future__ import annotations

import glob
import json
import os
from collections import Counter, defaultdict
from typing import Dict, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from speechpipe.io import records
from speechpipe.io.example_proto import frame_record
from speechpipe.jobs import pairs_job
from speechpipe.jobs.speaker_blocks import BLOCK_FILES, BLOCK_STATS, WriteSpeakerBlocks
from speechpipe.speakers import block_records as fmt
from speechpipe.validation import ConfigError

IN_MEMORY = "--direct_running_mode=in_memory"
BINS = 4

# speaker -> [(session, frames)]: enough utterances (20 > 2K), exactly K, fewer than K, one
# session only, and one with utterances shorter than a segment or than a stored segment.
SPEAKERS: Dict[str, List[Tuple[str, int]]] = {
    "id10001": [(f"s{i % 3}", 90 + 7 * i) for i in range(20)],
    "id10002": [(f"s{i % 2}", 120) for i in range(8)],
    "id10003": [("s0", 80), ("s1", 75), ("s1", 200)],
    "id10004": [("s0", 64 + i) for i in range(10)],
    "id10005": [("s0", 20), ("s1", 45), ("s2", 100), ("s0", 61), ("s1", 300), ("s2", 39)],
}
K = 8


def utterance_number(speaker: str, index: int) -> int:
    return 1000 * int(speaker[2:]) % 100000 + index


def features_of(speaker: str, index: int, frames: int) -> np.ndarray:
    """[frames, BINS]: bin 0 the utterance's number, bin 1 the frame index (both exact in float16)."""
    out = np.zeros((frames, BINS), np.float32)
    out[:, 0] = utterance_number(speaker, index) % 2048
    out[:, 1] = np.arange(frames)
    out[:, 2] = 0.5
    return out


def write_features(root: str, speakers: Dict[str, List[Tuple[str, int]]] = SPEAKERS, shards: int = 3) -> str:
    """Feature records of the train split in `shards` files, and the index, as the feature job lays them out."""
    split_dir = os.path.join(root, "Split-train")
    os.makedirs(split_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "index"), exist_ok=True)
    payloads: List[List[bytes]] = [[] for _ in range(shards)]
    lines = []
    n = 0
    for speaker, utterances in speakers.items():
        for i, (session, frames) in enumerate(utterances):
            utterance = f"{speaker}/{session}/{i:05d}"
            example = records.UtteranceFeatures(
                utterance, speaker, session, "train", features_of(speaker, i, frames), frames / 100
            )
            payloads[n % shards].append(records.encode_example(example))
            n += 1
            lines.append(
                json.dumps(
                    {
                        "utterance": utterance,
                        "speaker": speaker,
                        "session": session,
                        "split": "train",
                        "num_frames": frames,
                    }
                )
            )
    for s, shard in enumerate(payloads):
        with open(os.path.join(split_dir, f"data_tfrecord-{s:05d}-of-{shards:05d}"), "wb") as f:
            f.write(b"".join(frame_record(p) for p in shard))
    with open(os.path.join(root, "index", "utterances-00000-of-00001.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"features": {"n_bins": BINS}}, f)
    return root


def eligible(config: fmt.BlockConfig) -> Dict[str, int]:
    return {s: sum(f >= config.segment_frames for _, f in u) for s, u in SPEAKERS.items()}


def run_writer(root: str, out: str, config: fmt.BlockConfig) -> List[str]:
    """The writer alone, on a TestPipeline; returns the shard files."""
    counts = eligible(config)
    prefix = os.path.join(out, "blocks")
    shards = sorted(glob.glob(os.path.join(root, "Split-train", "data_tfrecord-*")))
    expected_blocks = len(SPEAKERS) * config.blocks_per_speaker

    def check_files(files):
        assert sum(blocks for _, blocks, _ in files) == expected_blocks
        names = sorted(os.path.basename(path) for path, _, _ in files)
        assert names == [
            os.path.basename(fmt.shard_name(prefix, i, len(files), config.gzip)) for i in range(len(files))
        ]

    members = {
        speaker: sorted(
            (f"{speaker}/{session}/{i:05d}", session)
            for i, (session, frames) in enumerate(utterances)
            if frames >= config.segment_frames
        )
        for speaker, utterances in SPEAKERS.items()
    }
    with BeamTestPipeline(options=PipelineOptions([IN_MEMORY])) as p:
        member_pc = p | "Members" >> beam.Create(sorted(members.items()))
        written = p | "Shards" >> beam.Create(shards) | WriteSpeakerBlocks(config, member_pc, BINS, prefix)
        assert_that(written[BLOCK_FILES] | beam.combiners.ToList(), lambda lists: check_files(lists[0]), label="Files")
        assert_that(
            written[BLOCK_STATS] | beam.Map(lambda c: c.get("excluded_short", 0)) | beam.CombineGlobally(sum),
            equal_to([sum(len(u) for u in SPEAKERS.values()) - sum(counts.values())]),
            label="Short",
        )
    return sorted(glob.glob(os.path.join(out, "blocks-*")))


def read_all(files: Sequence[str]) -> List[List[fmt.SpeakerBlock]]:
    return [fmt.read_block_file(path) for path in files]


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> str:
    return write_features(str(tmp_path_factory.mktemp("features")))


@pytest.fixture(scope="module")
def written(features, tmp_path_factory) -> Tuple[fmt.BlockConfig, List[str]]:
    config = fmt.BlockConfig(blocks_per_speaker=12, shard_mb=0.05, seed=3)
    return config, run_writer(features, str(tmp_path_factory.mktemp("blocks")), config)


# ----------------------------------------------------------------------------------------------
# Rules


def test_config_validates_and_sizes_blocks():
    config = fmt.BlockConfig().validate()
    assert config.segments_for(10) == 10 and config.segments_for(200) == 16 and config.segments_for(3) == 8
    assert config.uses_per_utterance(10) == 16 and config.uses_per_utterance(182) == 2
    # 16 segments x 60 frames x 80 bins x 2 bytes, plus ids: the VoxCeleb-sized block
    assert config.block_bytes(200, 80) == 256 + 16 * (60 * 80 * 2 + 64)
    for bad in (
        dict(stored_segments=4),
        dict(stored_frames=30),
        dict(blocks_per_speaker=0),
        dict(shard_mb=0),
    ):
        with pytest.raises(ConfigError):
            fmt.BlockConfig(**bad).validate()


def test_block_positions_are_distinct_and_balanced():
    config = fmt.BlockConfig(blocks_per_speaker=7)
    for n in (3, 8, 10, 16, 17, 50):
        positions = fmt.block_positions(n, config)
        assert len(positions) == 7
        uses = Counter(p for block in positions for p in block)
        assert max(uses.values()) <= config.uses_per_utterance(n)
        assert max(uses.values()) - min(uses[p] for p in range(n)) <= 1
        for block in positions:
            assert len(block) == config.segments_for(n)
            if n >= K:
                assert len(set(block)) == len(block)  # distinct utterances
            else:
                assert set(block) == set(range(n))  # every utterance, some twice


def test_block_order_interleaves_sessions():
    items = [(f"u{i}", "a") for i in range(6)] + [(f"v{i}", "b") for i in range(3)] + [("w0", "c")]
    order = fmt.block_order(items, 0, "spk")
    assert sorted(order) == list(range(10))
    assert len({items[i][1] for i in order[:3]}) == 3  # the first three: one per session
    assert fmt.block_order(items, 0, "spk") == order
    assert any(fmt.block_order(items, seed, "spk") != order for seed in range(1, 5))


def test_crops_are_stratified_and_short_utterances_padded():
    rng = np.random.default_rng(0)
    offsets = fmt.crop_offsets(1000, 60, 4, rng)
    assert all(lo <= o < hi for o, lo, hi in zip(offsets, (0, 236, 471, 706), (236, 471, 706, 941)))
    lengths, crops = fmt.crop_utterance(features_of("id10001", 0, 45), 2, 60, rng)
    assert lengths.tolist() == [45, 45] and crops.dtype == np.float16 and crops.shape == (2, 60, BINS)
    assert not crops[:, 45:].any()


def test_block_record_round_trips():
    block = fmt.SpeakerBlock(
        "id1", 3, 5, ["id1/a/1", "id1/b/2"], ["a", "b"], np.array([60, 41]), np.ones((2, 60, BINS), np.float16), 16
    )
    back = fmt.decode_block(fmt.encode_block(block))
    assert (back.speaker, back.label, back.block, back.utterances, back.sessions, back.max_segments) == (
        "id1",
        3,
        5,
        block.utterances,
        ["a", "b"],
        16,
    )
    assert back.lengths.tolist() == [60, 41] and np.array_equal(back.segments, block.segments)


# ----------------------------------------------------------------------------------------------
# The writer


def check_segment(block: fmt.SpeakerBlock, j: int) -> None:
    """Segment j is a crop of the utterance it names: that utterance's frames, consecutive."""
    speaker, session, name = block.utterances[j].split("/")
    assert speaker == block.speaker and session == block.sessions[j]
    index = int(name)
    frames = SPEAKERS[speaker][index][1]
    length = int(block.lengths[j])
    segment = block.segments[j].astype(np.float32)
    assert length == min(frames, 60)
    assert np.all(segment[:length, 0] == utterance_number(speaker, index) % 2048)
    start = int(segment[0, 1])
    assert np.array_equal(segment[:length, 1], np.arange(start, start + length)) and start + length <= frames
    assert not segment[length:].any()


def test_every_block_is_one_speaker_from_distinct_utterances(written):
    config, files = written
    counts = eligible(config)
    labels = {name: i for i, name in enumerate(sorted(counts))}
    per_speaker: Dict[str, List[int]] = defaultdict(list)
    for blocks in read_all(files):
        for block in blocks:
            per_speaker[block.speaker].append(block.block)
            n = counts[block.speaker]
            assert block.label == labels[block.speaker]
            assert len(block.utterances) == config.segments_for(n) == block.segments.shape[0]
            assert block.max_segments == config.stored_segments
            if n >= K:
                assert len(set(block.utterances)) == len(block.utterances)
            for j in range(len(block.utterances)):
                check_segment(block, j)
                assert SPEAKERS[block.speaker][int(block.utterances[j].split("/")[2])][1] >= config.segment_frames
            # Sessions interleaved: a block spans as many sessions as its speaker has.
            sessions = {s for s, f in SPEAKERS[block.speaker] if f >= config.segment_frames}
            assert len(set(block.sessions)) == min(len(sessions), len(block.sessions))
    # every speaker the same number of blocks, each once
    assert {s: sorted(b) for s, b in per_speaker.items()} == {s: list(range(12)) for s in SPEAKERS}


def test_crops_of_one_utterance_differ(written):
    _, files = written
    starts: Dict[str, set] = defaultdict(set)
    for blocks in read_all(files):
        for block in blocks:
            for j, utterance in enumerate(block.utterances):
                starts[utterance].add(int(block.segments[j, 0, 1]))
    # id10001/s0/00019 has 223 frames and is used in several blocks: at different offsets
    assert len(starts["id10001/s1/00019"]) > 1


def test_blocks_are_scattered_over_many_shards(written):
    config, files = written
    assert len(files) >= 6
    shards_of: Dict[str, set] = defaultdict(set)
    for index, blocks in enumerate(read_all(files)):
        assert len({b.speaker for b in blocks}) > 1 or len(blocks) <= 1
        for block in blocks:
            shards_of[block.speaker].add(index)
    assert all(len(shards) > 1 for shards in shards_of.values())


def test_seed_gives_the_same_blocks_and_another_seed_fresh_ones(features, written, tmp_path):
    config, files = written
    again = run_writer(features, str(tmp_path / "again"), config)

    def content(paths):
        return [sorted((b.speaker, b.block, b.segments.tobytes()) for b in blocks) for blocks in read_all(paths)]

    assert [os.path.basename(p) for p in again] == [os.path.basename(p) for p in files]
    assert content(again) == content(files)
    other = run_writer(features, str(tmp_path / "other"), fmt.BlockConfig(blocks_per_speaker=12, shard_mb=0.05, seed=4))
    drawn = {(b.speaker, b.block): b.segments.tobytes() for blocks in read_all(files) for b in blocks}
    fresh = {(b.speaker, b.block): b.segments.tobytes() for blocks in read_all(other) for b in blocks}
    assert drawn.keys() == fresh.keys()
    assert sum(drawn[key] != fresh[key] for key in drawn) > 0.9 * len(drawn)


# ----------------------------------------------------------------------------------------------
# The reader


def test_reader_gives_p_speakers_by_k_segments(written):
    import tensorflow as tf

    from speechpipe.speakers.speaker_blocks import block_dataset

    config, files = written
    p, k, frames = 3, 4, 40
    dataset = block_dataset(files, frames, p, k, seed=1, shuffle_blocks=16, cycle_length=3)
    assert dataset.element_spec == (
        tf.TensorSpec([p * k, frames, BINS], tf.float32),
        tf.TensorSpec([p * k], tf.int32),
    )
    stored = {
        (b.label, int(b.segments[j, 0, 0]), int(b.segments[j, 0, 1]) + o): None
        for blocks in read_all(files)
        for b in blocks
        for j in range(b.segments.shape[0])
        for o in range(int(b.lengths[j]) - frames + 1)
    }
    names = sorted(eligible(config))
    for x, labels in dataset.take(20).as_numpy_iterator():
        rows = labels.reshape(p, k)
        assert (rows == rows[:, :1]).all()  # K rows per block, one speaker each
        for i in range(p * k):
            segment = x[i]
            key = (int(labels[i]), int(segment[0, 0]), int(segment[0, 1]))
            assert key in stored  # a crop inside a stored segment of that speaker's blocks
            assert np.array_equal(segment[:, 1], segment[0, 1] + np.arange(frames))
            speaker = names[labels[i]]
            assert int(segment[0, 0]) in {utterance_number(speaker, j) % 2048 for j in range(len(SPEAKERS[speaker]))}
        for block in range(p):
            # K distinct utterances where the block's are distinct (its speaker has the writer's K)
            if eligible(config)[names[rows[block, 0]]] >= config.segments_per_speaker:
                assert len(set(x[block * k : (block + 1) * k, 0, 0])) == k


def test_reader_is_seeded(written):
    from speechpipe.speakers.speaker_blocks import block_dataset

    _, files = written

    def first(seed):
        return [x for x, _ in block_dataset(files, 40, 2, 4, seed=seed, shuffle_blocks=8).take(5).as_numpy_iterator()]

    a, b, c = first(5), first(5), first(6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def buffer_sizes(dataset) -> Dict[str, List[int]]:
    """The constant sizes each buffering dataset op of the graph was built with."""
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef.FromString(tf.raw_ops.DatasetToGraphV2(input_dataset=dataset._variant_tensor).numpy())
    nodes = {n.name: n for n in graph.node}

    def const(name: str):
        node = nodes.get(name.split(":")[0].lstrip("^"))
        if node is None or node.op != "Const" or not tf.as_dtype(node.attr["dtype"].type).is_integer:
            return None
        return int(tf.make_ndarray(node.attr["value"].tensor))

    sizes: Dict[str, List[int]] = defaultdict(list)
    for node in graph.node:
        if node.op.startswith(("Shuffle", "Prefetch", "ParallelInterleave", "Cache", "Batch")):
            sizes[node.op].append([const(i) for i in node.input[1:] if const(i) is not None])
    return dict(sizes)


def test_reader_memory_is_bounded_by_its_buffers_not_the_files(written):
    from speechpipe.speakers.speaker_blocks import block_dataset

    _, files = written
    few, all_files = (
        buffer_sizes(block_dataset(files[:2], 40, 2, 4, shuffle_blocks=8)),
        buffer_sizes(block_dataset(files, 40, 2, 4, shuffle_blocks=8)),
    )
    assert not any(op.startswith("Cache") for op in all_files)
    # the file list's shuffle holds names; the block shuffle holds shuffle_blocks blocks either way
    shuffles_few, shuffles_all = sorted(few["ShuffleDatasetV3"]), sorted(all_files["ShuffleDatasetV3"])
    assert [s[0] for s in shuffles_few] == [2, 8] and [s[0] for s in shuffles_all] == sorted([len(files), 8])
    assert few["PrefetchDataset"] == all_files["PrefetchDataset"]


def test_reader_refuses_k_above_the_stored_segments(written):
    from speechpipe.speakers.speaker_blocks import block_dataset

    _, files = written
    with pytest.raises(ConfigError, match="at most 16"):
        block_dataset(files, 40, 2, 17)
    with pytest.raises(ConfigError, match="store 60 frames"):
        block_dataset(files, 61, 2, 4)
    with pytest.raises(FileNotFoundError):
        block_dataset([os.path.join(os.path.dirname(files[0]), "nothing-*")], 40, 2, 4)


# ----------------------------------------------------------------------------------------------
# The pair job


def test_pair_job_writes_blocks_of_the_feature_records(tiny_features, tmp_path):
    from speechpipe.speakers.speaker_blocks import block_dataset

    out = str(tmp_path / "pairs")
    argv = [
        "--features",
        tiny_features,
        "--out",
        out,
        "--block_splits",
        "train",
        "--blocks_per_speaker",
        "4",
        IN_MEMORY,
    ]
    assert pairs_job.run(argv) == 0
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    train = list(records.read_split(tiny_features, "train"))
    speakers = sorted({u.speaker for u in train if u.features.shape[0] >= 40})
    counts = summary["blocks"]["splits"]["train"]
    assert counts["speakers"] == len(speakers) and counts["blocks"] == 4 * len(speakers)
    assert counts["excluded_short"] == sum(u.features.shape[0] < 40 for u in train)
    assert counts["bytes"] == sum(f["bytes"] for f in counts["files"]) > 0
    assert summary["blocks"]["config"]["blocks_per_speaker"] == 4
    files = sorted(glob.glob(os.path.join(out, fmt.BLOCKS_DIR, "train", fmt.BLOCKS_PATTERN)))
    assert [os.path.relpath(p, out) for p in files] == [f["file"] for f in counts["files"]]
    by_id = {u.utterance: u for u in train}
    for blocks in read_all(files):
        for block in blocks:
            assert all(by_id[u].speaker == block.speaker for u in block.utterances)
            j = 0
            source = by_id[block.utterances[j]].features.astype(np.float16)
            assert any(
                np.array_equal(source[o : o + 60], block.segments[j]) for o in range(source.shape[0] - 59)
            )  # a crop of that utterance's features
    x, labels = next(iter(block_dataset(out, 40, 2, 8, seed=0)))
    assert x.shape == (16, 40, summary["blocks"]["num_bins"]) and len(set(labels.numpy().tolist())) <= 2
    # a re-run keeps the blocks only with --overwrite, which replaces them
    with pytest.raises(FileExistsError):
        pairs_job.run(argv)


def test_pair_job_refuses_unknown_block_splits(tiny_features, tmp_path):
    with pytest.raises(pairs_job.PairsInputError, match="--block_splits"):
        pairs_job.run(["--features", tiny_features, "--out", str(tmp_path), "--block_splits", "dev", IN_MEMORY])


def test_gzip_blocks_read_alike(features, tmp_path):
    from speechpipe.speakers.speaker_blocks import block_dataset

    files = run_writer(features, str(tmp_path), fmt.BlockConfig(blocks_per_speaker=2, gzip=True))
    assert files and all(path.endswith(".tfrecord.gz") for path in files)
    assert sum(len(blocks) for blocks in read_all(files)) == 2 * len(SPEAKERS)
    x, labels = next(iter(block_dataset(files, 40, 2, 4)))
    assert x.shape == (8, 40, BINS) and labels.shape == (8,)


def test_speaker_block_gen_writes_the_training_input(tiny_features, tmp_path):
    from speechpipe.speakers.speaker_blocks import block_dataset
    from speechpipe.speakers.split_stream import read_index
    from tests.regressions.speaker_chain import speaker_block_gen

    training = speaker_block_gen(tiny_features, str(tmp_path / "input"), segments_per_speaker=2, blocks_per_speaker=4)
    speakers = {u.speaker for u in records.read_split(tiny_features, "train")}
    blocks = json.loads(training.get_string_custom_property("blocks"))
    assert blocks["speakers"] == len(speakers) and blocks["blocks"] == 4 * len(speakers)
    assert json.loads(training.split_names) == ["train", "validation", "backend"]
    # What TFX's Trainer passes (`<split>/*`) resolves through each split's manifest.
    x, labels = next(iter(block_dataset(os.path.join(training.uri, "Split-train", "*"), 40, 2, 2)))
    assert x.shape[:2] == (4, 40) and labels.shape == (4,)
    validation = records.split_shards(os.path.join(training.uri, "Split-validation"))
    assert validation == records.shard_paths(tiny_features, "validation")
    backend = read_index(os.path.join(training.uri, "Split-backend", "*"))
    assert set(backend.speakers) == speakers  # every training speaker, under the default cap
    assert os.path.exists(os.path.join(training.uri, "global_stats.json")) == os.path.exists(
        os.path.join(tiny_features, "global_stats.json")
    )
