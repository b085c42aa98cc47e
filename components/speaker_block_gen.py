"""SpeakerBlockGen: the speaker branch's training input, built by the pair job
(src/speechpipe/jobs/pairs_job.py, its speaker blocks and back-end sample) as one Examples
artifact that TFX's Trainer takes as its `examples`:

    Split-train/shards.json       the training speakers' blocks (speechpipe.speakers.block_records),
                                  which the embedder trainer streams (fn_args.train_files)
    Split-validation/shards.json  the input's validation shards, where they are (fn_args.eval_files)
    Split-backend/shards.json     a capped, speaker-balanced, seeded sample of whole training
                                  utterances (feature records), which the back end is fitted on
    global_stats.json             the input's, where the trainers look for it
    job/                          the pair job's output (blocks/train/, backend/train/, summary.json)

Each split folder holds a shard manifest (speechpipe.io.records), so nothing is copied but the
blocks and the sample, and every reader checks the listed shards are still what they were.

Why a node of its own: the blocks are cut from every span's training split (the union the
trainer reads), while PairGen's trial list comes from the test span only; a new test list does
not rebuild the training input, and a new span rebuilds only this.
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

import json
from typing import Dict, List, Optional

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from speechpipe.filenames import BACKEND_SPLIT, GLOBAL_STATS_FILE, split_dir
from speechpipe.io import records, storage

JOB_DIR = "job"
SPLITS = ("train", "validation", BACKEND_SPLIT)


class TrainingInputError(RuntimeError):
    """The pair job's output does not hold what the trainer needs."""


def _entries(paths: List[str], counts: Optional[Dict[str, int]] = None) -> List[Dict[str, object]]:
    sizes = records.shard_sizes(paths, records.FILEIO)
    missing = [p for p in paths if sizes[p] is None]
    if missing:
        raise TrainingInputError(f"shards the pair job reported are missing: {missing[:3]}")
    return [{"uri": p, "bytes": int(sizes[p]), "records": (counts or {}).get(p)} for p in paths]


def write_split_manifest(root: str, split: str, entries: List[Dict[str, object]]) -> None:
    """`root`/Split-<split>/shards.json listing `entries` (uri, bytes, records or None)."""
    if not entries:
        raise TrainingInputError(f"split {split}: no shards to list")
    folder = storage.join(root, split_dir(split))
    storage.makedirs(folder)
    counts = [e["records"] for e in entries]
    manifest = {
        "format": records.MANIFEST_FORMAT,
        "split": split,
        "files": len(entries),
        "bytes": sum(int(e["bytes"]) for e in entries),
        "records": None if None in counts else sum(int(c) for c in counts),
        "shards": entries,
    }
    storage.write_json(records.manifest_path(folder), manifest, indent=1, sort_keys=True)


def validation_entries(examples_uri: str) -> List[Dict[str, object]]:
    """The input's validation shards as manifest entries: its own manifest's (an ExamplesUnion),
    or its folder's shards."""
    folder = storage.join(examples_uri, split_dir("validation"))
    manifest = records.read_manifest(folder, records.FILEIO)
    if manifest is not None:
        return [dict(s) for s in manifest["shards"]]
    return _entries(records.split_shards(folder, records.FILEIO))


def training_input_argv(
    features: str,
    out: str,
    seed: int,
    segments_per_speaker: int,
    blocks_per_speaker: int,
    segment_frames: int,
    backend_utterances: int,
) -> List[str]:
    """The pair job's arguments for the embedder's training input from `features` (a feature job's
    output or an Examples artifact): the training split's speaker blocks of 2K crops and its
    back-end sample, nothing else."""
    return [
        "--features",
        features,
        "--out",
        out,
        "--seed",
        str(seed),
        "--overwrite",
        "--trial-splits",
        "",
        "--pair-splits",
        "",
        "--block-splits",
        "train",
        "--blocks-from",
        features,
        "--segments-per-speaker",
        str(segments_per_speaker),
        "--stored-segments",
        str(2 * segments_per_speaker),
        "--blocks-per-speaker",
        str(blocks_per_speaker),
        "--segment-frames",
        str(segment_frames),
        # 1.5 segments: the reader's window moves by up to half a segment inside each crop.
        "--stored-frames",
        str(segment_frames * 3 // 2),
        "--backend-utterances",
        str(backend_utterances),
    ]


@component
def SpeakerBlockGen(  # TFX names components in CamelCase
    examples: InputArtifact[standard_artifacts.Examples],
    training_input: OutputArtifact[standard_artifacts.Examples],
    beam_args: Parameter[str] = "[]",
    seed: Parameter[int] = 0,
    segments_per_speaker: Parameter[int] = 8,  # the embedder's K (EmbedderTrainConfig)
    blocks_per_speaker: Parameter[int] = 16,
    segment_frames: Parameter[int] = 40,  # the embedder's segment (EmbedderConfig)
    backend_utterances: Parameter[int] = 10_000,  # EmbedderTrainConfig.backend_max_utterances
) -> None:
    from speechpipe.jobs import pairs_job

    out = storage.join(training_input.uri, JOB_DIR)
    argv = training_input_argv(
        examples.uri, out, seed, segments_per_speaker, blocks_per_speaker, segment_frames, backend_utterances
    )
    pairs_job.run(argv + list(json.loads(beam_args)))
    summary = storage.read_json(storage.join(out, pairs_job.SUMMARY))
    blocks = summary["blocks"]["splits"]["train"]
    backend = summary["backend"]["splits"]["train"]

    block_paths = records.split_shards(storage.join(out, pairs_job.BLOCKS_DIR, "train"), records.FILEIO, "blocks-*")
    backend_paths = records.split_shards(storage.join(out, pairs_job.BACKEND_DIR, "train"), records.FILEIO)
    if len(block_paths) != int(blocks["shards"]) or not backend_paths:
        raise TrainingInputError(
            f"{out}: {len(block_paths)} block shards where the summary counts {blocks['shards']}, "
            f"{len(backend_paths)} back-end shards"
        )
    write_split_manifest(training_input.uri, "train", _entries(block_paths))
    write_split_manifest(training_input.uri, "validation", validation_entries(examples.uri))
    write_split_manifest(training_input.uri, BACKEND_SPLIT, _entries(backend_paths))
    stats = storage.join(examples.uri, GLOBAL_STATS_FILE)
    if storage.exists(stats):
        storage.write_json(storage.join(training_input.uri, GLOBAL_STATS_FILE), storage.read_json(stats))

    training_input.split_names = json.dumps(list(SPLITS))
    training_input.span = int(examples.span or 0)
    training_input.set_string_custom_property("blocks", json.dumps(blocks, sort_keys=True))
    training_input.set_string_custom_property("backend_sample", json.dumps(backend, sort_keys=True))
    training_input.set_string_custom_property("feature_config", examples.get_string_custom_property("feature_config"))
