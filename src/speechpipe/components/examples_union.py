"""ExamplesUnion: every span's Examples as ONE Examples artifact, for the trainers and pushers.

With more than one span, the trainers read every span's train and validation splits. A TFX
channel union (`tfx.types.channel.union`) does that for LocalDagRunner, but KubeflowV2DagRunner
compiles no union ("Only single Channel is supported"): in a KFP v2 spec each task input is one
output of one upstream task. So this node takes each span's Examples as its own input
(`span_0` ... `span_<N-1>`, a ComponentSpec built for N) and publishes one Examples artifact whose
`Split-<name>/` folders hold every span's shards, copied through TFX's fileio (local folders,
gs://, any filesystem TensorFlow's gfile knows). A shard keeps the feature job's name with the
span put in: `data_tfrecord-00000-of-00004` of span 1 becomes `data_tfrecord-span1-00000-of-00004`
(the `.gz` suffix that marks compression stays at the end), so no two spans' shards collide and
the trainers' shard globs still match.

The output carries what FeatureGen's output carries, for all spans together: `split_names`
(train, validation, test), `span` (the newest span's number), `version`, the feature config
(every span must have the same one), the summed `good`, `dead_letter`, `inputs` and
`audio_hours`, plus `spans` and `span_examples_ids` (the members, in span order), which the
registry pusher tags as the model's lineage. The first span's `global_stats.json` is copied to
the artifact's root, where the trainers look for it (`speechpipe.training.find_global_stats`: the
first span's statistics serve a globally normalised model, as with the channel union). Every
split's file count and bytes are checked against the members' after the copy, and
`union.json` at the root lists each member and each copied file.

The copy costs storage: the union holds a second copy of every span's features (a
VoxCeleb2-sized corpus: another 276 GB per feature set, docs/deploy.md), and the node runs again
whenever the set of spans changes, copying all of them again. The pipeline adds the node only
when there is more than one span; a single span's Examples go to the trainers directly.
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

from speechpipe.io import storage

log = logging.getLogger(__name__)

INPUT_PREFIX = "span_"
OUTPUT_KEY = "examples"
UNION_FILE = "union.json"
SPLIT_PREFIX = "Split-"
SHARD_PREFIX = "data_tfrecord"  # speechpipe.io.records.SHARD_PREFIX (kept import-free of TensorFlow)
GLOBAL_STATS_FILE = "global_stats.json"  # speechpipe.pipeline.features_job.GLOBAL_STATS_FILE
COPY_THREADS = 16  # files copied at once (gfile copies release the GIL)


class ExamplesUnionError(RuntimeError):
    """The spans cannot be joined (different feature configs, a copy that came out short, ...)."""


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
    return type(f"ExamplesUnionSpec{count}", (ExamplesUnionSpec,),
                {"INPUTS": inputs, "__module__": __name__})


def shard_name(span_index: int, name: str) -> str:
    """The name a member's file gets in the union: the span after the shard prefix
    (`data_tfrecord-span1-00000-of-00004[.gz]`), or in front of any other file's name."""
    if name.startswith(SHARD_PREFIX + "-"):
        return f"{SHARD_PREFIX}-span{span_index}-{name[len(SHARD_PREFIX) + 1:]}"
    return f"span{span_index}-{name}"


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
        members.append((int(key[len(INPUT_PREFIX):]), artifact_utils.get_single_instance(list(artifacts))))
    return sorted(members, key=lambda m: m[0])


def union_examples(members: Sequence[Tuple[int, types.Artifact]], output: types.Artifact) -> Dict[str, Any]:
    """Copies every member's splits into `output` and sets its properties; returns the record
    written to `union.json`."""
    from tfx.dsl.io import fileio

    if len(members) < 2:
        raise ExamplesUnionError(f"an ExamplesUnion joins 2 or more spans, got {len(members)}")
    configs = {m.get_string_custom_property("feature_config") for _, m in members}
    if len(configs) > 1:
        raise ExamplesUnionError("the spans' features were computed with different feature configs, they cannot "
                                 f"train one model: {sorted(configs)}")
    splits: List[str] = []
    for _, member in members:
        for split in artifact_utils.decode_split_names(member.split_names or "[]"):
            if split not in splits:
                splits.append(split)
    if not splits:
        raise ExamplesUnionError("no member has split_names")

    storage.makedirs(output.uri)
    record: Dict[str, Any] = {"splits": splits, "members": []}
    expected = {split: [0, 0] for split in splits}  # files, bytes
    copies: List[Tuple[str, str]] = []
    for index, member in members:
        entry: Dict[str, Any] = {"span": member.span, "input": input_key(index), "examples_id": member.id,
                                 "uri": member.uri, "files": {}}
        for split in splits:
            source = storage.join(member.uri, SPLIT_PREFIX + split)
            target = storage.join(output.uri, SPLIT_PREFIX + split)
            copied = []
            for name, size in _files(source):
                new = shard_name(index, name)
                copies.append((storage.join(source, name), storage.join(target, new)))
                copied.append({"from": name, "to": new, "bytes": size})
                expected[split][0] += 1
                expected[split][1] += size
            entry["files"][split] = copied
        record["members"].append(entry)
    targets = [destination for _, destination in copies]
    if len(set(targets)) != len(targets):
        raise ExamplesUnionError("two members' files would share a name in the union")
    for split in splits:
        target = storage.join(output.uri, SPLIT_PREFIX + split)
        storage.makedirs(target)
        # The output folder is this execution's own; files in it can only be a retried attempt's
        # (a KFP retry keeps the output URI): they go, so the counts below hold.
        leftovers = _files(target)
        if leftovers:
            log.warning("%s: removing %d files of an earlier attempt", target, len(leftovers))
            for name, _ in leftovers:
                fileio.remove(storage.join(target, name))
    # One request per object on object stores: copy several at once (overwrite=False: never
    # replace a file silently).
    with concurrent.futures.ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:
        list(pool.map(lambda c: fileio.copy(c[0], c[1], overwrite=False), copies))  # raises the first error

    # Nothing lost in the copy: the union's folders hold exactly the members' files and bytes.
    for split in splits:
        found = _files(storage.join(output.uri, SPLIT_PREFIX + split))
        got = [len(found), sum(size for _, size in found)]
        if got != expected[split]:
            raise ExamplesUnionError(f"split {split}: copied {got[0]} files / {got[1]} bytes, the spans hold "
                                     f"{expected[split][0]} / {expected[split][1]}")
    record["totals"] = {split: {"files": n, "bytes": b} for split, (n, b) in expected.items()}

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
    output.set_string_custom_property("input_path", json.dumps(
        [m.get_string_custom_property("input_path") for _, m in members]))
    output.set_string_custom_property("input_fingerprint", json.dumps(
        [m.get_string_custom_property("input_fingerprint") for _, m in members]))
    output.set_string_custom_property("good", json.dumps(good, sort_keys=True))
    output.set_string_custom_property("dead_letter", json.dumps(
        {"total": dead_total, "by_reason": dict(sorted(by_reason.items()))}, sort_keys=True))
    output.set_int_custom_property("inputs", sum(int(m.get_int_custom_property("inputs") or 0) for _, m in members))
    output.set_float_custom_property("audio_hours", sum(
        float(m.get_float_custom_property("audio_hours") or 0.0) for _, m in members))
    record.update({"spans": spans, "good": good})
    storage.write_json(storage.join(output.uri, UNION_FILE), record, indent=1, sort_keys=True)
    log.info("examples union of spans %s: %s", spans, record["totals"])
    return record


def member_spans(examples: Sequence[types.Artifact]) -> List[Tuple[str, str]]:
    """(span, ML Metadata id) of every span behind some Examples artifacts, in span order: a
    union stands for its members (its `spans` and `span_examples_ids`), any other artifact for
    itself. For lineage tags (src/speechpipe/components/registry_pusher.py)."""
    out: List[Tuple[str, str]] = []
    for artifact in sorted(examples, key=lambda a: a.span or 0):
        spans = artifact.get_string_custom_property("spans") if artifact.has_custom_property("spans") else ""
        ids = (artifact.get_string_custom_property("span_examples_ids")
               if artifact.has_custom_property("span_examples_ids") else "")
        if spans and ids and len(spans.split(",")) == len(ids.split(",")):
            out += list(zip(spans.split(","), ids.split(",")))
        else:
            out.append((str(artifact.span), str(artifact.id)))
    return out


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
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
        spec = spec_class(**{input_key(i): channel for i, channel in enumerate(examples)},
                          **{OUTPUT_KEY: types.Channel(type=standard_artifacts.Examples)})
        super().__init__(spec=spec)
