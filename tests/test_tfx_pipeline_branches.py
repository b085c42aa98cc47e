"""End to end: each branch on its own data, as real users have it.

- VoxCeleb as it ships (no transcripts): VoxCeleb1's wav/ + vox1_meta.csv, and VoxCeleb2's
  dev/aac + test/aac m4a + vox2_meta.csv, each with an official-format trial list, train, score
  and push the embedder alone; the run has no CTC node.
- `--speaker-span A --ctc-span B` where B fails its gate: the embedder is still pushed, and the
  report says why the CTC branch stopped.

Tiny budgets; Beam in_memory. The corpora are synthesised German, rewritten in VoxCeleb's layouts.
"""

import os
from dataclasses import replace

import pytest

from speechpipe.config import SPLIT_FRACTIONS
from speechpipe.pipeline.local_runner import run_pipeline
from speechpipe.pipeline.run_config import DEMO_CTC, DEMO_EMBEDDER, RunConfig
from speechpipe.results.registry import Registry
from tests.helpers import make_tiny_corpus, read_manifest, voxceleb_layout, write_official_trials
from tests.test_tfx_pipeline import _bad_span

pytestmark = pytest.mark.e2e

TINY_CTC = replace(
    DEMO_CTC, model=replace(DEMO_CTC.model, lstm_units=(16,)), max_epochs=1, max_minutes=1.0, batch_size=8, patience=1
)
TINY_EMBEDDER = replace(
    DEMO_EMBEDDER, max_seconds=60.0, max_steps=20, eval_every_steps=10, speakers_per_batch=4, segments_per_speaker=2
)
# A validation share of the dev speakers large enough to give the tiny corpus 2 validation speakers.
FRACTIONS = (0.8, 0.2, 0.0)


def _config(home, **changes) -> RunConfig:
    base = RunConfig(
        home=str(home),
        ctc=TINY_CTC,
        embedder=TINY_EMBEDDER,
        split_fractions=FRACTIONS,
        beam_args=("--direct_running_mode=in_memory",),
        max_per=10.0,
        max_eer=1.0,
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def speaker_corpus(tmp_path_factory):
    # 14 speakers: 2 of them the meta file's test speakers, 12 dev (2 validate, 10 train).
    return make_tiny_corpus(
        str(tmp_path_factory.mktemp("vox_source") / "corpus"), speakers=14, utterances=3, sessions=2
    )


def _test_speakers(corpus: str):
    return sorted({line["speaker"] for line in read_manifest(corpus)})[-2:]


@pytest.mark.parametrize("version", [1, 2], ids=["voxceleb1-wav", "voxceleb2-m4a"])
def test_voxceleb_as_it_ships_trains_scores_and_pushes_the_embedder_alone(version, speaker_corpus, tmp_path):
    root = voxceleb_layout(speaker_corpus, str(tmp_path / f"vox{version}"), version, _test_speakers(speaker_corpus))
    trials = write_official_trials(speaker_corpus, _test_speakers(speaker_corpus), str(tmp_path / "veri_test2.txt"))
    with open(trials, encoding="utf-8") as f:
        listed = sum(1 for line in f if line.strip())
    summary = run_pipeline(_config(tmp_path / "home", branches=("speaker",), speaker_spans=(root,), trials_file=trials))
    assert summary["status"] == "succeeded", summary["error"]
    # No CTC node at all: no CTC features, trainer, evaluator or pusher.
    ctc_nodes = [n for n in summary["nodes"] if not n.startswith("Speaker") and n not in ("PairGen", "ImportSchemaGen")]
    assert ctc_nodes == [], ctc_nodes
    assert {
        "SpeakerFeatureGen_span0",
        "SpeakerValidationGate_span0",
        "PairGen",
        "SpeakerBlockGen",
        "SpeakerTrainer",
        "SpeakerEvaluator",
        "SpeakerRegistryPusher",
    } <= set(summary["executed"])
    (data,) = summary["data"]
    assert data["dead_letter"]["total"] == 0
    assert data["good"]["test"] == 2 * 3 and data["good"]["validation"] == 2 * 3  # the meta file's test speakers
    evaluation = summary["speaker"]["evaluation"]
    assert evaluation["trial_list"] == "veri_test2.txt"
    assert evaluation["candidate"]["trials"] == listed and evaluation["candidate"]["speakers"] == 2
    assert summary["speaker"]["push"]["pushed"] is True, summary["speaker"]["outcome"]
    models = {m["name"]: m for m in Registry(_config(tmp_path / "home").registry_uri).list()}
    assert set(models) == {"speechpipe-embedder"}
    assert "the CTC branch is off" in summary["outcome"]


def test_a_failing_ctc_span_stops_the_ctc_branch_only(speaker_corpus, tiny_corpus, tmp_path):
    bad = _bad_span(tiny_corpus, str(tmp_path / "bad"))
    summary = run_pipeline(
        _config(
            tmp_path / "home",
            speaker_spans=(os.path.join(speaker_corpus, "manifest.jsonl"),),
            ctc_spans=(bad,),
            split_fractions=SPLIT_FRACTIONS,
        )
    )
    assert summary["status"] == "failed"
    # The CTC branch's span is span 0 and fails its gate; nothing of that branch runs after it.
    assert summary["nodes"]["CTCValidationGate_span0"]["state"] == "failed"
    for node in ("CTCTrainer", "CTCEvaluator", "CTCRegistryPusher"):
        assert node not in summary["nodes"] and summary["skipped"][node] == "CTCValidationGate_span0 failed"
    assert "stopped at the validation gate (CTCValidationGate_span0)" in summary["outcome"]
    assert "dead-lettered" in summary["outcome"]
    # The speaker branch, on its own span (span 1), runs to its push.
    assert summary["speaker"]["push"]["pushed"] is True, summary["speaker"]["outcome"]
    assert "SpeakerValidationGate_span1" in summary["executed"]
    models = {m["name"] for m in Registry(_config(tmp_path / "home").registry_uri).list()}
    assert models == {"speechpipe-embedder"}
    with open(summary["report"], encoding="utf-8") as f:
        report = f.read()
    assert "CTCValidationGate_span0" in report and "stopped at the validation gate" in report


def test_a_kaldi_directory_with_german_text_trains_and_pushes_the_ctc_model_alone(tmp_path):
    import numpy as np
    import soundfile as sf
    import tensorflow as tf

    from speechpipe.audio.sources import assign_split
    from speechpipe.phones.inventory import load_inventory
    from tests.helpers import kaldi_text_dir

    corpus = make_tiny_corpus(str(tmp_path / "corpus"), speakers=10, utterances=3, sessions=1)
    fractions = (0.6, 0.2, 0.2)
    speakers = sorted({line["speaker"] for line in read_manifest(corpus)})
    splits = {assign_split(s, fractions, 0) for s in speakers}
    assert splits == {"train", "validation", "test"}, "the tiny corpus's speakers must fill every split"
    data = kaldi_text_dir(corpus, str(tmp_path / "data" / "train"))
    with open(os.path.join(data, "text"), encoding="utf-8") as f:
        assert not any(c in f.read() for c in "ˈʃçː")  # ordinary German text, no IPA

    home = tmp_path / "home"
    summary = run_pipeline(
        _config(home, branches=("ctc",), ctc_spans=(data,), language="de", split_fractions=fractions)
    )
    assert summary["status"] == "succeeded", summary["error"]
    assert not any(n.startswith("Speaker") or n == "PairGen" for n in summary["nodes"]), summary["nodes"]
    (span,) = summary["data"]
    assert span["dead_letter"]["total"] == 0, span["dead_letter"]
    assert summary["push"]["pushed"] is True, summary["outcome"]
    assert summary["evaluation"]["candidate"]["reference_phones"] > 0

    registry = Registry(_config(home).registry_uri)
    (model,) = registry.list()
    assert model["name"] == "speechpipe-ctc"
    from speechpipe.results.resolve import saved_model_in

    transcriber = tf.saved_model.load(saved_model_in(registry.download("speechpipe-ctc", "1", str(tmp_path / "v1"))))
    audio, rate = sf.read(os.path.join(corpus, read_manifest(corpus)[0]["audio"]), dtype="float32")
    out = transcriber.signatures["transcribe"](
        waveforms=tf.constant(audio[None, :]), lengths=tf.constant([audio.shape[0]], tf.int32)
    )
    phones = out["phones"].numpy()[0].decode("utf-8").split()
    assert set(phones) <= set(load_inventory("phones_de.json").phones), phones
    assert np.isfinite(summary["evaluation"]["candidate"]["per"])
