"""bench/seed002.py: seed 002's siamese model as the bench rebuilds it (PReLU output, one-sided
KL of clipped outputs, explicit pairs, Keras "accuracy"), so that its reproduction keeps
measuring what seed 002 did."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bench import seed002
from speechpipe.speakers import embedder
from speechpipe.speakers.embedder import EmbedderConfig


def _np(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, np.float64)


def test_seed002_clipping_is_no_divergence():
    """Seed 002 clipped PReLU outputs into [eps, 1] and took their "KL": the result can be
    negative, which no divergence is; the smoothed KL of distributions never is."""
    prelu_like = tf.constant([[2.0, -0.3, 0.5, 0.1]])
    other = tf.constant([[0.9, 0.8, 0.7, 0.6]])
    assert float(seed002.kl_divergence(prelu_like, other, clip=True)[0]) < 0
    assert float(embedder.kl_divergence(prelu_like, other)[0]) >= 0
    loss = seed002.kl_hinge_pair_loss(tf.constant([1]), prelu_like, other, 1.0, clip=True)
    assert np.all(np.isfinite(_np(loss)))


def test_one_sided_loss_is_seed002s_and_the_symmetric_one_is_the_products():
    rng = np.random.default_rng(0)
    p = tf.nn.softmax(rng.normal(size=(8, 5)) * 2).numpy()
    q = tf.nn.softmax(rng.normal(size=(8, 5)) * 2).numpy()
    labels = tf.constant([1, 0] * 4)
    one_pq = _np(seed002.kl_hinge_pair_loss(labels, p, q, 3.0, symmetric=False))
    one_qp = _np(seed002.kl_hinge_pair_loss(labels, q, p, 3.0, symmetric=False))
    assert not np.allclose(one_pq, one_qp)
    np.testing.assert_allclose(
        _np(seed002.kl_hinge_pair_loss(labels, p, q, 3.0, symmetric=True)),
        _np(embedder.kl_hinge_pair_loss(labels, p, q, 3.0)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        _np(seed002.kl_hinge_pair_loss(labels, p, q, 3.0, symmetric=True)), (one_pq + one_qp) / 2, rtol=1e-5
    )
    pair = seed002.PairwiseKLHingeLoss(2.0, 1e-7, symmetric=True, clip=False)(labels, np.stack([p, q], 1))
    assert float(pair) == pytest.approx(float(tf.reduce_mean(embedder.kl_hinge_pair_loss(labels, p, q, 2.0))), rel=1e-6)


def test_seed002_network_ends_in_a_prelu_and_the_product_in_a_softmax():
    config = EmbedderConfig(
        lstm_units=4, dense_units=(8,), output_dim=6, backend="none", embedding="output", input_statistics=False
    )
    x = tf.random.normal([3, config.segment_frames, config.n_bins])
    prelu = seed002.build_network(config, seed002.Seed002Settings())
    assert prelu.get_layer(embedder.OUTPUT_LAYER).__class__.__name__ == "PReLU"
    softmax = seed002.build_network(config, seed002.Seed002Settings(output_activation="softmax", clip=False))
    np.testing.assert_allclose(softmax(x).numpy().sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="clip=True"):
        seed002.Seed002Settings(clip=False).validate()


@pytest.mark.slow  # runs a trainer
def test_seed002_form_trains_on_the_pair_builder_output(tiny_features, tiny_training_input, tmp_path):
    from speechpipe.components.embedder_trainer import EmbedderTrainConfig
    from speechpipe.config import FeatureConfig
    from speechpipe.jobs import pairs_job

    pairs = str(tmp_path / "pairs")
    pairs_job.run(["--features", tiny_features, "--out", pairs, "--direct_running_mode=in_memory"])
    model = EmbedderConfig(
        lstm_units=8,
        dense_units=(16,),
        output_dim=8,
        margin=1.0,
        freq_mask=0,
        time_mask=0,
        input_noise=0.0,
        backend="none",
        linkage="average",
        input_statistics=False,
        embedding="output",
    )
    # P only checks that the training split has that many speakers: the pairs form batches pairs.
    config = EmbedderTrainConfig(
        model=model, max_steps=2, eval_every_steps=2, speakers_per_batch=2, segments_per_speaker=2
    )
    with open(os.path.join(tiny_features, "summary.json"), encoding="utf-8") as f:
        features = FeatureConfig.from_json(json.load(f)["features"])
    settings = dataclasses.replace(seed002.Seed002Settings(), pairs_per_batch=4)
    result = seed002.train_pairs(
        tiny_features,
        tiny_training_input,  # the back end's sample; the pairs come from `pairs`
        [os.path.join(tiny_features, "Split-validation"), os.path.join(tiny_features, "Split-test")],
        features,
        str(tmp_path / "model"),
        None,
        config,
        settings,
        pairs,
    )
    assert result.summary["steps"] == 2 and result.summary["inputs"]["train_pairs"] > 0
    assert 0.0 <= result.summary["history"][0]["keras_accuracy"] <= 1.0
    assert result.summary["seed002"]["output_activation"] == "prelu"
    # the export loads back through the product's loader, its graph holding the PReLU
    loaded = embedder.load_embedder(str(tmp_path / "model"))
    segments = np.zeros((2, model.segment_frames, features.n_bins), np.float32)
    assert loaded.embed_segments(segments).shape == (2, 8)
