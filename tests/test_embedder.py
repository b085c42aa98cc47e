"""The embedder's loss, its numerics, the verification and clustering figures, and learning on
small generated data. Trainer, TFX and SavedModel tests are in test_embedder_export.py."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from speechpipe.speakers import embedder, speaker_eval
from speechpipe.speakers.embedder import (
    EmbedderConfig,
    in_batch_kl_hinge_loss,
    kl_divergence,
    kl_hinge_pair_loss,
    pairwise_kl_matrix,
)
from speechpipe.validation import ConfigError

EPS = 1e-7


def _np(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, np.float64)


def _kl(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return float(np.sum(p * np.log(p / q)))


# ------------------------------------------------------------------------------------------ loss


def test_identical_distributions_cost_nothing_when_same_and_the_margin_when_different():
    p = tf.constant([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    loss = _np(kl_hinge_pair_loss(tf.constant([1, 0]), p, p, margin=2.5))
    assert loss[0] == pytest.approx(0.0, abs=1e-6)
    assert loss[1] == pytest.approx(2.5, abs=1e-6)


def test_hand_worked_pair():
    p, q = [0.5, 0.5], [0.9, 0.1]
    # KL(p||q) = 0.5 ln(0.5/0.9) + 0.5 ln(5) = 0.51083; KL(q||p) = 0.9 ln 1.8 + 0.1 ln 0.2 = 0.36806
    assert _kl(p, q) == pytest.approx(0.510826, abs=1e-6) and _kl(q, p) == pytest.approx(0.368064, abs=1e-6)
    pq = tf.constant([p, p, p, p])
    qq = tf.constant([q, q, q, q])
    labels = tf.constant([1, 0, 1, 0])
    sym = _np(kl_hinge_pair_loss(labels, pq, qq, margin=2.0))
    np.testing.assert_allclose(sym[:2], [(0.510826 + 0.368064) / 2, (1.489174 + 1.631936) / 2], atol=1e-5)
    # a different-speaker pair already further apart than the margin costs nothing
    far = _np(kl_hinge_pair_loss(tf.constant([0]), tf.constant([p]), tf.constant([q]), margin=0.3))
    assert far[0] == 0.0


def test_the_loss_is_symmetric():
    rng = np.random.default_rng(0)
    p = tf.nn.softmax(rng.normal(size=(8, 5)) * 2).numpy()
    q = tf.nn.softmax(rng.normal(size=(8, 5)) * 2).numpy()
    labels = tf.constant([1, 0] * 4)
    np.testing.assert_allclose(
        _np(kl_hinge_pair_loss(labels, p, q, 3.0)), _np(kl_hinge_pair_loss(labels, q, p, 3.0)), rtol=1e-6
    )


def test_kl_matches_the_definition_and_is_never_negative():
    rng = np.random.default_rng(1)
    p = tf.nn.softmax(rng.normal(size=(6, 7))).numpy()
    q = tf.nn.softmax(rng.normal(size=(6, 7))).numpy()
    got = _np(kl_divergence(p, q))
    want = [_kl(a, b) for a, b in zip(p, q)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(got >= 0)
    matrix = _np(pairwise_kl_matrix(tf.constant(p)))
    np.testing.assert_allclose(matrix, [[_kl(a, b) for b in p] for a in p], atol=1e-5)


def test_in_batch_loss_equals_the_mean_over_every_pair():
    rng = np.random.default_rng(2)
    outputs = tf.nn.softmax(rng.normal(size=(6, 4)) * 3).numpy()
    speakers = np.array([0, 0, 1, 1, 2, 2])
    margin = 1.5
    same, diff = [], []
    for i in range(6):
        for j in range(6):
            if i == j:
                continue
            kl = _kl(outputs[i], outputs[j])
            (same if speakers[i] == speakers[j] else diff).append(
                kl if speakers[i] == speakers[j] else max(0.0, margin - kl)
            )
    want = 0.5 * (np.mean(same) + np.mean(diff))
    got = float(in_batch_kl_hinge_loss(tf.constant(speakers), tf.constant(outputs), margin))
    assert got == pytest.approx(want, abs=1e-5)


def test_in_batch_loss_of_identical_outputs_is_half_the_margin():
    outputs = tf.fill([8, 5], 0.2)
    got = float(in_batch_kl_hinge_loss(tf.constant([0, 0, 1, 1, 2, 2, 3, 3]), outputs, margin=3.0))
    assert got == pytest.approx(1.5, abs=1e-6)  # same pairs 0, different pairs 3, weighted 1:1


def test_finite_loss_and_gradients_at_extreme_outputs():
    # one-hot outputs (exact zeros) and logits so large that the softmax saturates
    onehot_p = tf.Variable([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    onehot_q = tf.Variable([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(kl_hinge_pair_loss(tf.constant([1, 0]), onehot_p, onehot_q, margin=2.0))
    grads = tape.gradient(loss, [onehot_p, onehot_q])
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    # KL of the smoothed distributions is bounded by log((1 + D eps) / eps)
    assert _np(kl_divergence(onehot_p, onehot_q)).max() <= math.log((1 + 3 * EPS) / EPS) + 1e-3

    logits = tf.Variable([[1e4, -1e4, 0.0, 3.0], [-1e4, 1e4, 0.0, 0.0], [0.0, 0.0, 1e4, 0.0], [1e4, 0.0, 0.0, -1e4]])
    with tf.GradientTape() as tape:
        loss = in_batch_kl_hinge_loss(tf.constant([0, 0, 1, 1]), tf.nn.softmax(logits), margin=2.0)
    grad = tape.gradient(loss, logits)
    assert np.isfinite(loss.numpy()) and loss.numpy() > 0
    assert np.all(np.isfinite(grad.numpy()))


def test_keras_losses_reduce_to_the_functions():
    rng = np.random.default_rng(3)
    p = tf.nn.softmax(rng.normal(size=(4, 6))).numpy()
    batch = embedder.InBatchKLHingeLoss(margin=2.0)(np.array([0, 0, 1, 1]), p)
    assert float(batch) == pytest.approx(float(in_batch_kl_hinge_loss(tf.constant([0, 0, 1, 1]), p, 2.0)), rel=1e-6)


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="distributions"):
        EmbedderConfig(embedding="hidden", scoring="kl").validate()
    with pytest.raises(ConfigError, match="unknown"):
        EmbedderConfig.from_json({"margin": 2.0, "marign": 1.0})
    assert EmbedderConfig.from_json(EmbedderConfig().to_json()) == EmbedderConfig()
    # An export recorded with the settings only the bench varies now: read at the product's
    # values, or an error naming seed 002's when it was made with those.
    recorded = {**EmbedderConfig().to_json(), "output_activation": "softmax", "symmetric": True, "clip": False}
    assert EmbedderConfig.from_json(embedder.with_legacy_settings(recorded)) == EmbedderConfig()
    with pytest.raises(ConfigError, match="seed 002"):
        embedder.with_legacy_settings({**recorded, "output_activation": "prelu"})


# ------------------------------------------------------------------------------- verification


def _brute_operating_points(scores, labels):
    """Loops: every threshold, accept score >= t."""
    points = [(0.0, 1.0)]
    targets = sum(labels)
    nontargets = len(labels) - targets
    for t in sorted(set(scores), reverse=True):
        fa = sum(1 for s, y in zip(scores, labels) if s >= t and y == 0)
        miss = sum(1 for s, y in zip(scores, labels) if s < t and y == 1)
        points.append((fa / nontargets, miss / targets))
    return points


def _brute_eer(scores, labels):
    points = _brute_operating_points(scores, labels)
    for (f0, m0), (f1, m1) in zip(points, points[1:]):
        if m1 - f1 <= 0:
            if m1 == f1:
                return f1
            a = (m0 - f0) / ((m0 - f0) - (m1 - f1))
            return f0 + a * (f1 - f0)
    raise AssertionError("no crossing")


def test_eer_hand_worked():
    assert speaker_eval.equal_error_rate([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]).eer == pytest.approx(0.5)
    assert speaker_eval.equal_error_rate([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 0, 1, 0, 0]).eer == pytest.approx(1 / 3)
    assert speaker_eval.equal_error_rate([3, 2, 1, 0], [1, 1, 0, 0]).eer == 0.0
    assert speaker_eval.equal_error_rate([3, 2, 1, 0], [0, 0, 1, 1]).eer == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_and_min_dcf_equal_a_brute_force_computation(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + 1.2 * labels, 1)  # rounding makes ties
    got = speaker_eval.equal_error_rate(scores, labels).eer
    assert got == pytest.approx(_brute_eer(scores.tolist(), labels.tolist()), abs=1e-12)
    # an independent cross-check: the crossing lies inside the box of sklearn's two ROC points
    # that bracket FNR = FPR
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.argmax(fnr - fpr <= 0))
    assert max(fpr[i - 1], fnr[i]) - 1e-12 <= got <= min(fpr[i], fnr[i - 1]) + 1e-12
    points = _brute_operating_points(scores.tolist(), labels.tolist())
    p = 0.05
    want = min(p * m + (1 - p) * f for f, m in points) / min(p, 1 - p)
    assert speaker_eval.min_dcf(scores, labels, p) == pytest.approx(want, abs=1e-12)


def test_verification_rejects_bad_trials():
    with pytest.raises(ValueError, match="both"):
        speaker_eval.equal_error_rate([1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        speaker_eval.equal_error_rate([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        speaker_eval.equal_error_rate([1.0, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="scores"):
        speaker_eval.equal_error_rate([1.0, 2.0, 3.0], [1, 0])


# --------------------------------------------------------------------------------- clustering


def test_misclassification_rate_on_constructed_clusterings():
    truth = ["a", "a", "a", "b", "b", "b"]
    assert speaker_eval.misclassification_rate(truth, [1, 1, 1, 2, 2, 2]) == 0.0
    assert speaker_eval.misclassification_rate(truth, [7, 7, 7, 3, 3, 3]) == 0.0  # names do not matter
    assert speaker_eval.misclassification_rate(truth, [1, 1, 2, 3, 3, 3]) == pytest.approx(1 / 6)  # a split
    assert speaker_eval.misclassification_rate(truth, [1, 1, 1, 1, 1, 1]) == pytest.approx(1 / 2)  # merged
    assert speaker_eval.misclassification_rate(truth, [1, 2, 3, 4, 5, 6]) == pytest.approx(4 / 6)  # singletons
    # one cluster cannot be credited to two speakers
    assert speaker_eval.misclassification_rate(["a", "a", "b", "b", "c", "c"], [1, 1, 1, 1, 2, 2]) == pytest.approx(
        2 / 6
    )
    assert speaker_eval.adjusted_rand_index(truth, [5, 5, 5, 9, 9, 9]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        speaker_eval.misclassification_rate(truth, [1, 2])


def test_clustering_finds_separated_speakers_with_and_without_their_number():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    speakers = np.repeat(["s1", "s2", "s3", "s4"], 10)
    points = centres[np.repeat(np.arange(4), 10)] + rng.normal(size=(40, 16)) * 0.3
    distances = embedder.distance_matrix(points, "cosine")
    tree = speaker_eval.linkage_tree(distances)
    threshold, mr = speaker_eval.best_threshold(tree, speakers)
    assert mr == 0.0
    result = speaker_eval.clustering(distances, speakers, threshold=threshold)
    assert result.mr_known == 0.0 and result.ari_known == pytest.approx(1.0)
    assert result.clusters_threshold == 4 and result.mr_threshold == 0.0
    # a threshold far too small leaves singletons: every speaker but one utterance each is wrong
    tiny = speaker_eval.clustering(distances, speakers, threshold=1e-12)
    assert tiny.clusters_threshold == 40 and tiny.mr_threshold == pytest.approx(1 - 4 / 40)


def test_distance_matrices():
    rng = np.random.default_rng(4)
    p = tf.nn.softmax(rng.normal(size=(5, 6))).numpy()
    kl = embedder.distance_matrix(p, "kl")
    np.testing.assert_allclose(kl[0, 1], _kl(p[0], p[1]) + _kl(p[1], p[0]), rtol=1e-4)
    np.testing.assert_allclose(np.diag(kl), 0.0)
    np.testing.assert_allclose(-embedder.score(p[:1], p[1:2], "kl"), kl[0, 1], rtol=1e-4)
    cos = embedder.distance_matrix(p, "cosine")
    np.testing.assert_allclose(1 - cos[0, 2], embedder.score(p[:1], p[2:3])[0], rtol=1e-9)


def test_plots_are_png_files(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    fpr, fnr = speaker_eval.det_curve(rng.normal(size=200) + labels, labels)
    paths = [
        speaker_eval.plot_det({"model": (fpr, fnr)}, str(tmp_path / "det.png")),
        speaker_eval.plot_embeddings(
            rng.normal(size=(30, 8)), np.repeat(["a", "b", "c"], 10), str(tmp_path / "emb.png")
        ),
        speaker_eval.plot_curves({"eer": ([0, 1, 2], [0.5, 0.2, 0.1])}, str(tmp_path / "curve.png"), "min", "EER"),
    ]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------ learning


def _synthetic_utterances(rng, profiles, per_speaker, frames=20, bins=12):
    """Speaker identity is a profile over the first bins, under frame noise."""
    utterances, speakers = [], []
    for s, profile in enumerate(profiles):
        for _ in range(per_speaker):
            x = rng.normal(size=(frames, bins)) * 0.5
            x[:, : profile.size] += profile
            utterances.append(x.astype(np.float32))
            speakers.append(s)
    return utterances, np.array(speakers)


def _eer_of(model, config, utterances, speakers):
    emb = embedder.embed_utterances(model, utterances, config)
    names = [str(i) for i in range(len(utterances))]
    trials = speaker_eval.all_pairs_trials(names, speakers.tolist())
    scores, labels = speaker_eval.trial_scores(dict(zip(names, emb)), trials, embedder.score)
    return speaker_eval.equal_error_rate(scores, labels).eer


@pytest.mark.slow  # trains to a learning threshold
def test_in_batch_training_learns_to_tell_speakers_apart():
    """Trained with the in-batch loss, the network separates new utterances of its speakers
    far better than the untrained one. (Unseen speakers are the bench's business: generalising
    needs many training speakers and minutes.)"""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    config = EmbedderConfig(
        segment_frames=8,
        n_bins=12,
        freq_mask=0,
        time_mask=0,
        input_noise=0.0,
        backend="none",
        lstm_units=16,
        dense_units=(32,),
        output_dim=16,
        dropout=0.1,
        margin=2.0,
        eval_hop=4,
        cosine_scale=5.0,
        input_statistics=False,
        embedding="hidden",
    )  # the BLSTM must learn it: no statistics
    profiles = rng.normal(size=(8, 4))
    train_x, train_y = _synthetic_utterances(rng, profiles, 6)
    test_x, test_y = _synthetic_utterances(rng, profiles, 4)  # new utterances
    base = embedder.build_base_network(config)
    before = _eer_of(base, config, test_x, test_y)
    base.compile(keras.optimizers.Adam(3e-3, clipnorm=1.0), loss=embedder.loss_for(config))
    p, k = 4, 4
    train_x = np.stack(train_x)

    def batches():
        while True:
            chosen = rng.choice(len(profiles), p, replace=False)
            rows = np.concatenate([rng.choice(np.flatnonzero(train_y == s), k) for s in chosen])
            start = rng.integers(0, 13, rows.size)
            yield np.stack([train_x[r, o : o + 8] for r, o in zip(rows, start)]), np.repeat(chosen, k)

    data = tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec([p * k, 8, 12], tf.float32), tf.TensorSpec([p * k], tf.int64))
    )
    history = base.fit(data, steps_per_epoch=100, epochs=3, verbose=0).history["loss"]
    after = _eer_of(base, config, test_x, test_y)
    assert history[-1] < history[0], history
    assert before > 0.1, before
    assert after < 0.08 and after < before / 2, (before, after)


def test_statistics_pooling_is_mean_and_std_over_frames_with_finite_gradients():
    x = np.random.default_rng(3).normal(size=(2, 7, 5)).astype(np.float32)
    x[1] = 0.25  # constant: std 0, floored before the square root
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        pooled = embedder.StatisticsPooling()(inputs)
    np.testing.assert_allclose(pooled.numpy()[0], np.concatenate([x[0].mean(0), x[0].std(0)]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.numpy()[1], np.concatenate([np.full(5, 0.25), np.full(5, 1e-3)]), atol=1e-6)
    assert np.all(np.isfinite(tape.gradient(pooled, inputs).numpy()))
    base = embedder.build_base_network(
        EmbedderConfig(
            segment_frames=7,
            n_bins=5,
            freq_mask=2,
            time_mask=3,
            lstm_units=4,
            dense_units=(8,),
            output_dim=6,
            pooling="stats",
            eval_hop=3,
        )
    )
    assert base.get_layer("statistics_pooling").output_shape == (None, 16)
    assert base(inputs).shape == (2, 6)


def test_input_statistics_reach_the_dense_layers_next_to_the_blstm_summary():
    """With input_statistics the hidden layer sees the segment's per-bin mean and standard
    deviation (at inference: of the input itself) beside the BLSTM's last states; without, the
    network is seed 002's topology."""
    small = dict(
        segment_frames=7,
        n_bins=5,
        freq_mask=2,
        time_mask=3,
        lstm_units=4,
        dense_units=(8,),
        output_dim=6,
        eval_hop=3,
        input_noise=0.1,
    )
    keras.utils.set_random_seed(0)
    base = embedder.build_base_network(EmbedderConfig(**small))
    x = np.random.default_rng(4).normal(size=(3, 7, 5)).astype(np.float32)
    statistics = keras.Model(base.input, base.get_layer(embedder.INPUT_STATISTICS_LAYER).output)(x, training=False)
    np.testing.assert_allclose(statistics.numpy(), np.concatenate([x.mean(1), x.std(1)], axis=1), rtol=1e-5, atol=1e-6)
    joined = base.get_layer("with_input_statistics")
    assert joined.output_shape == (None, 2 * 4 + 2 * 5)  # both BLSTM directions' last states, mean and std
    assert base.get_layer(embedder.HIDDEN_LAYER).input is joined.output
    plain = embedder.build_base_network(EmbedderConfig(**small, input_statistics=False, embedding="hidden"))
    assert not any(layer.name in (embedder.INPUT_STATISTICS_LAYER, "with_input_statistics") for layer in plain.layers)
    assert plain.get_layer(embedder.HIDDEN_LAYER).input_shape == (None, 2 * 4)
    # default embedding: the hidden layer joined with the input statistics, the same values the
    # hidden layer and the statistics layer give; seed 002 keeps its output distribution
    joined_model = embedder.embedding_model(base, EmbedderConfig(**small))
    assert joined_model.output_shape == (None, 8 + 2 * 5)
    assert len(joined_model.weights) == len(base.weights) - 2  # no weights of its own; not the output's
    hidden = embedder.embedding_model(base, EmbedderConfig(**small, embedding="hidden"))(x, training=False)
    np.testing.assert_allclose(
        joined_model(x, training=False).numpy(), np.concatenate([hidden.numpy(), statistics.numpy()], axis=1), rtol=1e-6
    )
    with pytest.raises(ConfigError, match="input_statistics=True"):
        EmbedderConfig(**small, input_statistics=False).validate()


def test_spec_augment_masks_one_band_and_one_span_in_training_only():
    x = tf.ones([64, 40, 80])
    layer = embedder.SpecAugment(freq_mask=10, time_mask=8)
    tf.random.set_seed(0)
    masked = layer(x, training=True).numpy()
    assert set(np.unique(masked)) <= {0.0, 1.0}
    for segment in masked:
        bins_off = np.flatnonzero((segment == 0).all(axis=0))  # bins zero in every frame
        frames_off = np.flatnonzero((segment == 0).all(axis=1))  # frames zero in every bin
        for off, limit in ((bins_off, 10), (frames_off, 8)):  # one contiguous run, at most the limit
            assert off.size <= limit and (off.size == 0 or off[-1] - off[0] == off.size - 1)
        # nothing else is touched: a cell is zero exactly when its bin or its frame is masked
        expected = np.ones((40, 80), np.float32)
        expected[:, bins_off] = 0
        expected[frames_off, :] = 0
        np.testing.assert_array_equal(segment, expected)
    widths = [(s == 0).all(axis=0).sum() for s in masked]
    assert max(widths) >= 5 and min(widths) < max(widths)  # random widths, not a constant
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    base = embedder.build_base_network(
        EmbedderConfig(
            segment_frames=8,
            n_bins=12,
            lstm_units=4,
            dense_units=(8,),
            output_dim=6,
            eval_hop=4,
            freq_mask=3,
            time_mask=2,
            input_noise=0.1,
        )
    )
    segments = np.random.default_rng(0).normal(size=(3, 8, 12)).astype(np.float32)
    np.testing.assert_array_equal(base(segments, training=False).numpy(), base(segments, training=False).numpy())
    with pytest.raises(ConfigError, match="freq_mask"):
        EmbedderConfig(n_bins=12, freq_mask=12).validate()
    with pytest.raises(ConfigError, match="input_noise"):
        EmbedderConfig(input_noise=-0.1).validate()


def _lda_data(rng, speakers=6, per_speaker=30, dims=10):
    """Speakers differ along the first five directions; the within-speaker spread is larger
    along the other five than the speaker differences are."""
    centres = np.zeros((speakers, dims))
    centres[:, :5] = rng.normal(size=(speakers, 5)) * 2.0
    scale = np.ones(dims)
    scale[5:] = 6.0
    x = np.concatenate([c + rng.normal(size=(per_speaker, dims)) * scale for c in centres])
    return x, np.repeat([f"s{i}" for i in range(speakers)], per_speaker)


def test_lda_whitens_the_within_speaker_spread_and_finds_the_speaker_directions():
    rng = np.random.default_rng(0)
    x, speakers = _lda_data(rng)
    backend = embedder.fit_lda(x, speakers, shrinkage=0.0)
    assert backend.projection.shape == (10, 5)  # speakers - 1
    z = backend.apply(x)
    within = np.zeros((5, 5))
    for s in np.unique(speakers):
        d = z[speakers == s] - z[speakers == s].mean(0)
        within += d.T @ d
    np.testing.assert_allclose(within / len(z), np.eye(5), atol=1e-4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    # the top direction lies among the speaker directions: the nuisance axes carry little of it
    top = backend.projection[:, 0] / np.linalg.norm(backend.projection[:, 0])
    assert np.linalg.norm(top[:5]) > 0.95
    # on new utterances of the same speakers, scoring after LDA beats scoring the raw vectors
    names_sorted = np.unique(speakers)
    means = np.stack([x[speakers == s].mean(0) for s in names_sorted])
    noise = np.random.default_rng(2).normal(size=x.shape) * np.r_[np.ones(5), np.full(5, 6.0)]
    fresh, same_speakers = means[np.searchsorted(names_sorted, speakers)] + noise, speakers
    names = [str(i) for i in range(len(fresh))]
    trials = speaker_eval.all_pairs_trials(names, same_speakers.tolist())

    def eer(e):
        s, y = speaker_eval.trial_scores(dict(zip(names, e)), trials, embedder.score)
        return speaker_eval.equal_error_rate(s, y).eer

    assert eer(backend.apply(fresh)) < eer(fresh) / 2
    assert embedder.fit_lda(x, speakers, dims=2).projection.shape == (10, 2)
    with pytest.raises(ValueError, match="2 speakers"):
        embedder.fit_lda(x[:5], ["a"] * 5)
    with pytest.raises(ConfigError, match="cosine"):
        EmbedderConfig(backend="lda", scoring="kl", embedding="output").validate()


def test_lda_shrinkage_toward_the_total_covariance_keeps_speaker_directions_of_small_spread():
    """A trained network can carry what separates speakers in directions of small variance.
    Shrinking toward the total covariance regularises every direction by its own spread, so
    rescaling the embeddings' axes changes nothing; isotropic shrinkage drowns the small ones."""
    rng = np.random.default_rng(0)
    x, speakers = _lda_data(rng)
    small = x * np.r_[np.full(5, 0.05), np.ones(5)]  # the speaker directions, 20 times smaller

    def cosines(backend, e):
        z = backend.apply(e)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        return z @ z.T

    reference = cosines(embedder.fit_lda(x, speakers), x)
    np.testing.assert_allclose(cosines(embedder.fit_lda(small, speakers), small), reference, atol=1e-3)
    # ... because it is the isotropic shrinkage in the space whitened by the total covariance
    values, vectors = np.linalg.eigh(np.cov(x.T, bias=True))
    whitened = (x - x.mean(0)) @ (vectors / np.sqrt(values))
    in_whitened = embedder.fit_lda(whitened, speakers, shrink_toward="isotropic")
    np.testing.assert_allclose(cosines(in_whitened, whitened), reference, atol=1e-3)
    isotropic = embedder.fit_lda(small, speakers, shrink_toward="isotropic")
    assert np.abs(cosines(isotropic, small) - reference).max() > 0.1
    names = [str(i) for i in range(len(x))]
    trials = speaker_eval.all_pairs_trials(names, speakers.tolist())

    def eer(backend):
        s, y = speaker_eval.trial_scores(dict(zip(names, backend.apply(small))), trials, embedder.score)
        return speaker_eval.equal_error_rate(s, y).eer

    assert eer(embedder.fit_lda(small, speakers)) < eer(isotropic) / 2
    with pytest.raises(ValueError, match="shrink_toward"):
        embedder.fit_lda(x, speakers, shrink_toward="identity")
    with pytest.raises(ConfigError, match="lda_shrink_toward"):
        EmbedderConfig(lda_shrink_toward="identity").validate()


def test_ward_linkage_keeps_an_outlier_with_its_speaker_where_average_linkage_splits_it_off():
    """Two close speakers and one speaker with an odd utterance: with the number of speakers
    given, average linkage spends a cluster on the odd utterance and merges the close pair;
    Ward's merge cost (the added within-cluster variance) grows with the clusters' sizes."""
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.96, 0.28]])  # speakers 1 and 2 close
    points = np.concatenate(
        [c + rng.normal(size=(10, 3)) * 0.02 for c in centres] + [np.array([[0.875, 0.0, -0.485]])]
    )  # speaker 0's odd utterance, 29 degrees off
    speakers = np.r_[np.repeat([0, 1, 2], 10), 0]
    for linkage, expected_mr in (("average", 11 / 31), ("ward", 0.0)):  # average: {0}, {odd}, {1, 2}
        config = EmbedderConfig(linkage=linkage)
        result = speaker_eval.clustering(embedder.clustering_distances(points, config), speakers, method=config.linkage)
        assert result.mr_known == pytest.approx(expected_mr), linkage
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    chord = np.linalg.norm(unit[:, None] - unit[None], axis=-1)
    np.testing.assert_allclose(embedder.clustering_distances(points, EmbedderConfig()), chord, atol=1e-6)
    with pytest.raises(ConfigError, match="ward"):
        EmbedderConfig(scoring="kl", backend="none", embedding="output").validate()
    EmbedderConfig(scoring="kl", backend="none", embedding="output", linkage="average").validate()
