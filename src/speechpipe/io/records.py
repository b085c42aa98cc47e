"""The feature job's record format: one tf.train.Example per utterance.

Layout of a feature job's output folder (TFX's Examples layout, so ImportExampleGen and the
trainers read it unchanged):
    <out>/Split-<split>/data_tfrecord-SSSSS-of-NNNNN[.gz]   TFRecords, GZIP when named .gz
    <out>/summary.json, <out>/global_stats.json, <out>/dead_letter/*.jsonl
A split folder may instead hold a manifest listing shards elsewhere (`SHARD_MANIFEST`, below);
readers find a split's shards through `split_shards` / `resolve_shards` either way.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np

from speechpipe.filenames import SHARD_MANIFEST, SHARD_PREFIX, SPLIT_DIR

# Feature keys; schemas/features.pbtxt describes the same keys for TFDV.
UTTERANCE = "utterance"
SPEAKER = "speaker"
SESSION = "session"
SPLIT = "split"
NUM_FRAMES = "num_frames"
NUM_BINS = "num_bins"
# The feature matrix as raw little-endian float32 bytes, num_frames x num_bins, row-major: a
# FloatList costs more to build than decoding and computing the features together, and TF reads
# bytes back with tf.io.decode_raw.
FEATURES = "features"
FEATURES_DTYPE = "<f4"
DURATION = "duration"  # seconds of audio after resampling
PHONE_IDS = "phone_ids"  # int64 list; absent when the input has no transcript
PHONES = "phones"  # phones joined by spaces; absent when the input has no transcript
TEXT = "text"  # absent when the input has no text

# Uncompressed by default: GZIP saves 8 % on float spectrograms (146 -> 134 MB on the demo
# training split) and cost a quarter of the feature job's time.
COMPRESSIONS = ("none", "gzip")


def compression_of(path: str) -> str:
    """TF's compression_type for a shard, from its name (as TFX's readers decide too)."""
    return "GZIP" if path.endswith(".gz") else ""


@dataclass
class UtteranceFeatures:
    utterance: str
    speaker: str
    session: str
    split: str
    features: np.ndarray  # float32 [frames, bins]
    duration: float
    phone_ids: Optional[List[int]] = None
    phones: Optional[List[str]] = None
    text: Optional[str] = None


def encode_example(u: UtteranceFeatures) -> bytes:
    """A serialised tf.train.Example, built without importing TensorFlow (speechpipe.io.example_proto)."""
    from speechpipe.io.example_proto import BytesList, Example, Feature, Features, FloatList, Int64List

    def _bytes(value: str) -> Feature:
        return Feature(bytes_list=BytesList(value=[value.encode("utf-8")]))

    def _ints(values) -> Feature:
        return Feature(int64_list=Int64List(value=[int(v) for v in values]))

    frames, bins = u.features.shape
    feature = {
        UTTERANCE: _bytes(u.utterance),
        SPEAKER: _bytes(u.speaker),
        SESSION: _bytes(u.session),
        SPLIT: _bytes(u.split),
        NUM_FRAMES: _ints([frames]),
        NUM_BINS: _ints([bins]),
        FEATURES: Feature(
            bytes_list=BytesList(value=[np.ascontiguousarray(u.features, dtype=FEATURES_DTYPE).tobytes()])
        ),
        DURATION: Feature(float_list=FloatList(value=[u.duration])),
    }
    if u.phone_ids is not None:
        feature[PHONE_IDS] = _ints(u.phone_ids)
        feature[PHONES] = _bytes(" ".join(u.phones or []))
    if u.text is not None:
        feature[TEXT] = _bytes(u.text)
    # deterministic: map fields in key order, so the same input gives byte-identical records
    return Example(features=Features(feature=feature)).SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> UtteranceFeatures:
    from speechpipe.io.example_proto import Example

    example = Example.FromString(serialized)
    f = example.features.feature

    def _str(key: str) -> Optional[str]:
        return f[key].bytes_list.value[0].decode("utf-8") if key in f else None

    frames, bins = f[NUM_FRAMES].int64_list.value[0], f[NUM_BINS].int64_list.value[0]
    phones = _str(PHONES)
    return UtteranceFeatures(
        utterance=_str(UTTERANCE),
        speaker=_str(SPEAKER),
        session=_str(SESSION),
        split=_str(SPLIT),
        features=np.frombuffer(f[FEATURES].bytes_list.value[0], FEATURES_DTYPE)
        .astype(np.float32)
        .reshape(frames, bins),
        duration=float(f[DURATION].float_list.value[0]),
        phone_ids=list(f[PHONE_IDS].int64_list.value) if PHONE_IDS in f else None,
        phones=phones.split(" ") if phones else ([] if phones == "" else None),
        text=_str(TEXT),
    )


def split_dir(root: str, split: str) -> str:
    return os.path.join(root, SPLIT_DIR.format(split=split))  # "/"-joined: also right for URIs


def shard_paths(root: str, split: str) -> List[str]:
    """The split's shards (`split_shards`: its own, sorted, or those its manifest lists, checked);
    `root` is a local folder or a URI Beam's FileSystems knows."""
    return split_shards(split_dir(root, split), BEAM)


def read_split(root: str, split: str) -> Iterator[UtteranceFeatures]:
    """Every example of one split, shard by shard (for tests, tools and read-back checks); every
    record's checksums are verified."""
    from speechpipe.io.example_proto import read_tfrecord_file

    for path in shard_paths(root, split):
        for record in read_tfrecord_file(path):
            yield decode_example(record)


# ---------------------------------------------------------------------------------- shard manifests
# An Examples artifact may list its shards instead of holding them: a split folder with a
# manifest (`SHARD_MANIFEST`) stands for the shard files it names, wherever they are (the
# ExamplesUnion, components/examples_union.py, lists its spans' shards so that
# nothing is copied). Every reader of a split folder goes through `split_shards` /
# `resolve_shards`, which read the manifest and check each listed shard still has the bytes it
# had when it was listed; a folder without a manifest holds its shards itself.

MANIFEST_FORMAT = "speechpipe.shard_manifest/1"
FILEIO, BEAM = "fileio", "beam"  # the file layers of speechpipe.io.storage: TFX's fileio, Beam's FileSystems
STAT_THREADS = 16  # stats at once on object storage, one request each (gfile releases the GIL)


class ShardCheckError(OSError):
    """A shard a manifest lists is gone, or no longer has the bytes it had when it was listed."""


def manifest_path(split_folder: str) -> str:
    from speechpipe.io.storage import join

    return join(split_folder.rstrip("/"), SHARD_MANIFEST)


def _is_file(path: str, layer: str) -> bool:
    from speechpipe.io import storage

    if not storage.is_uri(path):
        return os.path.isfile(path)
    if layer == BEAM:
        return storage.beam_exists(path)
    return storage.exists(path) and not storage.isdir(path)


def _read_json(path: str, layer: str) -> dict:
    import json

    from speechpipe.io import storage

    if not storage.is_uri(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if layer == BEAM:
        return json.loads(storage.beam_read_bytes(path).decode("utf-8"))
    return storage.read_json(path)


def _glob(pattern: str, layer: str) -> List[str]:
    from speechpipe.io import storage

    if not storage.is_uri(pattern):
        return sorted(glob.glob(pattern))
    return storage.beam_match(pattern) if layer == BEAM else storage.glob(pattern)


def shard_sizes(paths: List[str], layer: str = FILEIO) -> Dict[str, Optional[int]]:
    """{path: bytes, or None where there is no such file}."""
    from speechpipe.io import storage

    local = [p for p in paths if not storage.is_uri(p)]
    sizes: Dict[str, Optional[int]] = {p: (os.path.getsize(p) if os.path.isfile(p) else None) for p in local}
    remote = [p for p in paths if storage.is_uri(p)]
    if not remote:
        return sizes
    if layer == BEAM:
        # One paged listing per folder (object stores list sizes with the names).
        from apache_beam.io.filesystem import BeamIOError
        from apache_beam.io.filesystems import FileSystems

        folders = sorted({storage.dirname(p) for p in remote})
        listed: Dict[str, int] = {}
        for folder in folders:
            try:
                (result,) = FileSystems.match([storage.join(folder, "*")])
            except BeamIOError:
                continue
            listed.update({m.path: int(m.size_in_bytes) for m in result.metadata_list})
        sizes.update({p: listed.get(p) for p in remote})
        return sizes
    import concurrent.futures

    from tfx.dsl.io import fileio

    def stat(path: str) -> Optional[int]:
        try:
            info = fileio.stat(path)
        except Exception:  # fileio raises its own NotFoundError per filesystem
            return None
        return None if info.is_directory else int(info.length)

    with concurrent.futures.ThreadPoolExecutor(max_workers=STAT_THREADS) as pool:
        sizes.update(zip(remote, pool.map(stat, remote)))
    return sizes


def read_manifest(split_folder: str, layer: str = FILEIO, check: bool = True) -> Optional[dict]:
    """The split folder's manifest, or None when it has none. `check`: every listed shard must
    exist with the bytes the manifest recorded (ShardCheckError naming the first that does not)."""
    path = manifest_path(split_folder)
    if not _is_file(path, layer):
        return None
    manifest = _read_json(path, layer)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ShardCheckError(
            f"{path}: not a shard manifest of format {MANIFEST_FORMAT} (format {manifest.get('format')!r})"
        )
    if check:
        shards = manifest["shards"]
        sizes = shard_sizes([s["uri"] for s in shards], layer)
        for shard in shards:
            found = sizes[shard["uri"]]
            if found is None:
                raise ShardCheckError(
                    f"shard {shard['uri']}, listed in {path}, is missing: the span's Examples "
                    "artifact it belongs to was deleted or moved after the union listed it"
                )
            if found != int(shard["bytes"]):
                raise ShardCheckError(
                    f"shard {shard['uri']}, listed in {path}, has {found} bytes where the "
                    f"manifest recorded {shard['bytes']}: it was truncated or rewritten after "
                    "the union listed it"
                )
    return manifest


def split_shards(split_folder: str, layer: str = FILEIO, name_pattern: str = f"{SHARD_PREFIX}-*") -> List[str]:
    """The shard files of one split folder, local or URI: those its manifest lists (checked, in
    the manifest's order), or the folder's own files matching `name_pattern` (sorted). With a
    manifest, `name_pattern` selects among the listed shards by file name."""
    import fnmatch

    from speechpipe.io.storage import basename, join

    manifest = read_manifest(split_folder, layer)
    if manifest is not None:
        return [s["uri"] for s in manifest["shards"] if fnmatch.fnmatchcase(basename(s["uri"]), name_pattern)]
    return _glob(join(split_folder.rstrip("/"), name_pattern), layer)


def resolve_shards(pattern: str, layer: str = FILEIO) -> List[str]:
    """The shard files a split folder, or a glob of files in one (TFX passes `<split>/*`), stands
    for: a folder's shards as `split_shards` finds them; a glob in a folder with a manifest
    selects among its listed shards (never the manifest itself); any other glob matches files."""
    from speechpipe.io import storage

    if _is_folder(pattern, layer):
        return split_shards(pattern, layer)
    folder, name = storage.dirname(pattern), storage.basename(pattern)
    if folder and glob.has_magic(name) and not glob.has_magic(folder) and _is_file(manifest_path(folder), layer):
        return split_shards(folder, layer, name)
    return _glob(pattern, layer)


def _is_folder(path: str, layer: str) -> bool:
    from speechpipe.io import storage

    if not storage.is_uri(path):
        return os.path.isdir(path)
    if glob.has_magic(path):
        return False
    if layer == BEAM:  # no folders on Beam's object stores: a prefix with a manifest or shards under it
        return _is_file(manifest_path(path), layer) or bool(storage.beam_match(storage.join(path, f"{SHARD_PREFIX}-*")))
    return storage.isdir(path)
