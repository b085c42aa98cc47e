"""End to end: the speaker branch of the TFX pipeline (pair builder, siamese embedder, EER
blessing, push) next to the CTC branch, on a small corpus with 2 validation and 2 test speakers.

run 1 (span 0)             -> both models blessed and pushed; the embedder loads back and embeds
                              raw audio through `embed`; the report has EER, DET and projection
run 2 (span 0 + new span)  -> the speaker champion resolved through ML Metadata (not the CTC
                              one), warm start from it, the candidate refused with a reason

Tiny budgets; Beam in_memory.
"""
import os
from dataclasses import replace

import numpy as np
import pytest

from speechpipe.pipeline.local_runner import run_pipeline
from speechpipe.pipeline.run_config import CTCBudget, EmbedderBudget, RunConfig
from speechpipe.results.registry import CHAMPION, Registry
from tests.helpers import make_tiny_corpus, read_manifest

pytestmark = pytest.mark.e2e  # LocalDagRunner runs of the whole pipeline

TINY_CTC = CTCBudget(lstm_units=(16,), max_epochs=1, max_minutes=1.0, batch_size=8, patience=1)
TINY_EMBEDDER = EmbedderBudget(max_seconds=60.0, max_steps=20, eval_every_steps=10, speakers_per_batch=4,
                               segments_per_speaker=2)


def speaker_config(home, spans, **changes) -> RunConfig:
    base = RunConfig(home=str(home), spans=tuple(spans), ctc=TINY_CTC, embedder=TINY_EMBEDDER, branches=("ctc", "speaker"),
                     beam_args=("--direct_running_mode=in_memory",), max_per=10.0, max_eer=1.0)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    corpora = tmp_path_factory.mktemp("speaker_corpora")
    # 14 speakers: 10 train, 2 validation, 2 test (EER needs two speakers on each side).
    span0 = make_tiny_corpus(str(corpora / "span0"), speakers=14, utterances=3, sessions=2)
    span1 = make_tiny_corpus(str(corpora / "span1"), seed=1, speakers=14, utterances=2, sessions=2)
    home = tmp_path_factory.mktemp("speaker_home")
    spans0 = [os.path.join(span0, "manifest.jsonl")]
    out = {"home": str(home), "span0": span0}
    out["first"] = run_pipeline(speaker_config(home, spans0))
    out["second"] = run_pipeline(speaker_config(home, spans0 + [os.path.join(span1, "manifest.jsonl")],
                                                min_eer_improvement=0.99, min_per_improvement=0.99))
    out["registry"] = {m["name"]: m for m in Registry(speaker_config(home, spans0).registry_uri).list()}
    return out


def test_first_run_pushes_both_models(runs):
    first = runs["first"]
    assert first["status"] == "succeeded", first["error"]
    for node in ("SpeakerFeatureGen_span0", "PairGen", "SpeakerTrainer", "SpeakerEvaluator", "SpeakerRegistryPusher", "Trainer", "RegistryPusher"):
        assert node in first["executed"], (node, first["nodes"])
    speaker = first["speaker"]
    evaluation = speaker["evaluation"]
    assert evaluation["champion"] is None and evaluation["blessed"]
    candidate = evaluation["candidate"]
    assert candidate["speakers"] == 2 and candidate["trials"] > 0
    assert 0.0 <= candidate["eer"] <= 1.0 and 0.0 <= candidate["mr"] <= 1.0
    assert speaker["push"]["pushed"] is True and speaker["push"]["version"] == "1", speaker["outcome"]
    assert first["push"]["pushed"] is True  # the CTC branch is unchanged


def test_embedder_registry_version_is_smoke_tested_and_embeds_raw_audio(runs):
    import tensorflow as tf

    from speechpipe.audio.decode import decode

    model = runs["registry"]["speechpipe-embedder"]
    assert model["aliases"] == {CHAMPION: "1"}
    v1 = model["versions"][0]
    assert v1["tags"]["smoke_test"] == "passed"
    assert v1["tags"]["pipeline_run_id"] == runs["first"]["run_id"]
    assert '"normalization": "global"' in v1["tags"]["feature_config"]  # the embedder's own features
    assert {"test_eer", "test_min_dcf", "test_mr"} <= set(v1["metrics"])
    registry = Registry(speaker_config(runs["home"], []).registry_uri)
    local = registry.download("speechpipe-embedder", "1", os.path.join(runs["home"], "downloaded"))
    item = [m for m in read_manifest(runs["span0"]) if m["split"] == "test"][0]
    wave = decode(os.path.join(runs["span0"], item["audio"]), 16000).samples
    out = tf.saved_model.load(local).signatures["embed"](waveforms=tf.constant(wave[None], tf.float32),
                                                         lengths=tf.constant([len(wave)], tf.int32))
    embedding = out["embeddings"].numpy()
    assert embedding.shape[0] == 1 and np.isfinite(embedding).all() and out["num_segments"].numpy()[0] >= 1


def test_report_has_eer_det_and_projection(runs):
    report = runs["first"]["report"]
    folder = os.path.dirname(report)
    text = open(report, encoding="utf-8").read()
    assert "## Speaker embedder" in text and "EER" in text and "minDCF" in text
    assert os.path.getsize(os.path.join(folder, "speaker_det.png")) > 1000
    assert os.path.getsize(os.path.join(folder, "speaker_candidate_embeddings.png")) > 1000


def test_new_span_resolves_the_speaker_champion_and_is_refused_with_a_reason(runs):
    second = runs["second"]
    assert second["status"] == "succeeded", second["error"]
    # Each feature set's spans reach its trainer through its own ExamplesUnion artifact.
    assert {"ExamplesUnion", "SpeakerExamplesUnion"} <= set(second["executed"]), second["nodes"]
    speaker = second["speaker"]
    first_speaker_model = runs["first"]["speaker"]["model_id"]
    assert speaker["training"]["warm_start"]["warm_start"] is True, speaker["training"]["warm_start"]
    evaluation = speaker["evaluation"]
    assert evaluation["champion"]["model_id"] == first_speaker_model  # not the CTC champion
    assert second["evaluation"]["champion"]["model_id"] == runs["first"]["model_id"]
    assert not evaluation["blessed"] and "does not beat the champion" in evaluation["why"]
    assert speaker["push"]["pushed"] is False and "not blessed" in speaker["outcome"]
    assert [v["version"] for v in runs["registry"]["speechpipe-embedder"]["versions"]] == ["1"]
