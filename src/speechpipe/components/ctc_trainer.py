"""TFX Trainer module for the CTC phone recogniser: `run_fn(fn_args)`, and `train(...)` for
direct use (bench, tests).

The input pipeline buckets utterances by length, skips (and counts) utterances that CTC cannot
align or that have no transcript, and pads labels only for batching: the loss sees real lengths.
Training stops early on validation PER (best weights restored), on a wall-clock budget, or with
`NonFiniteLossError` at the first NaN loss.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from speechpipe.io import storage
from speechpipe.config import FeatureConfig
from speechpipe.phones.ctc_model import (
    CTCModelConfig,
    CTCTrainer,
    PERResult,
    beam_decode,
    build_acoustic_model,
    ctc_feasible,
    export_transcriber,
    greedy_decode,
    stacked_lengths,
)
from speechpipe.phones.inventory import load_inventory
from speechpipe.training import (
    StopOnNonFiniteLoss,
    distribution_strategy,
    expand_files,
    record_dataset,
    set_mixed_precision,
    tensorboard,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CTCTrainConfig:
    model: CTCModelConfig = field(default_factory=CTCModelConfig)
    optimizer: str = "adam"  # "adam", or "sgd" (seed 000: lr 0.02, momentum 0.9, Nesterov)
    learning_rate: float = 1e-3
    momentum: float = 0.9
    clipnorm: float = 5.0  # as seed 000
    batch_size: int = 32
    max_epochs: int = 200
    max_minutes: Optional[float] = None  # wall-clock budget; None = no budget
    patience: int = 6  # epochs without a better validation PER
    bucket_boundaries: Tuple[int, ...] = (150, 200, 250, 300, 350, 400, 500, 700)
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
    inventory: str = "phones_de.json"

    def to_json(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "CTCTrainConfig":
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "model" in values:
            values["model"] = CTCModelConfig.from_json(values["model"])
        if "bucket_boundaries" in values:
            values["bucket_boundaries"] = tuple(values["bucket_boundaries"])
        return cls(**values)


@dataclass
class InputCounts:
    """What the input pipeline used and what it skipped, and why."""

    used: int = 0
    no_transcript: int = 0
    too_short_for_label: int = 0

    def to_json(self) -> Dict[str, int]:
        return asdict(self)


# ------------------------------------------------------------------------------------ input

def scan_inputs(files: Sequence[str], frame_stack: int, num_phones: Optional[int] = None) -> InputCounts:
    """Counts usable and skipped utterances with the same rules the dataset filter applies. With
    `num_phones`, a label outside the inventory (records tokenised with another inventory) is an
    error: the schema cannot bound ids that differ per language."""
    counts = InputCounts()
    for example in record_dataset(files).map(lambda e: {"n": e["num_frames"], "ids": e["phone_ids"]}).as_numpy_iterator():
        if num_phones is not None and len(example["ids"]) and int(max(example["ids"])) >= num_phones:
            raise ValueError(f"phone id {int(max(example['ids']))} in {list(files)[:1]}... is outside the inventory's "
                             f"{num_phones} phones: the records were tokenised with another inventory (language)")
        if len(example["ids"]) == 0:
            counts.no_transcript += 1
        elif not ctc_feasible(list(example["ids"]), int(example["n"]) // frame_stack):
            counts.too_short_for_label += 1
        else:
            counts.used += 1
    return counts


def _usable(example: Dict[str, tf.Tensor], frame_stack: int) -> tf.Tensor:
    ids = example["phone_ids"]
    repeats = tf.reduce_sum(tf.cast(tf.equal(ids[1:], ids[:-1]), tf.int32))
    frames = stacked_lengths(example["num_frames"], frame_stack)
    return tf.logical_and(tf.size(ids) > 0, frames >= tf.size(ids) + repeats)


def _to_inputs(example: Dict[str, tf.Tensor]):
    inputs = {"features": example["features"], "num_frames": example["num_frames"]}
    targets = {"labels": example["phone_ids"], "label_length": tf.size(example["phone_ids"])}
    return inputs, targets


def spec_augment(features: tf.Tensor, num_frames: tf.Tensor, config: CTCTrainConfig) -> tf.Tensor:
    """Zeroes `time_masks` random spans of frames and `freq_masks` random bands of bins (zero is
    every bin's mean after cmvn/global normalisation) inside the utterance's real frames."""
    frames, bins = tf.shape(features)[0], tf.shape(features)[1]
    keep = tf.ones_like(features)
    for _ in range(config.time_masks):
        width = tf.random.uniform([], 0, config.time_mask_frames + 1, tf.int32)
        start = tf.random.uniform([], 0, tf.maximum(num_frames - width, 0) + 1, tf.int32)
        span = tf.logical_and(tf.range(frames) >= start, tf.range(frames) < start + width)
        keep *= 1.0 - tf.cast(span, features.dtype)[:, None]
    for _ in range(config.freq_masks):
        width = tf.random.uniform([], 0, config.freq_mask_bins + 1, tf.int32)
        start = tf.random.uniform([], 0, tf.maximum(bins - width, 0) + 1, tf.int32)
        band = tf.logical_and(tf.range(bins) >= start, tf.range(bins) < start + width)
        keep *= 1.0 - tf.cast(band, features.dtype)[None, :]
    return features * keep


def make_dataset(files: Sequence[str], config: CTCTrainConfig, training: bool) -> tf.data.Dataset:
    """Length-bucketed, padded batches of (inputs, targets); unusable utterances filtered out."""
    frame_stack = config.model.frame_stack
    dataset = record_dataset(files).filter(lambda e: _usable(e, frame_stack))
    if training:
        dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
        if config.time_masks or config.freq_masks:
            dataset = dataset.map(lambda e: {**e, "features": spec_augment(e["features"], e["num_frames"], config)},
                                  num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(_to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
    boundaries = list(config.bucket_boundaries)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda inputs, targets: inputs["num_frames"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
        padding_values=({"features": 0.0, "num_frames": 0}, {"labels": 0, "label_length": 0}),
        drop_remainder=False,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------ evaluation

def evaluate_per(acoustic: keras.Model, files: Sequence[str], config: CTCTrainConfig, beam_width: int = 0) -> PERResult:
    """Corpus and per-utterance PER of greedy (beam_width 0) or beam-search decoding."""
    blank = load_inventory(config.inventory).blank_id
    result = PERResult()
    dataset = record_dataset(files).filter(lambda e: _usable(e, config.model.frame_stack)).padded_batch(
        config.batch_size, padded_shapes={"utterance": [], "speaker": [], "session": [], "features": [None, None],
                                          "num_frames": [], "phone_ids": [None]},
        padding_values={"utterance": b"", "speaker": b"", "session": b"", "features": 0.0, "num_frames": 0, "phone_ids": -1})
    forward = tf.function(lambda f, n: acoustic({"features": f, "num_frames": n}, training=False), reduce_retracing=True)
    for batch in dataset:
        logits = forward(batch["features"], batch["num_frames"])
        lengths = stacked_lengths(batch["num_frames"], config.model.frame_stack)
        decoded = beam_decode(logits, lengths, blank, beam_width) if beam_width else greedy_decode(logits, lengths, blank)
        for utterance, reference, hypothesis in zip(batch["utterance"].numpy(), batch["phone_ids"].numpy(), decoded):
            result.add(utterance.decode(), [int(k) for k in reference if k >= 0], hypothesis)
    return result


class ValidationPER(keras.callbacks.Callback):
    """Greedy PER on the validation split after every epoch (as logs['val_per']); keeps the best
    weights, stops after `patience` epochs without improvement or when the budget is spent."""

    def __init__(self, files: Sequence[str], config: CTCTrainConfig, started: float) -> None:
        super().__init__()
        self.files, self.config, self.started = files, config, started
        self.best_per, self.best_epoch, self.best_weights = float("inf"), -1, None
        self.history: List[Dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        per = evaluate_per(self.model.acoustic, self.files, self.config).per
        logs["val_per"] = per
        elapsed = time.time() - self.started
        self.history.append({"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), "val_per": per,
                             "minutes": elapsed / 60})
        log.info("epoch %d: loss %.3f val_PER %.4f (%.1f min)", epoch + 1, logs.get("loss", np.nan), per, elapsed / 60)
        if per < self.best_per:
            self.best_per, self.best_epoch = per, epoch + 1
            self.best_weights = self.model.acoustic.get_weights()
        elif epoch + 1 - self.best_epoch >= self.config.patience:
            self.model.stop_training = True
        if self.config.max_minutes is not None and elapsed / 60 >= self.config.max_minutes:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.acoustic.set_weights(self.best_weights)


# ------------------------------------------------------------------------------------ training

def _optimizer(config: CTCTrainConfig) -> keras.optimizers.Optimizer:
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum, nesterov=True, clipnorm=config.clipnorm)
    raise ValueError(f"optimizer {config.optimizer!r}: expected 'adam' or 'sgd'")


def train(train_files: Sequence[str], eval_files: Sequence[str], feature_config: FeatureConfig,
          serving_model_dir: Optional[str], log_dir: Optional[str], config: CTCTrainConfig = CTCTrainConfig(),
          global_stats: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Trains, restores the best weights by validation PER, exports the `transcribe` SavedModel,
    and returns the history and figures."""
    from speechpipe.audio.tf_features import GraphFeatures

    train_files, eval_files = expand_files(train_files), expand_files(eval_files)
    tf.keras.utils.set_random_seed(config.seed)
    keras.utils.set_random_seed(config.seed)
    set_mixed_precision(config.mixed_precision)
    inventory = load_inventory(config.inventory)
    counts = {"train": scan_inputs(train_files, config.model.frame_stack, inventory.size).to_json(),
              "validation": scan_inputs(eval_files, config.model.frame_stack, inventory.size).to_json()}
    if counts["train"]["used"] == 0:
        raise ValueError(f"no usable training utterance (need transcripts that CTC can align): {counts['train']}")
    strategy = distribution_strategy()
    with strategy.scope():
        acoustic = build_acoustic_model(feature_config.n_bins, inventory.num_classes, config.model)
        trainer = CTCTrainer(acoustic, inventory.blank_id, config.model.frame_stack)
        trainer.compile(optimizer=_optimizer(config))
    started = time.time()
    validation = ValidationPER(eval_files, config, started)
    callbacks: List[keras.callbacks.Callback] = [StopOnNonFiniteLoss(), validation]
    if log_dir:
        callbacks.append(tensorboard(log_dir))
    # No Keras validation_data: the validation PER callback is the stopping criterion, and a
    # second pass for val_loss would cost a fifth of each epoch.
    trainer.fit(make_dataset(train_files, config, training=True), epochs=config.max_epochs, callbacks=callbacks, verbose=0)
    minutes = (time.time() - started) / 60
    result = {
        "best_val_per": validation.best_per, "best_epoch": validation.best_epoch, "epochs": len(validation.history),
        "train_minutes": round(minutes, 2), "history": validation.history, "inputs": counts,
        "config": config.to_json(), "features": feature_config.to_json(),
    }
    if serving_model_dir:
        export_transcriber(serving_model_dir, acoustic, GraphFeatures(feature_config, global_stats), inventory.phones,
                           config.model.frame_stack)
        # A local folder or an artifact URI on object storage (TFX's fileio).
        storage.write_json(storage.join(serving_model_dir, "training_result.json"), result, indent=1)
    return result


def run_fn(fn_args) -> None:
    """TFX Trainer entry point. custom_config: {"features": FeatureConfig json, "global_stats":
    dict or None, "ctc": CTCTrainConfig json}."""
    custom = fn_args.custom_config or {}
    feature_config = FeatureConfig.from_json(custom.get("features", {}))
    config = CTCTrainConfig.from_json(custom.get("ctc", {}))
    if getattr(fn_args, "train_steps", None):
        log.info("train_steps=%s is ignored: training stops on validation PER and the time budget", fn_args.train_steps)
    train(fn_args.train_files, fn_args.eval_files, feature_config, fn_args.serving_model_dir,
          storage.join(fn_args.model_run_dir, "tensorboard") if fn_args.model_run_dir else None, config,
          custom.get("global_stats"))
