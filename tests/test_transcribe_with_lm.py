"""`speechpipe transcribe --decoder lm`: the phone-LM beam search over a model's `frame_logits`
signature, against the greedy `transcribe` signature of the same model.

The model is a small BLSTM with random weights made decisive (a scaled output layer). The search
itself is held to an exhaustive one in tests/test_phone_lm.py; here, the command's plumbing:
batches, lengths, the model's LM and weights, and the refusals."""

import json
import os

import pytest
import tensorflow as tf
import tf_keras as keras

from speechpipe.audio.decode import decode
from speechpipe.audio.tf_features import GraphFeatures
from speechpipe.config import FeatureConfig
from speechpipe.phones.ctc_config import CTCModelConfig, PhoneLMConfig
from speechpipe.phones.ctc_lm_decoder import export_phone_lm, load_lm_decoder, log_softmax
from speechpipe.phones.ctc_model import build_acoustic_model, export_transcriber, greedy_decode
from speechpipe.phones.inventory import default_inventory
from speechpipe.phones.phone_lm import PhoneLM
from tests.helpers import read_manifest


def _export(path: str) -> str:
    keras.utils.set_random_seed(0)
    inventory = default_inventory()
    acoustic = build_acoustic_model(80, inventory.num_classes, CTCModelConfig(lstm_units=(24,), frame_stack=2))
    layer = acoustic.get_layer("logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 8.0, bias])
    export_transcriber(path, acoustic, GraphFeatures(FeatureConfig()), inventory.phones, 2)
    with open(os.path.join(path, "training_result.json"), "w") as f:
        json.dump({"features": FeatureConfig().to_json()}, f)
    return path


@pytest.fixture(scope="module")
def recordings(tiny_corpus):
    return [os.path.join(tiny_corpus, r["audio"]) for r in read_manifest(tiny_corpus)[:3]]


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory) -> str:
    return _export(str(tmp_path_factory.mktemp("ctc") / "model"))


def _with_lm(bare_model: str, folder, config: PhoneLMConfig, sentences) -> str:
    import shutil

    path = str(folder / "model")
    shutil.copytree(bare_model, path)
    phones = default_inventory().phones
    export_phone_lm(path, PhoneLM.fit(sentences, config.order, phones), config, len(sentences))
    return path


def _transcribe(capsys, *args):
    from speechpipe.cli import main

    code = main(["transcribe", *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_frame_logits_from_waveforms_are_what_the_greedy_signature_decodes(bare_model, recordings):
    model = tf.saved_model.load(bare_model)
    samples = decode(recordings[0], 16000).samples
    args = {"waveforms": tf.constant(samples[None, :]), "lengths": tf.constant([samples.shape[0]], tf.int32)}
    out = model.signatures["frame_logits"](**args)
    phones = default_inventory().phones
    best = greedy_decode(out["logits"], out["logit_lengths"].numpy(), len(phones))[0]
    assert " ".join(phones[k] for k in best) == model.signatures["transcribe"](**args)["phones"].numpy()[0].decode()


def test_files_decoded_in_one_padded_batch_get_their_own_transcripts(bare_model, recordings, tmp_path, capsys):
    phones = default_inventory().phones
    model = _with_lm(bare_model, tmp_path, PhoneLMConfig(order=3), [[phones[0], phones[1], phones[2]]] * 3)
    code, with_lm, _ = _transcribe(capsys, *recordings, "--model", model, "--chunk-seconds", "0", "--decoder", "lm")
    assert code == 0 and [line["file"] for line in with_lm] == recordings
    loaded, decoder = tf.saved_model.load(model), load_lm_decoder(model)
    for line, path in zip(with_lm, recordings):  # each file alone, unpadded
        samples = decode(path, 16000).samples
        out = loaded.signatures["frame_logits"](
            waveforms=tf.constant(samples[None, :]), lengths=tf.constant([samples.shape[0]], tf.int32)
        )
        (ids,) = decoder.decode_batch(log_softmax(out["logits"].numpy()), out["logit_lengths"].numpy())
        assert line["phones"] == " ".join(phones[k] for k in ids) != ""


def test_a_strong_lm_pulls_the_transcript_towards_what_it_knows(bare_model, recordings, tmp_path, capsys):
    phones = default_inventory().phones
    taught = [phones[0], phones[1]] * 20
    model = _with_lm(bare_model, tmp_path, PhoneLMConfig(order=3, lm_weight=3.0, insertion_bonus=2.0), [taught] * 5)
    _, greedy, _ = _transcribe(capsys, recordings[0], "--model", model, "--chunk-seconds", "0")
    code, with_lm, _ = _transcribe(capsys, recordings[0], "--model", model, "--chunk-seconds", "0", "--decoder", "lm")
    known = {phones[0], phones[1]}

    def share(line):
        said = line["phones"].split()
        return sum(p in known for p in said) / max(len(said), 1)

    assert code == 0 and share(with_lm[0]) > share(greedy[0])


def test_where_the_lm_cannot_decode_it_says_why(bare_model, recordings, tmp_path, capsys):
    code, _, err = _transcribe(capsys, recordings[0], "--model", bare_model, "--chunk-seconds", "0", "--decoder", "lm")
    assert code == 2 and "carries no phone LM" in err
    model = _with_lm(bare_model, tmp_path, PhoneLMConfig(order=2), [[default_inventory().phones[0]]])
    code, _, err = _transcribe(capsys, recordings[0], "--model", model, "--decoder", "lm")
    assert code == 2 and "add --chunk-seconds 0" in err
    code, _, err = _transcribe(
        capsys, "--input", recordings[0], "--out", str(tmp_path / "o"), "--model", model, "--decoder", "lm"
    )
    assert code == 2 and "files given by name" in err
