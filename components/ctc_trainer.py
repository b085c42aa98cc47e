"""TFX Trainer module for the CTC phone recogniser: `run_fn(fn_args)`, and `train(...)` for
direct use (bench, tests).

The input pipeline buckets utterances by length (up to the longest utterance the feature job
keeps), skips utterances that CTC cannot align or that have no transcript, counting them as it
reads (no pass of its own before training), and pads labels only for batching: the loss sees
real lengths.
Training stops early on validation PER (best weights restored), on a wall-clock or step budget,
or with `NonFiniteLossError` at the first NaN loss (speechpipe.components.trainer_contract). A
champion (the Trainer's `base_model`) is the warm start when its architecture agrees. The export
carries a phone n-gram LM of the training transcripts for the beam search
(speechpipe.phones.ctc_lm_decoder; `phone_lm.order` 0: none).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras as keras

from speechpipe import training as shared  # what both trainers use; `training` is a parameter name here
from speechpipe.components import trainer_contract
from speechpipe.config import FeatureConfig
from speechpipe.io import records, storage
from speechpipe.phones.ctc_config import CTCTrainConfig
from speechpipe.phones.ctc_lm_decoder import LMBeamDecoder, export_phone_lm
from speechpipe.phones.ctc_model import (
    CTCTrainer,
    PERResult,
    build_acoustic_model,
    export_transcriber,
    stacked_lengths,
)
from speechpipe.phones.inventory import PhoneInventory, load_inventory
from speechpipe.phones.phone_error_rate import Forward, records_per
from speechpipe.phones.phone_lm import NoSentenceError, PhoneLM

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


INVENTORY_ERROR = "is outside the phone inventory"  # the message of a record tokenised with another one


class InputCounter:
    """Counts, inside a split's tf.data pipeline, what its first pass used and skipped, and why
    (`InputCounts`): training reads every record anyway, so the counts cost no pass of their
    own. Each pass ends with a marker element; the counters stop at the first marker, so later
    epochs (or evaluations) do not add to them, and `complete` says whether a whole pass was
    read (a budget can stop training inside the first epoch: then the counts are of the records
    read so far). With `num_phones`, a label outside the inventory (records tokenised with
    another inventory) fails the pass: the schema cannot bound ids that differ per language."""

    def __init__(self, frame_stack: int, num_phones: Optional[int] = None) -> None:
        self.frame_stack, self.num_phones = frame_stack, num_phones
        with tf.device("/cpu:0"):  # the input pipeline's side, whatever the strategy
            self._counts = tf.Variable(tf.zeros([3], tf.int64), trainable=False)  # used, no transcript, too short
            self._passes = tf.Variable(tf.constant(0, tf.int64), trainable=False)

    def counted(self, records: tf.data.Dataset) -> tf.data.Dataset:
        """`records` (parsed examples) unchanged, each counted on the way through."""
        end = tf.data.Dataset.from_tensors(
            ({k: tf.zeros([d or 0 for d in spec.shape], spec.dtype) for k, spec in records.element_spec.items()}, True)
        )

        def count(example: Dict[str, tf.Tensor], last: tf.Tensor):
            ids = example["phone_ids"]
            checks = []
            if self.num_phones is not None:
                checks.append(
                    tf.debugging.assert_less(
                        tf.cast(ids, tf.int64),
                        tf.constant(self.num_phones, tf.int64),
                        message=f"a phone id {INVENTORY_ERROR} of {self.num_phones} phones: the records were "
                        "tokenised with another inventory (language)",
                    )
                )
            with tf.control_dependencies(checks):
                kind = tf.where(tf.size(ids) == 0, 1, tf.where(_usable(example, self.frame_stack), 0, 2))
                first_pass = tf.logical_and(tf.equal(self._passes, 0), tf.logical_not(last))
                tally = self._counts.assign_add(tf.one_hot(kind, 3, dtype=tf.int64) * tf.cast(first_pass, tf.int64))
            with tf.control_dependencies([tally]):
                done = self._passes.assign_add(tf.cast(last, tf.int64))
            with tf.control_dependencies([done]):
                return tf.identity(last)

        # Sequential (no num_parallel_calls): the marker is counted after every record of its pass.
        marked = records.map(lambda e: (e, False)).concatenate(end)
        return (
            marked.map(lambda e, last: (e, count(e, last)))
            .filter(lambda e, last: tf.logical_not(last))
            .map(lambda e, last: e)
        )

    def to_json(self) -> Dict[str, object]:
        used, no_transcript, too_short = (int(v) for v in self._counts.numpy())
        return {
            **InputCounts(used, no_transcript, too_short).to_json(),
            "complete": bool(int(self._passes.numpy()) > 0),
        }


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


def make_dataset(
    files: Sequence[str],
    config: CTCTrainConfig,
    training: bool,
    feature_config: Optional[FeatureConfig] = None,
    counter: Optional[InputCounter] = None,
) -> tf.data.Dataset:
    """Length-bucketed, padded batches of (inputs, targets); unusable utterances filtered out
    (and counted by `counter`, when given). The buckets reach the longest utterance features
    made with `feature_config` can have (default: FeatureConfig())."""
    frame_stack = config.model.frame_stack
    records = shared.record_dataset(files)
    if counter is not None:
        records = counter.counted(records)
    dataset = records.filter(lambda e: _usable(e, frame_stack))
    if training:
        dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
        if config.time_masks or config.freq_masks:
            dataset = dataset.map(
                lambda e: {**e, "features": spec_augment(e["features"], e["num_frames"], config)},
                num_parallel_calls=tf.data.AUTOTUNE,
            )
    dataset = dataset.map(_to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
    boundaries = list(config.boundaries_for(feature_config or FeatureConfig()))
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda inputs, targets: inputs["num_frames"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
        padding_values=({"features": 0.0, "num_frames": 0}, {"labels": 0, "label_length": 0}),
        drop_remainder=False,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------ evaluation


def acoustic_forward(acoustic: keras.Model, frame_stack: int) -> Forward:
    """`acoustic`'s logits and their lengths, traced once for every batch shape. Validation pads
    each batch to its longest utterance; a function traced per shape (or one made anew for each
    validation) retraced the BLSTMs at every validation: 17-25 s on 2 CPU cores, where the
    forward pass itself takes about 2."""
    signature = [tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([None], tf.int32)]
    return tf.function(
        lambda f, n: (acoustic({"features": f, "num_frames": n}, training=False), stacked_lengths(n, frame_stack)),
        input_signature=signature,
    )


def evaluate_per(
    acoustic: Union[keras.Model, Forward],
    files: Sequence[str],
    config: CTCTrainConfig,
    beam_width: int = 0,
    counter: Optional[InputCounter] = None,
    lm_decoder: Optional[LMBeamDecoder] = None,
) -> PERResult:
    """Corpus and per-utterance PER of greedy (beam_width 0), beam-search or LM-scored
    beam-search (`lm_decoder`) decoding, by the definition the evaluator's test PER uses
    (speechpipe.phones.phone_error_rate); `acoustic` is the model or its `acoustic_forward`
    (kept, for repeated validation); `counter` counts the records it reads."""
    if isinstance(acoustic, keras.Model):
        acoustic = acoustic_forward(acoustic, config.model.frame_stack)
    records = shared.record_dataset(files) if counter is None else counter.counted(shared.record_dataset(files))
    blank_id = load_inventory(config.inventory).blank_id
    return records_per(acoustic, records, blank_id, config.batch_size, beam_width, lm_decoder=lm_decoder)[0]


# ------------------------------------------------------------------------------------ phone LM


def training_transcripts(files: Sequence[str]) -> Iterator[List[int]]:
    """The phone ids of every training record with a transcript, streamed. Only the ids are
    parsed (not the spectrograms), in one read of the split."""
    spec = {records.PHONE_IDS: tf.io.VarLenFeature(tf.int64)}
    ids = shared.serialized_records(files).map(
        lambda r: tf.io.parse_single_example(r, spec)[records.PHONE_IDS].values, num_parallel_calls=tf.data.AUTOTUNE
    )
    return (row.tolist() for row in ids.as_numpy_iterator() if row.size)


def fit_phone_lm(
    files: Sequence[str], inventory: PhoneInventory, order: int
) -> Optional[Tuple[PhoneLM, Dict[str, int]]]:
    """The phone n-gram LM of the training transcripts, and how many transcripts and distinct
    sentences it was fitted on (None when the split has none).

    Each distinct transcript counts once. In a corpus read from a prompt list every sentence
    comes several times, and counted per utterance its n-grams are hardly ever seen just once,
    so Kneser-Ney's discount (estimated from the singletons) collapses and the LM learns the
    training sentences by heart: on the demo corpus, read about 5 times per sentence, the
    6-gram discount fell from 0.89 to 0.15 and the test PER rose (docs/ctc.md). The transcripts
    stream into the counts, with a hash per distinct sentence to tell repeats: what the fit holds
    grows with the distinct sentences and n-grams, not with the utterances."""
    phones = inventory.phones
    counts = {"transcripts": 0, "sentences": 0}
    seen = set()

    def distinct(rows: Iterator[List[int]]) -> Iterator[List[str]]:
        for row in rows:
            outside = sorted({k for k in row if not 0 <= k < len(phones)})
            if outside:
                raise ValueError(f"phone ids {outside[:10]} {INVENTORY_ERROR} of {len(phones)} phones")
            counts["transcripts"] += 1
            key = hash(tuple(row))
            if key not in seen:
                seen.add(key)
                counts["sentences"] += 1
                yield [phones[k] for k in row]

    try:
        lm = PhoneLM.fit(distinct(training_transcripts(files)), order, phones)
    except NoSentenceError:
        return None
    return lm, counts


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
    # No pass of their own: the counts come from the first pass of training and of validation.
    counters = {
        "train": InputCounter(config.model.frame_stack, inventory.size),
        "validation": InputCounter(config.model.frame_stack, inventory.size),
    }
    boundaries = config.boundaries_for(feature_config)
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
    forward = acoustic_forward(acoustic, config.model.frame_stack)
    validation = trainer_contract.BestWeights(
        acoustic,
        lambda: ({"val_per": evaluate_per(forward, eval_files, config, counter=counters["validation"]).per}, None),
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
    try:
        trainer.fit(
            make_dataset(train_files, config, True, feature_config, counters["train"]),
            epochs=config.max_epochs,
            callbacks=callbacks,
            verbose=0,
        )
    except tf.errors.InvalidArgumentError as error:
        if INVENTORY_ERROR in error.message:
            line = next(line for line in error.message.splitlines() if INVENTORY_ERROR in line)
            raise ValueError(f"{list(train_files)[:1]}...: {line.strip()}") from error
        raise
    except ValueError as error:  # Keras' "Empty logs": the training pass yielded no batch
        if counters["train"].to_json()["used"] == 0:
            raise ValueError(
                f"no usable training utterance (need transcripts that CTC can align): {counters['train'].to_json()}"
            ) from error
        raise
    counts: Dict[str, object] = {name: counter.to_json() for name, counter in counters.items()}
    counts["bucket_boundaries"] = list(boundaries)
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
        if config.phone_lm.order:
            fitted = fit_phone_lm(train_files, inventory, config.phone_lm.order)
            if fitted is not None:
                lm, counts = fitted
                export_phone_lm(serving_model_dir, lm, config.phone_lm, counts["sentences"])
                result["phone_lm"] = {"order": lm.order, **counts, "ngrams": lm.counts}
        trainer_contract.write_result(serving_model_dir, result)
    return result


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (the contract of speechpipe.components.trainer_contract; the model
    section is "ctc": CTCTrainConfig json). fn_args.train_steps caps the optimiser steps."""
    trainer_contract.run_trainer(fn_args, MODEL_SECTION, CTCTrainConfig.from_json, train)
