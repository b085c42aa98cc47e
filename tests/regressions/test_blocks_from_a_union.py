"""SpeakerBlockGen hands the pair job an ExamplesUnion as --features: a folder of split manifests
with no index of its own (each span's index lies beside its shards). The job took the folder for
a manifest file and failed reading a directory ('IsADirectoryError ... while running ReadIndex')
on the second span of a speaker run. Writing blocks alone, it reads the spans' own indexes."""

import json
import os

from speechpipe.io import records
from speechpipe.jobs import pairs_job


def _union_of(features: str, root: str) -> str:
    """One span's Examples listed as a union lists it: a manifest per split, nothing copied."""
    for split in ("train", "validation", "test"):
        shards = records.shard_paths(features, split)
        folder = os.path.join(root, f"Split-{split}")
        os.makedirs(folder)
        manifest = {
            "format": records.MANIFEST_FORMAT,
            "split": split,
            "files": len(shards),
            "bytes": sum(os.path.getsize(p) for p in shards),
            "records": None,
            "shards": [{"uri": p, "bytes": os.path.getsize(p), "records": None} for p in shards],
        }
        with open(records.manifest_path(folder), "w", encoding="utf-8") as f:
            json.dump(manifest, f)
    return root


def test_blocks_alone_from_a_union_read_the_spans_indexes(tiny_features, tmp_path):
    union = _union_of(tiny_features, str(tmp_path / "union"))
    out = str(tmp_path / "out")
    argv = ["--features", union, "--out", out, "--trial-splits", "", "--pair-splits", "", "--block-splits", "train"]
    pairs_job.run(argv + ["--segments-per-speaker", "2", "--stored-segments", "4", "--direct_running_mode=in_memory"])
    with open(os.path.join(out, pairs_job.SUMMARY), encoding="utf-8") as f:
        summary = json.load(f)
    train_speakers = {u.speaker for u in records.read_split(tiny_features, "train")}
    assert summary["blocks"]["splits"]["train"]["speakers"] == len(train_speakers)
    assert summary["backend"]["splits"]["train"]["speakers"] == len(train_speakers)
    index = os.path.join(tiny_features, "index")
    assert sorted(summary["input"]["files"]) == sorted(os.path.join(index, f) for f in os.listdir(index))
