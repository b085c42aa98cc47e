"""Typed configurations with their defaults. Checks live in `speechpipe.validation`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

SPLITS: Tuple[str, str, str] = ("train", "validation", "test")
# Speaker shares of the splits, for inputs that name no split (the feature job, its component and
# the run configuration all default to these).
SPLIT_FRACTIONS: Tuple[float, float, float] = (0.8, 0.1, 0.1)

# The registry's model names (the pipeline pushes to them, the serving commands read their
# `champion` alias by default).
CTC_MODEL_NAME = "speechpipe-ctc"
EMBEDDER_MODEL_NAME = "speechpipe-embedder"
# Blessing thresholds: a candidate recogniser is blessed only at or below this test PER, a
# candidate embedder only at or below this test EER (the run configuration's and the evaluators'
# defaults).
MAX_PER = 0.95
MAX_EER = 0.40


@dataclass(frozen=True)
class CorpusConfig:
    """The synthesised German demo corpus (`speechpipe corpus synth`)."""

    # Many speakers, few utterances each (2,400 utterances, about 1.8 h): a speaker embedder
    # generalises to new speakers with the number of training speakers, not with more audio of
    # the same ones (docs/embedder.md: 42 training speakers gave 10-14 % test EER where 168 give
    # about 2 %).
    # 240 of the 246 voices available: 168 training, 36 validation and 36 test speakers.
    speakers: int = 240
    utterances: int = 10  # per speaker
    sessions: int = 4  # per speaker; like VoxCeleb's videos, each with its own channel
    seed: int = 0
    sample_rate: int = 16000
    validation_fraction: float = 0.15  # of the speakers
    test_fraction: float = 0.15  # of the speakers
    heldout_sentence_fraction: float = 0.15  # sentences only test speakers say
    sentences: Optional[str] = None  # a sentence file; None = the packaged German set
    workers: Optional[int] = None  # None = one per core

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    def content_json(self) -> Dict[str, object]:
        """The settings a corpus's bytes depend on (all but the worker count): what corpus.json
        records as "config", and what tells two synthesised corpora apart."""
        return {k: v for k, v in self.to_json().items() if k != "workers"}


# The default demo corpus, and the tiny one the tests use.
DEMO_CORPUS = CorpusConfig()
TINY_CORPUS = CorpusConfig(speakers=6, utterances=4, sessions=2, workers=2)


@dataclass(frozen=True)
class SplitCounts:
    train: int
    validation: int
    test: int

    def as_dict(self) -> Dict[str, int]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def speaker_split_counts(config: CorpusConfig) -> SplitCounts:
    """At least one speaker in each split; training gets the rest."""
    n = config.speakers
    validation = max(1, round(n * config.validation_fraction))
    test = max(1, round(n * config.test_fraction))
    return SplitCounts(train=n - validation - test, validation=validation, test=test)


NORMALISATIONS: Tuple[str, ...] = ("minmax", "cmvn", "global", "none")
FEATURE_KINDS: Tuple[str, ...] = ("logmel", "stft")


@dataclass(frozen=True)
class FeatureConfig:
    """Spectrogram features. The same values drive the Beam job and the in-graph serving
    features, and are saved in summary.json so that every later stage reproduces them.

    Frames are not centred (no padding): frame t covers samples [t * hop, t * hop + n_fft), which
    is what tf.signal.stft computes too, and audio shorter than n_fft samples has no frame.
    """

    sample_rate: int = 16000
    kind: str = "logmel"  # "logmel", or "stft" (log power of the linear STFT, as in seed 000)
    n_fft: int = 400  # 25 ms window at 16 kHz
    hop_length: int = 160  # 10 ms
    n_mels: int = 80
    fmin: float = 20.0
    fmax: float = 7600.0
    log_floor: float = 1e-6  # log(power + floor): finite on digital zeros
    normalization: str = "cmvn"
    max_seconds: float = 30.0  # longer audio is dead-lettered as too_long, never cut

    @property
    def n_bins(self) -> int:
        return self.n_mels if self.kind == "logmel" else self.n_fft // 2 + 1

    @property
    def max_frames(self) -> int:
        """Frames of the longest audio the feature job keeps (`max_seconds`; longer is dead-lettered)."""
        samples = int(self.max_seconds * self.sample_rate)
        return max(0, (samples - self.n_fft) // self.hop_length + 1)

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "FeatureConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class ChunkConfig:
    """How the serving paths (CLI, pyfunc flavor, batch inference) cut a recording so that memory
    is set by a chunk, not by the recording (speechpipe.phones.ctc_chunks,
    speechpipe.speakers.embedder.chunks). chunk_seconds 0 serves each file whole through the
    SavedModel's waveform signature, as before chunking (memory grows with the file)."""

    # Kept audio per network run. 30 s is the longest utterance the models train on
    # (FeatureConfig.max_seconds), and a CTC chunk of 30 s (+ overlap) holds about 80 MB.
    chunk_seconds: float = 30.0
    # Context given to the CTC BLSTMs on each side of a chunk and then dropped, so that a frame
    # near a seam sees what it would see in the whole file (docs/ctc.md: chunked vs whole).
    overlap_seconds: float = 2.0
    # Padded audio per network call: chunks (or short files) are batched up to this.
    batch_seconds: float = 120.0

    @property
    def chunked(self) -> bool:
        return self.chunk_seconds > 0

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "ChunkConfig":
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__ if k in data})
