"""What both trainers share: reading the feature records into tf.data, choosing a distribution
strategy, mixed precision, and stopping on a non-finite loss.

Keras: speechpipe uses Keras 2 through `tf_keras` everywhere. TF 2.16 defaults to Keras 3, but
TFX 1.16 and TFMA 0.47 are built around tf.keras, and a SavedModel written by tf_keras loads
back with TensorFlow alone (tests do this for each model).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Union

import tensorflow as tf
import tf_keras as keras

from speechpipe.filenames import GLOBAL_STATS_FILE
from speechpipe.io import records

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run stops instead of saving garbage."""


def expand_files(patterns: Union[str, Sequence[str]]) -> List[str]:
    """Shard files for one or more glob patterns or folders (a TFX Examples split URI is a folder;
    TFX's Trainer passes `<split URI>/*`), local or on object storage (listed through TFX's fileio;
    tf.data reads either). A split folder with a shard manifest (an ExamplesUnion's) stands for the
    shards it lists, each checked to be there with its recorded size
    (`speechpipe.io.records.resolve_shards`)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files: List[str] = []
    for pattern in patterns:
        files += records.resolve_shards(pattern, records.FILEIO)
    if not files:
        raise FileNotFoundError(f"no feature records match {list(patterns)}")
    return files


def find_global_stats(train_files: Union[str, Sequence[str]]) -> Optional[Dict[str, object]]:
    """The feature job's global_stats.json beside the first split folder that has one (the
    features of span 0 come first), or None."""

    files = [train_files] if isinstance(train_files, str) else list(train_files)
    for split_uri in files:
        path = os.path.join(os.path.dirname(split_uri.rstrip("/*")), GLOBAL_STATS_FILE)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                return json.load(f)
    return None


def parse_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    """One record -> features [frames, bins] float32 and the ids; phone_ids may be empty."""
    spec = {
        records.UTTERANCE: tf.io.FixedLenFeature([], tf.string),
        records.SPEAKER: tf.io.FixedLenFeature([], tf.string),
        records.SESSION: tf.io.FixedLenFeature([], tf.string),
        records.NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        records.NUM_BINS: tf.io.FixedLenFeature([], tf.int64),
        records.FEATURES: tf.io.FixedLenFeature([], tf.string),
        records.PHONE_IDS: tf.io.VarLenFeature(tf.int64),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    frames = tf.cast(parsed[records.NUM_FRAMES], tf.int32)
    bins = tf.cast(parsed[records.NUM_BINS], tf.int32)
    features = tf.reshape(tf.io.decode_raw(parsed[records.FEATURES], tf.float32, little_endian=True), [frames, bins])
    return {
        "utterance": parsed[records.UTTERANCE],
        "speaker": parsed[records.SPEAKER],
        "session": parsed[records.SESSION],
        "features": features,
        "num_frames": frames,
        "phone_ids": tf.cast(tf.sparse.to_dense(parsed[records.PHONE_IDS]), tf.int32),
    }


def serialized_records(patterns: Union[str, Sequence[str]]) -> tf.data.Dataset:
    """The serialized examples of every matching shard (compression by file name, as TFX decides)."""
    files = expand_files(patterns)
    compressed = {records.compression_of(f) for f in files}
    if len(compressed) != 1:
        raise ValueError(f"mixed compressed and uncompressed shards: {files}")
    return tf.data.TFRecordDataset(files, compression_type=compressed.pop(), num_parallel_reads=tf.data.AUTOTUNE)


def record_dataset(patterns: Union[str, Sequence[str]]) -> tf.data.Dataset:
    """Parsed examples from every matching shard."""
    return serialized_records(patterns).map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)


def distribution_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all visible GPUs when there are several, one GPU or the CPU otherwise."""
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy: tf.distribute.Strategy = tf.distribute.MirroredStrategy()
    elif gpus:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
    else:
        strategy = tf.distribute.get_strategy()
    log.info("training on %d GPU(s) with %s", len(gpus), type(strategy).__name__)
    return strategy


def set_mixed_precision(enabled: bool) -> None:
    """float16 compute with float32 variables where a GPU can use it; CPU stays float32."""
    policy = "mixed_float16" if enabled and tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(policy)


def cudnn_lstm(units: int, return_sequences: bool = True, name: str = None) -> keras.layers.Layer:
    """An LSTM whose settings select the cuDNN kernel on a GPU: tanh / sigmoid activations, no
    recurrent dropout, no unrolling, with bias (dropout goes in separate layers instead)."""
    return keras.layers.LSTM(
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        recurrent_dropout=0.0,
        unroll=False,
        use_bias=True,
        return_sequences=return_sequences,
        name=name,
    )


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` at the first NaN or infinite batch loss, naming where it was."""

    def __init__(self) -> None:
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not tf.math.is_finite(tf.constant(loss, tf.float32)):
            raise NonFiniteLossError(
                f"loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1}; check the features' "
                "normalisation and the learning rate (clipnorm is on by default)"
            )


def tensorboard(log_dir: str) -> keras.callbacks.Callback:
    return keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch", profile_batch=0)
