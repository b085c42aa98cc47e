"""Seed 002's siamese model, rebuilt for the bench's reproduction (bench_embedder's `seed002`,
`+softmax`, `+symmetric` and `+margin` runs): what it did, so that the ablation shows which change
moves it off chance. None of this is a product option; the product trains the in-batch form of
speechpipe.components.embedder_trainer.

Seed 002's choices, each a setting of `Seed002Settings`:
    * output: PReLU (`output_activation="prelu"`), no distribution, so its KL clipped the
      outputs into [eps, 1] (`clip=True`): a clipped vector does not sum to one and the "KL" can
      be negative;
    * loss: one direction only, KL(p || q) (`symmetric=False`), margin 1 (a model setting);
    * training: the pair job's explicit pairs through a two-branch siamese model;
    * Keras "accuracy": binary_accuracy(label, KL > 0.5), which calls a pair "same" when it is
      far apart and measures nothing about speakers (`seed002_keras_accuracy`).

`train_pairs` runs the product trainer's steps (splits, best-weights validation, back end,
threshold, export: speechpipe.components.embedder_trainer) around this model and dataset.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

OUTPUT_ACTIVATIONS: Tuple[str, ...] = ("softmax", "prelu")


@dataclass(frozen=True)
class Seed002Settings:
    output_activation: str = "prelu"
    symmetric: bool = False
    clip: bool = True
    keras_accuracy: bool = True
    pairs_per_batch: int = 64  # 128 segments a step, the in-batch form's cost

    def validate(self) -> "Seed002Settings":
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation={self.output_activation!r}: expected one of {OUTPUT_ACTIVATIONS}")
        if self.output_activation == "prelu" and not self.clip:
            raise ValueError("a PReLU output is no distribution: its KL needs clip=True (seed 002's clipping)")
        if self.pairs_per_batch < 1:
            raise ValueError(f"pairs_per_batch={self.pairs_per_batch}: need >= 1")
        return self

    def to_json(self) -> Dict[str, object]:
        return asdict(self)


def log_distribution(outputs: tf.Tensor, epsilon: float, clip: bool) -> Tuple[tf.Tensor, tf.Tensor]:
    """Seed 002's K.clip(p, eps, 1) when `clip`, else the product's smoothing."""
    from speechpipe.speakers.embedder import losses

    if not clip:
        return losses.log_distribution(outputs, epsilon)
    clipped = tf.clip_by_value(tf.cast(outputs, tf.float32), epsilon, 1.0)
    return clipped, tf.math.log(clipped)


def kl_divergence(p: tf.Tensor, q: tf.Tensor, epsilon: float = 1e-7, clip: bool = False) -> tf.Tensor:
    p_prob, p_log = log_distribution(p, epsilon, clip)
    _, q_log = log_distribution(q, epsilon, clip)
    return tf.reduce_sum(p_prob * (p_log - q_log), axis=-1)


def kl_hinge_pair_loss(
    labels: tf.Tensor,
    p: tf.Tensor,
    q: tf.Tensor,
    margin: float,
    epsilon: float = 1e-7,
    symmetric: bool = True,
    clip: bool = False,
) -> tf.Tensor:
    """Per-pair loss [batch]: KL for label 1, max(0, margin - KL) for label 0; one direction
    (seed 002) or the mean of both."""
    same = tf.cast(tf.reshape(labels, [-1]), tf.float32)

    def one_direction(kl: tf.Tensor) -> tf.Tensor:
        return same * kl + (1.0 - same) * tf.nn.relu(margin - kl)

    loss = one_direction(kl_divergence(p, q, epsilon, clip))
    if symmetric:
        loss = 0.5 * (loss + one_direction(kl_divergence(q, p, epsilon, clip)))
    return loss


class PairwiseKLHingeLoss(keras.losses.Loss):
    """y_true = pair labels [batch], y_pred = the siamese model's stacked outputs [batch, 2, D]."""

    def __init__(
        self, margin: float, epsilon: float, symmetric: bool, clip: bool, name: str = "pairwise_kl_hinge", **kwargs
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.margin, self.epsilon, self.symmetric, self.clip = (
            float(margin),
            float(epsilon),
            bool(symmetric),
            bool(clip),
        )

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_pred = tf.cast(y_pred, tf.float32)
        return kl_hinge_pair_loss(
            y_true, y_pred[:, 0], y_pred[:, 1], self.margin, self.epsilon, self.symmetric, self.clip
        )


def seed002_keras_accuracy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """What Keras' "accuracy" reported in seed 002: binary_accuracy(label, KL > 0.5)."""
    kl = kl_divergence(tf.cast(y_pred[:, 0], tf.float32), tf.cast(y_pred[:, 1], tf.float32), clip=True)
    return keras.metrics.binary_accuracy(tf.cast(tf.reshape(y_true, [-1, 1]), tf.float32), kl[:, None])


def build_siamese_model(base: keras.Model) -> keras.Model:
    """(segments_a, segments_b) -> both branches' outputs stacked, [batch, 2, D]; one network,
    so the branches share every weight."""
    shape = base.input_shape[1:]
    a = keras.Input(shape, name="segments_a")
    b = keras.Input(shape, name="segments_b")
    stacked = keras.layers.Lambda(lambda pq: tf.stack(pq, axis=1), name="pair_outputs")([base(a), base(b)])
    return keras.Model([a, b], stacked, name="siamese")


def build_network(model_config, settings: Seed002Settings) -> keras.Model:
    from speechpipe.speakers.embedder import OUTPUT_LAYER, build_base_network

    head = keras.layers.PReLU(dtype="float32", name=OUTPUT_LAYER) if settings.output_activation == "prelu" else None
    return build_base_network(model_config, output_head=head)


def pair_training_dataset(
    features_dir: str, pairs_dir: str, segment_frames: int, pairs_per_batch: int, seed: int
) -> Tuple[tf.data.Dataset, int]:
    """The pair job's training pairs -> ((segments_a, segments_b), labels), their segments cut
    from the training split held in memory (seed 002's way; the product streams speaker blocks)."""
    from speechpipe.speakers.pair_dataset import PairReferences, SegmentTable, pair_dataset

    pattern = f"{pairs_dir.rstrip('/')}/pairs/train/pairs-*"
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no training pairs match {pattern}: run `speechpipe pairs --out {pairs_dir}`")
    table = SegmentTable.from_feature_records(features_dir, ["train"])
    references = PairReferences.read(files, table, segment_frames)
    dataset = pair_dataset(
        references, table, segment_frames, pairs_per_batch, training=True, seed=seed, repeat=True, drop_remainder=True
    )
    return dataset, len(references)


class _KerasAccuracy(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.per_epoch: List[float] = []

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.per_epoch.append(float((logs or {}).get("accuracy", float("nan"))))


def train_pairs(
    features_dir: str,
    blocks: str,
    eval_files: Sequence[str],
    feature_config,
    serving_model_dir: Optional[str],
    log_dir: Optional[str],
    config,
    settings: Seed002Settings,
    pairs_dir: str,
    global_stats: Optional[Dict[str, object]] = None,
):
    """Seed 002's form: the siamese model on the pair job's pairs, with the product's validation,
    back end, threshold and export (validated on `eval_files`, the back end fitted on the sample
    beside `blocks`: speechpipe.components.embedder_trainer.write_training_input; the pairs' segments
    cut from the training split of `features_dir`). Returns the product's TrainResult."""
    from speechpipe.components import trainer_contract
    from speechpipe.components.embedder_trainer import best_weights_validation, finish, fit_epochs, read_training_input
    from speechpipe.training import StopOnNonFiniteLoss, set_mixed_precision, tensorboard

    settings.validate()
    config = replace(config, model=replace(config.model, n_bins=feature_config.n_bins)).validate()
    keras.utils.set_random_seed(config.seed)
    set_mixed_precision(config.mixed_precision)
    data = read_training_input(blocks, eval_files, None, feature_config, config)
    dataset, data.inputs["train_pairs"] = pair_training_dataset(
        features_dir, pairs_dir, config.model.segment_frames, settings.pairs_per_batch, config.seed
    )
    base = build_network(config.model, settings)
    model = build_siamese_model(base)
    metrics = (
        [keras.metrics.MeanMetricWrapper(seed002_keras_accuracy, name="accuracy")] if settings.keras_accuracy else []
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
        loss=PairwiseKLHingeLoss(config.model.margin, config.model.epsilon, settings.symmetric, settings.clip),
        metrics=metrics,
    )
    embedder, validation = best_weights_validation(base, data, config)
    accuracy = _KerasAccuracy()
    callbacks: List[keras.callbacks.Callback] = [StopOnNonFiniteLoss(), accuracy, validation]
    if log_dir:
        callbacks.append(tensorboard(log_dir))
    started = time.time()
    model.fit(
        dataset, steps_per_epoch=config.eval_every_steps, epochs=fit_epochs(config), callbacks=callbacks, verbose=0
    )
    result = finish(
        base,
        embedder,
        validation,
        data,
        config,
        feature_config,
        global_stats,
        serving_model_dir,
        trainer_contract.WarmStart(False, None, trainer_contract.NO_CHAMPION),
        time.time() - started,
        2 * settings.pairs_per_batch,
    )
    if settings.keras_accuracy:
        for row, value in zip(result.summary["history"], accuracy.per_epoch):
            row["keras_accuracy"] = value
    result.summary["seed002"] = settings.to_json()
    return result
