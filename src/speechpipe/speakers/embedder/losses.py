"""The pairwise KL-divergence + hinge loss (Hsu & Kira 2016; Lukic et al. 2016/2017), over explicit
pairs and over every pair inside a batch of P speakers x K segments; numerics in the package
docstring (speechpipe.speakers.embedder)."""

from __future__ import annotations

from typing import Dict, Tuple

import tensorflow as tf
import tf_keras as keras

from speechpipe.speakers.embedder.config import EmbedderConfig


def log_distribution(outputs: tf.Tensor, epsilon: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """(probabilities, log probabilities) of branch outputs [..., D], float32, both finite:
    additive smoothing, p~ = (p + eps) / (1 + D eps), with the log computed as
    log(p + eps) - log1p(D eps), so p~ is still a distribution and KL(p~ || q~) >= 0."""
    outputs = tf.cast(outputs, tf.float32)
    dims = tf.cast(tf.shape(outputs)[-1], tf.float32)
    # A softmax is >= 0; the maximum only keeps a caller's rounding below zero out of the log.
    shifted = tf.maximum(outputs, 0.0) + epsilon
    return shifted / (1.0 + dims * epsilon), tf.math.log(shifted) - tf.math.log1p(dims * epsilon)


def kl_divergence(p: tf.Tensor, q: tf.Tensor, epsilon: float = 1e-7) -> tf.Tensor:
    """KL(p || q) over the last axis, with the guards of `log_distribution`."""
    p_prob, p_log = log_distribution(p, epsilon)
    _, q_log = log_distribution(q, epsilon)
    return tf.reduce_sum(p_prob * (p_log - q_log), axis=-1)


def kl_hinge_pair_loss(
    labels: tf.Tensor, p: tf.Tensor, q: tf.Tensor, margin: float, epsilon: float = 1e-7
) -> tf.Tensor:
    """Per-pair loss [batch] of explicit pairs: KL for label 1 (same speaker), max(0, margin - KL)
    for label 0, the mean of both directions (the objective the in-batch loss optimises)."""
    same = tf.cast(tf.reshape(labels, [-1]), tf.float32)

    def one_direction(kl: tf.Tensor) -> tf.Tensor:
        return same * kl + (1.0 - same) * tf.nn.relu(margin - kl)

    return 0.5 * (one_direction(kl_divergence(p, q, epsilon)) + one_direction(kl_divergence(q, p, epsilon)))


def pairwise_kl_matrix(outputs: tf.Tensor, epsilon: float = 1e-7) -> tf.Tensor:
    """[N, N] with KL(p_i || p_j) at (i, j): sum_k p_ik log p_ik - sum_k p_ik log p_jk."""
    prob, log = log_distribution(outputs, epsilon)
    neg_entropy = tf.reduce_sum(prob * log, axis=-1)
    return neg_entropy[:, None] - tf.matmul(prob, log, transpose_b=True)


def in_batch_kl_hinge_loss(speakers: tf.Tensor, outputs: tf.Tensor, margin: float, epsilon: float = 1e-7) -> tf.Tensor:
    """The loss over every pair of a batch (a scalar): the mean over its same-speaker pairs and
    the mean over its different-speaker pairs, weighted 1:1, over every ordered pair i != j
    (both directions). A batch without one of the two kinds contributes 0 for that kind."""
    speakers = tf.reshape(speakers, [-1])
    kl = pairwise_kl_matrix(outputs, epsilon)
    n = tf.shape(speakers)[0]
    same = tf.equal(speakers[:, None], speakers[None, :])
    keep = tf.logical_not(tf.eye(n, dtype=tf.bool))
    same_mask = tf.cast(tf.logical_and(keep, same), tf.float32)
    diff_mask = tf.cast(tf.logical_and(keep, tf.logical_not(same)), tf.float32)
    same_mean = tf.math.divide_no_nan(tf.reduce_sum(same_mask * kl), tf.reduce_sum(same_mask))
    diff_mean = tf.math.divide_no_nan(tf.reduce_sum(diff_mask * tf.nn.relu(margin - kl)), tf.reduce_sum(diff_mask))
    return 0.5 * (same_mean + diff_mean)


class InBatchKLHingeLoss(keras.losses.Loss):
    """Keras loss for the base network on P speakers x K segments: y_true = speaker indices
    [batch], y_pred = outputs [batch, D]. The batch loss is returned once per segment so that
    Keras' mean (and MirroredStrategy's per-replica split, which keeps whole speakers when
    the batch is speaker-major and P divides by the replicas) gives it back."""

    def __init__(self, margin: float = 2.0, epsilon: float = 1e-7, name: str = "in_batch_kl_hinge", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.margin, self.epsilon = float(margin), float(epsilon)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        loss = in_batch_kl_hinge_loss(y_true, y_pred, self.margin, self.epsilon)
        return loss * tf.ones([tf.shape(y_pred)[0]], tf.float32)

    def get_config(self) -> Dict[str, object]:
        return {**super().get_config(), "margin": self.margin, "epsilon": self.epsilon}


def loss_for(config: EmbedderConfig) -> keras.losses.Loss:
    """The training loss with the config's margin and smoothing."""
    return InBatchKLHingeLoss(margin=config.margin, epsilon=config.epsilon)
