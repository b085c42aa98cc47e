"""The speaker branch's last two steps on a small made-up span: PairGen (the pair job) writes the
test trial list from the span's index, SpeakerEvaluator scores an untrained embedder on it. What
the regressions of trial lists need to show that the evaluator takes the list PairGen wrote.

The span is written the way the feature job writes one (index/ lines and Split-test/ records),
with the utterance ids the caller gives; the features are random, speaker-dependent spectra."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from speechpipe.config import FeatureConfig
from speechpipe.io import records

IN_MEMORY = ["--direct_running_mode=in_memory"]
FRAMES = 120


def write_span(root: str, utterances: Sequence[Tuple[str, str, str]]) -> str:
    """`root` as a FeatureGen output: index/utterances-*.jsonl for PairGen and Split-test/ records
    for the evaluator. `utterances`: (utterance id, speaker, session), all in the test split."""
    import tensorflow as tf

    bins = FeatureConfig().n_bins
    rng = np.random.default_rng(0)
    profiles: Dict[str, np.ndarray] = {}
    os.makedirs(os.path.join(root, "index"))
    os.makedirs(os.path.join(root, "Split-test"))
    with (
        open(os.path.join(root, "index", "utterances-00000-of-00001.jsonl"), "w", encoding="utf-8") as index,
        tf.io.TFRecordWriter(os.path.join(root, "Split-test", "data_tfrecord-00000-of-00001")) as writer,
    ):
        for utterance, speaker, session in utterances:
            profile = profiles.setdefault(speaker, rng.normal(0, 1, bins))
            features = (profile + 0.3 * rng.normal(0, 1, (FRAMES, bins))).astype(np.float32)
            example = records.UtteranceFeatures(utterance, speaker, session, "test", features, FRAMES / 100)
            writer.write(records.encode_example(example))
            line = {"utterance": utterance, "speaker": speaker, "session": session, "split": "test"}
            index.write(json.dumps({**line, "num_frames": FRAMES}) + "\n")
    return root


def artifact(cls, uri: str, **custom):
    made = cls()
    made.uri = uri
    for key, value in custom.items():
        if isinstance(value, int):
            made.set_int_custom_property(key, value)
        else:
            made.set_string_custom_property(key, value)
    return made


def untrained_embedder(folder: str) -> str:
    """A tiny untrained embedder exported as a Trainer's Model artifact folder."""
    import tf_keras as keras

    from speechpipe.speakers import embedder
    from speechpipe.speakers.embedder import EmbedderConfig

    keras.utils.set_random_seed(0)
    config = EmbedderConfig(
        lstm_units=8, dense_units=(16,), output_dim=8, dropout=0.1, backend="none", embedding="hidden"
    )
    embedder.export_embedder(
        os.path.join(folder, "Format-Serving"), embedder.build_base_network(config), config, FeatureConfig()
    )
    return folder


def pair_gen(span: str, out: str):
    """PairGen on the span: its SpeakerPairs artifact (the test list and its properties)."""
    from tfx.types import standard_artifacts

    from speechpipe.components.pair_gen import PairGen, SpeakerPairs

    examples = artifact(standard_artifacts.Examples, span)
    examples.span = 0
    pairs = artifact(SpeakerPairs, out)
    PairGen.test_call(
        examples=examples,
        pairs=pairs,
        beam_args=json.dumps(IN_MEMORY),
        seed=0,
    )
    return pairs


def speaker_block_gen(span: str, out: str, segments_per_speaker: int = 8, blocks_per_speaker: int = 16):
    """SpeakerBlockGen on the span: the trainer's input, an Examples artifact."""
    from tfx.types import standard_artifacts

    from speechpipe.components.speaker_block_gen import SpeakerBlockGen

    examples = artifact(standard_artifacts.Examples, span)
    examples.span = 0
    training_input = artifact(standard_artifacts.Examples, out)
    SpeakerBlockGen.test_call(
        examples=examples,
        training_input=training_input,
        beam_args=json.dumps(IN_MEMORY),
        seed=0,
        segments_per_speaker=segments_per_speaker,
        blocks_per_speaker=blocks_per_speaker,
    )
    return training_input


def evaluate(span: str, pairs, model_dir: str, blessing_dir: str) -> Dict[str, object]:
    """SpeakerEvaluator on the span's test split and PairGen's list: evaluation.json."""
    from tfx.types import standard_artifacts

    from speechpipe.components.speaker_evaluator import SpeakerEvaluator

    model = artifact(standard_artifacts.Model, model_dir)
    model.id = 1
    examples = artifact(standard_artifacts.Examples, span)
    examples.span, examples.id = 0, 2
    blessing = artifact(standard_artifacts.ModelBlessing, blessing_dir)
    blessing.id = 3
    SpeakerEvaluator.test_call(
        model=model, examples=examples, pairs=pairs, blessing=blessing, champion=None, max_eer=1.0, data_key="k"
    )
    with open(os.path.join(blessing_dir, "evaluation.json"), encoding="utf-8") as f:
        return json.load(f)


def trial_lines(pairs) -> List[str]:
    with open(os.path.join(pairs.uri, pairs.get_string_custom_property("test_trials_file")), encoding="utf-8") as f:
        return f.read().splitlines()
