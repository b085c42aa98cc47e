"""TFX Trainer module for the CTC phone recogniser: `run_fn(fn_args)`, and `train(...)` for
direct use (bench, tests).

The input pipeline buckets utterances by length, skips (and counts) utterances that CTC cannot
align or that have no transcript, and pads labels only for batching: the loss sees real lengths.
Training stops early on validation PER (best weights restored), on a wall-clock or step budget,
or with `NonFiniteLossError` at the first NaN loss (speechpipe.components.trainer_contract). A
champion (the Trainer's `base_model`) is the warm start when its architecture agrees.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from speechpipe import training as shared  # what both trainers use; `training` is a parameter name here
from speechpipe.components import trainer_contract
from speechpipe.config import FeatureConfig
from speechpipe.io import storage
from speechpipe.phones.ctc_config import CTCTrainConfig
from speechpipe.phones.ctc_model import (
    CTCTrainer,
    PERResult,
    build_acoustic_model,
    ctc_feasible,
    export_transcriber,
    stacked_lengths,
)
from speechpipe.phones.inventory import load_inventory
from speechpipe.phones.phone_error_rate import records_per

log = logging.getLogger(__name__)

MODEL_SECTION = "ctc"  # custom_config's key for CTCTrainConfig json (trainer_contract)


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
    for example in (
        shared.record_dataset(files).map(lambda e: {"n": e["num_frames"], "ids": e["phone_ids"]}).as_numpy_iterator()
    ):
        if num_phones is not None and len(example["ids"]) and int(max(example["ids"])) >= num_phones:
            raise ValueError(
                f"phone id {int(max(example['ids']))} in {list(files)[:1]}... is outside the inventory's "
                f"{num_phones} phones: the records were tokenised with another inventory (language)"
            )
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
    dataset = shared.record_dataset(files).filter(lambda e: _usable(e, frame_stack))
    if training:
        dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
        if config.time_masks or config.freq_masks:
            dataset = dataset.map(
                lambda e: {**e, "features": spec_augment(e["features"], e["num_frames"], config)},
                num_parallel_calls=tf.data.AUTOTUNE,
            )
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
    """Corpus and per-utterance PER of greedy (beam_width 0) or beam-search decoding, by the
    definition the evaluator's test PER uses (speechpipe.phones.phone_error_rate)."""
    frame_stack = config.model.frame_stack
    forward = tf.function(
        lambda f, n: (acoustic({"features": f, "num_frames": n}, training=False), stacked_lengths(n, frame_stack)),
        reduce_retracing=True,
    )
    return records_per(forward, files, load_inventory(config.inventory).blank_id, config.batch_size, beam_width)[0]


# ------------------------------------------------------------------------------------ training


def adam(config: CTCTrainConfig) -> keras.optimizers.Optimizer:
    """The product's optimiser: Adam at the config's learning rate, gradients clipped by norm."""
    return keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm)


def restore_acoustic(acoustic: keras.Model, saved_model_dir: str) -> None:
    """Loads a champion's acoustic weights into `acoustic` (same architecture), or raises: the
    exported Transcriber's `acoustic` attribute, matched by Keras' object graph, not by name."""
    checkpoint = tf.train.Checkpoint(acoustic=acoustic)
    status = checkpoint.read(storage.join(saved_model_dir, "variables", "variables"))  # TF reads URIs
    status.expect_partial()
    status.assert_existing_objects_matched()


def train(
    train_files: Sequence[str],
    eval_files: Sequence[str],
    feature_config: FeatureConfig,
    serving_model_dir: Optional[str],
    log_dir: Optional[str],
    config: CTCTrainConfig = CTCTrainConfig(),
    global_stats: Optional[Dict[str, object]] = None,
    champion: Optional[str] = None,
    warm_start_enabled: bool = True,
    make_optimizer: Callable[[CTCTrainConfig], keras.optimizers.Optimizer] = adam,
) -> Dict[str, object]:
    """Trains (from the champion's weights when `champion` is given and the architecture
    agrees), restores the best weights by validation PER, exports the `transcribe` SavedModel
    with training_result.json beside it, and returns the history and figures. `make_optimizer`
    is for the bench's reproduction of seed 000 (SGD, bench/bench_ctc.py); the pipeline trains
    with `adam`."""
    from speechpipe.audio.tf_features import GraphFeatures

    train_files, eval_files = shared.expand_files(train_files), shared.expand_files(eval_files)
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TensorFlow
    shared.set_mixed_precision(config.mixed_precision)
    inventory = load_inventory(config.inventory)
    counts = {
        "train": scan_inputs(train_files, config.model.frame_stack, inventory.size).to_json(),
        "validation": scan_inputs(eval_files, config.model.frame_stack, inventory.size).to_json(),
    }
    if counts["train"]["used"] == 0:
        raise ValueError(f"no usable training utterance (need transcripts that CTC can align): {counts['train']}")
    strategy = shared.distribution_strategy()
    with strategy.scope():
        acoustic, warm = trainer_contract.warm_start(
            lambda: build_acoustic_model(feature_config.n_bins, inventory.num_classes, config.model),
            champion,
            restore_acoustic,
            warm_start_enabled,
        )
        trainer = CTCTrainer(acoustic, inventory.blank_id, config.model.frame_stack)
        trainer.compile(optimizer=make_optimizer(config))
    validation = trainer_contract.BestWeights(
        acoustic,
        lambda: ({"val_per": evaluate_per(acoustic, eval_files, config).per}, None),
        "val_per",
        patience=config.patience,
        max_seconds=config.max_minutes * 60 if config.max_minutes else None,
        max_steps=config.max_steps,
    )
    callbacks: List[keras.callbacks.Callback] = [shared.StopOnNonFiniteLoss(), validation]
    if log_dir:
        callbacks.append(shared.tensorboard(log_dir))
    # No Keras validation_data: the validation PER callback is the stopping criterion, and a
    # second pass for val_loss would cost a fifth of each epoch.
    started = time.time()
    trainer.fit(
        make_dataset(train_files, config, training=True), epochs=config.max_epochs, callbacks=callbacks, verbose=0
    )
    result = {
        "best_val_per": validation.best,
        **validation.summary(),
        "train_minutes": round((time.time() - started) / 60, 2),
        "inputs": counts,
        "config": config.to_json(),
        "features": feature_config.to_json(),
        "warm_start": warm.to_json(),
    }
    if serving_model_dir:
        export_transcriber(
            serving_model_dir,
            acoustic,
            GraphFeatures(feature_config, global_stats),
            inventory.phones,
            config.model.frame_stack,
        )
        trainer_contract.write_result(serving_model_dir, result)
    return result


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (the contract of speechpipe.components.trainer_contract; the model
    section is "ctc": CTCTrainConfig json). fn_args.train_steps caps the optimiser steps."""
    trainer_contract.run_trainer(fn_args, MODEL_SECTION, CTCTrainConfig.from_json, train)
