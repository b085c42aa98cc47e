"""The pair job's Beam transforms: index lines in, per-split pair blocks, plans and counts out
(tagged outputs named by the constants below). The sampling rules themselves are
speechpipe.speakers.pairs; the job that wires these to its inputs and sinks is
speechpipe.jobs.pairs_job."""

from __future__ import annotations

import io
import json
from typing import Dict, Iterable, Iterator, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsDict, TaggedOutput

from speechpipe.config import SPLITS, FeatureConfig
from speechpipe.speakers.pairs import (
    DIFFERENT,
    SAME,
    PairConfig,
    PairsInputError,
    SpeakerUtterances,
    SplitPlan,
    parse_index_record,
    sample_negatives,
    sample_positives,
)

# Tagged outputs.
GROUPS = "groups"  # SpeakerUtterances of speakers with at least one eligible utterance
SHORT = "short"  # JSON lines of utterances shorter than one segment
SPEAKER_STATS = "speaker_stats"  # (split, counts) per speaker: utterances, exclusions
PLANS = "plans"  # (split, SplitPlan)
PLAN_STATS = "plan_stats"  # (split, counts) per split: positives planned, negatives target
PAIR_STATS = "pair_stats"  # (split, counts) per speaker: pairs drawn, shortfall
# One element per speaker and split: (speaker, [(label, utterance_a, utterance_b), ...]).
PAIRS_TAG: Dict[str, str] = {split: f"pairs_{split}" for split in SPLITS}


class ReadIndexFile(beam.DoFn):
    """One index or manifest file -> (speaker, (utterance, session, split, num_frames)).

    Files are read line by line in the DoFn, not with ReadFromText, so that an error can name
    the file and the line. Plain tuples keep the 1.1 million elements cheap to encode.

    `unique_ids`: a repeated utterance id within the file, under any speaker, is an error naming
    both lines. For a manifest, which is one file, that checks the whole input without a shuffle
    over the ids, at the cost of its ids held by one worker while it reads (demo-corpus sizes).
    A feature job's index needs no such check: that job keeps one record per id."""

    def __init__(self, features: FeatureConfig, unique_ids: bool = False):
        self._features = features
        self._unique_ids = unique_ids

    def process(self, path: str) -> Iterator[Tuple[str, Tuple[str, str, str, int]]]:
        first_line: Dict[str, int] = {}
        with FileSystems.open(path) as raw:
            for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), 1):
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PairsInputError(f"{where}: not a JSON object ({error.msg})") from None
                ref = parse_index_record(record, self._features, where)
                if self._unique_ids:
                    seen = first_line.setdefault(ref.utterance, number)
                    if seen != number:
                        raise PairsInputError(
                            f"{where}: utterance {ref.utterance!r} is listed twice (first on line {seen})"
                        )
                yield ref.speaker, (ref.utterance, ref.session, ref.split, ref.num_frames)


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
            yield TaggedOutput(
                SHORT,
                json.dumps(
                    {
                        "utterance": utterance,
                        "speaker": speaker,
                        "session": session,
                        "split": split,
                        "num_frames": frames,
                        "reason": f"fewer than {minimum} frames (one segment)",
                    },
                    sort_keys=True,
                ),
            )
        yield TaggedOutput(
            SPEAKER_STATS,
            (
                split,
                {
                    "speakers": 1,
                    "utterances": len(values),
                    "eligible_utterances": len(eligible),
                    "excluded_short": len(short),
                    "speakers_all_short": int(not eligible),
                },
            ),
        )
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
        yield TaggedOutput(
            PLAN_STATS,
            (
                split,
                {
                    "speakers_paired": len(plan.speakers),
                    "positives_planned": plan.positives,
                    "different_target": plan.negatives,
                    "speakers_capped": plan.capped_speakers,
                    "speaker_links": plan.links,
                },
            ),
        )


class DrawPairs(beam.DoFn):
    """One speaker -> one block: its positives and the negatives it owns, on its split's tag.

    A block, not an element per pair: Beam's per-element cost (windowing, sink bookkeeping) is
    several times that of drawing and encoding a pair, and a block is bounded by the cap."""

    def __init__(self, config: PairConfig):
        self._config = config

    def process(self, group: SpeakerUtterances, plans: Dict[str, SplitPlan]):
        plan = plans[group.split]
        cross_session = self._config.cross_session
        positives, available = sample_positives(group, self._config)
        negatives, shortfall = sample_negatives(group, plan, self._config)
        block = [(SAME, a, b) for a, b in positives] + [(DIFFERENT, a, b) for a, b in negatives]
        if block:
            yield TaggedOutput(PAIRS_TAG[group.split], (group.speaker, block))
        yield TaggedOutput(
            PAIR_STATS,
            (
                group.split,
                {
                    "same": len(positives),
                    "different": len(negatives),
                    "different_shortfall": shortfall,
                    "positives_available": available,
                    "speakers_without_positives": int(not positives),
                    # Positives within one session are easier than across sessions (one channel):
                    # counted apart, as they flatter the EER.
                    "same_session_positives": (
                        0 if group.positives_across_sessions(cross_session) else group.same_session(positives)
                    ),
                    "speakers_single_session": int(group.sessions == 1),
                    "speakers_single_session_positives": int(
                        bool(positives) and group.single_session_fallback(cross_session)
                    ),
                    "speakers_single_utterance": int(len(group.utterances) == 1),
                },
            ),
        )


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
            | "CheckSpeaker" >> beam.ParDo(CheckSpeaker(self._config)).with_outputs(SHORT, SPEAKER_STATS, main=GROUPS)
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
