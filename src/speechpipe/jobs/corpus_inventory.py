"""What a corpus holds, counted from its listing alone: speakers, utterances, sessions and the
trials each split can give, per split, before any audio is decoded.

The feature job's own rules decide everything here: `expand_input` lists the input (file names,
manifest lines, Kaldi tables; never audio), `parse_input` turns each item into a record or a dead
letter (path confinement, layout, splits by `assign_split`), and duplicates keep the first in
input order as the job's `keep_first` does. So the splits counted here are the splits the job
writes, which is what lets `speechpipe run` stop in seconds on a corpus that could not be
evaluated or trained, and lets `speechpipe inspect` show a user what their data gives.

Not known without decoding: audio that does not decode, that is too long, or shorter than one
embedder segment (the pair rule excludes those); the counts are upper bounds for those reasons.

The split rule's one addition (`plan_split_overrides`): a speaker's split is drawn from a hash
of its id while the job streams, so on a small corpus an evaluation split can draw fewer than
two speakers with two utterances each and give no same-speaker trial. The listing, which sees
every speaker, moves the few speakers needed and hands the moves to the job in the span's
`InputSpec.split_overrides`; the job stays streaming. Splits a corpus names itself (a manifest's
`split`, a VoxCeleb meta file) are never moved, only counted.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from speechpipe.audio.sources import (
    DUPLICATE_UTTERANCE,
    MANIFEST,
    DeadLetter,
    InputSpec,
    expand_input,
    parse_input,
    split_draw,
)
from speechpipe.config import SPLITS

EVALUATION_SPLITS: Tuple[str, str] = ("validation", "test")
# Each evaluation split needs this many speakers with two utterances or more: an EER needs
# same- and different-speaker trials, so two speakers each able to give a same-speaker trial.
MIN_EVALUATION_SPEAKERS = 2


@dataclass
class SpeakerTally:
    """One speaker of one span, as listed: its split, utterances per session, and whether the
    split was drawn by the hash rule (`movable`) or named by the input."""

    split: str
    sessions: Counter = field(default_factory=Counter)
    movable: bool = True
    transcribed: int = 0

    @property
    def utterances(self) -> int:
        return sum(self.sessions.values())


@dataclass(frozen=True)
class Spread:
    """Minimum, median and maximum of a count over speakers."""

    min: float = 0
    median: float = 0
    max: float = 0

    @classmethod
    def of(cls, values: List[int]) -> "Spread":
        if not values:
            return cls()
        return cls(min(values), statistics.median(values), max(values))

    def text(self) -> str:
        return f"{self.min:g}/{self.median:g}/{self.max:g}"


@dataclass(frozen=True)
class SplitCounts:
    """One split's speakers and the trials it can give under the pair rule (speechpipe.speakers.
    pairs): a speaker with two sessions or more gives cross-session same-speaker trials only; a
    speaker with one session gives same-session ones (easier: same channel), counted apart; a
    speaker with one utterance gives none. `different` counts every pair of utterances of two
    speakers. The trial builder draws a bounded sample of these (speaker_cap per speaker)."""

    speakers: int = 0
    utterances: int = 0
    evaluable_speakers: int = 0  # speakers with two utterances or more
    sessions_per_speaker: Spread = Spread()
    utterances_per_speaker: Spread = Spread()
    same_cross_session: int = 0
    same_within_session: int = 0
    different: int = 0
    transcribed: int = 0

    @property
    def same(self) -> int:
        return self.same_cross_session + self.same_within_session

    def to_json(self) -> Dict[str, object]:
        return {
            "speakers": self.speakers,
            "utterances": self.utterances,
            "speakers_with_2_utterances": self.evaluable_speakers,
            "sessions_per_speaker": vars(self.sessions_per_speaker),
            "utterances_per_speaker": vars(self.utterances_per_speaker),
            "trials": {
                "same_cross_session": self.same_cross_session,
                "same_within_session": self.same_within_session,
                "different": self.different,
            },
            "transcribed_utterances": self.transcribed,
        }

    def line(self) -> str:
        if not self.speakers:
            return "no speaker"
        within = f" (+{self.same_within_session} same-session)" if self.same_within_session else ""
        transcribed = f", {self.transcribed} transcribed" if self.transcribed else ""
        return (
            f"{self.speakers} speakers ({self.evaluable_speakers} with 2+ utterances), {self.utterances} "
            f"utterances{transcribed}; "
            f"per speaker min/median/max: sessions {self.sessions_per_speaker.text()}, utterances "
            f"{self.utterances_per_speaker.text()}; trials: same {self.same_cross_session}{within}, "
            f"different {self.different}"
        )


def count_split(tallies: Iterable[SpeakerTally]) -> SplitCounts:
    """The counts of one split's speakers (one tally per speaker)."""
    tallies = list(tallies)
    sizes = [t.utterances for t in tallies]
    cross = within = 0
    for t in tallies:
        n = t.utterances
        if len(t.sessions) >= 2:
            cross += (n * n - sum(c * c for c in t.sessions.values())) // 2
        else:
            within += n * (n - 1) // 2
    total = sum(sizes)
    return SplitCounts(
        speakers=len(tallies),
        utterances=total,
        evaluable_speakers=sum(1 for n in sizes if n >= 2),
        sessions_per_speaker=Spread.of([len(t.sessions) for t in tallies]),
        utterances_per_speaker=Spread.of(sizes),
        same_cross_session=cross,
        same_within_session=within,
        different=(total * total - sum(n * n for n in sizes)) // 2,
        transcribed=sum(t.transcribed for t in tallies),
    )


@dataclass
class SpanInventory:
    """One input listed and parsed: its speakers (split as the job would write it, before any
    override), dead letters by reason with one example each, and each speaker's utterance ids
    when asked for (to check an official trial list)."""

    spec: InputSpec
    inputs: int = 0
    records: int = 0
    dead_letter: Counter = field(default_factory=Counter)
    dead_examples: Dict[str, str] = field(default_factory=dict)
    speakers: Dict[str, SpeakerTally] = field(default_factory=dict)
    utterances: Optional[Dict[str, List[str]]] = None  # {speaker: utterance ids}
    seconds: float = 0.0

    @property
    def named_splits(self) -> bool:
        """Whether any utterance's split is the input's own (manifest field, meta file)."""
        return any(not t.movable for t in self.speakers.values())

    def split_of(self, speaker: str, overrides: Optional[Mapping[str, str]] = None) -> str:
        return (overrides or {}).get(speaker) or self.speakers[speaker].split

    def by_split(self, overrides: Optional[Mapping[str, str]] = None) -> Dict[str, Dict[str, SpeakerTally]]:
        """{split: {speaker: tally}} with `overrides` applied."""
        out: Dict[str, Dict[str, SpeakerTally]] = {s: {} for s in SPLITS}
        for speaker, tally in self.speakers.items():
            out[self.split_of(speaker, overrides)][speaker] = tally
        return out

    def counts(self, overrides: Optional[Mapping[str, str]] = None) -> Dict[str, SplitCounts]:
        return {split: count_split(t.values()) for split, t in self.by_split(overrides).items()}

    def split_utterances(self, split: str, overrides: Optional[Mapping[str, str]] = None) -> Set[str]:
        """The utterance ids of one split (needs `keep_utterances`)."""
        if self.utterances is None:
            raise ValueError("listed without keep_utterances")
        return {u for s, ids in self.utterances.items() if self.split_of(s, overrides) == split for u in ids}


def _names_split(item_payload: object) -> bool:
    """Whether a manifest line names its own split (the parse already accepted it as JSON)."""
    try:
        line = json.loads(item_payload)
    except ValueError:
        return False
    return isinstance(line, dict) and line.get("split") is not None


def list_span(spec: InputSpec, keep_utterances: bool = False) -> SpanInventory:
    """Lists and parses every input of `spec` as the feature job does, without decoding audio.
    `keep_utterances`: also keep the utterance ids of every split (memory grows with the corpus:
    asked for only where an official trial list is checked)."""
    started = time.time()
    inventory = SpanInventory(spec=spec, utterances={} if keep_utterances else None)
    seen: Set[str] = set()
    for item in expand_input(spec):
        inventory.inputs += 1
        result = parse_input(item, spec)
        if isinstance(result, DeadLetter):
            inventory.dead_letter[result.reason] += 1
            inventory.dead_examples.setdefault(result.reason, result.detail)
            continue
        if result.utterance in seen:  # the job keeps the first in input order
            inventory.dead_letter[DUPLICATE_UTTERANCE] += 1
            inventory.dead_examples.setdefault(DUPLICATE_UTTERANCE, f"utterance {result.utterance!r} given twice")
            continue
        seen.add(result.utterance)
        inventory.records += 1
        named = spec.speaker_sets is not None or (spec.kind == MANIFEST and _names_split(item.payload))
        tally = inventory.speakers.get(result.speaker)
        if tally is None:
            tally = inventory.speakers[result.speaker] = SpeakerTally(split=result.split)
        tally.sessions[result.session] += 1
        tally.movable = tally.movable and not named
        tally.transcribed += result.text is not None or result.phones is not None
        if inventory.utterances is not None:
            inventory.utterances.setdefault(result.speaker, []).append(result.utterance)
    inventory.seconds = time.time() - started
    return inventory


def plan_split_overrides(inventory: SpanInventory) -> Dict[str, str]:
    """{speaker: split} for the speakers to move so that each evaluation split has
    MIN_EVALUATION_SPEAKERS speakers with two utterances or more, when the span has them.

    Only speakers whose split the hash drew (no split of their own in the input) and that have
    two utterances or more move; speakers with two sessions or more go first (they give
    cross-session trials), then those whose hash draw lies nearest the short split's share (as
    if its fraction were a little larger). Donors come from the training split while it keeps
    MIN_EVALUATION_SPEAKERS speakers, then from the other evaluation split's surplus.
    A speaker with one utterance stays where the hash put it: it trains, or in an evaluation
    split gives different-speaker trials, and is never counted towards the minimum. Deterministic:
    the same listing gives the same moves."""
    spec = inventory.spec
    if spec.speaker_sets is not None:
        return {}
    fractions, seed = spec.split_fractions, spec.split_seed
    bounds = {
        "train": (0.0, fractions[0]),
        "validation": (fractions[0], fractions[0] + fractions[1]),
        "test": (fractions[0] + fractions[1], 1.0),
    }
    overrides: Dict[str, str] = {}

    def members(split: str) -> List[str]:
        return [s for s in inventory.speakers if inventory.split_of(s, overrides) == split]

    def evaluable(split: str) -> List[str]:
        return [s for s in members(split) if inventory.speakers[s].utterances >= 2]

    def distance(speaker: str, split: str) -> float:
        u, (low, high) = split_draw(speaker, seed), bounds[split]
        return 0.0 if low <= u < high else min(abs(u - low), abs(u - high))

    for split in EVALUATION_SPLITS:
        need = MIN_EVALUATION_SPEAKERS - len(evaluable(split))
        other = "test" if split == "validation" else "validation"
        for donor in ("train", other):
            if need <= 0:
                break
            candidates = [s for s in evaluable(donor) if inventory.speakers[s].movable]
            # The training split keeps two speakers (the in-batch loss's least), the other
            # evaluation split its own minimum.
            spare = len(evaluable(donor) if donor == other else members(donor)) - MIN_EVALUATION_SPEAKERS
            candidates.sort(key=lambda s: (len(inventory.speakers[s].sessions) < 2, distance(s, split), s))
            for speaker in candidates[: max(0, min(need, spare))]:
                overrides[speaker] = split
                need -= 1
    return overrides


@dataclass(frozen=True)
class TrialCoverage:
    """How much of an official trial list a split can score."""

    trials: int
    missing_utterances: int
    missing_examples: Tuple[str, ...]
    not_covered: int


def trial_coverage(trials_path: str, split_utterances: Set[str]) -> TrialCoverage:
    """Reads an official trial list (any utterance ids, `<id>.wav`) and counts the utterances it
    names that `split_utterances` lacks, and the trials those make unscorable."""
    from speechpipe.speakers.trials import iter_trials

    trials = not_covered = 0
    missing: Dict[str, None] = {}
    for _, a, b in iter_trials(trials_path, voxceleb_ids=False):
        trials += 1
        lacking = [u for u in (a, b) if u not in split_utterances]
        for u in lacking:
            missing.setdefault(u)
        not_covered += bool(lacking)
    return TrialCoverage(trials, len(missing), tuple(list(missing)[:3]), not_covered)
