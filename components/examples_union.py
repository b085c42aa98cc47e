"""ExamplesUnion: every span's Examples as ONE Examples artifact, for the trainers and pushers.

With more than one span, the trainers read every span's train and validation splits. A TFX
channel union (`tfx.types.channel.union`) does that for LocalDagRunner, but KubeflowV2DagRunner
compiles no union ("Only single Channel is supported"): in a KFP v2 spec each task input is one
output of one upstream task. So this node takes each span's Examples as its own input
(`span_0` ... `span_<N-1>`, a ComponentSpec built for N) and publishes one Examples artifact whose
`Split-<name>/` folders each hold one file, a shard manifest (`Split-<name>/shards.json`,
`speechpipe.io.records.SHARD_MANIFEST`), that lists every span's shards of that split where
they are: their URIs, bytes and record counts. Nothing is copied: the union takes a few KB
whatever the corpus's size, and making it again for a new set of spans costs one listing of
every span's split folders. Every reader of split folders (`speechpipe.training.expand_files`,
hence the trainers and evaluators; `speechpipe.io.records.shard_paths`, hence the segment table
and the read-back tools) resolves a manifest into the listed shards through
`speechpipe.io.records.resolve_shards`, and checks that each is still there with its recorded
size: a span artifact deleted or rewritten under a union is an error naming the shard, never a
silently smaller training set. The span artifacts must therefore live as long as the unions
that list them (they are also the cache of the per-span nodes, so they are kept anyway).

Manifest (JSON): `{"format": "speechpipe.shard_manifest/1", "split", "files", "bytes",
"records", "shards": [{"uri", "bytes", "records", "span", "examples_id"}, ...]}`, shards in span
order, each span's in name order. `records` per shard comes from the span's `summary.json` (the
feature job's read-back counts) and is checked against the span's `good` count; it is null for a
span without a summary. A split mixing GZIP (`.gz`) and uncompressed shards is refused here, as
the trainers' reader refuses it.

The output carries what FeatureGen's output carries, for all spans together: `split_names`
(train, validation, test), `span` (the newest span's number), `version`, the feature config
(every span must have the same one), the summed `good`, `dead_letter`, `inputs` and
`audio_hours`, plus `spans` and `span_examples_ids` (the members, in span order), which the
registry pusher tags as the model's lineage; ML Metadata records every span as an input of this
node. The first span's `global_stats.json` (a few KB) is copied to the artifact's root, where
the trainers look for it (`speechpipe.training.find_global_stats`: the first span's statistics
serve a globally normalised model, as with the channel union), and `union.json` at the root
lists each member and the per-split totals.

The pipeline adds the node only when there is more than one span; a single span's Examples go
to the trainers directly.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
from typing import Any, Dict, List, Sequence, Tuple

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter

from speechpipe.filenames import GLOBAL_STATS_FILE, SHARD_PREFIX, SPLIT_PREFIX, SUMMARY_FILE
from speechpipe.io import storage

log = logging.getLogger(__name__)

INPUT_PREFIX = "span_"
OUTPUT_KEY = "examples"
UNION_FILE = "union.json"
LIST_THREADS = 16  # split folders listed at once (gfile's calls release the GIL)


class ExamplesUnionError(RuntimeError):
    """The spans cannot be joined (different feature configs, mixed compression, a span whose shards
    disagree with its own counts, ...)."""


class ExamplesUnionSpec(types.ComponentSpec):
    """The base spec: no inputs. `union_spec_class(n)` adds `span_0` ... `span_<n-1>`."""

    PARAMETERS: Dict[str, Any] = {}
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {OUTPUT_KEY: ChannelParameter(type=standard_artifacts.Examples)}


def input_key(index: int) -> str:
    return f"{INPUT_PREFIX}{index}"


@functools.lru_cache(maxsize=None)
def union_spec_class(count: int) -> type:
    """The ComponentSpec with one single-channel Examples input per span."""
    if count < 2:
        raise ValueError(f"an ExamplesUnion joins 2 or more spans, not {count}")
    inputs = {input_key(i): ChannelParameter(type=standard_artifacts.Examples) for i in range(count)}
    return type(f"ExamplesUnionSpec{count}", (ExamplesUnionSpec,), {"INPUTS": inputs, "__module__": __name__})


def _files(folder: str) -> List[Tuple[str, int]]:
    """(name, bytes) of the plain files directly in a folder (local or URI), sorted by name."""
    from tfx.dsl.io import fileio

    out = []
    # A glob, not listdir: on object stores (and TensorFlow's ram://) a "folder" is a name prefix.
    for path in sorted(fileio.glob(storage.join(folder, "*"))):
        stat = fileio.stat(path)
        if stat.is_directory:
            continue
        out.append((storage.basename(path.rstrip("/")), int(stat.length)))
    return out


def _json_property(artifact: types.Artifact, name: str) -> Dict[str, Any]:
    return json.loads(artifact.get_string_custom_property(name) or "{}")


def _members(input_dict: Dict[str, List[types.Artifact]]) -> List[Tuple[int, types.Artifact]]:
    """(span index, artifact) in span order, from the `span_<i>` inputs (`span_10` after `span_9`)."""
    members = []
    for key, artifacts in input_dict.items():
        if not key.startswith(INPUT_PREFIX):
            continue
        members.append((int(key[len(INPUT_PREFIX) :]), artifact_utils.get_single_instance(list(artifacts))))
    return sorted(members, key=lambda m: m[0])


def _span_summary(member: types.Artifact) -> Dict[str, Any]:
    """The span's summary.json (the feature job's), {} when it has none."""
    path = storage.join(member.uri, SUMMARY_FILE)
    return storage.read_json(path) if storage.exists(path) else {}


def _list_shards(index: int, member: types.Artifact, split: str, summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The manifest entries of one member's split: every shard file in its split folder, with its
    bytes and (from the summary) its records."""
    folder = storage.join(member.uri, SPLIT_PREFIX + split)
    found = [(name, size) for name, size in _files(folder) if name.startswith(SHARD_PREFIX + "-")]
    counted = (summary.get("shards") or {}).get(split) if summary else None
    if counted is not None:
        names = {name for name, _ in found}
        if set(counted) != names:
            raise ExamplesUnionError(
                f"span {member.span} ({member.uri}), split {split}: the folder holds shards {sorted(names)}, its "
                f"summary.json counted {sorted(counted)}"
            )
        good = _json_property(member, "good")
        if split in good and sum(int(n) for n in counted.values()) != int(good[split]):
            raise ExamplesUnionError(
                f"span {member.span} ({member.uri}), split {split}: its shards hold "
                f"{sum(int(n) for n in counted.values())} records, its `good` property says {good[split]}"
            )
    return [
        {
            "uri": storage.join(folder, name),
            "bytes": size,
            "records": int(counted[name]) if counted is not None else None,
            "span": int(member.span or 0),
            "input": input_key(index),
            "examples_id": member.id,
        }
        for name, size in found
    ]


def union_examples(members: Sequence[Tuple[int, types.Artifact]], output: types.Artifact) -> Dict[str, Any]:
    """Writes `output`'s shard manifests, listing every member's shards, and sets its properties;
    returns the record written to `union.json`."""
    from tfx.dsl.io import fileio

    from speechpipe.io import records

    if len(members) < 2:
        raise ExamplesUnionError(f"an ExamplesUnion joins 2 or more spans, got {len(members)}")
    configs = {m.get_string_custom_property("feature_config") for _, m in members}
    if len(configs) > 1:
        raise ExamplesUnionError(
            "the spans' features were computed with different feature configs, they cannot "
            f"train one model: {sorted(configs)}"
        )
    splits: List[str] = []
    for _, member in members:
        for split in artifact_utils.decode_split_names(member.split_names or "[]"):
            if split not in splits:
                splits.append(split)
    if not splits:
        raise ExamplesUnionError("no member has split_names")

    summaries = {index: _span_summary(member) for index, member in members}
    listed: Dict[str, List[Dict[str, Any]]] = {split: [] for split in splits}
    # One listing per member and split; on object stores several at once.
    jobs = [(index, member, split) for index, member in members for split in splits]
    with concurrent.futures.ThreadPoolExecutor(max_workers=LIST_THREADS) as pool:
        for (_, _, split), shards in zip(jobs, pool.map(lambda j: _list_shards(*j, summaries[j[0]]), jobs)):
            listed[split] += shards
    for split, shards in listed.items():
        if len({records.compression_of(s["uri"]) for s in shards}) > 1:
            raise ExamplesUnionError(
                f"split {split} mixes GZIP (.gz) and uncompressed shards, which one reader "
                "cannot read: " + ", ".join(s["uri"] for s in shards)
            )
        if len({s["uri"] for s in shards}) != len(shards):
            raise ExamplesUnionError(f"split {split}: a shard is listed twice (the same span given twice?)")

    storage.makedirs(output.uri)
    record: Dict[str, Any] = {"splits": splits, "members": [], "totals": {}}
    for index, member in members:
        record["members"].append(
            {
                "span": member.span,
                "input": input_key(index),
                "examples_id": member.id,
                "uri": member.uri,
                "shards": {split: sum(s["input"] == input_key(index) for s in listed[split]) for split in splits},
            }
        )
    for split in splits:
        target = storage.join(output.uri, SPLIT_PREFIX + split)
        storage.makedirs(target)
        # The output folder is this execution's own; files in it can only be a retried attempt's
        # (a KFP retry keeps the output URI): they go, so the folder holds the manifest alone.
        leftovers = _files(target)
        if leftovers:
            log.warning("%s: removing %d files of an earlier attempt", target, len(leftovers))
            for name, _ in leftovers:
                fileio.remove(storage.join(target, name))
        shards = listed[split]
        counts = [s["records"] for s in shards]
        manifest = {
            "format": records.MANIFEST_FORMAT,
            "split": split,
            "files": len(shards),
            "bytes": sum(s["bytes"] for s in shards),
            "records": None if None in counts else sum(counts),
            "shards": [{k: s[k] for k in ("uri", "bytes", "records", "span", "examples_id")} for s in shards],
        }
        storage.write_json(records.manifest_path(target), manifest, indent=1, sort_keys=True)
        record["totals"][split] = {
            "files": manifest["files"],
            "bytes": manifest["bytes"],
            "records": manifest["records"],
        }
        # Read back as the trainers will: the manifest parses and every listed shard checks out.
        if records.split_shards(target, records.FILEIO) != [s["uri"] for s in shards]:
            raise ExamplesUnionError(f"split {split}: the manifest written to {target} does not read back")

    # The first span's global statistics, where the trainers look for them.
    for _, member in members:
        stats = storage.join(member.uri, GLOBAL_STATS_FILE)
        if fileio.exists(stats):
            fileio.copy(stats, storage.join(output.uri, GLOBAL_STATS_FILE), overwrite=True)
            record["global_stats_from"] = member.span
            break

    good: Dict[str, int] = {}
    dead_total, by_reason = 0, {}
    for _, member in members:
        for split, n in _json_property(member, "good").items():
            good[split] = good.get(split, 0) + int(n)
        dead = _json_property(member, "dead_letter")
        dead_total += int(dead.get("total", 0))
        for reason, n in (dead.get("by_reason") or {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
    spans = [int(m.span or 0) for _, m in members]
    output.span = max(spans)
    output.version = 0
    output.split_names = artifact_utils.encode_split_names(splits)
    output.set_string_custom_property("spans", ",".join(str(s) for s in spans))
    output.set_string_custom_property("span_examples_ids", ",".join(str(m.id) for _, m in members))
    output.set_string_custom_property("feature_config", configs.pop() or "")
    output.set_string_custom_property(
        "input_path", json.dumps([m.get_string_custom_property("input_path") for _, m in members])
    )
    output.set_string_custom_property(
        "input_fingerprint", json.dumps([m.get_string_custom_property("input_fingerprint") for _, m in members])
    )
    output.set_string_custom_property("good", json.dumps(good, sort_keys=True))
    output.set_string_custom_property(
        "dead_letter", json.dumps({"total": dead_total, "by_reason": dict(sorted(by_reason.items()))}, sort_keys=True)
    )
    output.set_int_custom_property("inputs", sum(int(m.get_int_custom_property("inputs") or 0) for _, m in members))
    output.set_float_custom_property(
        "audio_hours", sum(float(m.get_float_custom_property("audio_hours") or 0.0) for _, m in members)
    )
    record.update({"spans": spans, "good": good})
    storage.write_json(storage.join(output.uri, UNION_FILE), record, indent=1, sort_keys=True)
    log.info("examples union of spans %s: %s", spans, record["totals"])
    return record


def member_spans(examples: Sequence[types.Artifact]) -> List[Tuple[str, str]]:
    """(span, ML Metadata id) of every span behind some Examples artifacts, in span order: a
    union stands for its members (its `spans` and `span_examples_ids`), any other artifact for
    itself. For lineage tags (components/registry_pusher.py)."""
    out: List[Tuple[str, str]] = []
    for artifact in sorted(examples, key=lambda a: a.span or 0):
        spans = artifact.get_string_custom_property("spans") if artifact.has_custom_property("spans") else ""
        ids = (
            artifact.get_string_custom_property("span_examples_ids")
            if artifact.has_custom_property("span_examples_ids")
            else ""
        )
        if spans and ids and len(spans.split(",")) == len(ids.split(",")):
            out += list(zip(spans.split(","), ids.split(",")))
        else:
            out.append((str(artifact.span), str(artifact.id)))
    return out


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        output = artifact_utils.get_single_instance(output_dict[OUTPUT_KEY])
        union_examples(_members(input_dict), output)


class ExamplesUnion(base_component.BaseComponent):
    """`ExamplesUnion([span0_examples, span1_examples, ...])`: one single-channel input per span
    (`span_<i>`), the output `examples`. Build it only for two or more spans."""

    SPEC_CLASS = ExamplesUnionSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: Sequence[types.BaseChannel]) -> None:
        examples = list(examples)
        spec_class = union_spec_class(len(examples))
        spec = spec_class(
            **{input_key(i): channel for i, channel in enumerate(examples)},
            **{OUTPUT_KEY: types.Channel(type=standard_artifacts.Examples)},
        )
        super().__init__(spec=spec)
