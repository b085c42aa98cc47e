"""What the embedder is: `EmbedderConfig` (network, loss, embedding, scoring, back end), how it
trains (`EmbedderTrainConfig`), the choices each setting has, and the settings exports made before
a setting existed were made with. No TensorFlow here, so that the run configuration can hold and
check these without loading it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Tuple

from speechpipe.speakers.pair_dataset import EVAL_HOP, SEGMENT_FRAMES
from speechpipe.speakers.speaker_eval import CLUSTER_MAX_SPEAKERS, CLUSTER_MAX_UTTERANCES, MAX_TRIALS
from speechpipe.validation import ConfigError, reject_unknown

EMBEDDING_LAYERS: Tuple[str, ...] = ("output", "hidden", "hidden_statistics")
POOLINGS: Tuple[str, ...] = ("last", "mean", "stats")
SCORINGS: Tuple[str, ...] = ("cosine", "kl")
BACKENDS: Tuple[str, ...] = ("none", "lda")
LINKAGES: Tuple[str, ...] = ("ward", "average", "complete")
LDA_SHRINK_TARGETS: Tuple[str, ...] = ("total", "isotropic")

# Settings added after the first exports, at the values those exports were made with.
LEGACY_SETTINGS: Dict[str, object] = {
    "freq_mask": 0,
    "time_mask": 0,
    "input_noise": 0.0,
    "backend": "none",
    "linkage": "average",
    "lda_dims": 0,
    "lda_shrinkage": 0.05,
    "lda_shrink_toward": "isotropic",
    "input_statistics": False,
}


# Settings older exports recorded and the embedder no longer has (seed 002's output activation,
# loss direction and clipping, which only the bench's reproduction varies now: bench/seed002.py),
# at the one value every product export was made with.
REMOVED_SETTINGS: Dict[str, object] = {"output_activation": "softmax", "symmetric": True, "clip": False}


def with_legacy_settings(settings: Dict[str, object]) -> Dict[str, object]:
    """An embedder config's json as recorded (an export's, a bench run's), with the settings it
    predates at the values it was made with, and without the removed settings (an error when
    they are not at the product's values: such a model is seed 002's reproduction)."""
    settings = dict(settings)
    for key, product_value in REMOVED_SETTINGS.items():
        value = settings.pop(key, product_value)
        if value != product_value:
            raise ConfigError(
                f"{key}={value!r}: made with seed 002's settings, which only the bench builds (bench/seed002.py)"
            )
    return {**LEGACY_SETTINGS, **settings}


# Layer names the embedding choice looks up.
OUTPUT_LAYER = "distribution"
HIDDEN_LAYER = "embedding_hidden"
INPUT_STATISTICS_LAYER = "input_statistics"
CONFIG_FILE = "embedder_config.json"  # written into the SavedModel's assets.extra/


@dataclass(frozen=True)
class EmbedderConfig:
    """The base network, its loss and its embeddings. Defaults are measured in docs/embedder.md."""

    segment_frames: int = SEGMENT_FRAMES  # seed 002's 40-frame segments
    n_bins: int = 80  # set from the feature job's summary.json by the trainer
    lstm_units: int = 128  # per direction; 256 (seed 002) trains 4x slower on 2 CPU cores
    # How the second BLSTM's outputs become one vector: "last" (seed 002: its final states),
    # "mean" over the segment's frames, or "stats" (mean and standard deviation over frames).
    pooling: str = "last"
    # Also feed the segment's per-bin mean and standard deviation (of the input, after the
    # training-only augmentation) to the dense layers, next to the pooled BLSTM output.
    input_statistics: bool = True
    dropout: float = 0.5
    # Training-only input regularisation against memorising frame patterns (SpecAugment, Park et
    # al. 2019): each segment loses one random band of up to `freq_mask` bins and one random span
    # of up to `time_mask` frames (set to 0, the normalised mean), and gets Gaussian noise of
    # standard deviation `input_noise`. 0 = off. Inference never sees them.
    freq_mask: int = 10
    time_mask: int = 8
    input_noise: float = 0.1
    dense_units: Tuple[int, ...] = (256,)  # ReLU layers between the BLSTMs and the output
    # Size of the output distribution. Wide: with 128 outputs the softmax gives each training
    # speaker a corner of its own and a new speaker can only be a mixture of them; 1,024 leaves
    # room (docs/embedder.md: validation EER 4.85 % -> 3.72 %, MR 0.178 -> 0.100).
    output_dim: int = 1024
    # > 0: the softmax takes cosine logits, scale * cos(h, w_k) (bounded, so the output cannot
    # saturate into a one-hot); 0: an ordinary dense layer's logits.
    cosine_scale: float = 0.0
    margin: float = 2.0
    epsilon: float = 1e-7
    # What an utterance embedding is made of: "hidden_statistics", the hidden layer below the
    # output joined with the segment's input statistics (which the dense layer also reads; the
    # back end weighs the two parts against each other, so it needs one); "hidden", the hidden
    # layer alone; "output", the output distribution (seed 002's).
    embedding: str = "hidden_statistics"
    scoring: str = "cosine"  # "cosine", or "kl" (negative symmetric KL; output embeddings only)
    eval_hop: int = EVAL_HOP  # frames between the windows of an utterance embedding
    # Back end fitted after training on the training speakers' utterance embeddings and baked into
    # the export (`fit_lda`): "lda" projects onto the directions that best separate those speakers
    # relative to their within-speaker spread, with that spread whitened, as x-vector systems do
    # before scoring; "none" scores the embedding as it is.
    backend: str = "lda"
    # Agglomerative clustering of utterance embeddings: "ward" (on unit-length embeddings, i.e.
    # cosine scoring) merges the pair of clusters that adds least within-cluster variance and
    # keeps clusters of comparable size; "average" / "complete" link over the scoring's distances.
    linkage: str = "ward"
    lda_dims: int = 0  # 0 = training speakers - 1, capped at the embedding size
    # Regularised LDA: the within-speaker covariance is mixed with `lda_shrinkage` of a target,
    # the total covariance scaled to its size ("total": each direction regularised in proportion
    # to its spread) or its mean variance times the identity ("isotropic": it drowns the directions
    # of small spread; exports recorded without this setting were made with it).
    lda_shrinkage: float = 0.1
    lda_shrink_toward: str = "total"

    def validate(self) -> "EmbedderConfig":
        if self.segment_frames < 1 or self.n_bins < 1:
            raise ConfigError(f"segment_frames={self.segment_frames}, n_bins={self.n_bins}: need >= 1")
        if self.lstm_units < 1 or self.output_dim < 2:
            raise ConfigError(f"lstm_units={self.lstm_units}, output_dim={self.output_dim}: need >= 1 and >= 2")
        if any(u < 1 for u in self.dense_units):
            raise ConfigError(f"dense_units={self.dense_units}: every layer needs >= 1 unit")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}: need [0, 1)")
        if not 0 <= self.freq_mask < self.n_bins or not 0 <= self.time_mask < self.segment_frames:
            raise ConfigError(
                f"freq_mask={self.freq_mask}, time_mask={self.time_mask}: need 0 <= freq_mask < n_bins "
                f"({self.n_bins}) and 0 <= time_mask < segment_frames ({self.segment_frames})"
            )
        if self.input_noise < 0:
            raise ConfigError(f"input_noise={self.input_noise}: need >= 0")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r}: expected one of {POOLINGS}")
        if self.embedding not in EMBEDDING_LAYERS:
            raise ConfigError(f"embedding={self.embedding!r}: expected one of {EMBEDDING_LAYERS}")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"scoring={self.scoring!r}: expected one of {SCORINGS}")
        if self.scoring == "kl" and self.embedding != "output":
            raise ConfigError("scoring='kl' needs distributions: embedding='output'")
        if self.cosine_scale < 0:
            raise ConfigError(f"cosine_scale={self.cosine_scale}: need >= 0")
        if self.margin <= 0:
            raise ConfigError(f"margin={self.margin}: must be positive")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: expected one of {BACKENDS}")
        if self.backend == "lda" and self.scoring != "cosine":
            raise ConfigError("backend='lda' gives projections, not distributions: it needs scoring='cosine'")
        if self.linkage not in LINKAGES:
            raise ConfigError(f"linkage={self.linkage!r}: expected one of {LINKAGES}")
        if self.linkage == "ward" and self.scoring != "cosine":
            raise ConfigError(
                "linkage='ward' needs Euclidean distances, i.e. scoring='cosine' (unit-length "
                "embeddings); use linkage='average' with scoring='kl'"
            )
        if self.lda_dims < 0 or not 0.0 <= self.lda_shrinkage < 1.0:
            raise ConfigError(f"lda_dims={self.lda_dims}, lda_shrinkage={self.lda_shrinkage}: need >= 0 and [0, 1)")
        if self.lda_shrink_toward not in LDA_SHRINK_TARGETS:
            raise ConfigError(f"lda_shrink_toward={self.lda_shrink_toward!r}: expected one of {LDA_SHRINK_TARGETS}")
        if not 0.0 < self.epsilon < 1e-2:
            raise ConfigError(f"epsilon={self.epsilon}: need (0, 1e-2)")
        if self.embedding in ("hidden", "hidden_statistics") and not self.dense_units:
            raise ConfigError(f"embedding={self.embedding!r} needs at least one dense layer (dense_units)")
        if self.embedding == "hidden_statistics" and not self.input_statistics:
            raise ConfigError(
                "embedding='hidden_statistics' joins the input statistics to the hidden layer: it needs "
                "input_statistics=True (or set embedding='hidden')"
            )
        if self.embedding == "hidden_statistics" and self.backend == "none":
            raise ConfigError(
                "embedding='hidden_statistics' joins two parts of unrelated scales, which only a back end "
                "weighs against each other: it needs backend='lda' (or set embedding='hidden')"
            )
        if not 1 <= self.eval_hop <= self.segment_frames:
            raise ConfigError(f"eval_hop={self.eval_hop}: need 1..segment_frames ({self.segment_frames})")
        return self

    def to_json(self) -> Dict[str, object]:
        data = asdict(self)
        data["dense_units"] = list(self.dense_units)
        return data

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "EmbedderConfig":
        reject_unknown(data, cls.__dataclass_fields__, "embedder")
        values = dict(data)
        if "dense_units" in values:
            values["dense_units"] = tuple(int(u) for u in values["dense_units"])
        return cls(**values)


@dataclass(frozen=True)
class EmbedderTrainConfig:
    """How the embedder trains. Defaults are measured in docs/embedder.md; the demo run's shorter
    budget is speechpipe.pipeline.run_config.DEMO_EMBEDDER."""

    model: EmbedderConfig = field(default_factory=EmbedderConfig)
    speakers_per_batch: int = 16  # P
    segments_per_speaker: int = 8  # K: a batch of P x K = 128 segments
    # The training input: the pair job writes this many speaker blocks of 2K crops per training
    # speaker (speechpipe.speakers.block_records), which the trainer streams. 16 stores each of
    # the demo's utterances 16 times; a corpus of ~100+ utterances per speaker (VoxCeleb) is
    # better served by 64 (docs/pairs.md).
    blocks_per_speaker: int = 16
    learning_rate: float = 1e-3  # Adam
    clipnorm: float = 1.0
    max_seconds: float = 1200.0  # wall-clock budget of fit(), validation included
    max_steps: int = 0  # 0 = no step limit
    eval_every_steps: int = 200
    # Stop when this many evaluations in a row bring no better validation EER (0 = never): the
    # budget is then spent on weights that validation would not choose.
    patience_evals: int = 6
    # The weights are chosen, and patience counted, on the mean validation EER of the last this
    # many evaluations (1 = each evaluation's own): a validation set of a few dozen speakers gives
    # an EER that jumps by whole points between evaluations (real LibriSpeech, 30 speakers:
    # 2.16 %, 4.29 %, 2.26 %, 1.50 %), and one lucky evaluation early on would stand as a best
    # that patience stops the run on (trainer_contract.BestWeights; docs/embedder.md).
    validation_smoothing: int = 3
    seed: int = 0
    mixed_precision: bool = True  # float16 compute on a GPU; CPU stays float32
    log_every_steps: int = 0  # > 0: a progress line every this many steps
    # Bounds of each evaluation, so that validation (and the speaker evaluator, which reads these
    # from the run's embedder section) costs the same at VoxCeleb scale as on a small corpus. A
    # set under its cap is taken whole, exactly as without a cap; the results record each cap
    # and whether it bound (speechpipe.speakers.speaker_eval, "bounded samples").
    # Trials per EER (validation, the evaluator's test list and threshold fit): every pair of the
    # validation utterances up to this many, else a seeded sample balanced over same / different.
    max_trials: int = MAX_TRIALS
    # Training utterances the LDA back end is fitted on at each evaluation (seeded, as even over
    # the training speakers as the cap allows): the back end is a few hundred dimensions, which
    # this many utterances estimate well, and each evaluation embeds them once.
    backend_max_utterances: int = 10_000
    # Validation utterances embedded at each evaluation (seeded, as even over the validation
    # speakers as the cap allows): the validation trials are drawn among them, and each
    # evaluation streams their features from the split instead of holding it.
    validation_max_utterances: int = 5_000
    # Clustering (the threshold fitted on validation speakers, the test figures): at most this
    # many speakers (seeded) of at most `cluster_max_utterances` utterances each; the dendrogram
    # and the threshold search grow faster than the square of the utterances.
    cluster_max_speakers: int = CLUSTER_MAX_SPEAKERS
    cluster_max_utterances: int = CLUSTER_MAX_UTTERANCES

    def validate(self) -> "EmbedderTrainConfig":
        self.model.validate()
        if self.speakers_per_batch < 2 or self.segments_per_speaker < 2:
            raise ConfigError(
                f"speakers_per_batch={self.speakers_per_batch}, segments_per_speaker="
                f"{self.segments_per_speaker}: the in-batch loss needs >= 2 of each"
            )
        if self.learning_rate <= 0 or self.clipnorm <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate}, clipnorm={self.clipnorm}: must be positive")
        if self.max_seconds <= 0 and self.max_steps <= 0:
            raise ConfigError("need a budget: max_seconds > 0 or max_steps > 0")
        if self.patience_evals < 0 or self.validation_smoothing < 1:
            raise ConfigError(
                f"patience_evals={self.patience_evals}, validation_smoothing={self.validation_smoothing}: "
                "need >= 0 and >= 1"
            )
        if self.eval_every_steps < 1:
            raise ConfigError(f"eval_every_steps={self.eval_every_steps}: need >= 1")
        if self.max_trials < 2 or self.backend_max_utterances < 4 or self.validation_max_utterances < 4:
            raise ConfigError(
                f"max_trials={self.max_trials}, backend_max_utterances={self.backend_max_utterances}, "
                f"validation_max_utterances={self.validation_max_utterances}: need >= 2 (a same- and a "
                "different-speaker trial) and >= 4 (two speakers of two utterances)"
            )
        if self.blocks_per_speaker < 1:
            raise ConfigError(f"blocks_per_speaker={self.blocks_per_speaker}: need >= 1")
        if self.cluster_max_speakers < 2 or self.cluster_max_utterances < 1:
            raise ConfigError(
                f"cluster_max_speakers={self.cluster_max_speakers}, cluster_max_utterances="
                f"{self.cluster_max_utterances}: need >= 2 and >= 1"
            )
        return self

    def to_json(self) -> Dict[str, object]:
        data = asdict(self)
        data["model"] = self.model.to_json()
        return data

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "EmbedderTrainConfig":
        reject_unknown(data, cls.__dataclass_fields__, "embedder trainer")
        values = dict(data)
        values["model"] = EmbedderConfig.from_json(values.get("model", {}))
        return cls(**values)
