"""The BLSTM + CTC phone recogniser (seed 000's model, made to learn).

- Inputs are normalised features [batch, frames, bins] with their real frame counts; padded
  frames are masked in every BLSTM (right padding keeps the cuDNN kernel on a GPU).
- CTC loss on real input lengths and real label lengths, never the padded widths; the blank is
  the inventory's `blank_id` (one past the last phone), shared by the loss and both decoders
  (TensorFlow's CTC decoders take the last class as the blank).
- An utterance with fewer frames than its label needs (length plus repeated neighbours) cannot be
  aligned; the input pipeline skips and counts it (see `ctc_feasible`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from speechpipe.phones.ctc_config import CTCModelConfig
from speechpipe.training import cudnn_lstm


def stacked_lengths(num_frames: tf.Tensor, frame_stack: int) -> tf.Tensor:
    return num_frames // frame_stack if frame_stack > 1 else num_frames


def build_acoustic_model(num_bins: int, num_classes: int, config: CTCModelConfig) -> keras.Model:
    """features [B, T, bins] + num_frames [B] -> logits [B, T', num_classes] (T' = T / frame_stack)."""
    features = keras.Input(shape=(None, num_bins), name="features")
    num_frames = keras.Input(shape=(), dtype=tf.int32, name="num_frames")
    x = features
    lengths = num_frames
    if config.frame_stack > 1:
        s = config.frame_stack
        x = keras.layers.Lambda(
            lambda f: tf.reshape(f[:, : tf.shape(f)[1] // s * s], [tf.shape(f)[0], tf.shape(f)[1] // s, num_bins * s]),
            name="stack_frames",
        )(x)
        lengths = keras.layers.Lambda(lambda n: n // s, name="stacked_lengths")(num_frames)
    mask = keras.layers.Lambda(lambda a: tf.sequence_mask(a[1], tf.shape(a[0])[1]), name="frame_mask")([x, lengths])
    for i, units in enumerate(config.lstm_units):
        x = keras.layers.Bidirectional(cudnn_lstm(units, name=f"lstm_{i}"), merge_mode="concat", name=f"blstm_{i}")(
            x, mask=mask
        )
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    # float32 logits even under mixed precision: the CTC loss needs the range.
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model({"features": features, "num_frames": num_frames}, logits, name="ctc_acoustic_model")


class CTCTrainer(keras.Model):
    """Wraps the acoustic model with a CTC train/test step on real lengths."""

    def __init__(self, acoustic: keras.Model, blank_id: int, frame_stack: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.acoustic = acoustic
        self.blank_id = blank_id
        self.frame_stack = frame_stack
        # TensorFlow's CTC loss has two implementations: dense padded labels (a scan of tensor
        # ops, the only one on a GPU) and sparse labels (a native CPU kernel). On the CPU the
        # dense one took half of a training step (357 ms of a batch's 684; sparse: 28 ms, equal
        # losses and gradients), so each device gets its fast one.
        self.dense_labels = bool(tf.config.list_logical_devices("GPU"))
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs, training=False):
        return self.acoustic(inputs, training=training)

    def ctc_loss(self, inputs, labels, label_lengths, training: bool) -> tf.Tensor:
        logits = self.acoustic(inputs, training=training)
        logit_lengths = stacked_lengths(inputs["num_frames"], self.frame_stack)
        if not self.dense_labels:
            labels, label_lengths = sparse_labels(labels, label_lengths), None
        per_utterance = tf.nn.ctc_loss(
            labels=labels,
            logits=logits,
            label_length=label_lengths,
            logit_length=logit_lengths,
            logits_time_major=False,
            blank_index=self.blank_id,
        )
        return tf.reduce_mean(per_utterance)

    def train_step(self, data):
        inputs, targets = data
        with tf.GradientTape() as tape:
            loss = self.ctc_loss(inputs, targets["labels"], targets["label_length"], training=True)
        gradients = tape.gradient(loss, self.acoustic.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.acoustic.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        inputs, targets = data
        self.loss_tracker.update_state(
            self.ctc_loss(inputs, targets["labels"], targets["label_length"], training=False)
        )
        return {"loss": self.loss_tracker.result()}


def sparse_labels(labels: tf.Tensor, label_lengths: tf.Tensor) -> tf.SparseTensor:
    """Padded labels [batch, width] with real lengths -> the same labels as a SparseTensor (the
    padding value is a phone id too, so the lengths, not the values, say what is padding)."""
    indices = tf.where(tf.sequence_mask(label_lengths, tf.shape(labels)[1]))
    return tf.SparseTensor(indices, tf.gather_nd(labels, indices), tf.cast(tf.shape(labels), tf.int64))


def ctc_feasible(label: Sequence[int], frames: int) -> bool:
    """CTC needs one frame per label plus a blank between each pair of equal neighbours."""
    repeats = sum(1 for a, b in zip(label, label[1:]) if a == b)
    return frames >= len(label) + repeats


def greedy_decode(logits: tf.Tensor, lengths: tf.Tensor, blank_id: int) -> List[List[int]]:
    """Best path: argmax per frame, repeats merged, blanks removed. Whole arrays at once: a
    validation pass decodes every frame of the split, and a Python loop per frame cost as much
    as the network's forward pass on CPU."""
    best = tf.argmax(logits, axis=-1, output_type=tf.int32).numpy()
    lengths = np.asarray(lengths).reshape(-1)
    inside = np.arange(best.shape[1])[None, :] < lengths[:, None]
    previous = np.concatenate([np.full((best.shape[0], 1), -1, best.dtype), best[:, :-1]], axis=1)
    keep = inside & (best != previous) & (best != blank_id)
    return [row[mask].tolist() for row, mask in zip(best, keep)]


def beam_decode(logits: tf.Tensor, lengths: tf.Tensor, blank_id: int, beam_width: int = 16) -> List[List[int]]:
    """Prefix beam search (TensorFlow's decoder; it takes the last class as the blank)."""
    if blank_id != logits.shape[-1] - 1:
        raise ValueError(f"beam search needs the blank last; blank_id={blank_id}, classes={logits.shape[-1]}")
    decoded, _ = tf.nn.ctc_beam_search_decoder(
        tf.transpose(tf.nn.log_softmax(logits), [1, 0, 2]),
        tf.cast(lengths, tf.int32),
        beam_width=beam_width,
        top_paths=1,
    )
    dense = tf.sparse.to_dense(decoded[0], default_value=-1).numpy()
    return [[int(k) for k in row if k >= 0] for row in dense] + [[] for _ in range(len(lengths) - dense.shape[0])]


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1). One reference
    symbol's row at a time, each row whole: deletions and substitutions come from the row above,
    and the chain of insertions along the row is a running minimum of (cost - column) + column.
    Scoring a validation split cell by cell in Python cost more than decoding it."""
    hyp = np.asarray(list(hypothesis))
    if len(reference) == 0 or len(hyp) == 0:
        return max(len(reference), len(hyp))
    columns = np.arange(len(hyp) + 1)
    previous = columns
    for i, r in enumerate(reference, start=1):
        cost = np.empty(len(hyp) + 1, np.int64)
        cost[0] = i
        cost[1:] = np.minimum(previous[1:] + 1, previous[:-1] + (hyp != r))
        previous = np.minimum.accumulate(cost - columns) + columns
    return int(previous[-1])


@dataclass
class PERResult:
    """Phone error rate: corpus-level (total edits / total reference phones) and per utterance."""

    edits: int = 0
    reference_phones: int = 0
    per_utterance: Dict[str, float] = field(default_factory=dict)

    def add(self, utterance: str, reference: Sequence, hypothesis: Sequence) -> None:
        if not reference:
            raise ValueError(f"utterance {utterance!r} has no reference phones: PER is undefined")
        e = edit_distance(reference, hypothesis)
        self.edits += e
        self.reference_phones += len(reference)
        self.per_utterance[utterance] = e / len(reference)

    @property
    def per(self) -> float:
        return self.edits / self.reference_phones if self.reference_phones else float("nan")


class Transcriber(tf.Module):
    """The exported recogniser: raw 16 kHz waveforms in, phone strings out (features in the graph)."""

    def __init__(
        self, acoustic: keras.Model, graph_features: tf.Module, phones: Sequence[str], frame_stack: int
    ) -> None:
        super().__init__(name="transcriber")
        self.acoustic = acoustic
        self.graph_features = graph_features
        self.frame_stack = frame_stack
        self.phone_table = tf.constant(list(phones) + [""], tf.string)  # the blank decodes to nothing
        self.blank_id = len(phones)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveforms"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    )
    def transcribe(self, waveforms, lengths):
        features, num_frames = self.graph_features(waveforms, lengths)
        logits = self.acoustic({"features": features, "num_frames": num_frames}, training=False)
        frames = stacked_lengths(num_frames, self.frame_stack)
        decoded, _ = tf.nn.ctc_greedy_decoder(
            tf.transpose(logits, [1, 0, 2]), frames, merge_repeated=True, blank_index=self.blank_id
        )
        ids = tf.sparse.to_dense(decoded[0], default_value=self.blank_id)
        # Rows with no phones at all must still come out, as empty strings.
        ids = tf.pad(ids, [[0, tf.shape(waveforms)[0] - tf.shape(ids)[0]], [0, 0]], constant_values=self.blank_id)
        tokens = tf.gather(self.phone_table, ids)
        text = tf.strings.reduce_join(tokens, axis=1, separator=" ")
        text = tf.strings.strip(tf.strings.regex_replace(text, " +", " "))
        return {"phones": text, "num_phones": tf.reduce_sum(tf.cast(ids != self.blank_id, tf.int32), axis=1)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveforms"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    )
    def frame_logits(self, waveforms, lengths):
        """Frame logits from raw waveforms, for decoders outside the graph (the phone LM's beam
        search, speechpipe.phones.ctc_lm_decoder)."""
        features, num_frames = self.graph_features(waveforms, lengths)
        return self.logits(features, num_frames)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None], tf.float32, name="features"),
            tf.TensorSpec([None], tf.int32, name="num_frames"),
        ]
    )
    def logits(self, features, num_frames):
        """Frame logits from normalised features, for evaluation on the feature records."""
        return {
            "logits": self.acoustic({"features": features, "num_frames": num_frames}, training=False),
            "logit_lengths": stacked_lengths(num_frames, self.frame_stack),
        }


def export_transcriber(
    path: str, acoustic: keras.Model, graph_features: tf.Module, phones: Sequence[str], frame_stack: int
) -> None:
    module = Transcriber(acoustic, graph_features, phones, frame_stack)
    tf.saved_model.save(
        module,
        path,
        signatures={
            "transcribe": module.transcribe,
            "serving_default": module.transcribe,
            "logits": module.logits,
            "frame_logits": module.frame_logits,
        },
    )
    graph_features.write_global_stats(path)
