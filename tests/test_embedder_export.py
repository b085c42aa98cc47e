"""The embedder's SavedModel (`embed` on raw waveforms, features in the graph), its parity with
the Beam job's features, and the trainer: TFX run_fn, both training forms, errors.

Parity tolerance: max |difference| of utterance embeddings (softmax outputs) <= 2e-5 between
`embed` on raw audio and the same network on the feature job's librosa features (measured:
3.6e-7 on the tiny corpus, with embeddings that differ by 0.14 between utterances; the features
themselves differ by up to 1e-3, see tests/test_feature_parity.py, and averaging over windows
shrinks that). Between the in-memory Keras network and the SavedModel on the same inputs the
tolerance is 1e-6 (one graph, float32 rounding only)."""

import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from speechpipe.audio.decode import decode
from speechpipe.components import embedder_trainer, trainer_contract
from speechpipe.components.embedder_trainer import EmbedderTrainConfig
from speechpipe.config import FeatureConfig
from speechpipe.speakers import embedder
from speechpipe.speakers.embedder import EmbedderConfig
from speechpipe.validation import ConfigError
from tests.helpers import read_manifest

PARITY_TOLERANCE = 2e-5
ROUND_TRIP_TOLERANCE = 1e-6
# backend="none": these tests check the network and its export; the LDA back end has its own.
# The output distribution as the embedding: the round trip checks that rows stay distributions.
TINY_MODEL = EmbedderConfig(
    lstm_units=8, dense_units=(16,), output_dim=8, dropout=0.1, backend="none", embedding="output"
)


@pytest.fixture(scope="module")
def random_network():
    """An untrained network made sensitive to its input: with its initial weights the softmax
    is almost uniform for every input, and a parity test on it would prove nothing."""
    keras.utils.set_random_seed(0)
    config = TINY_MODEL
    base = embedder.build_base_network(config)
    layer = base.get_layer("output_dense")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 30.0, bias])
    return base, config


@pytest.fixture(scope="module")
def exported(random_network, tmp_path_factory):
    """The random network's SavedModel, exported once for the tests below."""
    base, config = random_network
    return embedder.export_embedder(
        str(tmp_path_factory.mktemp("embedder_model") / "model"), base, config, FeatureConfig()
    )


def _waveforms(tiny_corpus, utterances):
    by_id = {r["utterance"]: r for r in read_manifest(tiny_corpus)}
    waves = [decode(os.path.join(tiny_corpus, by_id[u]["audio"]), 16000).samples for u in utterances]
    batch = np.zeros((len(waves), max(len(w) for w in waves)), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch, np.array([len(w) for w in waves], np.int32)


def test_warm_start_restores_the_exported_network(random_network, exported):
    base, config = random_network
    keras.utils.set_random_seed(1)
    fresh = embedder.build_base_network(config)
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), base.get_weights()))
    embedder.restore_network(fresh, exported)
    for a, b in zip(fresh.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = embedder.build_base_network(EmbedderConfig(lstm_units=4, dense_units=(16,), output_dim=8))
    with pytest.raises(ValueError, match="variables of shapes"):
        embedder.restore_network(other, exported)


@pytest.mark.parametrize(("embedding", "other"), [("hidden", "hidden_statistics"), ("hidden_statistics", "hidden")])
def test_a_hidden_layer_export_serves_that_layer_and_warm_starts_the_whole_network(embedding, other, tmp_path):
    """With embedding="hidden" the signatures serve the layer below the output, with
    "hidden_statistics" that layer joined with the input statistics; either way the export
    holds every variable of the base network (the output layer's too), so a champion exported
    that way warm-starts the next network completely, whichever embedding that one serves."""
    from dataclasses import replace

    statistics = 2 * 80 if embedding == "hidden_statistics" else 0  # per-bin mean and std
    # The joined embedding needs a back end (it weighs the two parts); the identity map here.
    size = TINY_MODEL.dense_units[-1] + statistics
    backend = embedder.LinearBackend(np.zeros(size, np.float32), np.eye(size, dtype=np.float32)) if statistics else None
    config = replace(TINY_MODEL, embedding=embedding, backend="lda" if statistics else "none")
    keras.utils.set_random_seed(2)
    base = embedder.build_base_network(config)
    path = embedder.export_embedder(str(tmp_path / "model"), base, config, FeatureConfig(), backend=backend)
    segments = np.random.default_rng(0).normal(size=(3, 40, 80)).astype(np.float32)
    expected = embedder.embedding_model(base, config)(segments, training=False).numpy()
    served = embedder.load_embedder(path).embed_segments(segments)
    assert served.shape == (3, config.dense_units[-1] + statistics)
    np.testing.assert_allclose(served, expected, atol=ROUND_TRIP_TOLERANCE)
    if statistics:
        np.testing.assert_allclose(
            served[:, -statistics:], np.concatenate([segments.mean(1), segments.std(1)], 1), rtol=1e-4, atol=1e-5
        )
    keras.utils.set_random_seed(3)
    fresh = embedder.build_base_network(replace(config, embedding=other, backend="lda"))
    embedder.restore_network(fresh, path)
    assert len(fresh.get_weights()) == len(base.get_weights())
    for a, b in zip(fresh.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_saved_model_round_trip(random_network, exported):
    base, config = random_network
    loaded = embedder.load_embedder(exported)
    assert loaded.config == config and loaded.feature_config == FeatureConfig()
    assert set(loaded.saved_model.signatures) >= {"embed", "embed_segments", "serving_default"}
    segments = np.random.default_rng(0).normal(size=(5, 40, 80)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.embed_segments(segments), base(segments, training=False).numpy(), atol=ROUND_TRIP_TOLERANCE
    )
    # `embed` = windows of the in-graph features, averaged: the same as the numpy path on them
    from speechpipe.audio.tf_features import GraphFeatures

    rng = np.random.default_rng(1)
    lengths = np.array([16000, 9000, 5000], np.int32)
    waves = np.zeros((3, 16000), np.float32)
    for i, n in enumerate(lengths):
        waves[i, :n] = rng.normal(size=n) * 0.1
    features, frames = GraphFeatures(FeatureConfig())(waves, lengths)
    expected = embedder.embed_utterances(base, [features[i, : frames[i]].numpy() for i in range(3)], config)
    out = loaded.saved_model.signatures["embed"](waveforms=tf.constant(waves), lengths=tf.constant(lengths))
    np.testing.assert_allclose(out["embeddings"].numpy(), expected, atol=ROUND_TRIP_TOLERANCE)
    windows = [len(embedder.segment_windows(features[i, : frames[i]].numpy(), 40, 20)) for i in range(3)]
    assert out["num_segments"].numpy().tolist() == windows
    # the rows are distributions (softmax output embeddings averaged)
    np.testing.assert_allclose(out["embeddings"].numpy().sum(1), 1.0, atol=1e-5)


def test_embed_matches_the_feature_job(random_network, exported, tiny_corpus, tiny_features):
    """Serving (raw audio, tf.signal features) against training (the Beam job's librosa features)."""
    from speechpipe.io import records

    base, config = random_network
    stored = [u for split in ("train", "test") for u in records.read_split(tiny_features, split)][:6]
    waves, lengths = _waveforms(tiny_corpus, [u.utterance for u in stored])
    served = embedder.load_embedder(exported).embed(waves, lengths)
    trained = embedder.embed_utterances(base, [u.features for u in stored], config)
    difference = float(np.max(np.abs(served - trained)))
    spread = float(np.max(np.abs(trained - trained.mean(0))))
    print(f"parity: max |difference| {difference:.2e}, spread between utterances {spread:.2e}")
    assert difference <= PARITY_TOLERANCE, difference
    assert spread >= 50 * PARITY_TOLERANCE, "the network must tell these utterances apart for the test to mean anything"


def test_short_waveforms(exported):
    loaded = embedder.load_embedder(exported)
    waves = np.random.default_rng(0).normal(size=(2, 3200)).astype(np.float32) * 0.1
    out = loaded.saved_model.signatures["embed"](waveforms=tf.constant(waves), lengths=tf.constant([3200, 100]))
    # 0.2 s = 18 frames: one zero-padded window; 100 samples: under one analysis window, no segment
    assert out["num_segments"].numpy().tolist() == [1, 0]
    emb = out["embeddings"].numpy()
    assert np.all(np.isfinite(emb)) and emb[0].sum() == pytest.approx(1.0, abs=1e-5) and np.all(emb[1] == 0)


def test_export_with_an_lda_backend_applies_it_in_both_signatures(random_network, tmp_path):
    from speechpipe.audio.tf_features import GraphFeatures

    base, config = random_network
    rng = np.random.default_rng(4)
    backend = embedder.LinearBackend(
        rng.normal(size=8).astype(np.float32) * 0.1, rng.normal(size=(8, 3)).astype(np.float32)
    )
    with_lda = dataclasses.replace(config, backend="lda")
    with pytest.raises(ConfigError, match="fitted back end"):
        embedder.export_embedder(str(tmp_path / "m1"), base, with_lda, FeatureConfig())
    with pytest.raises(ConfigError, match="fitted back end"):
        embedder.export_embedder(str(tmp_path / "m2"), base, config, FeatureConfig(), backend=backend)
    path = embedder.export_embedder(str(tmp_path / "model"), base, with_lda, FeatureConfig(), backend=backend)
    loaded = embedder.load_embedder(path)
    assert loaded.config.backend == "lda"
    segments = rng.normal(size=(5, 40, 80)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.embed_segments(segments), backend.apply(base(segments, training=False).numpy()), atol=1e-5
    )
    lengths = np.array([16000, 7000, 100], np.int32)
    waves = np.zeros((3, 16000), np.float32)
    for i, n in enumerate(lengths):
        waves[i, :n] = rng.normal(size=n) * 0.1
    features, frames = GraphFeatures(FeatureConfig())(waves, lengths)
    expected = backend.apply(
        embedder.embed_utterances(base, [features[i, : frames[i]].numpy() for i in range(2)], config)
    )
    served = loaded.embed(waves, lengths)
    np.testing.assert_allclose(served[:2], expected, atol=1e-5)
    assert np.all(served[2] == 0)  # under one analysis window: no segment, a zero embedding
    # the back end is no network variable: a champion exported with it still warm-starts a network
    fresh = embedder.build_base_network(config)
    embedder.restore_network(fresh, path)
    for a, b in zip(fresh.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # runs a trainer
def test_trainer_fits_the_lda_backend_on_the_training_speakers(tiny_features, tiny_training_input, tmp_path):
    with open(os.path.join(tiny_features, "summary.json"), encoding="utf-8") as f:
        features = FeatureConfig.from_json(json.load(f)["features"])
    config = EmbedderTrainConfig(
        model=dataclasses.replace(TINY_MODEL, backend="lda"),
        speakers_per_batch=4,
        segments_per_speaker=2,
        max_steps=2,
        eval_every_steps=2,
        validation_max_utterances=4,  # of the 8 validation utterances: the caps bind
        backend_max_utterances=8,  # of the 16 in the back-end sample
    )
    serving = str(tmp_path / "serving")
    result = embedder_trainer.train(
        tiny_training_input,
        [os.path.join(tiny_features, "Split-validation"), os.path.join(tiny_features, "Split-test")],
        features,
        serving,
        None,
        config,
    )
    bounds = result.summary["inputs"]["evaluation_bounds"]
    validation = bounds["validation_utterances"]
    assert (validation["utterances"], validation["of_utterances"], validation["speakers"]) == (4, 8, 2)
    assert validation["bound"] and bounds["validation_trials"]["trials"] == 6  # every pair of the 4
    sample = bounds["backend_utterances"]
    assert (sample["utterances"], sample["of_utterances"], sample["speakers"], sample["bound"]) == (8, 16, 4, True)
    backend = result.summary["backend"]
    assert backend["kind"] == "lda" and backend["input_dims"] == TINY_MODEL.output_dim
    assert backend["output_dims"] == result.summary["inputs"]["backend_sample_speakers"] - 1 == 3
    assert 0.0 <= backend["validation_without_backend"]["eer"] <= 1.0
    waves = np.random.default_rng(0).normal(size=(2, 16000)).astype(np.float32) * 0.1
    served = embedder.load_embedder(serving).embed(waves, np.array([16000, 12000]))
    assert served.shape == (2, 3) and np.all(np.isfinite(served))
    segments = np.random.default_rng(1).normal(size=(4, 40, features.n_bins)).astype(np.float32)
    np.testing.assert_allclose(
        embedder.load_embedder(serving).embed_segments(segments),
        result.backend.apply(result.embedder(segments, training=False).numpy()),
        atol=1e-5,
    )


def test_an_export_older_than_the_new_settings_loads_with_the_values_it_was_made_with(exported, tmp_path):
    import shutil

    old = str(tmp_path / "old")
    shutil.copytree(exported, old)
    path = os.path.join(old, "assets.extra", embedder.CONFIG_FILE)
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    for setting in embedder.LEGACY_SETTINGS:
        info["embedder"].pop(setting)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(info, f)
    config = embedder.load_embedder(old).config
    # no back end in its graph, and the average linkage its clustering threshold was chosen with
    assert config.backend == "none" and config.linkage == "average" and config.freq_mask == 0
    assert not config.input_statistics
    assert (config.lda_shrink_toward, config.lda_shrinkage) == ("isotropic", 0.05)  # the isotropic LDA of older exports
    defaults = EmbedderConfig()  # today's defaults differ
    assert defaults.backend == "lda" and defaults.linkage == "ward" and defaults.input_statistics


def test_export_rejects_mismatched_bins(random_network, tmp_path):
    base, config = random_network
    with pytest.raises(ConfigError, match="bins"):
        embedder.export_embedder(str(tmp_path / "m"), base, config, FeatureConfig(kind="stft"))


def _fn_args(features_dir, training_input, tmp_path, custom, train_steps=None):
    from tfx.components.trainer.fn_args_utils import FnArgs

    return FnArgs(
        train_files=[os.path.join(training_input, "blocks", "train", "*")],
        eval_files=[os.path.join(features_dir, "Split-validation"), os.path.join(features_dir, "Split-test")],
        serving_model_dir=str(tmp_path / "serving"),
        model_run_dir=str(tmp_path / "run"),
        train_steps=train_steps,
        custom_config=custom,
    )


@pytest.mark.slow  # runs a trainer
def test_run_fn_trains_logs_and_exports(tiny_features, tiny_training_input, tmp_path):
    with open(os.path.join(tiny_features, "summary.json"), encoding="utf-8") as f:
        features = json.load(f)["features"]
    config = EmbedderTrainConfig(model=TINY_MODEL, speakers_per_batch=4, segments_per_speaker=2, eval_every_steps=2)
    embedder_trainer.run_fn(
        _fn_args(
            tiny_features,
            tiny_training_input,
            tmp_path,
            {"features": features, "embedder": config.to_json()},
            train_steps=4,
        )
    )
    serving = str(tmp_path / "serving")
    with open(os.path.join(serving, trainer_contract.RESULT_FILE), encoding="utf-8") as f:
        result = json.load(f)
    assert result["steps"] == 4 and [h["step"] for h in result["history"]] == [2, 4]
    assert all(0.0 <= h["val_eer"] <= 1.0 and np.isfinite(h["loss"]) for h in result["history"])
    assert result["inputs"]["backend_sample_speakers"] == 4 and result["inputs"]["validation_speakers"] == 2
    assert result["inputs"]["block_files"] >= 1 and result["inputs"]["block_segments"] == 4
    assert glob.glob(str(tmp_path / "run" / "tensorboard" / "train" / "events.out.tfevents.*"))
    assert glob.glob(str(tmp_path / "run" / "tensorboard" / "validation" / "events.out.tfevents.*"))
    loaded = embedder.load_embedder(serving)
    assert loaded.info["cluster_threshold"] == result["cluster_threshold"]
    waves = np.random.default_rng(0).normal(size=(2, 16000)).astype(np.float32) * 0.1
    emb = loaded.embed(waves, np.array([16000, 12000]))
    assert emb.shape == (2, TINY_MODEL.output_dim) and np.allclose(emb.sum(1), 1.0, atol=1e-5)


def test_trainer_errors_are_clear(tiny_features, tiny_training_input, tmp_path):
    features = FeatureConfig()
    blocks = tiny_training_input
    train, val = [os.path.join(tiny_features, "Split-train")], [os.path.join(tiny_features, "Split-validation")]
    with pytest.raises(ConfigError, match="features"):
        embedder_trainer.run_fn(_fn_args(tiny_features, blocks, tmp_path, {}))
    with pytest.raises(ConfigError, match="unknown"):
        embedder_trainer.run_fn(_fn_args(tiny_features, blocks, tmp_path, {"features": {}, "embeder": {}}))
    with pytest.raises(ConfigError, match="unknown"):
        EmbedderTrainConfig.from_json({"form": "pairs"})
    with pytest.raises(ConfigError, match="speakers_per_batch=16"):
        embedder_trainer.train(
            blocks,
            val + [os.path.join(tiny_features, "Split-test")],
            features,
            config=EmbedderTrainConfig(model=TINY_MODEL, max_steps=1),
        )
    with pytest.raises(ValueError, match="share speakers"):
        embedder_trainer.train(blocks, train, features, config=EmbedderTrainConfig(model=TINY_MODEL, max_steps=1))
    with pytest.raises(ValueError, match="at least 2 speakers"):
        embedder_trainer.train(blocks, val, features, config=EmbedderTrainConfig(model=TINY_MODEL, max_steps=1))
    with pytest.raises(FileNotFoundError):
        embedder_trainer.train([str(tmp_path / "nothing")], val, features, config=EmbedderTrainConfig(max_steps=1))
    with pytest.raises(ConfigError, match="segments_per_speaker=8"):  # K larger than the blocks hold
        embedder_trainer.train(
            blocks,
            val + [os.path.join(tiny_features, "Split-test")],
            features,
            config=EmbedderTrainConfig(model=TINY_MODEL, speakers_per_batch=2, max_steps=1),
        )
