"""`speechpipe pairs`: same/different-speaker pairs and VoxCeleb trial lists (Apache Beam).

    speechpipe pairs --features DIR --out DIR [--ratio 1:1] [--speaker_cap 200] [--seed 0]
                     [--same_session_positives] [--segment_frames 40]
                     [--official_trials FILE ...] [--trial_splits train,validation,test]
                     [--overwrite] [Beam options: --runner, --direct_running_mode, ...]

On the DirectRunner without --direct_running_mode, inputs under 64 MiB of index run in_memory
and larger ones multi_processing over every core (see MULTI_PROCESSING_FROM_BYTES).

Input: the feature job's utterance index, `DIR/index/utterances-*.jsonl` (metadata only; no
feature is decoded), with `DIR/summary.json` for the feature settings; or a demo-corpus
`manifest.jsonl` (DIR holding one, or the file itself), whose frame counts are derived from the
durations with the default FeatureConfig.

Output under --out:
    pairs/<split>/pairs-SSSSS-of-NNNNN.tfrecord.gz   GZIP tf.train.Example {label, utterance_a,
                                                     utterance_b}: references, resolved into
                                                     segments by speechpipe.speakers.pair_dataset
    trials_<split>.txt                               the same pairs as a VoxCeleb trial list
    excluded/short_utterances-SSSSS-of-NNNNN.jsonl   utterances shorter than one segment
    official/<name>                                  each --official_trials list, restricted to
                                                     trials whose utterances are in the index
    summary.json                                     counts per split and label, config, files

The graph (every step labelled; the sampling rules are in speechpipe.speakers.pairs):

    ListIndexFiles -> SpreadIndexFiles -> ReadIndex                  one (speaker, utterance) each
      -> Pairs/GroupBySpeaker -> Pairs/CheckSpeaker                 [GROUPS | SHORT | SPEAKER_STATS]
      GROUPS -> Pairs/KeyBySplit -> Pairs/GroupBySplit -> Pairs/PlanSplit     [PLANS | PLAN_STATS]
      GROUPS -> Pairs/DrawPairs (side input: PLANS)              [pairs_<split> | PAIR_STATS]
      pairs_<split> -> EncodePairs[<split>] -> WritePairs[<split>]
      pairs_<split> -> FormatTrials[<split>] -> WriteTrialShards[<split>]
                    -> ListTrialShards[<split>] -> JoinTrialShards[<split>]
      SHORT -> WriteExcluded;  official lists -> CheckOfficialTrials (side input: PLANS)
      all counts -> Summary/... -> WriteSummary

Memory: the only collections that cross a shuffle are the utterances (grouped by speaker, then
by split) and small per-speaker counts. Pairs are drawn after the last shuffle, one block per
speaker (bounded by the cap), and stream straight into the file writers of the same fused stage
(sinks run without a fixed shard count, which would add a shuffle of every pair), so memory
does not grow with the pair count.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.pvalue import AsDict, TaggedOutput

from speechpipe.io import storage
from speechpipe.config import SPLITS, FeatureConfig
from speechpipe.speakers.pairs import (
    DIFFERENT,
    SAME,
    PairConfig,
    PairsInputError,
    SpeakerUtterances,
    SplitPlan,
    encode_pair_block,
    parse_index_record,
    parse_ratio,
    sample_negatives,
    sample_positives,
)
from speechpipe.speakers.trials import format_trial, iter_trials, trial_stats

_LOG = logging.getLogger(__name__)

# Input layout (the feature job's) and output layout.
INDEX_DIR = "index"
INDEX_PATTERN = "utterances-*.jsonl*"
MANIFEST = "manifest.jsonl"
FEATURES_SUMMARY = "summary.json"
PAIRS_DIR = "pairs"
PAIRS_PREFIX = "pairs"
PAIRS_SUFFIX = ".tfrecord.gz"
TRIALS_FILE = "trials_{split}.txt"
TRIAL_PARTS_DIR = ".trial_parts"  # shards of the trial lists before they are joined; removed
EXCLUDED_DIR = "excluded"
EXCLUDED_PREFIX = "short_utterances"
OFFICIAL_DIR = "official"
SUMMARY = "summary.json"

# Tagged outputs.
GROUPS = "groups"  # SpeakerUtterances of speakers with at least one eligible utterance
SHORT = "short"  # JSON lines of utterances shorter than one segment
SPEAKER_STATS = "speaker_stats"  # (split, counts) per speaker: utterances, exclusions
PLANS = "plans"  # (split, SplitPlan)
PLAN_STATS = "plan_stats"  # (split, counts) per split: positives planned, negatives target
PAIR_STATS = "pair_stats"  # (split, counts) per speaker: pairs drawn, shortfall
# One element per speaker and split: (speaker, [(label, utterance_a, utterance_b), ...]).
PAIRS_TAG: Dict[str, str] = {split: f"pairs_{split}" for split in SPLITS}

# The DirectRunner's running mode when none is given. Measured on the 2-core reference machine
# (docs/pairs.md): multi_processing starts one SDK worker process per core and ships every
# element to it over gRPC, which costs more than the second core gains on small inputs (110k
# utterances: 37 s against 23 s in_memory) and pays off on large ones (1.1M utterances, 10M
# pairs: 146 s against 159 s, at 2.1 GB against 0.7 GB). So: in_memory below this much index,
# multi_processing over every core above it. Tests pass in_memory explicitly.
MULTI_PROCESSING_FROM_BYTES = 64 << 20  # about 450k index lines


# ----------------------------------------------------------------------------------------------
# Input

@dataclass(frozen=True)
class PairsInput:
    """What --features resolved to."""

    kind: str  # "index" or "manifest"
    paths: Tuple[str, ...]
    features: FeatureConfig
    features_from: str  # the summary.json the feature settings came from, or "defaults"
    bytes: int = 0  # size of the input files

    def to_json(self) -> Dict[str, object]:
        return {
            "kind": self.kind,
            "files": list(self.paths),
            "bytes": self.bytes,
            "features": self.features.to_json(),
            "features_from": self.features_from,
        }


def _match(pattern: str) -> List[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # FileSystems raises BeamIOError when nothing matches
        return []


def _size(paths: Sequence[str]) -> int:
    return sum(m.size_in_bytes for result in FileSystems.match(list(paths)) for m in result.metadata_list)


def resolve_input(path: str) -> PairsInput:
    """--features: a feature job's output folder (its index), a folder with a manifest.jsonl,
    or a manifest file."""
    # On object storage a folder is a prefix, which FileSystems.exists does not see: one short
    # listing does.
    if not FileSystems.exists(path) and not (storage.is_uri(path) and storage.beam_has_objects(path)):
        raise FileNotFoundError(f"--features {path}: no such file or folder")
    summary_path = FileSystems.join(path, FEATURES_SUMMARY)
    index = _match(FileSystems.join(path, INDEX_DIR, INDEX_PATTERN))
    if index:
        features, source = FeatureConfig(), "defaults"
        if FileSystems.exists(summary_path):
            with FileSystems.open(summary_path) as f:
                summary = json.load(io.TextIOWrapper(f, encoding="utf-8"))
            if isinstance(summary, dict) and isinstance(summary.get("features"), dict):
                features, source = FeatureConfig.from_json(summary["features"]), summary_path
        return PairsInput("index", tuple(index), features, source, _size(index))
    manifest = FileSystems.join(path, MANIFEST)
    if FileSystems.exists(manifest):
        return PairsInput("manifest", (manifest,), FeatureConfig(), "defaults", _size([manifest]))
    if _match(path) == [path] or os.path.isfile(path):
        return PairsInput("manifest", (path,), FeatureConfig(), "defaults", _size([path]))
    raise FileNotFoundError(
        f"--features {path}: holds neither {INDEX_DIR}/{INDEX_PATTERN} (a feature job's index) "
        f"nor {MANIFEST}"
    )


class ReadIndexFile(beam.DoFn):
    """One index or manifest file -> (speaker, (utterance, session, split, num_frames)).

    Files are read line by line in the DoFn, not with ReadFromText, so that an error can name
    the file and the line. Plain tuples keep the 1.1 million elements cheap to encode."""

    def __init__(self, features: FeatureConfig):
        self._features = features

    def process(self, path: str) -> Iterator[Tuple[str, Tuple[str, str, str, int]]]:
        with FileSystems.open(path) as raw:
            for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), 1):
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PairsInputError(f"{where}: not a JSON object ({error.msg})") from None
                ref = parse_index_record(record, self._features, where)
                yield ref.speaker, (ref.utterance, ref.session, ref.split, ref.num_frames)


# ----------------------------------------------------------------------------------------------
# The pairing transform

class CheckSpeaker(beam.DoFn):
    """A speaker's utterances -> its eligible utterances (GROUPS), the short ones (SHORT) and
    its counts (SPEAKER_STATS). A speaker in two splits, or a repeated id, is an error."""

    def __init__(self, config: PairConfig):
        self._config = config

    def process(self, element: Tuple[str, Iterable[Tuple[str, str, str, int]]]):
        speaker, values = element
        values = list(values)
        splits = sorted({v[2] for v in values})
        if len(splits) > 1:
            raise PairsInputError(
                f"speaker {speaker!r} appears in splits {', '.join(splits)}: splits must be speaker-disjoint"
            )
        split = splits[0]
        ids = [v[0] for v in values]
        if len(set(ids)) != len(ids):
            repeated = sorted({u for u in ids if ids.count(u) > 1})
            raise PairsInputError(f"speaker {speaker!r}: utterance {repeated[0]!r} is listed twice")
        minimum = self._config.segment_frames
        eligible = [(u, session) for u, session, _, frames in values if frames >= minimum]
        short = sorted(v for v in values if v[3] < minimum)
        for utterance, session, _, frames in short:
            yield TaggedOutput(SHORT, json.dumps({
                "utterance": utterance, "speaker": speaker, "session": session, "split": split,
                "num_frames": frames, "reason": f"fewer than {minimum} frames (one segment)",
            }, sort_keys=True))
        yield TaggedOutput(SPEAKER_STATS, (split, {
            "speakers": 1,
            "utterances": len(values),
            "eligible_utterances": len(eligible),
            "excluded_short": len(short),
            "speakers_all_short": int(not eligible),
        }))
        if eligible:
            yield SpeakerUtterances.build(split, speaker, eligible)


class PlanSplit(beam.DoFn):
    """All speakers of a split -> its SplitPlan (rank order, positive total, negative target)."""

    def __init__(self, config: PairConfig):
        self._config = config

    def process(self, element: Tuple[str, Iterable[SpeakerUtterances]]):
        split, groups = element
        plan = SplitPlan.build(split, groups, self._config)
        yield split, plan
        yield TaggedOutput(PLAN_STATS, (split, {
            "speakers_paired": len(plan.speakers),
            "positives_planned": plan.positives,
            "different_target": plan.negatives,
            "speakers_capped": plan.capped_speakers,
            "speaker_links": plan.links,
        }))


class DrawPairs(beam.DoFn):
    """One speaker -> one block: its positives and the negatives it owns, on its split's tag.

    A block, not an element per pair: Beam's per-element cost (windowing, sink bookkeeping) is
    several times that of drawing and encoding a pair, and a block is bounded by the cap."""

    def __init__(self, config: PairConfig):
        self._config = config

    def process(self, group: SpeakerUtterances, plans: Dict[str, SplitPlan]):
        plan = plans[group.split]
        positives, available = sample_positives(group, self._config)
        negatives, shortfall = sample_negatives(group, plan, self._config)
        block = [(SAME, a, b) for a, b in positives] + [(DIFFERENT, a, b) for a, b in negatives]
        if block:
            yield TaggedOutput(PAIRS_TAG[group.split], (group.speaker, block))
        yield TaggedOutput(PAIR_STATS, (group.split, {
            "same": len(positives),
            "different": len(negatives),
            "different_shortfall": shortfall,
            "positives_available": available,
            "speakers_without_positives": int(not positives),
        }))


class SumCounts(beam.CombineFn):
    """Sums dicts of counts key by key (lifted: partial sums before the shuffle)."""

    def create_accumulator(self) -> Dict[str, int]:
        return {}

    def add_input(self, accumulator: Dict[str, int], counts: Dict[str, int]) -> Dict[str, int]:
        for key, value in counts.items():
            accumulator[key] = accumulator.get(key, 0) + value
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Dict[str, int]]) -> Dict[str, int]:
        merged: Dict[str, int] = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator: Dict[str, int]) -> Dict[str, int]:
        return dict(sorted(accumulator.items()))


class PairsFromUtterances(beam.PTransform):
    """(speaker, (utterance, session, split, num_frames)) -> a dict of PCollections, keyed by
    the tags above: GROUPS, SHORT, SPEAKER_STATS, PLANS, PLAN_STATS, PAIR_STATS and
    PAIRS_TAG[split] (pair blocks) for every split."""

    def __init__(self, config: PairConfig):
        super().__init__()
        self._config = config.validate()

    def expand(self, utterances):
        checked = (
            utterances
            | "GroupBySpeaker" >> beam.GroupByKey()
            | "CheckSpeaker" >> beam.ParDo(CheckSpeaker(self._config)).with_outputs(
                SHORT, SPEAKER_STATS, main=GROUPS)
        )
        planned = (
            checked[GROUPS]
            | "KeyBySplit" >> beam.Map(lambda group: (group.split, group))
            | "GroupBySplit" >> beam.GroupByKey()
            | "PlanSplit" >> beam.ParDo(PlanSplit(self._config)).with_outputs(PLAN_STATS, main=PLANS)
        )
        drawn = checked[GROUPS] | "DrawPairs" >> beam.ParDo(
            DrawPairs(self._config), plans=AsDict(planned[PLANS])
        ).with_outputs(PAIR_STATS, *PAIRS_TAG.values())
        out = {
            GROUPS: checked[GROUPS],
            SHORT: checked[SHORT],
            SPEAKER_STATS: checked[SPEAKER_STATS],
            PLANS: planned[PLANS],
            PLAN_STATS: planned[PLAN_STATS],
            PAIR_STATS: drawn[PAIR_STATS],
        }
        for split in SPLITS:
            out[PAIRS_TAG[split]] = drawn[PAIRS_TAG[split]]
        return out


# ----------------------------------------------------------------------------------------------
# Outputs

class PairRecordSink(FileBasedSink):
    """A TFRecord sink whose elements are blocks of already framed records
    (speechpipe.speakers.pairs.encode_pair_block), written as they are. The files are ordinary TFRecord
    files, read by tf.data.TFRecordDataset."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = PAIRS_SUFFIX,
                 compression_type: str = CompressionTypes.GZIP):
        super().__init__(file_path_prefix, coder=coders.BytesCoder(), file_name_suffix=file_name_suffix,
                         mime_type="application/octet-stream", compression_type=compression_type)

    def write_encoded_record(self, file_handle, encoded_value: bytes) -> None:
        file_handle.write(encoded_value)


def format_trial_block(block: Tuple[str, List[Tuple[int, str, str]]]) -> str:
    """A block's trial lines, joined (the text sink adds the last newline)."""
    return "\n".join(format_trial(label, a, b) for label, a, b in block[1])


def join_shards(shards: List[str], destination: str) -> Dict[str, object]:
    """Concatenates sorted text shards into one file, streaming, then deletes the shards.

    The trial list must be one file (veri_test2.txt is), but a sink with one fixed shard
    shuffles every line to one worker; writing per bundle and joining afterwards does not."""
    shards = sorted(shards)
    lines = 0
    with FileSystems.create(destination, mime_type="text/plain",
                            compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for shard in shards:
            with FileSystems.open(shard, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                while True:
                    chunk = f.read(1 << 22)
                    if not chunk:
                        break
                    lines += chunk.count(b"\n")
                    out.write(chunk)
    if shards:
        FileSystems.delete(shards)
    return {"file": destination, "trials": lines}


class CheckOfficialTrials(beam.DoFn):
    """An official trial list -> its coverage by the index, and official/<name> holding the
    trials whose two utterances are eligible (file order kept; identical to the input when the
    whole list is covered, apart from line ends). A malformed line is an error."""

    def __init__(self, out_dir: str, voxceleb_ids: bool):
        self._out_dir = out_dir
        self._voxceleb_ids = voxceleb_ids

    def process(self, path: str, plans: Dict[str, SplitPlan]):
        where: Dict[str, Tuple[str, frozenset]] = {}  # speaker -> (split, its utterances)
        for split, plan in plans.items():
            for rank, speaker in enumerate(plan.speakers):
                where[speaker] = (split, plan.utterances[rank])
        sets: Dict[str, frozenset] = {}

        def split_of(utterance: str) -> Optional[str]:
            speaker = utterance.split("/", 1)[0]
            if speaker not in where:
                return None
            split, utterances = where[speaker]
            if speaker not in sets:
                sets[speaker] = frozenset(utterances)
            return split if utterance in sets[speaker] else None

        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        destination = FileSystems.join(self._out_dir, OFFICIAL_DIR, name)
        covered = cross_split = 0
        per_split: Dict[str, int] = {}
        missing = set()
        trials = []
        with FileSystems.create(destination, mime_type="text/plain",
                                compression_type=CompressionTypes.UNCOMPRESSED) as out:
            for trial in iter_trials(path, self._voxceleb_ids):
                trials.append(trial)
                split_a, split_b = split_of(trial.utterance_a), split_of(trial.utterance_b)
                for utterance, split in ((trial.utterance_a, split_a), (trial.utterance_b, split_b)):
                    if split is None:
                        missing.add(utterance)
                if split_a is None or split_b is None:
                    continue
                covered += 1
                if split_a != split_b:
                    cross_split += 1
                else:
                    per_split[split_a] = per_split.get(split_a, 0) + 1
                out.write((format_trial(*trial) + "\n").encode("utf-8"))
        stats = trial_stats(trials)
        yield {
            "list": name,
            "source": path,
            "written": destination,
            **stats.to_json(),
            "covered": covered,
            "not_covered": stats.trials - covered,
            "missing_utterances": len(missing),
            "missing_examples": sorted(missing)[:5],
            "covered_per_split": dict(sorted(per_split.items())),
            "cross_split": cross_split,
        }


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root) if "://" not in path else path


def write_summary(parts: List[Tuple[str, object]], out_dir: str, header: Dict[str, object]) -> str:
    """Gathers every count into summary.json; written last, so its presence means the job ran."""
    splits: Dict[str, Dict[str, object]] = {
        split: {
            "speakers": 0, "utterances": 0, "eligible_utterances": 0, "excluded_short": 0,
            "speakers_all_short": 0, "speakers_paired": 0, "speakers_capped": 0,
            "speakers_without_positives": 0, "positives_available": 0, "positives_planned": 0,
            "different_target": 0, "different_shortfall": 0, "speaker_links": 0,
            "pairs": {"same": 0, "different": 0}, "pair_files": [], "trials_file": None,
        }
        for split in SPLITS
    }
    official: List[Dict[str, object]] = []
    excluded_files: List[str] = []
    for kind, payload in parts:
        if kind == "counts":
            split, counts = payload
            for key, value in counts.items():
                if key in ("same", "different"):
                    splits[split]["pairs"][key] += value
                else:
                    splits[split][key] += value
        elif kind == "pair_file":
            split, path = payload
            splits[split]["pair_files"].append(_relative(path, out_dir))
        elif kind == "trials":
            split, info = payload
            splits[split]["trials_file"] = _relative(info["file"], out_dir)
            splits[split]["trials_lines"] = info["trials"]
        elif kind == "excluded_file":
            excluded_files.append(_relative(payload, out_dir))
        elif kind == "official":
            official.append({**payload, "written": _relative(payload["written"], out_dir)})
    for split in SPLITS:
        splits[split]["pair_files"].sort()
        splits[split]["pairs"]["total"] = splits[split]["pairs"]["same"] + splits[split]["pairs"]["different"]
    parts_dir = FileSystems.join(out_dir, TRIAL_PARTS_DIR)
    if FileSystems.exists(parts_dir):  # every shard was joined and deleted before this step
        FileSystems.delete([parts_dir])
    summary = {
        **header,
        "splits": splits,
        "pairs_per_label": {  # same: label 1, different: label 0
            "same": sum(s["pairs"]["same"] for s in splits.values()),
            "different": sum(s["pairs"]["different"] for s in splits.values()),
        },
        "excluded_short": sum(s["excluded_short"] for s in splits.values()),
        "excluded_files": sorted(excluded_files),
        "speakers_capped": sum(s["speakers_capped"] for s in splits.values()),
        "official_trials": sorted(official, key=lambda o: o["list"]),
    }
    path = FileSystems.join(out_dir, SUMMARY)
    with FileSystems.create(path, mime_type="application/json",
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write((json.dumps(summary, indent=1, sort_keys=False) + "\n").encode("utf-8"))
    return path


def build_pipeline(
    pipeline: beam.Pipeline,
    source: PairsInput,
    out_dir: str,
    config: PairConfig,
    trial_splits: Sequence[str] = SPLITS,
    official_trials: Sequence[str] = (),
    voxceleb_ids: bool = True,
) -> None:
    """Adds the whole job to `pipeline`."""
    header = {
        "job": "speechpipe pairs",
        "config": {**config.to_json(), "trial_splits": list(trial_splits)},
        "input": source.to_json(),
        "segment": {
            "frames": config.segment_frames,
            "bins": source.features.n_bins,
            "short_rule": f"excluded: utterances with fewer than {config.segment_frames} frames "
                          f"take part in no pair and are listed under {EXCLUDED_DIR}/",
            "training_offset": "uniform over [0, num_frames - frames], drawn per pair and epoch "
                               "in the input pipeline (speechpipe.speakers.pair_dataset)",
            "evaluation_hop": config.eval_hop,
        },
        "pair_record": {"format": "GZIP TFRecord of tf.train.Example",
                        "keys": {"label": "int64 (1 same, 0 different)",
                                 "utterance_a": "bytes", "utterance_b": "bytes"}},
    }
    utterances = (
        pipeline
        | "ListIndexFiles" >> beam.Create(list(source.paths))
        | "SpreadIndexFiles" >> beam.Reshuffle()
        | "ReadIndex" >> beam.ParDo(ReadIndexFile(source.features))
    )
    result = utterances | "Pairs" >> PairsFromUtterances(config)

    parts = []
    for split in SPLITS:
        prefix = FileSystems.join(out_dir, PAIRS_DIR, split, PAIRS_PREFIX)
        parts.append(
            result[PAIRS_TAG[split]]
            | f"EncodePairs[{split}]" >> beam.Map(lambda block: encode_pair_block(block[1]))
            | f"WritePairs[{split}]" >> beam.io.Write(PairRecordSink(prefix))
            | f"TagPairFiles[{split}]" >> beam.Map(lambda path, s=split: ("pair_file", (s, path)))
        )
        if split in trial_splits:
            parts.append(
                result[PAIRS_TAG[split]]
                | f"FormatTrials[{split}]" >> beam.Map(format_trial_block)
                | f"WriteTrialShards[{split}]" >> beam.io.WriteToText(
                    FileSystems.join(out_dir, TRIAL_PARTS_DIR, f"trials_{split}"), file_name_suffix=".txt")
                | f"ListTrialShards[{split}]" >> beam.combiners.ToList()
                | f"JoinTrialShards[{split}]" >> beam.Map(
                    lambda shards, s=split: ("trials", (s, join_shards(
                        shards, FileSystems.join(out_dir, TRIALS_FILE.format(split=s))))))
            )
    parts.append(
        result[SHORT]
        | "WriteExcluded" >> beam.io.WriteToText(
            FileSystems.join(out_dir, EXCLUDED_DIR, EXCLUDED_PREFIX), file_name_suffix=".jsonl")
        | "TagExcludedFiles" >> beam.Map(lambda path: ("excluded_file", path))
    )
    counts = (
        (result[SPEAKER_STATS], result[PLAN_STATS], result[PAIR_STATS])
        | "Summary/FlattenCounts" >> beam.Flatten()
        | "Summary/SumPerSplit" >> beam.CombinePerKey(SumCounts())
        | "Summary/TagCounts" >> beam.Map(lambda kv: ("counts", kv))
    )
    parts.append(counts)
    if official_trials:
        parts.append(
            pipeline
            | "ListOfficialTrials" >> beam.Create(list(official_trials))
            | "CheckOfficialTrials" >> beam.ParDo(
                CheckOfficialTrials(out_dir, voxceleb_ids), plans=AsDict(result[PLANS]))
            | "TagOfficial" >> beam.Map(lambda coverage: ("official", coverage))
        )
    _ = (
        parts
        | "Summary/Flatten" >> beam.Flatten()
        | "Summary/Gather" >> beam.combiners.ToList()
        | "WriteSummary" >> beam.Map(write_summary, out_dir, header)
    )


# ----------------------------------------------------------------------------------------------
# Command line

def build_parser() -> argparse.ArgumentParser:
    d = PairConfig()
    parser = argparse.ArgumentParser(
        prog="speechpipe pairs",
        description="Balanced same/different-speaker pairs and VoxCeleb trial lists (Apache Beam). "
                    "Unknown options go to Beam (--runner, --direct_running_mode, ...).",
    )
    parser.add_argument("--features", required=True,
                        help="the feature job's output folder (reads index/utterances-*.jsonl), "
                             "or a demo corpus folder or manifest.jsonl")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ratio", default=f"{d.same}:{d.different}",
                        help="same:different pairs, default %(default)s")
    parser.add_argument("--speaker-cap", "--speaker_cap", type=int, default=d.speaker_cap,
                        help="same-speaker pairs per speaker at most, default %(default)s")
    parser.add_argument("--same-session-positives", "--same_session_positives", action="store_true",
                        help="also pair two utterances of one session (default: positives come "
                             "from different sessions, as VoxCeleb's trials pair different videos)")
    parser.add_argument("--segment-frames", "--segment_frames", type=int, default=d.segment_frames,
                        help="frames of one embedder segment; shorter utterances are excluded, "
                             "default %(default)s")
    parser.add_argument("--eval-hop", "--eval_hop", type=int, default=d.eval_hop,
                        help="hop between evaluation windows, recorded for the input pipeline, "
                             "default %(default)s")
    parser.add_argument("--seed", type=int, default=d.seed, help="default %(default)s")
    parser.add_argument("--trial-splits", "--trial_splits", default=",".join(SPLITS),
                        help="splits that get a trials_<split>.txt, default %(default)s")
    parser.add_argument("--official-trials", "--official_trials", nargs="+", default=[], metavar="FILE",
                        help="VoxCeleb1 trial lists to check against the index and copy "
                             "(veri_test.txt, veri_test2.txt, list_test_all2.txt, list_test_hard2.txt)")
    parser.add_argument("--any-ids", "--any_ids", action="store_true",
                        help="accept official-list paths that are not VoxCeleb-shaped "
                             "(<speaker>/<session>/<name>.wav)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier run in --out")
    return parser


def _has_option(argv: Sequence[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def default_running_mode(input_bytes: int, cpus: Optional[int] = None) -> str:
    """The DirectRunner mode for an input of `input_bytes` (see MULTI_PROCESSING_FROM_BYTES)."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return "multi_processing" if cpus > 1 and input_bytes >= MULTI_PROCESSING_FROM_BYTES else "in_memory"


def pipeline_options(beam_args: List[str], input_bytes: int = 0) -> PipelineOptions:
    """Beam options; on the DirectRunner without --direct_running_mode, the mode suited to the
    input's size (in_memory for small inputs, multi_processing over every core for large)."""
    args = list(beam_args)
    direct = not _has_option(args, "--runner") or any("DirectRunner" in a for a in args)
    if direct and not _has_option(args, "--direct_running_mode"):
        mode = default_running_mode(input_bytes)
        args.append(f"--direct_running_mode={mode}")
        if mode == "multi_processing" and not _has_option(args, "--direct_num_workers"):
            args.append("--direct_num_workers=0")  # 0: one worker per core
    from speechpipe.pipeline.beam_options import with_quiet_workers

    options = PipelineOptions(with_quiet_workers(args))
    options.view_as(SetupOptions).save_main_session = False  # DoFns live in importable modules
    return options


def _prepare_out(out_dir: str, overwrite: bool) -> None:
    previous: List[str] = []
    for name in (SUMMARY, PAIRS_DIR, EXCLUDED_DIR, OFFICIAL_DIR, TRIAL_PARTS_DIR):
        path = FileSystems.join(out_dir, name)
        if FileSystems.exists(path):
            previous.append(path)
        elif storage.is_uri(out_dir):
            # On object storage a folder is a prefix, which FileSystems.exists does not see: its
            # objects are the earlier outputs (else stale pair shards would mix with new ones).
            previous += sorted(storage.beam_list(path))
    previous += _match(FileSystems.join(out_dir, "trials_*.txt"))
    if previous and not overwrite:
        raise FileExistsError(f"--out {out_dir} holds the outputs of an earlier run; pass --overwrite")
    if previous:
        FileSystems.delete(previous)
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)


_WRAPPED_ERROR = re.compile(r"(?:PairsInputError|TrialFormatError): (.+?)(?: \[while running|\n|$)")


def run(argv: Optional[List[str]] = None) -> int:
    """Runs the job; returns 0. Bad input raises PairsInputError (a ValueError) naming the file
    and line or the speaker, FileNotFoundError or FileExistsError."""
    known, beam_args = build_parser().parse_known_args(argv)
    same, different = parse_ratio(known.ratio)
    config = PairConfig(
        seed=known.seed, same=same, different=different, speaker_cap=known.speaker_cap,
        cross_session=not known.same_session_positives, segment_frames=known.segment_frames,
        eval_hop=known.eval_hop,
    ).validate()
    trial_splits = [s for s in known.trial_splits.split(",") if s]
    unknown = sorted(set(trial_splits) - set(SPLITS))
    if unknown:
        raise PairsInputError(f"--trial_splits: {', '.join(unknown)} not among {', '.join(SPLITS)}")
    source = resolve_input(known.features)
    # Official lists are small (<= 580k lines): checking them before the pipeline starts gives
    # a clean error at once instead of one wrapped by the runner after the heavy work.
    for path in known.official_trials:
        for _ in iter_trials(path, voxceleb_ids=not known.any_ids):
            pass
    _prepare_out(known.out, known.overwrite)
    started = time.time()
    try:
        with beam.Pipeline(options=pipeline_options(beam_args, source.bytes)) as pipeline:
            build_pipeline(pipeline, source, known.out, config, trial_splits,
                           known.official_trials, voxceleb_ids=not known.any_ids)
    except PairsInputError:
        raise
    except Exception as error:  # the runner re-raises worker errors as RuntimeError(traceback)
        found = _WRAPPED_ERROR.search(str(error))
        if found:
            raise PairsInputError(found.group(1)) from error
        raise
    with FileSystems.open(FileSystems.join(known.out, SUMMARY)) as f:
        summary = json.load(io.TextIOWrapper(f, encoding="utf-8"))
    for split, counts in summary["splits"].items():
        print(f"{split}: {counts['pairs']['same']} same + {counts['pairs']['different']} different pairs "
              f"from {counts['speakers_paired']} speakers; {counts['excluded_short']} short utterances excluded")
    print(f"pairs written to {known.out} in {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(run())
