"""One split's utterances in memory: the one reader of speaker feature records, which the
embedder trainer (its training and validation splits) and the speaker evaluator (the validation
split its threshold is fitted on, and the test split) share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Union

import numpy as np


@dataclass
class SplitData:
    """One split's utterances, in record order."""

    utterances: List[str]
    speakers: List[str]
    sessions: List[str]
    features: List[np.ndarray]  # [frames, bins] float32

    def __len__(self) -> int:
        return len(self.utterances)


def read_split(patterns: Union[str, Sequence[str]], min_speakers: int = 1) -> SplitData:
    """The records of one or more split folders (TFX's Split-<name>/, local or a URI) or shard
    patterns, through the trainers' parser; an error when none are there or when the split has
    fewer than `min_speakers` speakers (an EER needs 2: same- and different-speaker trials)."""
    from speechpipe.training import record_dataset

    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    data = SplitData([], [], [], [])
    for example in record_dataset(patterns).as_numpy_iterator():
        data.utterances.append(example["utterance"].decode("utf-8"))
        data.speakers.append(example["speaker"].decode("utf-8"))
        data.sessions.append(example["session"].decode("utf-8"))
        data.features.append(example["features"])
    if not data.utterances:
        raise ValueError(f"no utterances in {patterns}")
    speakers = len(set(data.speakers))
    if speakers < min_speakers:
        raise ValueError(
            f"the split {patterns} has {speakers} speaker(s): an EER needs at least {min_speakers} speakers"
        )
    return data
