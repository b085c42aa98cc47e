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
from speechpipe.pipeline.run_config import DEMO_CTC, DEMO_EMBEDDER, RunConfig
from speechpipe.results.registry import CHAMPION, Registry
from tests.helpers import make_tiny_corpus, read_manifest

pytestmark = pytest.mark.e2e  # LocalDagRunner runs of the whole pipeline

TINY_CTC = replace(
    DEMO_CTC, model=replace(DEMO_CTC.model, lstm_units=(16,)), max_epochs=1, max_minutes=1.0, batch_size=8, patience=1
)
TINY_EMBEDDER = replace(
    DEMO_EMBEDDER, max_seconds=60.0, max_steps=20, eval_every_steps=10, speakers_per_batch=4, segments_per_speaker=2
)


def speaker_config(home, spans, **changes) -> RunConfig:
    base = RunConfig(
        home=str(home),
        spans=tuple(spans),
        ctc=TINY_CTC,
        embedder=TINY_EMBEDDER,
        branches=("ctc", "speaker"),
        beam_args=("--direct_running_mode=in_memory",),
        max_per=10.0,
        max_eer=1.0,
    )
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
    out["second"] = run_pipeline(
        speaker_config(
            home, spans0 + [os.path.join(span1, "manifest.jsonl")], min_eer_improvement=0.99, min_per_improvement=0.99
        )
    )
    out["registry"] = {m["name"]: m for m in Registry(speaker_config(home, spans0).registry_uri).list()}
    return out


def test_first_run_pushes_both_models(runs):
    first = runs["first"]
    assert first["status"] == "succeeded", first["error"]
    for node in (
        "SpeakerFeatureGen_span0",
        "PairGen",
        "SpeakerBlockGen",
        "SpeakerTrainer",
        "SpeakerEvaluator",
        "SpeakerRegistryPusher",
        "CTCTrainer",
        "CTCRegistryPusher",
    ):
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
    from speechpipe.results.resolve import saved_model_in

    local = saved_model_in(registry.download("speechpipe-embedder", "1", os.path.join(runs["home"], "downloaded")))
    item = [m for m in read_manifest(runs["span0"]) if m["split"] == "test"][0]
    wave = decode(os.path.join(runs["span0"], item["audio"]), 16000).samples
    out = tf.saved_model.load(local).signatures["embed"](
        waveforms=tf.constant(wave[None], tf.float32), lengths=tf.constant([len(wave)], tf.int32)
    )
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
    assert {"CTCExamplesUnion", "SpeakerExamplesUnion"} <= set(second["executed"]), second["nodes"]
    speaker = second["speaker"]
    first_speaker_model = runs["first"]["speaker"]["model_id"]
    assert speaker["training"]["warm_start"]["warm_start"] is True, speaker["training"]["warm_start"]
    evaluation = speaker["evaluation"]
    assert evaluation["champion"]["model_id"] == first_speaker_model  # not the CTC champion
    assert second["evaluation"]["champion"]["model_id"] == runs["first"]["model_id"]
    assert not evaluation["blessed"] and "does not beat the champion" in evaluation["why"]
    assert speaker["push"]["pushed"] is False and "not blessed" in speaker["outcome"]
    assert [v["version"] for v in runs["registry"]["speechpipe-embedder"]["versions"]] == ["1"]


# ------------------------------------------------------------------------------------------------
# Using the champions the first run pushed: the pyfunc flavor, the shipped threshold, the commands,
# `mlflow models serve` over HTTP.


def _test_audio(runs, count: int = 4):
    lines = [m for m in read_manifest(runs["span0"]) if m["split"] == "test"]
    return [os.path.join(runs["span0"], m["audio"]) for m in lines[:count]], lines[:count]


def test_registry_versions_load_as_mlflow_pyfunc_models(runs, monkeypatch):
    import mlflow
    import soundfile as sf

    from speechpipe.phones.inventory import load_inventory

    monkeypatch.setenv("MLFLOW_TRACKING_URI", speaker_config(runs["home"], []).registry_uri)
    mlflow.set_tracking_uri(speaker_config(runs["home"], []).registry_uri)
    files, _ = _test_audio(runs, 2)
    waves = [sf.read(f, dtype="float32") for f in files]
    import pandas as pd

    frame = pd.DataFrame({"waveform": [w.tolist() for w, _ in waves], "sample_rate": [r for _, r in waves]})
    embedded = mlflow.pyfunc.load_model("models:/speechpipe-embedder@champion").predict(frame)
    assert len(embedded) == 2 and all(np.isfinite(e).all() and len(e) > 0 for e in embedded["embedding"])
    transcribed = mlflow.pyfunc.load_model("models:/speechpipe-ctc@champion").predict(frame)
    phones = set(" ".join(transcribed["phones"]).split())
    assert phones <= set(load_inventory().phones)


def test_the_embedder_ships_its_decision_threshold(runs):
    operating = runs["first"]["speaker"]["evaluation"]["operating_point"]
    assert operating["target_far"] == 0.01 and operating["validation_speakers"] == 2
    assert 0.0 <= operating["test_far"] <= 1.0 and 0.0 <= operating["test_frr"] <= 1.0
    tags = runs["registry"]["speechpipe-embedder"]["versions"][0]["tags"]
    assert float(tags["decision_threshold"]) == operating["threshold"]
    assert "validation speakers" in tags["decision_threshold_source"]
    text = open(runs["first"]["report"], encoding="utf-8").read()
    assert "Decision threshold shipped with the model" in text and "false accepts" in text


def test_transcribe_and_verify_commands(runs, capsys, tmp_path):
    import json

    from speechpipe.cli import main

    files, lines = _test_audio(runs, 4)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    assert main(["transcribe", *files[:2], str(broken), "--home", runs["home"]]) == 1  # one input failed
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["file"] for r in rows] == files[:2] and all(r["seconds"] > 0 for r in rows)
    assert str(broken) in out.err
    by_speaker = {}
    for path, line in zip(files, lines):
        by_speaker.setdefault(line["speaker"], []).append(path)
    same = next(paths for paths in by_speaker.values() if len(paths) >= 2)
    other = next(paths[0] for s, paths in by_speaker.items() if paths[0] not in same)
    for a, b in ((same[0], same[1]), (same[0], other)):
        assert main(["verify", a, b, "--home", runs["home"]]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert row["same_speaker"] == (row["score"] >= row["threshold"])
        assert "validation speakers" in row["threshold_source"]


def test_embed_and_cluster_commands_on_the_test_split(runs, tmp_path, capsys):
    import json

    from speechpipe.cli import main

    test = [m for m in read_manifest(runs["span0"]) if m["split"] == "test"]
    # Next to the corpus's own manifest: audio paths stay inside the manifest's folder, its data root.
    manifest = os.path.join(runs["span0"], "test_split.jsonl")
    with open(manifest, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(m) + "\n" for m in test)
    out = tmp_path / "embedded"
    assert (
        main(
            [
                "embed",
                "--input",
                str(manifest),
                "--out",
                str(out),
                "--home",
                runs["home"],
                "--direct_running_mode=in_memory",
            ]
        )
        == 0
    )
    embeddings = np.load(out / "embeddings.npy")
    index = [json.loads(line) for line in open(out / "utterances.jsonl", encoding="utf-8")]
    assert embeddings.shape[0] == len(index) == len(test)
    assert np.load(out / "speaker_means.npy").shape == (len({m["speaker"] for m in test}), embeddings.shape[1])
    capsys.readouterr()
    assert (
        main(
            [
                "cluster",
                "--input",
                str(manifest),
                "--out",
                str(tmp_path / "clustered"),
                "--home",
                runs["home"],
                "--num-speakers",
                "2",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert "2 clusters among" in said and "MR" in said
    table = open(tmp_path / "clustered" / "clusters.tsv", encoding="utf-8").read().splitlines()
    assert table[0] == "file\tutterance\tcluster" and len(table) == len(test) + 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_over_http(runs):
    """The real `mlflow models serve` on 127.0.0.1 (a free port, a bounded wait, stopped at the end)
    gives a transcription and an embedding back for a recording."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    import soundfile as sf

    files, _ = _test_audio(runs, 1)
    wave, rate = sf.read(files[0], dtype="float32")
    body = json.dumps({"dataframe_records": [{"waveform": wave.tolist(), "sample_rate": rate}]}).encode()
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": speaker_config(runs["home"], []).registry_uri,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    answers = {}
    for name in ("speechpipe-ctc", "speechpipe-embedder"):
        port = _free_port()
        server = subprocess.Popen(
            [
                os.path.join(bin_dir, "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{name}@champion",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--env-manager",
                "local",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 180
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                assert time.time() < deadline, "the model server did not answer /ping within 180 s"
                time.sleep(1)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            answers[name] = json.load(urllib.request.urlopen(request, timeout=120))["predictions"]
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
    (ctc,) = answers["speechpipe-ctc"]
    assert isinstance(ctc["phones"], str) and ctc["num_phones"] == len(ctc["phones"].split())
    (speaker,) = answers["speechpipe-embedder"]
    assert len(speaker["embedding"]) > 0 and speaker["num_segments"] >= 1


def test_both_serving_signatures_take_real_recordings(runs, monkeypatch):
    """Real speech through the pushed models' pyfunc flavors: LibriVox read speech at 16 kHz and
    8 kHz telephone prompts (resampled by the flavor), tests/data/realspeech_debian."""
    import json

    import mlflow
    import pandas as pd
    import soundfile as sf

    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "realspeech_debian")
    with open(os.path.join(data, "manifest.jsonl"), encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    waves = [sf.read(os.path.join(data, e["audio"]), dtype="float32") for e in entries]
    assert {rate for _, rate in waves} == {8000, 16000}
    frame = pd.DataFrame({"waveform": [w.tolist() for w, _ in waves], "sample_rate": [r for _, r in waves]})
    mlflow.set_tracking_uri(speaker_config(runs["home"], []).registry_uri)
    embedded = mlflow.pyfunc.load_model("models:/speechpipe-embedder@champion").predict(frame)
    assert len(embedded) == len(entries) and all(np.isfinite(e).all() for e in embedded["embedding"])
    assert (embedded["num_segments"] >= 1).all()
    transcribed = mlflow.pyfunc.load_model("models:/speechpipe-ctc@champion").predict(frame)
    assert len(transcribed) == len(entries) and transcribed["phones"].map(lambda p: isinstance(p, str)).all()
