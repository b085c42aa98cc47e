"""The feature job's Beam transforms: parse an input line, decode and compute features (and the
augmented copies of training utterances), count and total, and turn results into records and
index lines. Tagged outputs are named by the constants below; speechpipe.jobs.features_job
wires these into the job."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from speechpipe.audio.augment import AugmentConfig, augment, augmented_id
from speechpipe.audio.decode import AudioRejected, DecodedAudio, check_usable, decode
from speechpipe.audio.features import GlobalStats, compute_features, normalise
from speechpipe.audio.sources import (
    UNKNOWN_PHONE,
    UNPHONEMISABLE,
    DeadLetter,
    InputSpec,
    RawInput,
    SourceRecord,
    keep_first,
    parse_input,
)
from speechpipe.config import FeatureConfig
from speechpipe.filenames import COUNTS_PREFIX, GLOBAL_STATS_FILE
from speechpipe.io import records, storage

# Tagged outputs.
DEAD_LETTER = "dead_letter"
GOOD = "good"
AUGMENTED = "augmented"  # (record of the copy, features, seconds, index extras)
AUGMENT_REFUSED = "augment_refused"  # a copy the usability checks refuse (e.g. too long after speed 0.9)
AUGMENT_STAGE = "augment"
AUGMENT_UNAVAILABLE = "augment_unavailable"  # the copy cannot be made (babble only, no other speaker)

# Output layout the transforms write into (the job's summary.json beside them).
METRICS_NAMESPACE = "speechpipe.audio.features"


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
                return DeadLetter(
                    source=item.source,
                    stage="transcript",
                    reason=UNPHONEMISABLE,
                    detail=str(error),
                    utterance=record.utterance,
                )
        except UnknownPhoneError as error:
            return DeadLetter(
                source=item.source,
                stage="transcript",
                reason=UNKNOWN_PHONE,
                detail=str(error),
                utterance=record.utterance,
            )

    def process(self, item: RawInput):
        Metrics.counter(METRICS_NAMESPACE, "inputs").inc()
        result = parse_input(item, self._spec)
        if isinstance(result, SourceRecord) and (
            result.phones is not None or (self._phonemizer is not None and result.text is not None)
        ):
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
    """SourceRecord -> (record, unnormalised features, seconds), or a DeadLetter. With an enabled
    `augment`, a training record also yields its augmented copies (tag AUGMENTED), or for a copy
    the usability checks refuse, a DeadLetter of stage "augment" (tag AUGMENT_REFUSED)."""

    def __init__(self, config: FeatureConfig, count: bool = True, augment: Optional[AugmentConfig] = None) -> None:
        self._config = config
        self._count = count  # False on the second pass of global normalisation
        self._augment = augment if augment is not None and augment.enabled else None
        self._babble_waves: Dict[str, object] = {}

    def setup(self) -> None:
        import numpy as np

        # Pays scipy.fft's import and the mel filterbank once per worker, not on the first record.
        compute_features(np.zeros(self._config.n_fft, np.float32) + 1e-3, self._config)

    def _babble_sources(self, record: SourceRecord, pool: Optional[List[Tuple[str, str, str]]]):
        """The decoded pool utterances of other speakers, in the pool's (seeded) order; a pool
        utterance that does not decode is left out (its own record dead-letters it)."""
        if not pool:
            return []
        waves = []
        for utterance, path, speaker in pool:
            if speaker == record.speaker:
                continue
            if utterance not in self._babble_waves:
                try:
                    audio = decode(path, self._config.sample_rate, self._config.max_seconds)
                    check_usable(audio, self._config.n_fft, self._config.max_seconds)
                    self._babble_waves[utterance] = audio.samples
                except AudioRejected:
                    self._babble_waves[utterance] = None
            if self._babble_waves[utterance] is not None:
                waves.append(self._babble_waves[utterance])
        return waves

    def _copies(self, record: SourceRecord, audio: DecodedAudio, pool):
        config = self._augment
        babble_sources = None
        for k in range(config.copies):
            utterance = None
            try:
                if babble_sources is None:
                    babble_sources = self._babble_sources(record, pool)
                try:
                    made = augment(audio.samples, audio.sample_rate, config, record.utterance, k, babble_sources)
                except ValueError as error:  # e.g. babble only, and no other speaker to make it from
                    raise AudioRejected(AUGMENT_UNAVAILABLE, str(error)) from None
                utterance = augmented_id(record.utterance, k, made.kind)
                copy_audio = DecodedAudio(made.samples, audio.sample_rate, audio.source_rate, audio.source_channels)
                check_usable(copy_audio, self._config.n_fft, self._config.max_seconds)
            except AudioRejected as rejected:
                if self._count:
                    Metrics.counter(METRICS_NAMESPACE, f"augment_refused_{rejected.reason}").inc()
                yield beam.pvalue.TaggedOutput(
                    AUGMENT_REFUSED,
                    DeadLetter(
                        source=record.source,
                        stage=AUGMENT_STAGE,
                        reason=rejected.reason,
                        detail=f"{made.detail}: {rejected.detail}" if utterance else rejected.detail,
                        utterance=utterance or f"{record.utterance}-aug{k}",
                    ),
                )
                continue
            copy = replace(record, utterance=utterance, speaker=record.speaker + made.speaker_suffix)
            if self._count:
                Metrics.counter(METRICS_NAMESPACE, f"augmented_{made.kind}").inc()
            extras = {"augmented_from": record.utterance, "augmentation": made.detail}
            yield beam.pvalue.TaggedOutput(
                AUGMENTED,
                (copy, compute_features(made.samples, self._config), made.samples.shape[0] / audio.sample_rate, extras),
            )

    def process(self, record: SourceRecord, pool: Optional[List[Tuple[str, str, str]]] = None):
        try:
            audio = decode(record.audio_path, self._config.sample_rate, self._config.max_seconds)
            check_usable(audio, self._config.n_fft, self._config.max_seconds)
        except AudioRejected as rejected:
            if self._count:
                Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{rejected.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter.rejected_audio(record, rejected.reason, rejected.detail)
            )
            return
        features = compute_features(audio.samples, self._config)
        if self._count:
            Metrics.counter(METRICS_NAMESPACE, f"good_{record.split}").inc()
        yield record, features, audio.samples.shape[0] / audio.sample_rate
        if self._augment is not None and record.split == "train":
            yield from self._copies(record, audio, pool)


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
            for key, value in (
                (f"good.{item.split}", 1),
                (f"seconds.{item.split}", item.seconds),
                (f"frames.{item.split}", item.frames),
            ):
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


def good_outcome(element) -> GoodOutcome:
    record, features, seconds = element
    return GoodOutcome(
        record.split,
        round(seconds, 6),
        int(features.shape[0]),
        GlobalStats.of(features) if record.split == "train" else None,
    )


def augmented_outcomes(element) -> List[Tuple[str, float]]:
    """What one augmented copy adds to the totals: counted apart from the good inputs (a copy is
    no input), and no statistics (the global statistics are the clean training audio's: serving
    and the clean validation and test splits are normalised with them)."""
    record, features, seconds, _ = element
    kind = record.utterance.rsplit("-", 1)[1]
    return [
        (f"augmented.{kind}", 1),
        ("augmented_seconds", round(seconds, 6)),
        ("augmented_frames", int(features.shape[0])),
    ]


def babble_key(seed: int):
    """Orders the training records for the babble pool: a seeded hash of the utterance id, so
    that the pool does not depend on input order or on the runner."""
    import hashlib

    # The path breaks the tie between duplicates of one utterance id (they reach the pool too).
    return lambda r: (hashlib.sha256(f"{seed}:babble:{r[0]}".encode("utf-8")).hexdigest(), r[1])


class WriteTotalsFn(beam.DoFn):
    """The totals -> counts/counts.json and global_stats.json (once: the totals are a singleton;
    a retry writes the same bytes again)."""

    def __init__(self, out_dir: str) -> None:
        self._out_dir = out_dir

    def process(self, totals: Dict[str, object]):
        stats = totals["global_stats"]
        storage.beam_write_bytes(
            storage.join(self._out_dir, COUNTS_PREFIX + ".json"),
            (json.dumps(totals["counts"], sort_keys=True) + "\n").encode("utf-8"),
            mime_type="application/json",
        )
        storage.beam_write_bytes(
            storage.join(self._out_dir, GLOBAL_STATS_FILE),
            ((json.dumps(stats, indent=1) if stats else "null") + "\n").encode("utf-8"),
            mime_type="application/json",
        )
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
            utterance=record.utterance,
            speaker=record.speaker,
            session=record.session,
            split=record.split,
            features=normalise(features, self._config, stats),
            duration=round(seconds, 6),
            phone_ids=[self._ids[p] for p in phones] if phones is not None else None,
            phones=phones,
            text=record.text,
        )


class AugmentedToExampleFn(ToExampleFn):
    """(copy's record, unnormalised features, seconds, index extras) -> (example, extras)."""

    def process(self, element, totals: Optional[Dict[str, object]] = None):
        record, features, seconds, extras = element
        for example in super().process((record, features, seconds), totals):
            yield example, extras


class RecomputeAndNormaliseFn(beam.DoFn):
    """Global normalisation's second pass in one step: SourceRecord -> its normalised example
    (and, with `augment`, its copies' (example, extras), tag AUGMENTED), the features recomputed
    and normalised with the first pass's statistics (`totals`) where they are made. Joined so
    that no PCollection of unnormalised spectrograms waits for the statistics: a runner that
    runs the step consuming the side input apart from the one producing its main input (Beam's
    in-process FnApiRunner does) would otherwise hold every spectrogram of the corpus. Its dead
    letters repeat the first pass's and are not output again."""

    def __init__(self, config: FeatureConfig, inventory_name: str, augment: Optional[AugmentConfig] = None) -> None:
        self._compute = ComputeFeaturesFn(config, count=False, augment=augment)
        self._example = ToExampleFn(config, inventory_name)
        self._augmented = AugmentedToExampleFn(config, inventory_name)

    def setup(self) -> None:
        self._compute.setup()
        self._example.setup()
        self._augmented.setup()

    def process(self, record: SourceRecord, totals: Dict[str, object], pool=None):
        for out in self._compute.process(record, pool):
            if isinstance(out, beam.pvalue.TaggedOutput):
                if out.tag == AUGMENTED:
                    for copy in self._augmented.process(out.value, totals):
                        yield beam.pvalue.TaggedOutput(AUGMENTED, copy)
                continue  # a dead letter or refused copy: the first pass output it
            yield from self._example.process(out, totals)


def index_line(example: records.UtteranceFeatures, extras: Optional[Dict[str, str]] = None) -> str:
    line = {
        "utterance": example.utterance,
        "speaker": example.speaker,
        "session": example.session,
        "split": example.split,
        "num_frames": int(example.features.shape[0]),
        "duration": example.duration,
    }
    if extras:
        line.update(extras)
    return json.dumps(line, ensure_ascii=False)
