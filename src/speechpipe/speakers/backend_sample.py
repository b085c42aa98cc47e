"""The back-end sample: a capped, speaker-balanced, seeded choice of whole training utterances,
written by the pair job (speechpipe.jobs.speaker_blocks.WriteBackendSample) for the embedder's
LDA back end.

The back end is fitted on "a capped, seeded sample of training utterances". Held in the
trainer's memory, the training split is 10^5-10^6 utterances at VoxCeleb scale; the pair job
already reads every training record for the speaker blocks, so it writes the sample beside them,
and the trainer reads only `max_utterances` records.

The rule is `speechpipe.speakers.speaker_eval.balanced_utterances`'s (the in-memory sample this
replaces), so a back end fitted on either sees the same shape of sample:

* every utterance of the split when they fit the cap;
* else the largest equal per-speaker quota whose total fits (all of a speaker's utterances when
  it has fewer);
* else, when the cap cannot give every speaker `min_per_speaker` (2: a within-speaker scatter
  needs two), `max_utterances // min_per_speaker` speakers with that many each.

Its randomness differs: every draw is the lowest keyed hash (block_records.keyed_hash) of the
seed and what is drawn, so the choice is the same on any runner and worker layout (no draw
depends on the order in which a runner hands over elements), and another seed gives another
sample. Speakers, when some must be left out, are the `max_utterances // 2` with the lowest hash
of (seed, speaker); within a speaker, its `quota` utterances with the lowest hash of (seed,
speaker, utterance).

Layout: `backend/<split>/data_tfrecord-SSSSS-of-NNNNN.tfrecord`, uncompressed, the feature
records of the chosen utterances byte for byte (speechpipe.io.records; read with
speechpipe.training.record_dataset, or speechpipe.io.records.resolve_shards on the folder).

Numpy only: the Beam writer and the trainer's tests import it without TensorFlow or Beam.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping

import numpy as np

from speechpipe.filenames import SHARD_PREFIX
from speechpipe.speakers.block_records import BLOCKS_SUFFIX, keyed_hash, shard_name
from speechpipe.validation import ConfigError

# Output layout, under the pair job's --out: backend/<split>/data_tfrecord-SSSSS-of-NNNNN.tfrecord
BACKEND_DIR = "backend"
BACKEND_PREFIX = SHARD_PREFIX  # the feature records' name, so that records.resolve_shards finds them
BACKEND_PATTERN = f"{BACKEND_PREFIX}-*-of-*{BLOCKS_SUFFIX}"

MIN_PER_SPEAKER = 2  # a within-speaker scatter needs two utterances of a speaker
# The smallest cap that is a sample at all: two speakers of two utterances (the LDA's between- and
# within-speaker scatter), as EmbedderTrainConfig.backend_max_utterances requires.
MIN_MAX_UTTERANCES = 2 * MIN_PER_SPEAKER


def check_max_utterances(max_utterances: int) -> int:
    """0 (no sample) or at least MIN_MAX_UTTERANCES: a smaller cap could not hold two speakers of
    two utterances, and the back end would have nothing to separate."""
    if max_utterances != 0 and max_utterances < MIN_MAX_UTTERANCES:
        raise ConfigError(f"backend max_utterances={max_utterances}: need 0 (none) or >= {MIN_MAX_UTTERANCES}")
    return max_utterances


def _speaker_key(seed: int, speaker: str) -> bytes:
    return keyed_hash(seed, "backend", "speaker", speaker)


def _utterance_key(seed: int, speaker: str, utterance: str) -> bytes:
    return keyed_hash(seed, "backend", "utterance", speaker, utterance)


def equal_quota(sizes: Iterable[int], max_utterances: int, min_per_speaker: int = MIN_PER_SPEAKER) -> int:
    """The largest per-speaker quota q >= min_per_speaker with sum(min(size, q)) <= max_utterances
    (balanced_utterances's loop, by bisection: the total grows with q, and at VoxCeleb scale q
    runs into the hundreds over thousands of speakers). Assumes the total of min_per_speaker fits
    and the total of all does not."""
    values = np.sort(np.asarray(list(sizes), np.int64))
    lo, hi = min_per_speaker, int(values[-1])  # total(lo) fits; total(hi) = all, which does not

    def total(q: int) -> int:
        return int(np.minimum(values, q).sum())

    while hi - lo > 1:
        mid = (lo + hi) // 2
        if total(mid) <= max_utterances:
            lo = mid
        else:
            hi = mid
    return lo


def speaker_quotas(
    counts: Mapping[str, int], max_utterances: int, seed: int, min_per_speaker: int = MIN_PER_SPEAKER
) -> Dict[str, int]:
    """Speaker -> the utterances of it the sample takes (speakers left out are absent), for a
    split with `counts[speaker]` utterances each: the module's rule. The total is at most
    `max_utterances`; every quota is at least 1."""
    total = sum(counts.values())
    if total <= max_utterances:
        return {speaker: n for speaker, n in counts.items() if n > 0}
    if max_utterances < min_per_speaker:
        raise ConfigError(f"max_utterances={max_utterances}: need >= {min_per_speaker}")
    speakers = [speaker for speaker, n in counts.items() if n > 0]
    if len(speakers) * min_per_speaker > max_utterances:
        keep = sorted(speakers, key=lambda s: (_speaker_key(seed, s), s))[: max_utterances // min_per_speaker]
        return {speaker: min(counts[speaker], min_per_speaker) for speaker in keep}
    quota = equal_quota((counts[s] for s in speakers), max_utterances, min_per_speaker)
    return {speaker: min(counts[speaker], quota) for speaker in speakers}


def pick_utterances(speaker: str, utterance_ids: Iterable[str], quota: int, seed: int) -> List[str]:
    """The `quota` utterances of `speaker` with the lowest keyed hash, sorted by id: a seeded
    uniform choice that depends on neither the order nor the worker the ids arrive in."""
    ids = sorted(set(utterance_ids))
    if quota >= len(ids):
        return ids
    return sorted(sorted(ids, key=lambda u: (_utterance_key(seed, speaker, u), u))[: max(quota, 0)])


def sample_counts(counts: Mapping[str, int], quotas: Mapping[str, int]) -> Dict[str, object]:
    """What a sample holds against what it was drawn from, for the pair job's summary."""
    utterances = sum(quotas.values())
    of_utterances = sum(counts.values())
    return {
        "utterances": utterances,
        "speakers": len(quotas),
        "of_utterances": of_utterances,
        "of_speakers": sum(1 for n in counts.values() if n > 0),
        "bound": utterances < of_utterances,
    }


def backend_shard_name(prefix: str, index: int, count: int) -> str:
    """`<prefix>-SSSSS-of-NNNNN.tfrecord`: the blocks' form, with the feature records' prefix."""
    return shard_name(prefix, index, count, gzip=False)
