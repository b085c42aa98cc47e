"""The base network (one segment -> a distribution over `output_dim`), its training-only input
regularisation, and the model that outputs the configured embedding."""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tf_keras as keras

from speechpipe.speakers.embedder.config import HIDDEN_LAYER, INPUT_STATISTICS_LAYER, OUTPUT_LAYER, EmbedderConfig
from speechpipe.training import cudnn_lstm


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
        self.kernel = self.add_weight(
            "kernel", shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform", trainable=True
        )
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


def build_base_network(config: EmbedderConfig, output_head: Optional[keras.layers.Layer] = None) -> keras.Model:
    """segments [batch, segment_frames, n_bins] -> outputs [batch, output_dim], a distribution.
    The LSTMs keep the cuDNN kernel's settings (`cudnn_lstm`); the output is float32 even under
    mixed precision, because the loss takes its log. `output_head`: the layer that makes the
    output from the logits, named OUTPUT_LAYER (default: a float32 softmax; bench/seed002.py
    passes seed 002's PReLU to reproduce it)."""
    config.validate()
    inputs = keras.Input((config.segment_frames, config.n_bins), name="segments")
    x = inputs
    if config.freq_mask or config.time_mask:
        x = SpecAugment(config.freq_mask, config.time_mask, name="spec_augment")(x)
    if config.input_noise:
        x = keras.layers.GaussianNoise(config.input_noise, name="input_noise")(x)
    # float32 under mixed precision too: the back end weighs these directly (hidden_statistics),
    # and float16 would quantise them at 5e-4.
    statistics = StatisticsPooling(name=INPUT_STATISTICS_LAYER, dtype="float32")(x) if config.input_statistics else None
    x = keras.layers.Bidirectional(cudnn_lstm(config.lstm_units, name="lstm_1"), name="blstm_1")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    pool_last = config.pooling == "last"
    x = keras.layers.Bidirectional(
        cudnn_lstm(config.lstm_units, return_sequences=not pool_last, name="lstm_2"), name="blstm_2"
    )(x)
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
    head = output_head or keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_LAYER)
    return keras.Model(inputs, head(x), name="base_network")


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
        [hidden, base.get_layer(INPUT_STATISTICS_LAYER).output]
    )
    return keras.Model(base.input, joined, name="embedding_hidden_statistics_model")
