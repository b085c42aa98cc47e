"""Seeded, bounded sampling of same/different-speaker pairs: the logic of `speechpipe pairs`.

Nothing here enumerates candidate pairs. Every pair is drawn as an *index* into an implicit set
of candidates and decoded in O(log sessions), so the work for one speaker is proportional to the
pairs it yields, never to the square of its utterance count, and never to the size of the split.

Rules (docs/pairs.md has the reasoning and the measured figures):

* **Eligibility.** An utterance with fewer frames than one segment (`segment_frames`, default
  40) is excluded before pairing and reported; there is no padding.
* **Positives (label 1).** Each speaker yields `min(speaker_cap, available)` pairs, drawn
  uniformly without replacement from its candidate pairs: all unordered pairs of two different
  utterances, or, with `cross_session` (the default, as VoxCeleb's trials pair different
  videos), only pairs whose utterances come from different sessions.
* **Single-session speakers.** Under `cross_session`, a speaker whose eligible utterances all
  come from one session (one LibriSpeech chapter, one recording) would have no candidate; its
  candidates are instead the pairs of two different utterances of that session. Such
  same-session positives are easier than cross-session ones (same channel), so they flatter the
  EER: they are counted apart (`same_session_positives`). Speakers with two or more sessions
  are not affected. A speaker with one eligible utterance has no positive candidate at all.
* **Negatives (label 0).** A split with `P` positives gets `round(P * different / same)`
  negatives. Speakers are put in a seeded random order (their rank) and each unordered pair of
  speakers {r, r + o} (offset o = 1 .. S // 2, modulo S) is a *link*, owned by the lower-offset
  side so that no speaker pair is visited twice. The negatives are spread over the links,
  offset by offset (nearest first), so every speaker takes part in the same number of negatives
  give or take two, whatever its utterance count. Within a link the pairs are distinct cells of
  the n_a x n_b grid of the two speakers' utterances.
* **No self-pairs, no duplicates.** Positives are distinct index pairs i < j of distinct
  utterances; negatives are distinct grid cells of one link, and links are disjoint.
* **Splits.** Pairs are built within one split; a speaker found in two splits is an error.
* **Utterance ids.** Any id without whitespace or `.wav` (VoxCeleb's
  `<speaker>/<session>/<name>`, Kaldi's `<speaker>-<chapter>-<nnnn>` or `spk1-utt1`, a manifest's
  free-form ids): a speaker's utterances are the records whose `speaker` field names it, never
  an id prefix. An id must name one utterance in the whole input, as a pair names utterances by
  id alone (a shared id would make a different-speaker pair of one id). Checked without a
  shuffle over the ids: a feature job's index is unique by construction (that job groups its
  inputs by id and keeps the first of a repeated one, dead-lettering the rest); a manifest is
  one file, read whole by one worker, which stops at a repeated id under any speaker
  (speechpipe.jobs.pair_transforms.ReadIndexFile); and a speaker's grouped utterances are
  checked again for a repeat whatever the input.
* **Determinism.** Every random draw comes from `random.Random` seeded with a string made of the
  seed, the split and the speaker, consumed in a fixed order, so a seed gives the same pairs
  whatever the runner, the bundling or the number of workers.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple

from speechpipe.config import SPLITS, FeatureConfig

# The labels, and the pair record the trainer reads (its keys and encoding), are
# speechpipe.speakers.pair_records', re-exported beside the sampling that produces them.
from speechpipe.speakers.pair_records import (  # noqa: F401
    DIFFERENT,
    LABEL_KEY,
    SAME,
    UTTERANCE_A_KEY,
    UTTERANCE_B_KEY,
    decode_pair_block,
    decode_pair_example,
    encode_pair_block,
    encode_pair_example,
    read_pair_file,
    tfrecord_frame,
)


class PairsInputError(ValueError):
    """The input (an index, a manifest, a trial list or an option) is malformed or inconsistent.

    The message names the file and line, or the speaker, at fault."""


@dataclass(frozen=True)
class PairConfig:
    """How pairs are drawn. `speechpipe pairs --help` documents each option."""

    seed: int = 0
    same: int = 1  # the same:different ratio, as two positive integers
    different: int = 1
    speaker_cap: int = 200  # positives per speaker, at most
    cross_session: bool = True  # positives only from two different sessions
    segment_frames: int = 40  # one embedder segment; shorter utterances are excluded
    eval_hop: int = 20  # hop between evaluation windows (pair_dataset.utterance_windows)

    def validate(self) -> "PairConfig":
        if self.same < 1 or self.different < 0:
            raise PairsInputError(f"ratio {self.same}:{self.different}: need same >= 1 and different >= 0")
        if self.speaker_cap < 1:
            raise PairsInputError(f"speaker_cap={self.speaker_cap}: need at least 1")
        if self.segment_frames < 1:
            raise PairsInputError(f"segment_frames={self.segment_frames}: need at least 1")
        if not 1 <= self.eval_hop <= self.segment_frames:
            raise PairsInputError(f"eval_hop={self.eval_hop}: need 1..segment_frames ({self.segment_frames})")
        return self

    def negatives_for(self, positives: int) -> int:
        """round(positives * different / same), halves up, in integers (no float drift)."""
        return (2 * positives * self.different + self.same) // (2 * self.same)

    def to_json(self) -> Dict[str, object]:
        return {
            "seed": self.seed,
            "ratio": f"{self.same}:{self.different}",
            "speaker_cap": self.speaker_cap,
            "cross_session": self.cross_session,
            "segment_frames": self.segment_frames,
            "eval_hop": self.eval_hop,
        }


def parse_ratio(text: str) -> Tuple[int, int]:
    """'1:1' -> (1, 1): the same:different ratio."""
    parts = text.split(":")
    try:
        same, different = (int(p) for p in parts)
    except ValueError:
        raise PairsInputError(f"ratio {text!r}: expected SAME:DIFFERENT, two integers such as 1:1") from None
    if same < 1 or different < 0:
        raise PairsInputError(f"ratio {text!r}: need same >= 1 and different >= 0")
    return same, different


def frames_for_duration(duration: float, features: FeatureConfig) -> int:
    """Frames the feature job makes of `duration` seconds: not centred, so
    1 + (samples - n_fft) // hop_length, and 0 for audio shorter than one window."""
    samples = int(round(duration * features.sample_rate))
    if samples < features.n_fft:
        return 0
    return 1 + (samples - features.n_fft) // features.hop_length


# ----------------------------------------------------------------------------------------------
# Index records


@dataclass(frozen=True)
class UtteranceRef:
    """One line of the feature job's utterance index (or of a demo-corpus manifest)."""

    utterance: str
    speaker: str
    session: str
    split: str
    num_frames: int


def parse_index_record(record: object, features: FeatureConfig, where: str) -> UtteranceRef:
    """Checks one decoded index/manifest line; `where` ('file:line') goes into every error.

    `num_frames` is taken as given; a manifest line without it gets it from `duration`."""

    def fail(message: str) -> PairsInputError:
        return PairsInputError(f"{where}: {message}")

    if not isinstance(record, dict):
        raise fail(f"expected a JSON object, got {type(record).__name__}")
    values = {}
    for key in ("utterance", "speaker", "session", "split"):
        value = record.get(key)
        if not isinstance(value, str) or not value:
            raise fail(f"field {key!r} missing or not a non-empty string")
        if any(c.isspace() for c in value):
            raise fail(f"field {key!r}={value!r} contains whitespace (trial lists are space-separated)")
        values[key] = value
    if values["split"] not in SPLITS:
        raise fail(f"split {values['split']!r} is not one of {', '.join(SPLITS)}")
    # The id's form is free (VoxCeleb's `<speaker>/<session>/<name>`, Kaldi's `<speaker>-<rest>`,
    # a manifest's own): the speaker is the record's `speaker` field. Uniqueness: the module doc.
    if values["utterance"].lower().endswith(".wav"):
        raise fail(f"utterance {values['utterance']!r}: ids carry no .wav extension")
    if "num_frames" in record:
        frames = record["num_frames"]
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
            raise fail(f"num_frames={frames!r}: need a non-negative integer")
    elif "duration" in record:
        duration = record["duration"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= 0:
            raise fail(f"duration={duration!r}: need a non-negative number of seconds")
        frames = frames_for_duration(float(duration), features)
    else:
        raise fail("neither num_frames nor duration given")
    return UtteranceRef(num_frames=frames, **values)


# ----------------------------------------------------------------------------------------------
# One speaker's utterances


@dataclass(frozen=True)
class SpeakerUtterances:
    """A speaker's eligible utterances, sorted by (session, utterance id), so that each session
    is one contiguous block starting at `session_starts[k]`."""

    split: str
    speaker: str
    utterances: Tuple[str, ...]
    session_starts: Tuple[int, ...]

    @classmethod
    def build(cls, split: str, speaker: str, items: Iterable[Tuple[str, str]]) -> "SpeakerUtterances":
        """From (utterance, session) pairs; a repeated utterance id is an error."""
        ordered = sorted((session, utterance) for utterance, session in items)
        if not ordered:
            raise PairsInputError(f"speaker {speaker!r}: no utterances")
        utterances = tuple(u for _, u in ordered)
        if len(set(utterances)) != len(utterances):
            repeated = sorted(u for u, c in Counter(utterances).items() if c > 1)
            raise PairsInputError(f"speaker {speaker!r}: utterance {repeated[0]!r} is listed twice")
        starts = [k for k in range(len(ordered)) if k == 0 or ordered[k][0] != ordered[k - 1][0]]
        return cls(split, speaker, utterances, tuple(starts))

    @property
    def sessions(self) -> int:
        return len(self.session_starts)

    def positives_across_sessions(self, cross_session: bool) -> bool:
        """Whether positives must pair two sessions: under the cross-session rule, for a speaker
        with two or more sessions. With one session that rule leaves no candidate, so the
        speaker's positives pair utterances of its one session instead (see the module doc)."""
        return cross_session and self.sessions > 1

    def single_session_fallback(self, cross_session: bool) -> bool:
        """Whether this speaker's positives come from within one session although the rule asks
        for two sessions (it has only one)."""
        return cross_session and self.sessions == 1

    def _blocks(self, cross_session: bool) -> Sequence[int]:
        """Block starts: sessions for cross-session positives, else every utterance alone."""
        return self.session_starts if self.positives_across_sessions(cross_session) else range(len(self.utterances))

    def same_session(self, pairs: Iterable[Tuple[str, str]]) -> int:
        """How many of these pairs of this speaker's utterances share a session."""
        if self.sessions == 1:
            return sum(1 for _ in pairs)
        bounds = list(self.session_starts) + [len(self.utterances)]
        session = {u: k for k, (a, b) in enumerate(zip(bounds, bounds[1:])) for u in self.utterances[a:b]}
        return sum(session[a] == session[b] for a, b in pairs)

    def positives_available(self, cross_session: bool) -> int:
        n = len(self.utterances)
        if not self.positives_across_sessions(cross_session):
            return n * (n - 1) // 2
        bounds = list(self.session_starts) + [n]
        same_session = sum((b - a) * (b - a - 1) // 2 for a, b in zip(bounds, bounds[1:]))
        return n * (n - 1) // 2 - same_session


def _rng(config: PairConfig, kind: str, split: str, speaker: str) -> random.Random:
    # random.Random seeds a str through SHA-512: stable across runs, processes and platforms,
    # and independent of PYTHONHASHSEED.
    return random.Random(f"speechpipe.speakers.pairs/{config.seed}/{kind}/{split}/{speaker}")


def sample_distinct(rng: random.Random, population: int, k: int) -> List[int]:
    """k distinct integers of range(population), in draw order (Floyd's algorithm).

    O(k) time and memory whatever the population, and it uses only randrange, whose output for a
    seed has been stable across Python releases (random.sample's internals have not)."""
    if not 0 <= k <= population:
        raise ValueError(f"cannot draw {k} distinct values from {population}")
    chosen: Dict[int, None] = {}  # insertion-ordered set
    for j in range(population - k, population):
        t = rng.randrange(j + 1)
        chosen[j if t in chosen else t] = None
    return list(chosen)


def sample_positives(group: SpeakerUtterances, config: PairConfig) -> Tuple[List[Tuple[str, str]], int]:
    """(same-speaker pairs, candidates available). At most `speaker_cap` pairs.

    Candidate t is decoded without listing candidates: block u (a session, or one utterance
    when positives may share a session) owns the pairs whose first utterance lies in it and
    whose second lies in a later block; there are size_u * after_u of them, and t's offset
    inside that range gives both utterances directly."""
    n = len(group.utterances)
    starts = list(group._blocks(config.cross_session))
    ends = starts[1:] + [n]
    first: List[int] = []  # cumulative candidate count before each block
    total = 0
    for a, b in zip(starts, ends):
        first.append(total)
        total += (b - a) * (n - b)
    k = min(config.speaker_cap, total)
    rng = _rng(config, "same", group.split, group.speaker)
    pairs = []
    for t in sample_distinct(rng, total, k):
        u = bisect.bisect_right(first, t) - 1
        after = n - ends[u]
        i, j = divmod(t - first[u], after)
        pairs.append((group.utterances[starts[u] + i], group.utterances[ends[u] + j]))
    return pairs, total


# ----------------------------------------------------------------------------------------------
# A split's plan: speaker order, positive total, negative links


def speaker_rank_key(seed: int, split: str, speaker: str) -> bytes:
    """Speakers are ranked by a keyed hash: a seeded shuffle that needs no global RNG state."""
    return hashlib.blake2b(f"{seed}/{split}/{speaker}".encode(), digest_size=16).digest()


@dataclass(frozen=True)
class SplitPlan:
    """Everything a speaker's worker needs to draw its negatives: the speakers of the split in
    rank order with their utterances, and the number of negatives to spread over the links.

    Its size is that of the split's utterance ids, whatever the number of pairs."""

    split: str
    speakers: Tuple[str, ...]  # rank order
    utterances: Tuple[Tuple[str, ...], ...]  # per rank, as in SpeakerUtterances
    positives: int  # planned over the split: sum of min(cap, available)
    negatives: int  # target over the split
    capped_speakers: int  # speakers with more candidates than the cap
    ranks: Dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.ranks:
            self.ranks.update((s, r) for r, s in enumerate(self.speakers))

    @classmethod
    def build(cls, split: str, groups: Iterable[SpeakerUtterances], config: PairConfig) -> "SplitPlan":
        groups = sorted(groups, key=lambda g: speaker_rank_key(config.seed, split, g.speaker))
        positives = capped = 0
        for g in groups:
            if g.split != split:
                raise PairsInputError(f"speaker {g.speaker!r} of split {g.split!r} planned in {split!r}")
            available = g.positives_available(config.cross_session)
            positives += min(config.speaker_cap, available)
            capped += available > config.speaker_cap
        return cls(
            split=split,
            speakers=tuple(g.speaker for g in groups),
            utterances=tuple(g.utterances for g in groups),
            positives=positives,
            negatives=config.negatives_for(positives),
            capped_speakers=capped,
        )

    @property
    def links(self) -> int:
        s = len(self.speakers)
        return s * (s - 1) // 2

    def links_from(self, rank: int) -> Iterator[Tuple[int, int]]:
        """(partner rank, negatives on the link) for the links that `rank` owns.

        Links are numbered offset-major, (o - 1) * S + rank, and the negatives dealt over them in
        that order (N // L each, one more for the first N % L), so while negatives are fewer than
        links, whole rounds of offsets go to every speaker alike. Iteration stops at the first
        link without a negative, so the work is bounded by the negatives yielded."""
        s = len(self.speakers)
        total_links = self.links
        if total_links == 0 or self.negatives == 0:
            return
        base, extra = divmod(self.negatives, total_links)
        half = s // 2
        for offset in range(1, half + 1):
            if s % 2 == 0 and offset == half and rank >= half:
                break  # {r, r + S/2} is the same link as {r + S/2, r}: owned by the lower rank
            quota = base + ((offset - 1) * s + rank < extra)
            if quota == 0:
                break
            yield (rank + offset) % s, quota


def sample_negatives(
    group: SpeakerUtterances, plan: SplitPlan, config: PairConfig
) -> Tuple[List[Tuple[str, str]], int]:
    """(different-speaker pairs owned by this speaker, shortfall).

    The shortfall counts negatives a link could not take because the two speakers have fewer
    utterance combinations than its quota (only in tiny splits); it is reported, not hidden."""
    rank = plan.ranks.get(group.speaker)
    if rank is None:
        raise PairsInputError(f"speaker {group.speaker!r} is not in the plan of split {plan.split!r}")
    mine = group.utterances
    rng = _rng(config, "different", group.split, group.speaker)
    pairs: List[Tuple[str, str]] = []
    shortfall = 0
    for partner, quota in plan.links_from(rank):
        theirs = plan.utterances[partner]
        m = len(theirs)
        grid = len(mine) * m
        take = min(quota, grid)
        shortfall += quota - take
        for cell in sample_distinct(rng, grid, take):
            i, j = divmod(cell, m)
            pairs.append((mine[i], theirs[j]))
    return pairs, shortfall
