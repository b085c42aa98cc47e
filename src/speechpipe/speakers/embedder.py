"""The siamese speaker embedder (seed 002's model, made to separate speakers).

Model
    A shared base network maps one segment (40 frames x bins) to a probability distribution:
    BLSTM -> dropout -> BLSTM (last states) -> dense (ReLU) -> dense -> softmax. Seed 002 ended
    in PReLU instead (`output_activation="prelu"`, kept for the reproduction in the bench).
    With `input_statistics` (default) the segment's per-bin mean and standard deviation join the
    BLSTM's summary before the dense layers: the long-term spectrum, which carries most of a
    speaker's identity, reaches the embedding directly instead of through the LSTMs' states.
    While training only, SpecAugment masks and Gaussian noise regularise the input.

Loss (pairwise KL + hinge, Hsu & Kira 2016; Lukic et al. 2016/2017)
    For a pair of branch outputs p, q and margin m:
        same speaker:       l(p, q) = KL(p || q)
        different speakers: l(p, q) = max(0, m - KL(p || q))
    The reference implementations add l(p, q) + l(q, p); speechpipe uses the mean of the two
    directions, 1/2 [l(p, q) + l(q, p)], which is the same objective on the margin's scale:
    identical outputs cost 0 for a same-speaker pair and exactly m for a different one.
    Seed 002 used one direction only (`symmetric=False`).

    Numerics: each distribution is smoothed, p~ = (p + eps) / (1 + D eps) -- still a
    distribution, so KL(p~ || q~) >= 0 -- and its log is taken in log space as
    log(p + eps) - log1p(D eps). Every term is bounded (KL <= log((1 + D eps) / eps), 16.1 for
    eps = 1e-7), so one-hot outputs give a finite loss and finite gradients. Seed 002's outputs
    were no distributions (PReLU), so its KL clipped them into [eps, 1]; `clip=True` reproduces
    that (and shows why the result means nothing: a clipped vector does not sum to one, and the
    "KL" can be negative).

Two training forms
    * pairs (`PairwiseKLHingeLoss`): the siamese model takes (segments_a, segments_b) and
      returns both distributions stacked, [batch, 2, D]; the labels are the pair builder's.
    * in-batch (`InBatchKLHingeLoss`): the base network alone over a batch of P speakers x K
      segments; every ordered pair (i, j), i != j, of the batch is a pair, KL(p_i || p_j)
      computed for all of them at once as sum_k p_ik log p_ik - p_i . log p_j (one matmul).
      Ordered pairs hold both directions, so this is the symmetric loss. Same- and
      different-speaker pairs are averaged separately and weighted 1:1, the pair builder's
      default ratio, so both forms optimise the same objective.

Embeddings
    `embedding="hidden_statistics"` (default) is the last dense layer below the output joined with
    the segment's input statistics; `"hidden"` the dense layer alone; `"output"` the output
    distribution (seed 002's). An utterance's embedding is the mean over its segments -- every 40-frame
    window with a hop of `eval_hop` (20) frames plus one aligned to the end
    (`speechpipe.speakers.pair_dataset.utterance_windows`); an utterance shorter than one segment gets
    one zero-padded window (zero is the normalised mean). Scores: cosine similarity, or the
    negative symmetric KL of two output distributions (`scoring="kl"`). The default back end
    (`backend="lda"`, `fit_lda`) projects embeddings onto the discriminants of the training
    speakers; clustering uses Ward linkage on unit-length embeddings (`clustering_distances`).

Export
    `export_embedder` writes a SavedModel whose signature `embed` takes raw 16 kHz float32
    waveforms [batch, samples] and their lengths [batch] and returns utterance embeddings, the
    features computed in the graph by `speechpipe.audio.tf_features.GraphFeatures`;
    `embed_segments` embeds already computed segments.
"""
from __future__ import annotations

import json
import os
import weakref
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from speechpipe.config import FeatureConfig
from speechpipe.speakers.pair_dataset import EVAL_HOP, SEGMENT_FRAMES, utterance_windows
from speechpipe.training import cudnn_lstm
from speechpipe.validation import ConfigError

OUTPUT_ACTIVATIONS: Tuple[str, ...] = ("softmax", "prelu")
EMBEDDING_LAYERS: Tuple[str, ...] = ("output", "hidden", "hidden_statistics")
POOLINGS: Tuple[str, ...] = ("last", "mean", "stats")
SCORINGS: Tuple[str, ...] = ("cosine", "kl")
BACKENDS: Tuple[str, ...] = ("none", "lda")
LINKAGES: Tuple[str, ...] = ("ward", "average", "complete")
LDA_SHRINK_TARGETS: Tuple[str, ...] = ("total", "isotropic")

# Settings added after the first exports, at the values those exports were made with.
LEGACY_SETTINGS: Dict[str, object] = {"freq_mask": 0, "time_mask": 0, "input_noise": 0.0, "backend": "none",
                                      "linkage": "average", "lda_dims": 0, "lda_shrinkage": 0.05,
                                      "lda_shrink_toward": "isotropic", "input_statistics": False}


def with_legacy_settings(settings: Dict[str, object]) -> Dict[str, object]:
    """An embedder config's json as recorded (an export's, a bench run's), with the settings it
    predates at the values it was made with."""
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
    output_activation: str = "softmax"  # "prelu" = seed 002
    # > 0: the softmax takes cosine logits, scale * cos(h, w_k) (bounded, so the output cannot
    # saturate into a one-hot); 0: an ordinary dense layer's logits.
    cosine_scale: float = 0.0
    symmetric: bool = True  # both KL directions; False = seed 002's KL(p || q) only
    clip: bool = False  # seed 002's clipping of outputs into [eps, 1] instead of smoothing
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
    # to its spread) or its mean variance times the identity ("isotropic", the older rule that exports made before it keep).
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
            raise ConfigError(f"freq_mask={self.freq_mask}, time_mask={self.time_mask}: need 0 <= freq_mask < n_bins "
                              f"({self.n_bins}) and 0 <= time_mask < segment_frames ({self.segment_frames})")
        if self.input_noise < 0:
            raise ConfigError(f"input_noise={self.input_noise}: need >= 0")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ConfigError(f"output_activation={self.output_activation!r}: expected one of {OUTPUT_ACTIVATIONS}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r}: expected one of {POOLINGS}")
        if self.embedding not in EMBEDDING_LAYERS:
            raise ConfigError(f"embedding={self.embedding!r}: expected one of {EMBEDDING_LAYERS}")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"scoring={self.scoring!r}: expected one of {SCORINGS}")
        if self.scoring == "kl" and (self.embedding != "output" or self.output_activation != "softmax"):
            raise ConfigError("scoring='kl' needs distributions: embedding='output' with a softmax output")
        if self.output_activation == "prelu" and not self.clip:
            raise ConfigError("a PReLU output is no distribution: its KL needs clip=True (seed 002's clipping)")
        if self.cosine_scale < 0 or (self.cosine_scale > 0 and self.output_activation != "softmax"):
            raise ConfigError(f"cosine_scale={self.cosine_scale}: need >= 0, and a softmax output when > 0")
        if self.margin <= 0:
            raise ConfigError(f"margin={self.margin}: must be positive")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: expected one of {BACKENDS}")
        if self.backend == "lda" and self.scoring != "cosine":
            raise ConfigError("backend='lda' gives projections, not distributions: it needs scoring='cosine'")
        if self.linkage not in LINKAGES:
            raise ConfigError(f"linkage={self.linkage!r}: expected one of {LINKAGES}")
        if self.linkage == "ward" and self.scoring != "cosine":
            raise ConfigError("linkage='ward' needs Euclidean distances, i.e. scoring='cosine' (unit-length "
                              "embeddings); use linkage='average' with scoring='kl'")
        if self.lda_dims < 0 or not 0.0 <= self.lda_shrinkage < 1.0:
            raise ConfigError(f"lda_dims={self.lda_dims}, lda_shrinkage={self.lda_shrinkage}: need >= 0 and [0, 1)")
        if self.lda_shrink_toward not in LDA_SHRINK_TARGETS:
            raise ConfigError(f"lda_shrink_toward={self.lda_shrink_toward!r}: expected one of {LDA_SHRINK_TARGETS}")
        if not 0.0 < self.epsilon < 1e-2:
            raise ConfigError(f"epsilon={self.epsilon}: need (0, 1e-2)")
        if self.embedding in ("hidden", "hidden_statistics") and not self.dense_units:
            raise ConfigError(f"embedding={self.embedding!r} needs at least one dense layer (dense_units)")
        if self.embedding == "hidden_statistics" and not self.input_statistics:
            raise ConfigError("embedding='hidden_statistics' joins the input statistics to the hidden layer: it needs "
                              "input_statistics=True (or set embedding='hidden')")
        if self.embedding == "hidden_statistics" and self.backend == "none":
            raise ConfigError("embedding='hidden_statistics' joins two parts of unrelated scales, which only a back end "
                              "weighs against each other: it needs backend='lda' (or set embedding='hidden')")
        if not 1 <= self.eval_hop <= self.segment_frames:
            raise ConfigError(f"eval_hop={self.eval_hop}: need 1..segment_frames ({self.segment_frames})")
        return self

    def to_json(self) -> Dict[str, object]:
        data = asdict(self)
        data["dense_units"] = list(self.dense_units)
        return data

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "EmbedderConfig":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown embedder setting(s): {', '.join(unknown)}")
        values = dict(data)
        if "dense_units" in values:
            values["dense_units"] = tuple(int(u) for u in values["dense_units"])
        return cls(**values)


# Seed 002's model and loss, for the reproduction: PReLU output, one-sided KL of clipped
# outputs, margin 1, its output as the embedding, none of speechpipe's input statistics,
# regularisation, back end or Ward clustering. (Its third problem, Keras "accuracy", is `seed002_keras_accuracy`.)
SEED002 = EmbedderConfig(output_activation="prelu", symmetric=False, clip=True, margin=1.0, freq_mask=0, time_mask=0,
                         input_noise=0.0, backend="none", linkage="average", input_statistics=False,
                         embedding="output")


# ------------------------------------------------------------------------------------ network

@keras.utils.register_keras_serializable(package="speechpipe")
class CosineLogits(keras.layers.Layer):
    """logits_k = scale * cos(x, w_k): bounded in [-scale, scale], so the softmax after it keeps
    every probability above exp(-2 scale) / D and its gradients alive. An unbounded dense layer
    lets the softmax saturate, and two segments mapped onto the same saturated output get no
    gradient from the hinge (KL and its gradient vanish together)."""

    def __init__(self, units: int, scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units, self.scale = int(units), float(scale)

    def build(self, input_shape) -> None:
        self.kernel = self.add_weight("kernel", shape=(int(input_shape[-1]), self.units),
                                      initializer="glorot_uniform", trainable=True)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.math.l2_normalize(tf.cast(inputs, tf.float32), axis=-1, epsilon=1e-12)
        w = tf.math.l2_normalize(tf.cast(self.kernel, tf.float32), axis=0, epsilon=1e-12)
        return self.scale * tf.matmul(x, w)

    def get_config(self) -> Dict[str, object]:
        return {**super().get_config(), "units": self.units, "scale": self.scale}


class SpecAugment(keras.layers.Layer):
    """Training only: per segment [frames, bins], one band of 0..freq_mask bins and one span of
    0..time_mask frames set to zero (the mean of normalised features), widths and positions
    uniform. The identity at inference."""

    def __init__(self, freq_mask: int, time_mask: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.freq_mask, self.time_mask = int(freq_mask), int(time_mask)

    @staticmethod
    def _band(batch: tf.Tensor, size: tf.Tensor, max_width: int) -> tf.Tensor:
        """[batch, size] float mask, 0 inside one random band per row, 1 elsewhere."""
        width = tf.random.uniform([batch, 1], 0, max_width + 1, dtype=tf.int32)
        start = tf.cast(tf.random.uniform([batch, 1]) * tf.cast(size - width + 1, tf.float32), tf.int32)
        position = tf.range(size)[None, :]
        return tf.cast(tf.logical_or(position < start, position >= start + width), tf.float32)

    def call(self, inputs: tf.Tensor, training=None) -> tf.Tensor:
        if not training:
            return inputs
        batch, frames, bins = tf.shape(inputs)[0], tf.shape(inputs)[1], tf.shape(inputs)[2]
        mask = tf.ones_like(inputs)
        if self.freq_mask:
            mask = mask * self._band(batch, bins, self.freq_mask)[:, None, :]
        if self.time_mask:
            mask = mask * self._band(batch, frames, self.time_mask)[:, :, None]
        return inputs * tf.cast(mask, inputs.dtype)

    def get_config(self) -> Dict[str, object]:
        return {**super().get_config(), "freq_mask": self.freq_mask, "time_mask": self.time_mask}


class StatisticsPooling(keras.layers.Layer):
    """[batch, frames, d] -> [batch, 2d]: the mean and the standard deviation over frames (the
    x-vector's pooling). The standard deviation is floored before the square root, so its
    gradient stays finite on constant inputs."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        mean = tf.reduce_mean(inputs, axis=1)
        variance = tf.reduce_mean(tf.square(inputs - mean[:, None, :]), axis=1)
        return tf.concat([mean, tf.sqrt(tf.maximum(variance, 1e-6))], axis=-1)


def build_base_network(config: EmbedderConfig) -> keras.Model:
    """segments [batch, segment_frames, n_bins] -> outputs [batch, output_dim] (a distribution
    with the softmax output). The LSTMs keep the cuDNN kernel's settings (`cudnn_lstm`); the
    output is float32 even under mixed precision, because the loss takes its log."""
    config.validate()
    inputs = keras.Input((config.segment_frames, config.n_bins), name="segments")
    x = inputs
    if config.freq_mask or config.time_mask:
        x = SpecAugment(config.freq_mask, config.time_mask, name="spec_augment")(x)
    if config.input_noise:
        x = keras.layers.GaussianNoise(config.input_noise, name="input_noise")(x)
    # float32 under mixed precision too: the back end weighs these directly (hidden_statistics),
    # and float16 would quantise them at 5e-4.
    statistics = (StatisticsPooling(name=INPUT_STATISTICS_LAYER, dtype="float32")(x)
                  if config.input_statistics else None)
    x = keras.layers.Bidirectional(cudnn_lstm(config.lstm_units, name="lstm_1"), name="blstm_1")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    pool_last = config.pooling == "last"
    x = keras.layers.Bidirectional(cudnn_lstm(config.lstm_units, return_sequences=not pool_last, name="lstm_2"),
                                   name="blstm_2")(x)
    if config.pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_pooling")(x)
    elif config.pooling == "stats":
        x = StatisticsPooling(name="statistics_pooling")(x)
    if statistics is not None:
        x = keras.layers.Concatenate(name="with_input_statistics")([x, statistics])
    for i, units in enumerate(config.dense_units):
        final = i == len(config.dense_units) - 1
        x = keras.layers.Dense(units, activation="relu", name=HIDDEN_LAYER if final else f"dense_{i + 1}")(x)
    if config.cosine_scale > 0:
        x = CosineLogits(config.output_dim, config.cosine_scale, name="output_dense")(x)
    else:
        x = keras.layers.Dense(config.output_dim, name="output_dense")(x)
    if config.output_activation == "softmax":
        outputs = keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_LAYER)(x)
    else:  # seed 002
        outputs = keras.layers.PReLU(dtype="float32", name=OUTPUT_LAYER)(x)
    return keras.Model(inputs, outputs, name="base_network")


def build_siamese_model(base: keras.Model) -> keras.Model:
    """(segments_a, segments_b) -> both branches' outputs stacked, [batch, 2, output_dim]. The
    branches are one network, so they share every weight."""
    shape = base.input_shape[1:]
    a = keras.Input(shape, name="segments_a")
    b = keras.Input(shape, name="segments_b")
    stacked = keras.layers.Lambda(lambda pq: tf.stack(pq, axis=1), name="pair_outputs")([base(a), base(b)])
    return keras.Model([a, b], stacked, name="siamese")


def embedding_model(base: keras.Model, config: EmbedderConfig) -> keras.Model:
    """The base network cut at the configured embedding: the output, the hidden layer, or the
    hidden layer joined with the input statistics layer."""
    if config.embedding == "output":
        return base
    hidden = base.get_layer(HIDDEN_LAYER).output
    if config.embedding == "hidden":
        return keras.Model(base.input, hidden, name="embedding_hidden_model")
    # No new weights: the export and a warm start see the same variables as with "hidden".
    joined = keras.layers.Concatenate(name="hidden_with_input_statistics", dtype="float32")(
        [hidden, base.get_layer(INPUT_STATISTICS_LAYER).output])
    return keras.Model(base.input, joined, name="embedding_hidden_statistics_model")


# --------------------------------------------------------------------------------------- loss

def log_distribution(outputs: tf.Tensor, epsilon: float, clip: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
    """(probabilities, log probabilities) of branch outputs [..., D], float32, both finite.

    Default: additive smoothing, p~ = (p + eps) / (1 + D eps), with the log computed as
    log(p + eps) - log1p(D eps). `clip=True` is seed 002's K.clip(p, eps, 1): any real vector
    goes in, and what comes out need not sum to one."""
    outputs = tf.cast(outputs, tf.float32)
    if clip:
        clipped = tf.clip_by_value(outputs, epsilon, 1.0)
        return clipped, tf.math.log(clipped)
    dims = tf.cast(tf.shape(outputs)[-1], tf.float32)
    # A softmax is >= 0; the maximum only keeps a caller's rounding below zero out of the log.
    shifted = tf.maximum(outputs, 0.0) + epsilon
    return shifted / (1.0 + dims * epsilon), tf.math.log(shifted) - tf.math.log1p(dims * epsilon)


def kl_divergence(p: tf.Tensor, q: tf.Tensor, epsilon: float = 1e-7, clip: bool = False) -> tf.Tensor:
    """KL(p || q) over the last axis, with the guards of `log_distribution`."""
    p_prob, p_log = log_distribution(p, epsilon, clip)
    _, q_log = log_distribution(q, epsilon, clip)
    return tf.reduce_sum(p_prob * (p_log - q_log), axis=-1)


def kl_hinge_pair_loss(labels: tf.Tensor, p: tf.Tensor, q: tf.Tensor, margin: float, epsilon: float = 1e-7,
                       symmetric: bool = True, clip: bool = False) -> tf.Tensor:
    """Per-pair loss [batch]: KL for label 1 (same speaker), max(0, margin - KL) for label 0;
    symmetric = the mean of both directions."""
    same = tf.cast(tf.reshape(labels, [-1]), tf.float32)

    def one_direction(kl: tf.Tensor) -> tf.Tensor:
        return same * kl + (1.0 - same) * tf.nn.relu(margin - kl)

    loss = one_direction(kl_divergence(p, q, epsilon, clip))
    if symmetric:
        loss = 0.5 * (loss + one_direction(kl_divergence(q, p, epsilon, clip)))
    return loss


def pairwise_kl_matrix(outputs: tf.Tensor, epsilon: float = 1e-7, clip: bool = False) -> tf.Tensor:
    """[N, N] with KL(p_i || p_j) at (i, j): sum_k p_ik log p_ik - sum_k p_ik log p_jk."""
    prob, log = log_distribution(outputs, epsilon, clip)
    neg_entropy = tf.reduce_sum(prob * log, axis=-1)
    return neg_entropy[:, None] - tf.matmul(prob, log, transpose_b=True)


def in_batch_kl_hinge_loss(speakers: tf.Tensor, outputs: tf.Tensor, margin: float, epsilon: float = 1e-7,
                           symmetric: bool = True, clip: bool = False) -> tf.Tensor:
    """The loss over every pair of a batch (a scalar): the mean over its same-speaker pairs and
    the mean over its different-speaker pairs, weighted 1:1. Symmetric: every ordered pair
    i != j (both directions); one-sided: i < j only. A batch without one of the two kinds
    contributes 0 for that kind."""
    speakers = tf.reshape(speakers, [-1])
    kl = pairwise_kl_matrix(outputs, epsilon, clip)
    n = tf.shape(speakers)[0]
    same = tf.equal(speakers[:, None], speakers[None, :])
    if symmetric:
        keep = tf.logical_not(tf.eye(n, dtype=tf.bool))
    else:
        keep = tf.cast(tf.linalg.band_part(tf.ones([n, n]), 0, -1) - tf.eye(n), tf.bool)  # i < j
    same_mask = tf.cast(tf.logical_and(keep, same), tf.float32)
    diff_mask = tf.cast(tf.logical_and(keep, tf.logical_not(same)), tf.float32)
    same_mean = tf.math.divide_no_nan(tf.reduce_sum(same_mask * kl), tf.reduce_sum(same_mask))
    diff_mean = tf.math.divide_no_nan(tf.reduce_sum(diff_mask * tf.nn.relu(margin - kl)), tf.reduce_sum(diff_mask))
    return 0.5 * (same_mean + diff_mean)


class PairwiseKLHingeLoss(keras.losses.Loss):
    """Keras loss for the siamese model: y_true = pair labels [batch] (1 same, 0 different),
    y_pred = stacked outputs [batch, 2, D]. Returns per-pair losses, so Keras' reduction (and
    MirroredStrategy's division by the global batch) averages them."""

    def __init__(self, margin: float = 2.0, epsilon: float = 1e-7, symmetric: bool = True, clip: bool = False,
                 name: str = "pairwise_kl_hinge", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.margin, self.epsilon, self.symmetric, self.clip = float(margin), float(epsilon), bool(symmetric), bool(clip)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_pred = tf.cast(y_pred, tf.float32)
        return kl_hinge_pair_loss(y_true, y_pred[:, 0], y_pred[:, 1], self.margin, self.epsilon, self.symmetric, self.clip)

    def get_config(self) -> Dict[str, object]:
        return {**super().get_config(), "margin": self.margin, "epsilon": self.epsilon,
                "symmetric": self.symmetric, "clip": self.clip}


class InBatchKLHingeLoss(keras.losses.Loss):
    """Keras loss for the base network on P speakers x K segments: y_true = speaker indices
    [batch], y_pred = outputs [batch, D]. The batch loss is returned once per segment so that
    Keras' mean (and MirroredStrategy's per-replica split, which keeps whole speakers when
    the batch is speaker-major and P divides by the replicas) gives it back."""

    def __init__(self, margin: float = 2.0, epsilon: float = 1e-7, symmetric: bool = True, clip: bool = False,
                 name: str = "in_batch_kl_hinge", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.margin, self.epsilon, self.symmetric, self.clip = float(margin), float(epsilon), bool(symmetric), bool(clip)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        loss = in_batch_kl_hinge_loss(y_true, y_pred, self.margin, self.epsilon, self.symmetric, self.clip)
        return loss * tf.ones([tf.shape(y_pred)[0]], tf.float32)

    def get_config(self) -> Dict[str, object]:
        return {**super().get_config(), "margin": self.margin, "epsilon": self.epsilon,
                "symmetric": self.symmetric, "clip": self.clip}


def seed002_keras_accuracy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """What Keras' "accuracy" reported in seed 002: its siamese model output the KL of the pair,
    one number, so "accuracy" meant binary_accuracy(label, KL > 0.5) -- calling a pair "same"
    when it is *far* apart. It measures nothing about speakers; kept to show that."""
    y_pred = tf.cast(y_pred, tf.float32)
    kl = kl_divergence(y_pred[:, 0], y_pred[:, 1], clip=True)
    return keras.metrics.binary_accuracy(tf.cast(tf.reshape(y_true, [-1, 1]), tf.float32), kl[:, None])


def loss_for(config: EmbedderConfig, form: str) -> keras.losses.Loss:
    """The loss of a training form ("pairs" or "in_batch") with the config's settings."""
    kwargs = dict(margin=config.margin, epsilon=config.epsilon, symmetric=config.symmetric, clip=config.clip)
    if form == "pairs":
        return PairwiseKLHingeLoss(**kwargs)
    if form == "in_batch":
        return InBatchKLHingeLoss(**kwargs)
    raise ConfigError(f"form={form!r}: expected 'pairs' or 'in_batch'")


# ------------------------------------------------------------------------- utterance embeddings

def segment_windows(features: np.ndarray, segment_frames: int = SEGMENT_FRAMES, hop: int = EVAL_HOP) -> np.ndarray:
    """An utterance's evaluation windows [windows, segment_frames, bins]: the pair builder's
    `utterance_windows`, and for an utterance shorter than one segment a single window padded
    with zeros (the graph export does the same). An utterance without frames is an error."""
    features = np.asarray(features, np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [frames, bins], got shape {features.shape}")
    frames = features.shape[0]
    if frames == 0:
        raise ValueError("an utterance without frames has no embedding")
    if frames < segment_frames:
        padded = np.zeros((segment_frames, features.shape[1]), np.float32)
        padded[:frames] = features
        return padded[None]
    return utterance_windows(features, segment_frames, hop)


# Traced inference functions, by model (weak keys: a model's function goes with the model; an
# attribute on the model would be tracked by Keras and saved with it).
_INFERENCE: "weakref.WeakKeyDictionary[keras.Model, Callable]" = weakref.WeakKeyDictionary()


def embed_segments(model: keras.Model, segments: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Runs `model` (inference mode) over segments [N, frames, bins] -> [N, E] float32."""
    call = _INFERENCE.get(model)
    if call is None:  # one traced function per model, not one per call
        ref = weakref.ref(model)  # the function must not keep its own key alive
        call = _INFERENCE[model] = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)
    out = [call(tf.constant(segments[i:i + batch_size])).numpy() for i in range(0, len(segments), batch_size)]
    return np.concatenate(out, 0).astype(np.float32) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def embed_utterances(model: keras.Model, features: Sequence[np.ndarray], config: EmbedderConfig,
                     batch_size: int = 512) -> np.ndarray:
    """Utterance embeddings [U, E]: the mean of each utterance's window embeddings."""
    if len(features) == 0:
        raise ValueError("embed_utterances: no utterances")
    windows = [segment_windows(f, config.segment_frames, config.eval_hop) for f in features]
    counts = np.array([len(w) for w in windows])
    segments = embed_segments(model, np.concatenate(windows, 0), batch_size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (np.add.reduceat(segments.astype(np.float64), starts, axis=0) / counts[:, None]).astype(np.float32)


def _smoothed(e: np.ndarray, epsilon: float) -> np.ndarray:
    """Rows as distributions with the loss's smoothing (a mean of softmax outputs sums to 1)."""
    p = np.maximum(e, 0.0) + epsilon
    return p / p.sum(axis=1, keepdims=True)


def score(a: np.ndarray, b: np.ndarray, scoring: str = "cosine", epsilon: float = 1e-7) -> np.ndarray:
    """Scores of embedding pairs (rows of a and b), higher = more likely the same speaker:
    cosine similarity, or the negative symmetric KL of two distributions (`"kl"`)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"score: need two [N, E] arrays of one shape, got {a.shape} and {b.shape}")
    if scoring == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)
    if scoring == "kl":
        pa, pb = _smoothed(a, epsilon), _smoothed(b, epsilon)
        la, lb = np.log(pa), np.log(pb)
        return -(np.sum(pa * (la - lb), axis=1) + np.sum(pb * (lb - la), axis=1))
    raise ConfigError(f"scoring={scoring!r}: expected one of {SCORINGS}")


def distance_matrix(embeddings: np.ndarray, scoring: str = "cosine", epsilon: float = 1e-7) -> np.ndarray:
    """Pairwise distances [U, U] for clustering: 1 - cosine, or the symmetric KL."""
    e = np.asarray(embeddings, np.float64)
    if scoring == "cosine":
        unit = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        d = 1.0 - unit @ unit.T
    elif scoring == "kl":
        p = _smoothed(e, epsilon)
        log = np.log(p)
        neg_entropy = np.sum(p * log, axis=1)
        kl = neg_entropy[:, None] - p @ log.T  # KL(p_i || p_j)
        d = kl + kl.T
    else:
        raise ConfigError(f"scoring={scoring!r}: expected one of {SCORINGS}")
    d = np.maximum(d, 0.0)
    np.fill_diagonal(d, 0.0)
    return 0.5 * (d + d.T)


def clustering_distances(embeddings: np.ndarray, config: EmbedderConfig) -> np.ndarray:
    """The distances the configured linkage clusters on: for Ward, the Euclidean distance between
    unit-length embeddings, sqrt(2 (1 - cosine)) (Ward's merge costs hold for Euclidean
    distances only); otherwise the scoring's `distance_matrix`."""
    d = distance_matrix(embeddings, config.scoring, config.epsilon)
    return np.sqrt(2.0 * d) if config.linkage == "ward" else d


# ------------------------------------------------------------------------------------ back end

@dataclass(frozen=True)
class LinearBackend:
    """An affine map of embeddings, (e - mean) @ projection, fitted after training. Affine maps
    commute with the mean over an utterance's windows, so it applies per window or per utterance
    alike."""

    mean: np.ndarray  # [E]
    projection: np.ndarray  # [E, D]

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        return ((np.asarray(embeddings, np.float64) - self.mean) @ self.projection).astype(np.float32)

    def to_json(self) -> Dict[str, object]:
        return {"input_dims": int(self.projection.shape[0]), "output_dims": int(self.projection.shape[1])}


def fit_lda(embeddings: np.ndarray, speakers: Sequence[str], dims: int = 0, shrinkage: float = 0.1,
            shrink_toward: str = "total") -> LinearBackend:
    """Linear discriminant analysis of utterance embeddings [U, E] by speaker: the generalised
    eigenvectors of (between-speaker, within-speaker) covariance with the largest eigenvalues,
    scaled so that the within-speaker covariance becomes the identity. `dims` = 0 keeps
    speakers - 1 (the rank of the between-speaker covariance).

    `shrinkage` mixes the within-speaker covariance W with a target (regularised discriminant
    analysis; W is singular where units are dead or utterances are few):
    `shrink_toward="total"` (default) takes the total covariance T, scaled to W's size
    (tr(T^-1 W) / E): every direction is regularised in proportion to its own spread, which is
    ordinary shrinkage in the space whitened by T, and rescaling the embedding's axes changes
    nothing (up to T's ridge of 1e-6 of its mean variance, which keeps T invertible when units
    are dead). `"isotropic"` takes W's mean variance times the identity (the older rule, kept for
    exports made with it), which drowns the directions of small spread, and on a trained network
    those carry much of what tells unseen speakers apart (docs/embedder.md, on the back end and
    the embedding)."""
    from scipy.linalg import eigh

    if shrink_toward not in LDA_SHRINK_TARGETS:
        raise ValueError(f"fit_lda: shrink_toward={shrink_toward!r}, expected one of {LDA_SHRINK_TARGETS}")
    x = np.asarray(embeddings, np.float64)
    labels = np.asarray(speakers)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"fit_lda: need [U, E] embeddings and U speakers, got {x.shape} and {labels.shape}")
    names, index = np.unique(labels, return_inverse=True)
    if len(names) < 2:
        raise ValueError("fit_lda: needs at least 2 speakers")
    counts = np.bincount(index).astype(np.float64)
    means = np.zeros((len(names), x.shape[1]))
    np.add.at(means, index, x)
    means /= counts[:, None]
    mean = x.mean(axis=0)
    within = (x - means[index]).T @ (x - means[index]) / len(x)
    centred = (means - mean) * np.sqrt(counts / len(x))[:, None]
    between = centred.T @ centred
    identity = np.eye(len(within))
    if shrink_toward == "total":
        total = within + between
        total += 1e-6 * np.trace(total) / len(total) * identity
        target = np.trace(np.linalg.solve(total, within)) / len(total) * total
    else:
        target = np.trace(within) / len(within) * identity
    within = (1.0 - shrinkage) * within + shrinkage * target
    keep = min(dims or len(names) - 1, len(names) - 1, x.shape[1])
    values, vectors = eigh(between, within)  # vectors.T @ within @ vectors = I
    order = np.argsort(values)[::-1][:keep]
    return LinearBackend(mean.astype(np.float32), vectors[:, order].astype(np.float32))


# ----------------------------------------------------------------------------------- export

class _Untracked:
    """Holds the Keras model out of the SavedModel's object graph: saving a Keras model as an
    object traces every layer's call functions for Keras' own loader (about 50 s for this
    network on 2 cores), while the `embed` signatures need only its variables."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model


class EmbedderModule(tf.Module):
    """What the SavedModel holds: the in-graph features, the base network's variables (served
    through its cut at `config.embedding`), and the two signatures."""

    def __init__(self, base: keras.Model, config: EmbedderConfig, feature_config: FeatureConfig,
                 global_stats: Optional[Dict[str, object]] = None, backend: Optional[LinearBackend] = None) -> None:
        super().__init__(name="speaker_embedder")
        from speechpipe.audio.tf_features import GraphFeatures

        if feature_config.n_bins != config.n_bins:
            raise ConfigError(f"the features have {feature_config.n_bins} bins, the model takes {config.n_bins}")
        self._network = _Untracked(embedding_model(base, config))
        # Tracked, so saved with the signatures: the whole base network's variables, the output
        # layer's too when the embedding is the hidden layer, so that a warm start restores all.
        self.network_variables = list(base.variables)
        # Apart from the network's variables, so that a warm start restores the network alone.
        self.backend_mean = self.backend_projection = None
        if backend is not None:
            self.backend_mean = tf.Variable(backend.mean, trainable=False, name="backend_mean")
            self.backend_projection = tf.Variable(backend.projection, trainable=False, name="backend_projection")
        self.features = GraphFeatures(feature_config, global_stats)
        self._segment_frames = config.segment_frames
        self._hop = config.eval_hop
        self._n_bins = config.n_bins
        self.embed = tf.function(self._embed, input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveforms"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ])
        self.embed_segments = tf.function(self._embed_segments, input_signature=[
            tf.TensorSpec([None, config.segment_frames, config.n_bins], tf.float32, name="segments"),
        ])

    def _network_embeddings(self, segments: tf.Tensor) -> tf.Tensor:
        embeddings = tf.cast(self._network.model(segments, training=False), tf.float32)
        if self.backend_mean is None:
            return embeddings
        return tf.matmul(embeddings - self.backend_mean, self.backend_projection)

    def _embed_segments(self, segments: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {"embeddings": self._network_embeddings(segments)}

    def _embed(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> Dict[str, tf.Tensor]:
        """waveforms [B, samples] (16 kHz float32, zero-padded), lengths [B] samples ->
        embeddings [B, E] (the mean over the utterance's windows; zeros where num_segments is 0,
        i.e. under one analysis window of audio) and num_segments [B]."""
        features, n_frames = self.features(waveforms, lengths)
        f, hop = self._segment_frames, self._hop
        batch = tf.shape(features)[0]
        # At least one segment of (zero) padding, so a short utterance still has one window.
        features = tf.pad(features, [[0, 0], [0, tf.maximum(f - tf.shape(features)[1], 0)], [0, 0]])
        last = tf.maximum(n_frames - f, 0)  # start of the end-aligned window
        regular = last // hop + 1  # windows at 0, hop, 2 hop, ... <= last
        count = tf.where(n_frames > 0, regular + tf.cast(last % hop != 0, tf.int32), 0)
        # Window k starts at min(k hop, last): the one past the regular ones is the end-aligned one.
        starts = tf.minimum(tf.ragged.range(count) * hop, tf.expand_dims(last, 1))
        utterance = tf.cast(starts.value_rowids(), tf.int32)
        frames = starts.flat_values[:, None] + tf.range(f)[None, :]  # [W, f]
        index = tf.stack([tf.broadcast_to(utterance[:, None], tf.shape(frames)), frames], axis=-1)
        windows = tf.gather_nd(features, index)  # [W, f, bins]
        windows = tf.ensure_shape(windows, [None, f, self._n_bins])
        segment_embeddings = self._network_embeddings(windows)
        embeddings = tf.math.unsorted_segment_mean(segment_embeddings, utterance, batch)
        return {"embeddings": embeddings, "num_segments": count}


def export_embedder(path: str, base: keras.Model, config: EmbedderConfig, feature_config: FeatureConfig,
                    global_stats: Optional[Dict[str, object]] = None, extra: Optional[Dict[str, object]] = None,
                    backend: Optional[LinearBackend] = None) -> str:
    """Writes the SavedModel of the base network `base` cut at `config.embedding` (signatures
    `embed`, the default, and `embed_segments`, both with the back end applied when one is
    given) and assets.extra/embedder_config.json (embedder and feature settings, plus `extra`)."""
    if (backend is None) != (config.backend == "none"):
        raise ConfigError(f"backend={config.backend!r} in the config, but {'no' if backend is None else 'a'} "
                          "fitted back end given")
    module = EmbedderModule(base, config, feature_config, global_stats, backend)
    tf.saved_model.save(module, path, signatures={
        "embed": module.embed,
        "serving_default": module.embed,
        "embed_segments": module.embed_segments,
    })
    # gfile, like the SavedModel itself: `path` may be on object storage (gs://, s3://)
    tf.io.gfile.makedirs(f"{path.rstrip('/')}/assets.extra")
    with tf.io.gfile.GFile(f"{path.rstrip('/')}/assets.extra/{CONFIG_FILE}", "w") as f:
        f.write(json.dumps({"embedder": config.to_json(), "features": feature_config.to_json(), **(extra or {})},
                           indent=1))
    return path


def restore_network(model: keras.Model, saved_model_dir: str) -> None:
    """Loads the network variables of a SavedModel written by `export_embedder` into `model`
    (a warm start from the champion). Raises ValueError when the architectures differ."""
    reader = tf.train.load_checkpoint(os.path.join(saved_model_dir, "variables", "variables"))
    saved = {k: v for k, v in reader.get_variable_to_shape_map().items() if k.startswith("network_variables/")}
    ours = [tuple(v.shape) for v in model.variables]
    theirs = [tuple(saved.get(f"network_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE", ())) for i in range(len(saved))]
    if ours != theirs:
        raise ValueError(f"the saved network has {len(theirs)} variables of shapes {theirs[:4]}..., this one "
                         f"{len(ours)} of shapes {ours[:4]}...")
    checkpoint = tf.train.Checkpoint(network_variables=list(model.variables))
    status = checkpoint.read(os.path.join(saved_model_dir, "variables", "variables"))
    status.expect_partial()
    status.assert_existing_objects_matched()


@dataclass
class LoadedEmbedder:
    """A SavedModel written by `export_embedder`, loaded with TensorFlow alone."""

    saved_model: object
    config: EmbedderConfig
    feature_config: FeatureConfig
    info: Dict[str, object] = field(default_factory=dict)

    def embed(self, waveforms: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = self.saved_model.signatures["embed"](waveforms=tf.constant(waveforms, tf.float32),
                                                   lengths=tf.constant(lengths, tf.int32))
        return out["embeddings"].numpy()

    def embed_segments(self, segments: np.ndarray) -> np.ndarray:
        return self.saved_model.signatures["embed_segments"](segments=tf.constant(segments, tf.float32))["embeddings"].numpy()


def load_embedder(path: str) -> LoadedEmbedder:
    """`path`: a local folder or a URI TensorFlow's gfile reads (gs://, s3:// with tensorflow-io)."""
    with tf.io.gfile.GFile(f"{path.rstrip('/')}/assets.extra/{CONFIG_FILE}", "r") as f:
        info = json.loads(f.read())
    # Models exported before these settings existed were trained and scored without them: no
    # back end (none is in their graph), no input regularisation, and a clustering threshold
    # chosen with average linkage, which a champion's evaluation must keep.
    config = EmbedderConfig.from_json(with_legacy_settings(info.pop("embedder")))
    return LoadedEmbedder(tf.saved_model.load(path), config,
                          FeatureConfig.from_json(info.pop("features")), info)
