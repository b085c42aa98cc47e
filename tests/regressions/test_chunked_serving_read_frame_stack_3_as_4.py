"""Chunked serving read a CTC model's frame stacking from an 8-frame probe: 8 // (8 // 3) = 4,
so a model that stacks 3 frames had its chunks cut and its phones timed on the wrong grid. The
probe now reads every stacking up to 12 back exactly."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from speechpipe.audio.stream import ArraySource
from speechpipe.audio.tf_features import GraphFeatures
from speechpipe.config import ChunkConfig, FeatureConfig
from speechpipe.phones.ctc_config import CTCModelConfig
from speechpipe.phones.ctc_model import build_acoustic_model, export_transcriber
from speechpipe.phones.inventory import default_inventory
from speechpipe.results.serving_models import ServingModel


@pytest.mark.parametrize("frame_stack", [3, 4])
def test_chunked_transcripts_use_the_models_own_frame_stack(frame_stack, tmp_path):
    keras.utils.set_random_seed(0)
    inventory = default_inventory()
    config = CTCModelConfig(lstm_units=(8,), frame_stack=frame_stack)
    acoustic = build_acoustic_model(80, len(inventory.phones) + 1, config)
    layer = acoustic.get_layer("logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 8.0, bias])  # confident, varied phones from random weights
    path = str(tmp_path / "model")
    export_transcriber(path, acoustic, GraphFeatures(FeatureConfig()), inventory.phones, frame_stack)
    with open(os.path.join(path, "training_result.json"), "w") as f:
        json.dump({"features": FeatureConfig().to_json()}, f)

    serving = ServingModel(path, "ctc", ChunkConfig(chunk_seconds=1.0, overlap_seconds=1.0, batch_seconds=8.0))
    assert serving.engine.frame_stack == frame_stack
    samples = np.random.default_rng(0).normal(scale=0.1, size=16000 * 4).astype(np.float32)
    source = ArraySource(samples, 16000, 16000)
    ((_, transcript),) = list(serving.transcribe([("r", source, serving.scan(source))]))
    whole = (
        serving.model.signatures["transcribe"](
            waveforms=tf.constant(samples[None, :]), lengths=tf.constant([samples.shape[0]], tf.int32)
        )["phones"]
        .numpy()[0]
        .decode()
    )
    assert whole and transcript.text() == whole
    step = frame_stack * 0.01
    assert all(round(p["start"] / step, 6).is_integer() for p in transcript.timed_phones())
