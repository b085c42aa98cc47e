"""The names speechpipe gives to what it writes: one definition for every reader and writer.

Import-free (no TensorFlow, Beam or MLflow), so the lightest module of any layer can name a file
another layer writes. TFX's own names (`Split-<name>`, `Format-Serving`) are here because our
readers and writers must agree with TFX's."""

from __future__ import annotations

# A corpus or span: one JSON line per utterance (the demo corpus writes one; spans and jobs read it).
MANIFEST_FILE = "manifest.jsonl"

# Feature records, as TFX lays out an Examples artifact: one folder per split.
SPLIT_PREFIX = "Split-"
SPLIT_DIR = SPLIT_PREFIX + "{split}"
SHARD_PREFIX = "data_tfrecord"
SHARD_MANIFEST = "shards.json"  # a split folder that lists shards held elsewhere (ExamplesUnion)

# What the feature job writes beside the split folders.
SUMMARY_FILE = "summary.json"
GLOBAL_STATS_FILE = "global_stats.json"
COUNTS_PREFIX = "counts/counts"
INDEX_PREFIX = "index/utterances"
DEAD_LETTER_PREFIX = "dead_letter/dead_letter"

# What the pair job writes.
TRIALS_FILE = "trials_{split}.txt"
# The speaker branch's training input as one Examples artifact (SpeakerBlockGen): its speaker
# blocks in Split-train, the validation split's shards in Split-validation, and the capped sample
# of whole training utterances the back end is fitted on in Split-backend.
BACKEND_SPLIT = "backend"

# Inside model and evaluation artifacts.
RESULT_FILE = "training_result.json"
EVALUATION_FILE = "evaluation.json"
SERVING_DIR = "Format-Serving"  # TFX's serving model folder in a Model artifact


def split_dir(split: str) -> str:
    """The folder of one split inside an Examples artifact (`Split-train`)."""
    return SPLIT_DIR.format(split=split)


def split_of(folder_name: str) -> str:
    """The split a `Split-<name>` folder holds."""
    if not folder_name.startswith(SPLIT_PREFIX):
        raise ValueError(f"{folder_name!r} is not a split folder ({SPLIT_PREFIX}<name>)")
    return folder_name[len(SPLIT_PREFIX) :]
