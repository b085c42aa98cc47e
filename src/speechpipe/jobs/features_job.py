"""`speechpipe features`: audio to normalised spectrogram TFRecords, with a dead letter.

    speechpipe features --input PATH --out DIR [--normalization cmvn] [--max-seconds 30]
                        [--augment noise,reverb,speed --augment-copies 1 --augment-seed 0]
                        [Beam options: --runner, --direct_running_mode, --direct_num_workers, ...]

Reads a VoxCeleb-layout root, a JSON Lines manifest or a Kaldi data directory; decodes,
downmixes and resamples; computes log-mel features (librosa's definition); normalises; writes sharded GZIP TFRecords per
split (TFX's `Split-<name>/` layout), an index of the good utterances, the dead letter, the
training split's global statistics and `summary.json`. Bad inputs go to the dead letter with a
reason, the job completes, good + dead-lettered = inputs, and every shard is read back and counted
before the job reports success.

With --augment, every training utterance also gets --augment-copies augmented copies (additive
noise, simulated reverberation, speed perturbation: speechpipe.audio.augment), each a record of
its own (`<utterance>-aug<k>-<kind>`) in the train split; validation and test stay clean, and
the global statistics come from the clean training audio only.

--input and --out may be local paths or URIs (gs://, s3://, ...): inputs, audio and outputs go
through Beam's FileSystems (speechpipe.io.storage); the shards are read back through TensorFlow, which
reads the same URIs.

The transforms are speechpipe.jobs.feature_transforms; this module wires them (`build`),
writes and reads back the outputs, and is the command line (`run(argv)`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from speechpipe.audio.augment import BABBLE, NOISE, AugmentConfig, parse_kinds
from speechpipe.audio.sources import (
    DeadLetter,
    InputSpec,
    count_ignored_files,
    expand_input,
    make_spec,
)
from speechpipe.config import FEATURE_KINDS, NORMALISATIONS, SPLIT_FRACTIONS, SPLITS, FeatureConfig
from speechpipe.filenames import COUNTS_PREFIX, DEAD_LETTER_PREFIX, GLOBAL_STATS_FILE, INDEX_PREFIX, SUMMARY_FILE
from speechpipe.io import records, storage
from speechpipe.io.shards import LINES, TFRECORD, ShardedOutput, WriteShards
from speechpipe.jobs.feature_transforms import (  # noqa: F401 - the layout and tags, also for the job's callers
    AUGMENT_REFUSED,
    AUGMENT_STAGE,
    AUGMENT_UNAVAILABLE,
    AUGMENTED,
    DEAD_LETTER,
    GOOD,
    METRICS_NAMESPACE,
    AugmentedToExampleFn,
    ComputeFeaturesFn,
    JobTotalsFn,
    KeepFirstFn,
    ParseInputFn,
    RecomputeAndNormaliseFn,
    ToExampleFn,
    WriteTotalsFn,
    augmented_outcomes,
    babble_key,
    good_outcome,
    index_line,
)
from speechpipe.phones.inventory import inventory_for


class ReadBackError(RuntimeError):
    """The records on disk do not match what the job counted."""


# ---------------------------------------------------------------------------------- the DAG


def build(
    pipeline: beam.Pipeline,
    spec: InputSpec,
    config: FeatureConfig,
    inventory_name: str = "phones_de.json",
    language: str = "",
    augment: Optional[AugmentConfig] = None,
) -> Dict[str, beam.PCollection]:
    """Adds the feature job's transforms; returns its PCollections by name (for tests and for
    `write_outputs`): examples, dead_letter and totals ({"counts": ..., "global_stats": ...});
    with an enabled `augment`, also augmented ((example, index extras) of the training split's
    copies) and augment_refused (DeadLetters of copies refused, stage "augment")."""
    augment = augment.validate() if augment is not None and augment.enabled else None
    raw = (
        pipeline
        # Impulse, not Create([spec]): one transform instead of four (each costs at start-up).
        | "Start" >> beam.Impulse()
        | "ExpandInput" >> beam.FlatMap(lambda _, spec: expand_input(spec), spec=spec)
    )
    # Listing runs on one worker, and so does parsing (a line or a path each, as cheap as
    # listing it): GroupByUtterance is the redistribution, before decoding, the expensive step.
    # A Reshuffle here as well cost a stage and an encoded copy of every input.
    parsed = raw | "ParseInput" >> beam.ParDo(ParseInputFn(spec, inventory_name, language)).with_outputs(
        DEAD_LETTER, main=GOOD
    )
    unique = (
        parsed[GOOD]
        | "KeyByUtterance" >> beam.Map(lambda r: (r.utterance, r))
        | "GroupByUtterance" >> beam.GroupByKey()
        | "KeepFirstOfDuplicates" >> beam.ParDo(KeepFirstFn()).with_outputs(DEAD_LETTER, main=GOOD)
    )
    side: Dict[str, object] = {}
    if augment is not None and NOISE in augment.kinds and BABBLE in augment.noise_types:
        # Babble is made from other training utterances: a seeded pool of them, as paths (each
        # worker decodes the pool once). Drawn from the parsed records, before the grouping:
        # from `unique`, the pool's combine would wait on the stage that ComputeFeatures is fused
        # into, and the FnApiRunner's bundles never run.
        side["pool"] = beam.pvalue.AsSingleton(
            parsed[GOOD]
            | "TrainForBabble"
            >> beam.FlatMap(lambda r: [(r.utterance, r.audio_path, r.speaker)] if r.split == "train" else [])
            | "BabblePool" >> beam.combiners.Top.Smallest(augment.babble_pool, key=babble_key(augment.seed))
        )
    outputs = (DEAD_LETTER,) if augment is None else (DEAD_LETTER, AUGMENTED, AUGMENT_REFUSED)
    computed = unique[GOOD] | "ComputeFeatures" >> beam.ParDo(
        ComputeFeaturesFn(config, augment=augment), **side
    ).with_outputs(*outputs, main=GOOD)
    dead_letter = (parsed[DEAD_LETTER], unique[DEAD_LETTER], computed[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()

    # Counted where they arise: inputs as listed, good utterances as the first (or only) feature
    # pass produced them, dead letters as routed. The read-back then compares the shards on disk
    # with these counts, so a record lost or added between here and the files fails the job.
    outcomes = (
        raw | "CountInputs" >> beam.Map(lambda _: ("inputs", 1)),
        computed[GOOD] | "CountGood" >> beam.Map(good_outcome),
        dead_letter | "CountDeadLetters" >> beam.Map(lambda d: (f"dead_letter.{d.reason}", 1)),
    )
    if augment is not None:
        outcomes += (
            computed[AUGMENTED] | "CountAugmented" >> beam.FlatMap(augmented_outcomes),
            computed[AUGMENT_REFUSED] | "CountAugmentRefused" >> beam.Map(lambda d: (f"augment_refused.{d.reason}", 1)),
        )
    totals = outcomes | "AllOutcomes" >> beam.Flatten() | "Totals" >> beam.CombineGlobally(JobTotalsFn(config.n_bins))
    normalised_copies = None
    if config.normalization == "global":
        # Normalising waits for the statistics. Holding every spectrogram until then would make
        # memory grow with the corpus; computing them again costs less than decoding did, so a
        # second pass over the (small) source records recomputes and normalises them in one step
        # (RecomputeAndNormaliseFn says why one).
        second_pass = unique[GOOD] | "RecomputeAndNormalise" >> beam.ParDo(
            RecomputeAndNormaliseFn(config, inventory_name, augment), totals=beam.pvalue.AsSingleton(totals), **side
        ).with_outputs(AUGMENTED, main=GOOD)
        examples = second_pass[GOOD]
        normalised_copies = second_pass[AUGMENTED] if augment is not None else None
        copies, stats_side = None, {}
    else:
        examples = computed[GOOD] | "Normalise" >> beam.ParDo(ToExampleFn(config, inventory_name))
        copies = computed[AUGMENTED] if augment is not None else None
        stats_side = {}
    result = {"examples": examples, "dead_letter": dead_letter, "totals": totals}
    if augment is not None:
        result["augmented"] = (
            normalised_copies
            if normalised_copies is not None
            else copies | "NormaliseAugmented" >> beam.ParDo(AugmentedToExampleFn(config, inventory_name), **stats_side)
        )
        result["augment_refused"] = computed[AUGMENT_REFUSED]
    return result


def shard_outputs(out_dir: str, compression: str = "none") -> List[ShardedOutput]:
    """The job's sharded outputs, in the order `write_outputs` numbers them: the splits' TFRecords
    (SPLITS order), the utterance index, the dead letter."""
    gzip = compression == "gzip"
    splits = [
        ShardedOutput(
            storage.join(records.split_dir(out_dir, split), records.SHARD_PREFIX),
            suffix=".gz" if gzip else "",
            framing=TFRECORD,
            gzip=gzip,
        )
        for split in SPLITS
    ]
    return splits + [
        ShardedOutput(storage.join(out_dir, INDEX_PREFIX), ".jsonl", LINES),
        ShardedOutput(storage.join(out_dir, DEAD_LETTER_PREFIX), ".jsonl", LINES),
    ]


_INDEX_OUTPUT, _DEAD_LETTER_OUTPUT = len(SPLITS), len(SPLITS) + 1


def _example_payloads(example: records.UtteranceFeatures) -> Tuple[Tuple[int, object], Tuple[int, object]]:
    """An example's two writes: its record into its split's shards, its line into the index."""
    return (SPLITS.index(example.split), records.encode_example(example)), (_INDEX_OUTPUT, index_line(example))


def _augmented_payloads(element) -> Tuple[Tuple[int, object], Tuple[int, object]]:
    """An augmented copy's writes: as an example's, its index line naming its source utterance
    and what was done to it."""
    example, extras = element
    return (SPLITS.index(example.split), records.encode_example(example)), (_INDEX_OUTPUT, index_line(example, extras))


def write_outputs(
    outputs: Dict[str, beam.PCollection], out_dir: str, num_shards: int = 0, compression: str = "none"
) -> None:
    """Every output of the job: the splits' shards, the index and the dead letter through one
    `WriteShards` (`num_shards` per output; 0: the runner decides, one per bundle); counts and
    global statistics from the totals."""
    payloads = (
        outputs["examples"] | "EncodeExamples" >> beam.FlatMap(_example_payloads),
        outputs["dead_letter"] | "DeadLetterLines" >> beam.Map(lambda d: (_DEAD_LETTER_OUTPUT, DeadLetter.to_json(d))),
    )
    if "augmented" in outputs:
        # Refused copies go into the dead letter too (stage "augment"), counted apart from the
        # inputs' dead letters: they are no inputs.
        payloads += (
            outputs["augmented"] | "EncodeAugmented" >> beam.FlatMap(_augmented_payloads),
            outputs["augment_refused"]
            | "AugmentRefusedLines" >> beam.Map(lambda d: (_DEAD_LETTER_OUTPUT, DeadLetter.to_json(d))),
        )
    _ = payloads | "WriteShards" >> WriteShards(
        shard_outputs(out_dir, compression), temp_root=out_dir, num_shards=num_shards
    )
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
                frames, bins = (
                    example[records.NUM_FRAMES].int64_list.value[0],
                    example[records.NUM_BINS].int64_list.value[0],
                )
                if len(example[records.FEATURES].bytes_list.value[0]) != 4 * frames * bins:
                    raise ReadBackError(f"{path}: an example's feature length is not {frames} x {bins}")
                n += 1
            found[split][storage.basename(path)] = n
    return found


def _augmentation_summary(counts: Dict[str, float], augment: AugmentConfig, good_train: int) -> Dict[str, object]:
    """The augmentation block of summary.json; raises ReadBackError when the copies made and
    refused do not add up to copies x good training utterances."""
    by_kind = {k.split(".", 1)[1]: int(v) for k, v in counts.items() if k.startswith("augmented.")}
    refused = {k.split(".", 1)[1]: int(v) for k, v in counts.items() if k.startswith("augment_refused.")}
    asked = augment.copies * good_train
    if sum(by_kind.values()) + sum(refused.values()) != asked:
        raise ReadBackError(
            f"augmentation: {asked} copies asked ({augment.copies} x {good_train} training utterances), "
            f"{sum(by_kind.values())} made + {sum(refused.values())} refused"
        )
    return {
        "config": augment.to_json(),
        "asked": asked,
        "train": sum(by_kind.values()),
        "by_kind": dict(sorted(by_kind.items())),
        "refused": {"total": sum(refused.values()), "by_reason": dict(sorted(refused.items()))},
        "audio_seconds": round(float(counts.get("augmented_seconds", 0.0)), 3),
        "frames": int(counts.get("augmented_frames", 0)),
        "global_stats_from": "clean training audio only",
    }


def summarise(
    out_dir: str,
    spec: InputSpec,
    config: FeatureConfig,
    inventory_name: str,
    seconds: float,
    augment: Optional[AugmentConfig] = None,
) -> Dict[str, object]:
    """summary.json's content. `good` counts the inputs that became records (good + dead-lettered
    = inputs); with augmentation the train split's shards hold good["train"] + augmentation
    ["train"] records, and the augmentation block counts the copies by kind and those refused."""
    counts = json.loads(storage.beam_read_bytes(storage.join(out_dir, COUNTS_PREFIX + ".json")).decode("utf-8"))
    shards = read_back(out_dir)
    good = {split: int(counts.get(f"good.{split}", 0)) for split in SPLITS}
    dead = {k.split(".", 1)[1]: int(v) for k, v in counts.items() if k.startswith("dead_letter.")}
    inputs = int(counts.get("inputs", 0))
    augmentation = (
        _augmentation_summary(counts, augment, good["train"]) if augment is not None and augment.enabled else None
    )
    for split in SPLITS:
        expected = good[split] + (augmentation["train"] if augmentation and split == "train" else 0)
        if sum(shards[split].values()) != expected:
            raise ReadBackError(f"split {split}: counted {expected} examples, read back {sum(shards[split].values())}")
    if sum(good.values()) + sum(dead.values()) != inputs:
        raise ReadBackError(f"{inputs} inputs but {sum(good.values())} good + {sum(dead.values())} dead-lettered")
    summary = {
        "input": {
            "kind": spec.kind,
            "path": spec.path,
            "data_root": spec.data_root,
            "ignored_non_audio_files": count_ignored_files(spec),
            "meta_file": spec.meta_file or None,
        },
        "splits_from": spec.split_rule(),
        "inputs": inputs,
        "good": good,
        "dead_letter": {"total": sum(dead.values()), "by_reason": dict(sorted(dead.items()))},
        "audio_seconds": {s: round(float(counts.get(f"seconds.{s}", 0.0)), 3) for s in SPLITS},
        "frames": {s: int(counts.get(f"frames.{s}", 0)) for s in SPLITS},
        "shards": shards,
        "features": config.to_json(),
        "records": {
            "features_encoding": "float32 little-endian bytes, frames x bins",
            "compression": "gzip" if any(n.endswith(".gz") for s in shards.values() for n in s) else "none",
        },
        "phone_inventory": inventory_name,
        "global_stats": GLOBAL_STATS_FILE,
        "wall_seconds": round(seconds, 2),
    }
    if augmentation is not None:
        summary["augmentation"] = augmentation
    if spec.split_overrides:
        # The speakers the run's preflight moved to another split than their hash drew.
        summary["split_overrides"] = dict(sorted(spec.split_overrides.items()))
    return summary


# ---------------------------------------------------------------------------------- entry point


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    d = FeatureConfig()
    parser = argparse.ArgumentParser(
        prog="speechpipe features", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="VoxCeleb root, manifest.jsonl, or Kaldi data dir")
    parser.add_argument(
        "--input-kind", choices=("voxceleb", "manifest", "kaldi"), default=None, help="default: detected"
    )
    parser.add_argument(
        "--data-root", default=None, help="folder audio paths must stay in (default: the input's folder)"
    )
    parser.add_argument("--out", required=True, help="output folder or URI prefix")
    parser.add_argument("--kind", choices=FEATURE_KINDS, default=d.kind, help=f"default {d.kind}")
    parser.add_argument("--sample-rate", type=int, default=d.sample_rate, help=f"default {d.sample_rate}")
    parser.add_argument("--n-fft", type=int, default=d.n_fft, help=f"window in samples, default {d.n_fft}")
    parser.add_argument("--hop-length", type=int, default=d.hop_length, help=f"default {d.hop_length}")
    parser.add_argument("--n-mels", type=int, default=d.n_mels, help=f"default {d.n_mels}")
    parser.add_argument(
        "--normalization", choices=NORMALISATIONS, default=d.normalization, help=f"default {d.normalization}"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=d.max_seconds,
        help=f"longer audio is dead-lettered, default {d.max_seconds:g}",
    )
    parser.add_argument(
        "--split-fractions",
        default=",".join(str(f) for f in SPLIT_FRACTIONS),
        help="train,validation,test by speaker when the input has no splits (default %(default)s)",
    )
    parser.add_argument("--num-shards", type=int, default=0, help="shards per split (0: the runner decides)")
    parser.add_argument(
        "--compression", choices=records.COMPRESSIONS, default="none", help="TFRecord compression, default none"
    )
    parser.add_argument(
        "--inventory",
        default="",
        help="phone inventory for transcripts (default: the --language's, else phones_de.json)",
    )
    parser.add_argument(
        "--language",
        default="",
        help="corpus language (de, en-us): transcripts given as text are "
        "phonemised with espeak-ng (default: transcripts are IPA)",
    )
    a = AugmentConfig()
    parser.add_argument(
        "--augment",
        default="",
        help="augmentation kinds for the train split, comma-separated from noise,reverb,speed (default: none)",
    )
    parser.add_argument(
        "--augment-copies",
        type=int,
        default=None,
        help="augmented copies per training utterance, each of one kind (default 1 with --augment)",
    )
    parser.add_argument("--augment-seed", type=int, default=a.seed, help=f"default {a.seed}")
    parser.add_argument(
        "--augment-snr",
        default=",".join(f"{v:g}" for v in a.snr_db),
        help=f"SNR range in dB of generated noise, default {a.snr_db[0]:g},{a.snr_db[1]:g}",
    )
    parser.add_argument(
        "--augment-noise-types", default=",".join(a.noise_types), help=f"default {','.join(a.noise_types)}"
    )
    parser.add_argument(
        "--augment-speed",
        default=",".join(f"{v:g}" for v in a.speed_factors),
        help=f"speed factors, default {','.join(f'{v:g}' for v in a.speed_factors)}",
    )
    parser.add_argument(
        "--augment-rt60",
        default=",".join(f"{v:g}" for v in a.rt60_s),
        help=f"RT60 range in seconds, default {a.rt60_s[0]:g},{a.rt60_s[1]:g}",
    )
    parser.add_argument(
        "--augment-speed-speaker",
        choices=("new", "same"),
        default="new" if a.speed_new_speaker else "same",
        help="a speed-perturbed copy is a new speaker (default, as WeSpeaker) or the same",
    )
    return parser.parse_known_args(argv)


def _floats(flag: str, text: str) -> Tuple[float, ...]:
    from speechpipe.validation import ConfigError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: need comma-separated numbers") from None


def augment_config_from_args(args: argparse.Namespace) -> Optional[AugmentConfig]:
    """The AugmentConfig the --augment* flags ask for (validated), or None when augmentation is
    off."""
    from speechpipe.validation import ConfigError

    kinds = parse_kinds(args.augment)
    if not kinds:
        if args.augment_copies:
            raise ConfigError("--augment-copies needs --augment KINDS (noise, reverb, speed)")
        return None
    return AugmentConfig(
        copies=1 if args.augment_copies is None else args.augment_copies,
        kinds=kinds,
        noise_types=tuple(n.strip() for n in args.augment_noise_types.split(",") if n.strip()),
        snr_db=_floats("--augment-snr", args.augment_snr),
        speed_factors=_floats("--augment-speed", args.augment_speed),
        rt60_s=_floats("--augment-rt60", args.augment_rt60),
        speed_new_speaker=args.augment_speed_speaker == "new",
        seed=args.augment_seed,
    ).validate()


def run(argv: Optional[List[str]] = None) -> int:
    args, beam_args = parse_args(argv)
    from speechpipe.validation import validate_feature_config

    fractions = tuple(float(x) for x in args.split_fractions.split(","))
    spec = make_spec(args.input, args.input_kind, args.data_root, split_fractions=fractions)
    config = validate_feature_config(
        replace(
            FeatureConfig(),
            kind=args.kind,
            sample_rate=args.sample_rate,
            n_fft=args.n_fft,
            hop_length=args.hop_length,
            n_mels=args.n_mels,
            normalization=args.normalization,
            max_seconds=args.max_seconds,
        )
    )
    augment = augment_config_from_args(args)
    from speechpipe.jobs.beam_options import direct_runner_defaults, with_quiet_workers

    # Users get every core by default; tests pass --direct_running_mode=in_memory.
    options = PipelineOptions(with_quiet_workers(direct_runner_defaults(beam_args)))
    options.view_as(SetupOptions).save_main_session = False
    result = run_job(
        spec,
        config,
        args.out,
        options,
        args.num_shards,
        args.inventory,
        args.compression,
        language=args.language,
        augment=augment,
    )
    keys = ("inputs", "good", "dead_letter", "audio_seconds", "wall_seconds") + (("augmentation",) if augment else ())
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    print(f"features written to {args.out}")
    return 0


def multi_processing_direct(options: PipelineOptions) -> bool:
    """Whether the job runs on the DirectRunner's multi-processing FnApiRunner."""
    from apache_beam.options.pipeline_options import DirectOptions

    return local_runner(options) is not None and options.view_as(DirectOptions).direct_running_mode == (
        "multi_processing"
    )


def in_memory(options: PipelineOptions) -> PipelineOptions:
    """The same options, on the DirectRunner in one process."""
    from apache_beam.options.pipeline_options import DirectOptions

    again = PipelineOptions.from_dictionary(options.get_all_options(drop_default=True))
    again.view_as(DirectOptions).direct_running_mode = "in_memory"
    return again


def remove_job_outputs(out_dir: str) -> None:
    """Every file a run of the job writes under `out_dir` (shards, index, dead letter, counts,
    statistics), so that a run again starts from nothing; other files are left alone."""
    from apache_beam.io.filesystems import FileSystems

    patterns = [records.split_dir(out_dir, split) + "/*" for split in SPLITS] + [
        storage.join(out_dir, name + "*")
        for name in (INDEX_PREFIX, DEAD_LETTER_PREFIX, COUNTS_PREFIX, GLOBAL_STATS_FILE)
    ]
    found = [path for pattern in patterns for path in storage.beam_match(pattern)]
    if found:
        FileSystems.delete(found)


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
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    )


def run_job(
    spec: InputSpec,
    config: FeatureConfig,
    out_dir: str,
    options: PipelineOptions,
    num_shards: int = 0,
    inventory_name: str = "",
    compression: str = "none",
    language: str = "",
    augment: Optional[AugmentConfig] = None,
) -> Dict[str, object]:
    """Runs the job, reads the output back, writes and returns summary.json. `inventory_name`
    defaults to the language's inventory, or German's when no language is given. `augment`
    (enabled: copies > 0) adds augmented copies of the training split's utterances."""
    augment = augment.validate() if augment is not None and augment.enabled else None
    inventory_name = inventory_name or inventory_for(language)
    if storage.beam_exists(storage.join(out_dir, SUMMARY_FILE)):
        raise FileExistsError(f"{out_dir} already holds a feature job's output ({SUMMARY_FILE})")
    started = time.time()

    def run_once(run_options: PipelineOptions) -> Dict[str, object]:
        with beam.Pipeline(runner=local_runner(run_options), options=run_options) as pipeline:
            write_outputs(
                build(pipeline, spec, config, inventory_name, language, augment), out_dir, num_shards, compression
            )
        return summarise(out_dir, spec, config, inventory_name, time.time() - started, augment)

    try:
        summary = run_once(options)
    except ReadBackError as error:
        if not multi_processing_direct(options):
            raise
        # Beam's multi-processing DirectRunner can drop a block of elements between its workers
        # (about 1 run in 50 here; docs/features.md): the count check caught it, nothing is kept
        # from that run, and the job runs again in one process, where the check is made again.
        logging.warning("feature job: %s (multi-processing DirectRunner); running it again in_memory", error)
        remove_job_outputs(out_dir)
        summary = run_once(in_memory(options))
        summary["rerun"] = {"why": str(error), "direct_running_mode": "in_memory"}
    summary["language"] = language or None
    storage.beam_write_bytes(
        storage.join(out_dir, SUMMARY_FILE),
        (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode("utf-8"),
        mime_type="application/json",
    )
    logging.info("feature job: %s", summary["good"])
    return summary
