"""`speechpipe features`: audio to normalised spectrogram TFRecords, with a dead letter.

    speechpipe features --input PATH --out DIR [--normalization cmvn] [--max-seconds 30]
                        [Beam options: --runner, --direct_running_mode, --direct_num_workers, ...]

Reads a VoxCeleb-layout root, a JSON Lines manifest or a Kaldi data directory; decodes,
downmixes and resamples; computes log-mel features (librosa's definition); normalises; writes sharded GZIP TFRecords per
split (TFX's `Split-<name>/` layout), an index of the good utterances, the dead letter, the
training split's global statistics and `summary.json`. Bad inputs go to the dead letter with a
reason, the job completes, good + dead-lettered = inputs, and every shard is read back and counted
before the job reports success.

--input and --out may be local paths or URIs (gs://, s3://, ...): inputs, audio and outputs go
through Beam's FileSystems (speechpipe.io.storage); the shards are read back through TensorFlow, which
reads the same URIs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions

from speechpipe.io import records, storage
from speechpipe.io.shards import LINES, TFRECORD, ShardedOutput, WriteShards
from speechpipe.audio.decode import AudioRejected, check_usable, decode
from speechpipe.config import FEATURE_KINDS, NORMALISATIONS, SPLITS, FeatureConfig
from speechpipe.audio.features import GlobalStats, compute_features, normalise
from speechpipe.phones.inventory import inventory_for
from speechpipe.audio.sources import (
    UNKNOWN_PHONE,
    UNPHONEMISABLE,
    DeadLetter,
    InputSpec,
    RawInput,
    SourceRecord,
    count_ignored_files,
    expand_input,
    keep_first,
    make_spec,
    parse_input,
)

# Tagged outputs.
DEAD_LETTER = "dead_letter"
GOOD = "good"

SUMMARY_FILE = "summary.json"
GLOBAL_STATS_FILE = "global_stats.json"
COUNTS_PREFIX = "counts/counts"
INDEX_PREFIX = "index/utterances"
DEAD_LETTER_PREFIX = "dead_letter/dead_letter"
METRICS_NAMESPACE = "speechpipe.audio.features"


class ReadBackError(RuntimeError):
    """The records on disk do not match what the job counted."""


# ---------------------------------------------------------------------------------- DoFns

class ParseInputFn(beam.DoFn):
    """RawInput -> SourceRecord (main) or DeadLetter (tagged); transcripts tokenized here so a
    bad phone costs no decoding. With a `language`, a transcript given as ordinary text (no IPA
    `phones`) is phonemised by espeak-ng first, one engine per worker; a word it cannot turn into
    the inventory's phones dead-letters the utterance, naming the word and the symbol."""

    def __init__(self, spec: InputSpec, inventory_name: str, language: str = "") -> None:
        self._spec = spec
        self._inventory_name = inventory_name
        self._language = language
        self._inventory = None
        self._phonemizer = None

    def setup(self) -> None:
        from speechpipe.phones.inventory import load_inventory

        self._inventory = load_inventory(self._inventory_name)
        if self._language:
            from speechpipe.phones.phonemizer import Phonemizer

            # The inventory IPA lines are tokenised with and ToExampleFn numbers phones by.
            self._phonemizer = Phonemizer(self._language, inventory=self._inventory)

    def _transcribe(self, record: SourceRecord, item: RawInput):
        """The record with its phones tokenised (from IPA, or from text through espeak-ng), or a
        DeadLetter saying why not."""
        from speechpipe.phones.inventory import UnknownPhoneError

        try:
            if record.phones is not None:
                return replace(record, phones=" ".join(self._inventory.tokenize(record.phones)))
            from speechpipe.phones.phonemizer import PhonemizeError

            try:
                return replace(record, phones=" ".join(self._phonemizer.phones(record.text)))
            except PhonemizeError as error:
                return DeadLetter(source=item.source, stage="transcript", reason=UNPHONEMISABLE,
                                  detail=str(error), utterance=record.utterance)
        except UnknownPhoneError as error:
            return DeadLetter(source=item.source, stage="transcript", reason=UNKNOWN_PHONE,
                              detail=str(error), utterance=record.utterance)

    def process(self, item: RawInput):
        Metrics.counter(METRICS_NAMESPACE, "inputs").inc()
        result = parse_input(item, self._spec)
        if isinstance(result, SourceRecord) and (
                result.phones is not None or (self._phonemizer is not None and result.text is not None)):
            result = self._transcribe(result, item)
        if isinstance(result, DeadLetter):
            Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{result.reason}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, result)
        else:
            yield result


class KeepFirstFn(beam.DoFn):
    def process(self, keyed: Tuple[str, Iterable[SourceRecord]]):
        utterance, group = keyed
        kept, duplicates = keep_first(utterance, list(group))
        yield kept
        for dead in duplicates:
            Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{dead.reason}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)


class ComputeFeaturesFn(beam.DoFn):
    """SourceRecord -> (record, unnormalised features, seconds), or a DeadLetter."""

    def __init__(self, config: FeatureConfig, count: bool = True) -> None:
        self._config = config
        self._count = count  # False on the second pass of global normalisation

    def setup(self) -> None:
        import numpy as np

        # Pays scipy.fft's import and the mel filterbank once per worker, not on the first record.
        compute_features(np.zeros(self._config.n_fft, np.float32) + 1e-3, self._config)

    def process(self, record: SourceRecord):
        try:
            audio = decode(record.audio_path, self._config.sample_rate, self._config.max_seconds)
            check_usable(audio, self._config.n_fft, self._config.max_seconds)
        except AudioRejected as rejected:
            if self._count:
                Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{rejected.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                DeadLetter(source=record.source, stage="audio", reason=rejected.reason,
                           detail=rejected.detail, utterance=record.utterance),
            )
            return
        features = compute_features(audio.samples, self._config)
        if self._count:
            Metrics.counter(METRICS_NAMESPACE, f"good_{record.split}").inc()
        yield record, features, audio.samples.shape[0] / audio.sample_rate


class JobTotalsFn(beam.CombineFn):
    """The job's totals in one combine: counts of inputs, of good examples per split (with seconds
    and frames) and of dead letters per reason (the numbers summary.json reports and the read-back
    checks), and the training split's per-bin frame count, sum and sum of squares (float64).

    One combine instead of two (each CombineGlobally is 9 transforms the runner translates and
    instantiates). Inputs: ("inputs", 1), ("dead_letter.<reason>", 1), or one `GoodOutcome` per
    good utterance (one element, not four: every element crosses a Flatten the runner encodes)."""

    def __init__(self, bins: int) -> None:
        self._bins = bins

    def create_accumulator(self) -> Tuple[Dict[str, float], GlobalStats]:
        return {}, GlobalStats.empty(self._bins)

    def add_input(self, accumulator: Tuple[Dict[str, float], GlobalStats], item):
        counts, stats = accumulator
        if isinstance(item, GoodOutcome):
            for key, value in ((f"good.{item.split}", 1), (f"seconds.{item.split}", item.seconds),
                               (f"frames.{item.split}", item.frames)):
                counts[key] = counts.get(key, 0) + value
            return counts, stats.merge(item.stats) if item.stats is not None else stats
        key, value = item
        counts[key] = counts.get(key, 0) + value
        return counts, stats

    def merge_accumulators(self, accumulators: Iterable[Tuple[Dict[str, float], GlobalStats]]):
        counts, stats = self.create_accumulator()
        for more_counts, more_stats in accumulators:
            for key, value in more_counts.items():
                counts[key] = counts.get(key, 0) + value
            stats = stats.merge(more_stats)
        return counts, stats

    def extract_output(self, accumulator: Tuple[Dict[str, float], GlobalStats]) -> Dict[str, object]:
        counts, stats = accumulator
        return {"counts": dict(sorted(counts.items())), "global_stats": stats.to_json() if stats.count else None}


class GoodOutcome(NamedTuple):
    """What one good utterance adds to the totals (from its features before normalisation)."""

    split: str
    seconds: float
    frames: int
    stats: Optional[GlobalStats]  # training split only


def _good_outcome(element) -> GoodOutcome:
    record, features, seconds = element
    return GoodOutcome(record.split, round(seconds, 6), int(features.shape[0]),
                       GlobalStats.of(features) if record.split == "train" else None)


class WriteTotalsFn(beam.DoFn):
    """The totals -> counts/counts.json and global_stats.json (once: the totals are a singleton;
    a retry writes the same bytes again)."""

    def __init__(self, out_dir: str) -> None:
        self._out_dir = out_dir

    def process(self, totals: Dict[str, object]):
        stats = totals["global_stats"]
        storage.beam_write_bytes(storage.join(self._out_dir, COUNTS_PREFIX + ".json"),
                                 (json.dumps(totals["counts"], sort_keys=True) + "\n").encode("utf-8"),
                                 mime_type="application/json")
        storage.beam_write_bytes(storage.join(self._out_dir, GLOBAL_STATS_FILE),
                                 ((json.dumps(stats, indent=1) if stats else "null") + "\n").encode("utf-8"),
                                 mime_type="application/json")
        return ()


class ToExampleFn(beam.DoFn):
    """(record, unnormalised features, seconds) -> the normalised `records.UtteranceFeatures`."""

    def __init__(self, config: FeatureConfig, inventory_name: str) -> None:
        self._config = config
        self._inventory_name = inventory_name
        self._ids: Optional[Dict[str, int]] = None

    def setup(self) -> None:
        from speechpipe.phones.inventory import load_inventory

        self._ids = load_inventory(self._inventory_name).phone_to_id()

    def process(self, element, totals: Optional[Dict[str, object]] = None):
        record, features, seconds = element
        phones = record.phones.split() if record.phones is not None else None  # tokenized by ParseInputFn
        stats = totals["global_stats"] if totals is not None else None
        yield records.UtteranceFeatures(
            utterance=record.utterance, speaker=record.speaker, session=record.session, split=record.split,
            features=normalise(features, self._config, stats), duration=round(seconds, 6),
            phone_ids=[self._ids[p] for p in phones] if phones is not None else None, phones=phones,
            text=record.text,
        )


def _index_line(example: records.UtteranceFeatures) -> str:
    return json.dumps({
        "utterance": example.utterance, "speaker": example.speaker, "session": example.session,
        "split": example.split, "num_frames": int(example.features.shape[0]), "duration": example.duration,
    }, ensure_ascii=False)


# ---------------------------------------------------------------------------------- the DAG

def build(pipeline: beam.Pipeline, spec: InputSpec, config: FeatureConfig, inventory_name: str = "phones_de.json",
          language: str = "") -> Dict[str, beam.PCollection]:
    """Adds the feature job's transforms; returns its PCollections by name (for tests and for
    `write_outputs`): examples, dead_letter and totals ({"counts": ..., "global_stats": ...})."""
    raw = (
        pipeline
        # Impulse, not Create([spec]): one transform instead of four (each costs at start-up).
        | "Start" >> beam.Impulse()
        | "ExpandInput" >> beam.FlatMap(lambda _, spec: expand_input(spec), spec=spec)
    )
    # Listing runs on one worker, and so does parsing (a line or a path each, as cheap as
    # listing it): GroupByUtterance is the redistribution, before decoding, the expensive step.
    # A Reshuffle here as well cost a stage and an encoded copy of every input.
    parsed = raw | "ParseInput" >> beam.ParDo(ParseInputFn(spec, inventory_name, language)).with_outputs(DEAD_LETTER, main=GOOD)
    unique = (
        parsed[GOOD]
        | "KeyByUtterance" >> beam.Map(lambda r: (r.utterance, r))
        | "GroupByUtterance" >> beam.GroupByKey()
        | "KeepFirstOfDuplicates" >> beam.ParDo(KeepFirstFn()).with_outputs(DEAD_LETTER, main=GOOD)
    )
    computed = unique[GOOD] | "ComputeFeatures" >> beam.ParDo(ComputeFeaturesFn(config)).with_outputs(DEAD_LETTER, main=GOOD)
    dead_letter = (parsed[DEAD_LETTER], unique[DEAD_LETTER], computed[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()

    # Counted where they arise: inputs as listed, good utterances as the first (or only) feature
    # pass produced them, dead letters as routed. The read-back then compares the shards on disk
    # with these counts, so a record lost or added between here and the files fails the job.
    totals = (
        (
            raw | "CountInputs" >> beam.Map(lambda _: ("inputs", 1)),
            computed[GOOD] | "CountGood" >> beam.Map(_good_outcome),
            dead_letter | "CountDeadLetters" >> beam.Map(lambda d: (f"dead_letter.{d.reason}", 1)),
        )
        | "AllOutcomes" >> beam.Flatten()
        | "Totals" >> beam.CombineGlobally(JobTotalsFn(config.n_bins))
    )
    if config.normalization == "global":
        # Normalising waits for the statistics. Holding every spectrogram until then would make
        # memory grow with the corpus; computing them again costs less than decoding did, so a
        # second pass over the (small) source records recomputes them. Its dead letters repeat
        # the first pass's and are not output again.
        second_pass = unique[GOOD] | "RecomputeFeatures" >> beam.ParDo(ComputeFeaturesFn(config, count=False)).with_outputs(DEAD_LETTER, main=GOOD)
        examples = second_pass[GOOD] | "Normalise" >> beam.ParDo(
            ToExampleFn(config, inventory_name), totals=beam.pvalue.AsSingleton(totals))
    else:
        examples = computed[GOOD] | "Normalise" >> beam.ParDo(ToExampleFn(config, inventory_name))
    return {"examples": examples, "dead_letter": dead_letter, "totals": totals}


def shard_outputs(out_dir: str, compression: str = "none") -> List[ShardedOutput]:
    """The job's sharded outputs, in the order `write_outputs` numbers them: the splits' TFRecords
    (SPLITS order), the utterance index, the dead letter."""
    gzip = compression == "gzip"
    splits = [ShardedOutput(storage.join(records.split_dir(out_dir, split), records.SHARD_PREFIX),
                            suffix=".gz" if gzip else "", framing=TFRECORD, gzip=gzip) for split in SPLITS]
    return splits + [ShardedOutput(storage.join(out_dir, INDEX_PREFIX), ".jsonl", LINES),
                     ShardedOutput(storage.join(out_dir, DEAD_LETTER_PREFIX), ".jsonl", LINES)]


_INDEX_OUTPUT, _DEAD_LETTER_OUTPUT = len(SPLITS), len(SPLITS) + 1


def _example_payloads(example: records.UtteranceFeatures) -> Tuple[Tuple[int, object], Tuple[int, object]]:
    """An example's two writes: its record into its split's shards, its line into the index."""
    return (SPLITS.index(example.split), records.encode_example(example)), (_INDEX_OUTPUT, _index_line(example))


def write_outputs(outputs: Dict[str, beam.PCollection], out_dir: str, num_shards: int = 0, compression: str = "none") -> None:
    """Every output of the job: the splits' shards, the index and the dead letter through one
    `WriteShards` (`num_shards` per output; 0: the runner decides, one per bundle); counts and
    global statistics from the totals."""
    payloads = (
        outputs["examples"] | "EncodeExamples" >> beam.FlatMap(_example_payloads),
        outputs["dead_letter"] | "DeadLetterLines" >> beam.Map(lambda d: (_DEAD_LETTER_OUTPUT, DeadLetter.to_json(d))),
    )
    _ = payloads | "WriteShards" >> WriteShards(shard_outputs(out_dir, compression), temp_root=out_dir, num_shards=num_shards)
    _ = outputs["totals"] | "WriteTotals" >> beam.ParDo(WriteTotalsFn(out_dir))


# ---------------------------------------------------------------------------------- after the run

def read_back(out_dir: str) -> Dict[str, Dict[str, int]]:
    """Reads every shard (each record's checksums verified) and counts its examples:
    {split: {shard file name: count}}. No TensorFlow: see src/speechpipe/io/example_proto.py."""
    from speechpipe.io.example_proto import Example, read_tfrecord_file

    found: Dict[str, Dict[str, int]] = {}
    for split in SPLITS:
        found[split] = {}
        for path in records.shard_paths(out_dir, split):
            n = 0
            for serialized in read_tfrecord_file(path):
                example = Example.FromString(serialized).features.feature
                frames, bins = example[records.NUM_FRAMES].int64_list.value[0], example[records.NUM_BINS].int64_list.value[0]
                if len(example[records.FEATURES].bytes_list.value[0]) != 4 * frames * bins:
                    raise ReadBackError(f"{path}: an example's feature length is not {frames} x {bins}")
                n += 1
            found[split][storage.basename(path)] = n
    return found


def summarise(out_dir: str, spec: InputSpec, config: FeatureConfig, inventory_name: str, seconds: float) -> Dict[str, object]:
    counts = json.loads(storage.beam_read_bytes(storage.join(out_dir, COUNTS_PREFIX + ".json")).decode("utf-8"))
    shards = read_back(out_dir)
    good = {split: int(counts.get(f"good.{split}", 0)) for split in SPLITS}
    dead = {k.split(".", 1)[1]: int(v) for k, v in counts.items() if k.startswith("dead_letter.")}
    inputs = int(counts.get("inputs", 0))
    for split in SPLITS:
        if sum(shards[split].values()) != good[split]:
            raise ReadBackError(f"split {split}: counted {good[split]} examples, read back {sum(shards[split].values())}")
    if sum(good.values()) + sum(dead.values()) != inputs:
        raise ReadBackError(f"{inputs} inputs but {sum(good.values())} good + {sum(dead.values())} dead-lettered")
    return {
        "input": {"kind": spec.kind, "path": spec.path, "data_root": spec.data_root,
                  "ignored_non_audio_files": count_ignored_files(spec), "meta_file": spec.meta_file or None},
        "splits_from": spec.split_rule(),
        "inputs": inputs,
        "good": good,
        "dead_letter": {"total": sum(dead.values()), "by_reason": dict(sorted(dead.items()))},
        "audio_seconds": {s: round(float(counts.get(f"seconds.{s}", 0.0)), 3) for s in SPLITS},
        "frames": {s: int(counts.get(f"frames.{s}", 0)) for s in SPLITS},
        "shards": shards,
        "features": config.to_json(),
        "records": {"features_encoding": "float32 little-endian bytes, frames x bins",
                    "compression": "gzip" if any(n.endswith(".gz") for s in shards.values() for n in s) else "none"},
        "phone_inventory": inventory_name,
        "global_stats": GLOBAL_STATS_FILE,
        "wall_seconds": round(seconds, 2),
    }


# ---------------------------------------------------------------------------------- entry point

def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    d = FeatureConfig()
    parser = argparse.ArgumentParser(prog="speechpipe features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="VoxCeleb root, manifest.jsonl, or Kaldi data dir")
    parser.add_argument("--input-kind", choices=("voxceleb", "manifest", "kaldi"), default=None, help="default: detected")
    parser.add_argument("--data-root", default=None, help="folder audio paths must stay in (default: the input's folder)")
    parser.add_argument("--out", required=True, help="output folder or URI prefix")
    parser.add_argument("--kind", choices=FEATURE_KINDS, default=d.kind, help=f"default {d.kind}")
    parser.add_argument("--sample-rate", type=int, default=d.sample_rate, help=f"default {d.sample_rate}")
    parser.add_argument("--n-fft", type=int, default=d.n_fft, help=f"window in samples, default {d.n_fft}")
    parser.add_argument("--hop-length", type=int, default=d.hop_length, help=f"default {d.hop_length}")
    parser.add_argument("--n-mels", type=int, default=d.n_mels, help=f"default {d.n_mels}")
    parser.add_argument("--normalization", choices=NORMALISATIONS, default=d.normalization, help=f"default {d.normalization}")
    parser.add_argument("--max-seconds", type=float, default=d.max_seconds, help=f"longer audio is dead-lettered, default {d.max_seconds:g}")
    parser.add_argument("--split-fractions", default="0.8,0.1,0.1", help="train,validation,test by speaker when the input has no splits")
    parser.add_argument("--num-shards", type=int, default=0, help="shards per split (0: the runner decides)")
    parser.add_argument("--compression", choices=records.COMPRESSIONS, default="none", help="TFRecord compression, default none")
    parser.add_argument("--inventory", default="", help="phone inventory for transcripts (default: the "
                                                         "--language's, else phones_de.json)")
    parser.add_argument("--language", default="", help="corpus language (de, en-us): transcripts given as text are "
                                                       "phonemised with espeak-ng (default: transcripts are IPA)")
    return parser.parse_known_args(argv)


def run(argv: Optional[List[str]] = None) -> int:
    args, beam_args = parse_args(argv)
    from speechpipe.validation import validate_feature_config

    fractions = tuple(float(x) for x in args.split_fractions.split(","))
    spec = make_spec(args.input, args.input_kind, args.data_root, split_fractions=fractions)
    config = validate_feature_config(replace(
        FeatureConfig(), kind=args.kind, sample_rate=args.sample_rate, n_fft=args.n_fft,
        hop_length=args.hop_length, n_mels=args.n_mels, normalization=args.normalization,
        max_seconds=args.max_seconds,
    ))
    from speechpipe.pipeline.beam_options import with_quiet_workers

    options = PipelineOptions(with_quiet_workers(beam_args))
    options.view_as(SetupOptions).save_main_session = False
    direct = options.view_as(DirectOptions)
    # Users get all cores by default; tests pass --direct_running_mode=in_memory.
    if not any(a.startswith("--direct_running_mode") for a in beam_args):
        direct.direct_running_mode = "multi_processing"
        direct.direct_num_workers = direct.direct_num_workers or os.cpu_count() or 1
    result = run_job(spec, config, args.out, options, args.num_shards, args.inventory, args.compression,
                     language=args.language)
    print(json.dumps({k: result[k] for k in ("inputs", "good", "dead_letter", "audio_seconds", "wall_seconds")}, indent=1))
    print(f"features written to {args.out}")
    return 0


def local_runner(options: PipelineOptions):
    """The runner the DirectRunner would pick for this job, chosen up front: its FnApiRunner
    (which `--direct_running_mode` and `--direct_num_workers` configure), or None for any other
    runner (Flink, Dataflow, portable: the options decide). Beam 2.68's DirectRunner first tries
    its Prism runner, which downloads a Go binary from GitHub at run time: without a network that
    attempt cost every run a second translation and a failed download (0.4 s of a 6 s run on the
    demo corpus) before falling back; with one, the job would have run on another runner than
    its options describe."""
    from apache_beam.options.pipeline_options import StandardOptions

    if options.view_as(StandardOptions).runner not in (None, "DirectRunner", "direct"):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # As the DirectRunner builds it: the workers see the pipeline options.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def run_job(spec: InputSpec, config: FeatureConfig, out_dir: str, options: PipelineOptions,
            num_shards: int = 0, inventory_name: str = "", compression: str = "none",
            language: str = "") -> Dict[str, object]:
    """Runs the job, reads the output back, writes and returns summary.json. `inventory_name`
    defaults to the language's inventory, or German's when no language is given."""
    inventory_name = inventory_name or inventory_for(language)
    if storage.beam_exists(storage.join(out_dir, SUMMARY_FILE)):
        raise FileExistsError(f"{out_dir} already holds a feature job's output ({SUMMARY_FILE})")
    started = time.time()
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
        write_outputs(build(pipeline, spec, config, inventory_name, language), out_dir, num_shards, compression)
    summary = summarise(out_dir, spec, config, inventory_name, time.time() - started)
    summary["language"] = language or None
    storage.beam_write_bytes(storage.join(out_dir, SUMMARY_FILE),
                             (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode("utf-8"),
                             mime_type="application/json")
    logging.info("feature job: %s", summary["good"])
    return summary
