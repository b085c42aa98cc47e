import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from speechpipe.audio.decode import decode
from speechpipe.config import FeatureConfig
from speechpipe.phones.ctc_model import (
    CTCModelConfig,
    CTCTrainer,
    PERResult,
    beam_decode,
    build_acoustic_model,
    ctc_feasible,
    edit_distance,
    export_transcriber,
    greedy_decode,
    sparse_labels,
)
from speechpipe.phones.inventory import default_inventory
from speechpipe.training import NonFiniteLossError, StopOnNonFiniteLoss
from tests.helpers import read_manifest

BLANK = default_inventory().blank_id
NUM_CLASSES = default_inventory().num_classes


# ----------------------------------------------------------------------- decoding and PER by hand


def _logits(path, classes=NUM_CLASSES):
    """One-hot-ish logits that make `path` (class per frame) the best path."""
    out = np.full((len(path), classes), -5.0, np.float32)
    for t, k in enumerate(path):
        out[t, k] = 5.0
    return out


def test_greedy_merges_repeats_and_drops_blanks():
    path = [3, 3, BLANK, 3, 7, 7, BLANK, BLANK, 1]
    logits = np.stack([_logits(path), _logits([2] * 9)])
    assert greedy_decode(tf.constant(logits), [9, 4], BLANK) == [[3, 3, 7, 1], [2]]


def test_beam_search_agrees_with_greedy_on_a_peaked_path():
    path = [BLANK, 5, 5, BLANK, 5, 9, BLANK]
    assert beam_decode(tf.constant(_logits(path)[None]), [7], BLANK, beam_width=8) == [[5, 5, 9]]


def test_beam_search_finds_the_more_probable_labelling_greedy_misses():
    # frames: p(a)=.4, p(blank)=.6 twice. Greedy says "", but "a" totals 1-.36=.64 > .36.
    a = 0
    probs = np.array([[[0.4, 0.0, 0.6], [0.4, 0.0, 0.6]]], np.float32) + 1e-9
    logits = tf.constant(np.log(probs))
    assert greedy_decode(logits, [2], 2) == [[]]
    assert beam_decode(logits, [2], 2, beam_width=4) == [[a]]


@pytest.mark.parametrize(
    ("ref", "hyp", "distance"),
    [("abc", "abc", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3), ("abcd", "acbd", 2), ("aaa", "aa", 1)],
)
def test_edit_distance(ref, hyp, distance):
    assert edit_distance(list(ref), list(hyp)) == distance


def test_per_is_total_edits_over_total_reference():
    result = PERResult()
    result.add("u1", [1, 2, 3, 4], [1, 2, 3, 4])
    result.add("u2", [1, 2], [2])
    assert result.per == pytest.approx(1 / 6) and result.per_utterance == {"u1": 0.0, "u2": 0.5}
    with pytest.raises(ValueError, match="no reference phones"):
        result.add("u3", [], [1])


# ----------------------------------------------------------------------- CTC lengths


@pytest.mark.parametrize(
    ("label", "frames", "ok"),
    [([1, 2, 3], 3, True), ([1, 1], 2, False), ([1, 1], 3, True), ([1, 2, 2, 2], 5, False), ([1, 2, 2, 2], 6, True)],
)
def test_ctc_feasibility(label, frames, ok):
    assert ctc_feasible(label, frames) is ok


def test_loss_uses_real_lengths_not_padding():
    """An utterance's loss is the same alone and padded inside a batch with a longer one."""
    keras.utils.set_random_seed(0)
    acoustic = build_acoustic_model(8, NUM_CLASSES, CTCModelConfig(lstm_units=(8,), dropout=0.0, frame_stack=1))
    trainer = CTCTrainer(acoustic, BLANK, 1)
    rng = np.random.default_rng(0)
    short, long = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    alone = trainer.ctc_loss(
        {"features": short[None], "num_frames": tf.constant([20])},
        tf.constant([[1, 2, 3]]),
        tf.constant([3]),
        training=False,
    )
    padded = np.zeros((2, 50, 8), np.float32)
    padded[0, :20], padded[1] = short, long
    per_row = tf.nn.ctc_loss(
        tf.constant([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9]]),
        acoustic({"features": padded, "num_frames": tf.constant([20, 50])}),
        tf.constant([3, 6]),
        tf.constant([20, 50]),
        logits_time_major=False,
        blank_index=BLANK,
    )
    assert float(per_row[0]) == pytest.approx(float(alone), rel=1e-5)


def test_sparse_and_dense_label_losses_agree_with_phone_zero_as_padding():
    """The CPU's sparse-label CTC loss equals the dense one (a GPU's), loss and gradients, on a
    padded batch whose padding value 0 is also a phone in the labels: the lengths, not the
    values, decide what is padding."""
    keras.utils.set_random_seed(0)
    acoustic = build_acoustic_model(8, NUM_CLASSES, CTCModelConfig(lstm_units=(8,), dropout=0.0, frame_stack=2))
    trainer = CTCTrainer(acoustic, BLANK, 2)
    rng = np.random.default_rng(1)
    inputs = {"features": rng.normal(size=(3, 40, 8)).astype(np.float32), "num_frames": tf.constant([40, 26, 12])}
    labels = tf.constant([[0, 3, 0, 5, 7, 0], [2, 0, 2, 0, 0, 0], [4, 4, 0, 0, 0, 0]])
    lengths = tf.constant([6, 3, 2])
    results = []
    for dense in (True, False):
        trainer.dense_labels = dense
        with tf.GradientTape() as tape:
            loss = trainer.ctc_loss(inputs, labels, lengths, training=False)
        results.append((float(loss), tape.gradient(loss, acoustic.trainable_variables)))
    (dense_loss, dense_grads), (sparse_loss, sparse_grads) = results
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-5)
    for d, s in zip(dense_grads, sparse_grads):
        np.testing.assert_allclose(s.numpy(), d.numpy(), rtol=1e-3, atol=1e-5)
    assert sparse_labels(labels, lengths).values.numpy().tolist() == [0, 3, 0, 5, 7, 0, 2, 0, 2, 4, 4]


@pytest.mark.slow  # runs a trainer
def test_non_finite_loss_stops_training_with_a_clear_error():
    acoustic = build_acoustic_model(4, NUM_CLASSES, CTCModelConfig(lstm_units=(4,), frame_stack=1))
    trainer = CTCTrainer(acoustic, BLANK, 1)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    features = np.full((1, 10, 4), np.nan, np.float32)
    data = tf.data.Dataset.from_tensors(
        ({"features": features, "num_frames": [10]}, {"labels": [[1, 2]], "label_length": [2]})
    )
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1"):
        trainer.fit(data, epochs=1, callbacks=[StopOnNonFiniteLoss()], verbose=0)


# ----------------------------------------------------------------------- learning and export


@pytest.mark.slow  # trains to a learning threshold
def test_tiny_model_overfits_a_handful_of_utterances_and_exports(tiny_features, tiny_corpus, tmp_path):
    from speechpipe.audio.tf_features import GraphFeatures
    from speechpipe.components.ctc_trainer import CTCTrainConfig, evaluate_per, make_dataset

    keras.utils.set_random_seed(1)
    # no SpecAugment: the test is that the model can fit these utterances exactly
    config = CTCTrainConfig(
        model=CTCModelConfig(lstm_units=(96, 96), dropout=0.0, frame_stack=2),
        learning_rate=4e-3,
        batch_size=4,
        shuffle_buffer=4,
        time_masks=0,
        freq_masks=0,
    )
    files = [os.path.join(tiny_features, "Split-test")]  # the 4 utterances of the test speaker
    acoustic = build_acoustic_model(80, NUM_CLASSES, config.model)
    trainer = CTCTrainer(acoustic, BLANK, config.model.frame_stack)
    trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=5.0))
    data = make_dataset(files, config, training=True).cache()
    per = 1.0
    for _ in range(40):
        trainer.fit(data, epochs=25, verbose=0)
        per = evaluate_per(acoustic, files, config).per
        if per == 0.0:
            break
    assert per == 0.0, f"did not overfit 4 utterances: PER {per:.3f}"

    # SavedModel round trip through the raw-waveform signature
    path = str(tmp_path / "model")
    export_transcriber(path, acoustic, GraphFeatures(FeatureConfig()), default_inventory().phones, 2)
    loaded = tf.saved_model.load(path)
    assert {"transcribe", "serving_default", "logits"} <= set(loaded.signatures)
    items = [r for r in read_manifest(tiny_corpus) if r["split"] == "test"]
    waves = [decode(os.path.join(tiny_corpus, r["audio"]), 16000).samples for r in items]
    batch = np.zeros((len(waves), max(map(len, waves))), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    out = loaded.signatures["transcribe"](waveforms=tf.constant(batch), lengths=tf.constant([len(w) for w in waves]))
    inventory = default_inventory()
    for record, text in zip(items, out["phones"].numpy()):
        assert text.decode().split(" ") == inventory.tokenize(record["phones"])


def test_spec_augment_masks_within_bounds():
    from speechpipe.components.ctc_trainer import CTCTrainConfig, spec_augment

    config = CTCTrainConfig(time_masks=2, time_mask_frames=20, freq_masks=2, freq_mask_bins=10)
    tf.random.set_seed(3)
    masked_any = False
    for _ in range(20):
        out = spec_augment(tf.ones([300, 80]), tf.constant(250), config).numpy()
        zero_bins = np.all(out == 0, axis=0)  # frequency masks zero a bin in every frame
        zero_frames = np.where(np.all(out == 0, axis=1))[0]  # time masks zero every bin of a frame
        assert zero_bins.sum() <= 2 * 10 and len(zero_frames) <= 2 * 20
        assert np.all(zero_frames < 250), "time masks stay inside the real frames"
        masked_any |= bool(zero_bins.any() and len(zero_frames))
    assert masked_any
    off = CTCTrainConfig(time_masks=0, freq_masks=0)
    assert np.all(spec_augment(tf.ones([10, 8]), tf.constant(10), off).numpy() == 1.0)


def test_greedy_decoding_is_the_best_path_rule_frame_by_frame():
    """The vectorised decoder against the rule written out frame by frame, on random logits with
    many repeats and blanks, and padding past each length."""

    def by_frames(best, n, blank):
        ids, previous = [], -1
        for k in best[:n]:
            if k != previous and k != blank:
                ids.append(int(k))
            previous = k
        return ids

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 60, 5)).astype(np.float32)
    logits[:, ::3, 4] += 3.0  # blanks every third frame, repeats elsewhere
    lengths = rng.integers(0, 61, size=16)
    best = logits.argmax(-1)
    assert greedy_decode(tf.constant(logits), lengths, 4) == [by_frames(b, n, 4) for b, n in zip(best, lengths)]


def test_edit_distance_rows_at_once_equal_the_cell_by_cell_definition():
    def by_cells(reference, hypothesis):
        previous = list(range(len(hypothesis) + 1))
        for i, r in enumerate(reference, start=1):
            current = [i] + [0] * len(hypothesis)
            for j, h in enumerate(hypothesis, start=1):
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
            previous = current
        return previous[-1]

    rng = np.random.default_rng(0)
    for _ in range(300):
        ref = list(rng.integers(0, 4, rng.integers(0, 25)))
        hyp = list(rng.integers(0, 4, rng.integers(0, 25)))
        assert edit_distance(ref, hyp) == by_cells(ref, hyp), (ref, hyp)
    assert edit_distance(["a", "ʃ", "t"], ["a", "t"]) == 1  # phone strings as well as ids
