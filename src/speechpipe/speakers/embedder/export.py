"""The exported embedder: a SavedModel whose `embed` signature takes raw 16 kHz waveforms (features
computed in the graph) and `embed_segments` computed segments; its warm-start restore and its
loading back with TensorFlow alone."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from speechpipe.config import FeatureConfig
from speechpipe.speakers.embedder.config import CONFIG_FILE, EmbedderConfig, with_legacy_settings
from speechpipe.speakers.embedder.network import embedding_model
from speechpipe.speakers.embedder.scoring import LinearBackend
from speechpipe.validation import ConfigError


class _Untracked:
    """Holds the Keras model out of the SavedModel's object graph: saving a Keras model as an
    object traces every layer's call functions for Keras' own loader (about 50 s for this
    network on 2 cores), while the `embed` signatures need only its variables."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model


class EmbedderModule(tf.Module):
    """What the SavedModel holds: the in-graph features, the base network's variables (served
    through its cut at `config.embedding`), and the two signatures."""

    def __init__(
        self,
        base: keras.Model,
        config: EmbedderConfig,
        feature_config: FeatureConfig,
        global_stats: Optional[Dict[str, object]] = None,
        backend: Optional[LinearBackend] = None,
    ) -> None:
        super().__init__(name="speaker_embedder")
        from speechpipe.audio.tf_features import GraphFeatures

        if feature_config.n_bins != config.n_bins:
            raise ConfigError(f"the features have {feature_config.n_bins} bins, the model takes {config.n_bins}")
        self._network = _Untracked(embedding_model(base, config))
        # Tracked, so saved with the signatures: the whole base network's variables, the output
        # layer's too when the embedding is the hidden layer, so that a warm start restores all.
        self.network_variables = list(base.variables)
        # Apart from the network's variables, so that a warm start restores the network alone.
        self.backend_mean = self.backend_projection = None
        if backend is not None:
            self.backend_mean = tf.Variable(backend.mean, trainable=False, name="backend_mean")
            self.backend_projection = tf.Variable(backend.projection, trainable=False, name="backend_projection")
        self.features = GraphFeatures(feature_config, global_stats)
        self._segment_frames = config.segment_frames
        self._hop = config.eval_hop
        self._n_bins = config.n_bins
        self.embed = tf.function(
            self._embed,
            input_signature=[
                tf.TensorSpec([None, None], tf.float32, name="waveforms"),
                tf.TensorSpec([None], tf.int32, name="lengths"),
            ],
        )
        self.embed_segments = tf.function(
            self._embed_segments,
            input_signature=[
                tf.TensorSpec([None, config.segment_frames, config.n_bins], tf.float32, name="segments"),
            ],
        )

    def _network_embeddings(self, segments: tf.Tensor) -> tf.Tensor:
        embeddings = tf.cast(self._network.model(segments, training=False), tf.float32)
        if self.backend_mean is None:
            return embeddings
        return tf.matmul(embeddings - self.backend_mean, self.backend_projection)

    def _embed_segments(self, segments: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {"embeddings": self._network_embeddings(segments)}

    def _embed(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> Dict[str, tf.Tensor]:
        """waveforms [B, samples] (16 kHz float32, zero-padded), lengths [B] samples ->
        embeddings [B, E] (the mean over the utterance's windows; zeros where num_segments is 0,
        i.e. under one analysis window of audio) and num_segments [B]."""
        features, n_frames = self.features(waveforms, lengths)
        f, hop = self._segment_frames, self._hop
        batch = tf.shape(features)[0]
        # At least one segment of (zero) padding, so a short utterance still has one window.
        features = tf.pad(features, [[0, 0], [0, tf.maximum(f - tf.shape(features)[1], 0)], [0, 0]])
        last = tf.maximum(n_frames - f, 0)  # start of the end-aligned window
        regular = last // hop + 1  # windows at 0, hop, 2 hop, ... <= last
        count = tf.where(n_frames > 0, regular + tf.cast(last % hop != 0, tf.int32), 0)
        # Window k starts at min(k hop, last): the one past the regular ones is the end-aligned one.
        starts = tf.minimum(tf.ragged.range(count) * hop, tf.expand_dims(last, 1))
        utterance = tf.cast(starts.value_rowids(), tf.int32)
        frames = starts.flat_values[:, None] + tf.range(f)[None, :]  # [W, f]
        index = tf.stack([tf.broadcast_to(utterance[:, None], tf.shape(frames)), frames], axis=-1)
        windows = tf.gather_nd(features, index)  # [W, f, bins]
        windows = tf.ensure_shape(windows, [None, f, self._n_bins])
        segment_embeddings = self._network_embeddings(windows)
        embeddings = tf.math.unsorted_segment_mean(segment_embeddings, utterance, batch)
        return {"embeddings": embeddings, "num_segments": count}


def export_embedder(
    path: str,
    base: keras.Model,
    config: EmbedderConfig,
    feature_config: FeatureConfig,
    global_stats: Optional[Dict[str, object]] = None,
    extra: Optional[Dict[str, object]] = None,
    backend: Optional[LinearBackend] = None,
) -> str:
    """Writes the SavedModel of the base network `base` cut at `config.embedding` (signatures
    `embed`, the default, and `embed_segments`, both with the back end applied when one is
    given) and assets.extra/embedder_config.json (embedder and feature settings, plus `extra`)."""
    if (backend is None) != (config.backend == "none"):
        raise ConfigError(
            f"backend={config.backend!r} in the config, but {'no' if backend is None else 'a'} fitted back end given"
        )
    module = EmbedderModule(base, config, feature_config, global_stats, backend)
    tf.saved_model.save(
        module,
        path,
        signatures={
            "embed": module.embed,
            "serving_default": module.embed,
            "embed_segments": module.embed_segments,
        },
    )
    module.features.write_global_stats(path)
    # gfile, like the SavedModel itself: `path` may be on object storage (gs://, s3://)
    tf.io.gfile.makedirs(f"{path.rstrip('/')}/assets.extra")
    with tf.io.gfile.GFile(f"{path.rstrip('/')}/assets.extra/{CONFIG_FILE}", "w") as f:
        f.write(
            json.dumps({"embedder": config.to_json(), "features": feature_config.to_json(), **(extra or {})}, indent=1)
        )
    return path


def restore_network(model: keras.Model, saved_model_dir: str) -> None:
    """Loads the network variables of a SavedModel written by `export_embedder` into `model`
    (a warm start from the champion). Raises ValueError when the architectures differ."""
    reader = tf.train.load_checkpoint(os.path.join(saved_model_dir, "variables", "variables"))
    saved = {k: v for k, v in reader.get_variable_to_shape_map().items() if k.startswith("network_variables/")}
    ours = [tuple(v.shape) for v in model.variables]
    theirs = [tuple(saved.get(f"network_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE", ())) for i in range(len(saved))]
    if ours != theirs:
        raise ValueError(
            f"the saved network has {len(theirs)} variables of shapes {theirs[:4]}..., this one "
            f"{len(ours)} of shapes {ours[:4]}..."
        )
    checkpoint = tf.train.Checkpoint(network_variables=list(model.variables))
    status = checkpoint.read(os.path.join(saved_model_dir, "variables", "variables"))
    status.expect_partial()
    status.assert_existing_objects_matched()


@dataclass
class LoadedEmbedder:
    """A SavedModel written by `export_embedder`, loaded with TensorFlow alone."""

    saved_model: object
    config: EmbedderConfig
    feature_config: FeatureConfig
    info: Dict[str, object] = field(default_factory=dict)

    def embed(self, waveforms: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = self.saved_model.signatures["embed"](
            waveforms=tf.constant(waveforms, tf.float32), lengths=tf.constant(lengths, tf.int32)
        )
        return out["embeddings"].numpy()

    def embed_segments(self, segments: np.ndarray) -> np.ndarray:
        return self.saved_model.signatures["embed_segments"](segments=tf.constant(segments, tf.float32))[
            "embeddings"
        ].numpy()


def load_embedder(path: str) -> LoadedEmbedder:
    """`path`: a local folder or a URI TensorFlow's gfile reads (gs://, s3:// with tensorflow-io)."""
    with tf.io.gfile.GFile(f"{path.rstrip('/')}/assets.extra/{CONFIG_FILE}", "r") as f:
        info = json.loads(f.read())
    # Models exported before these settings existed were trained and scored without them: no
    # back end (none is in their graph), no input regularisation, and a clustering threshold
    # chosen with average linkage, which a champion's evaluation must keep.
    config = EmbedderConfig.from_json(with_legacy_settings(info.pop("embedder")))
    return LoadedEmbedder(tf.saved_model.load(path), config, FeatureConfig.from_json(info.pop("features")), info)
