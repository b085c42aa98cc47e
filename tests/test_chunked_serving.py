"""Chunked serving: recordings read in blocks, the CTC model run on chunks with overlap and merged
into one best path, the embedder's windows pooled from chunks, against the whole-file signatures.

The models are small networks with random weights made decisive (scaled output layers): their
frame classes change every few frames, so a seam that loses, duplicates or splits a phone shows
in the transcript. A recording is the tiny corpus's utterances end to end (about 40 s), cut into
chunks of 1 s, so that it has dozens of seams."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
import tensorflow as tf
import tf_keras as keras

from speechpipe.audio.decode import AudioRejected, check_usable, decode
from speechpipe.audio.feature_chunks import ChunkFeatures
from speechpipe.audio.stream import ArraySource, FileSource
from speechpipe.audio.tf_features import GraphFeatures
from speechpipe.config import ChunkConfig, FeatureConfig
from speechpipe.phones.ctc_chunks import GreedyAlignment, chunk_plan
from speechpipe.phones.ctc_config import CTCModelConfig
from speechpipe.phones.ctc_model import build_acoustic_model, export_transcriber
from speechpipe.phones.inventory import default_inventory
from speechpipe.results.serving_models import ServingModel, serving_chunking
from speechpipe.speakers.embedder.chunks import window_starts
from tests.audio_inputs import BAD_AUDIO, UNUSUAL, write_wav
from tests.helpers import read_manifest

# Chunks of 1 s with 1.5 s of context either side: the small BLSTM's outputs then agree with the
# whole file's to the frame (measured: 0 differing phones; without context, 1 s chunks change
# about a third of them).
SMALL = ChunkConfig(chunk_seconds=1.0, overlap_seconds=1.5, batch_seconds=8.0)
EMBEDDING_TOLERANCE = 1e-5  # float32 rounding of the per-file statistics and of the mean


def _whole(model, signature, samples):
    return model.signatures[signature](
        waveforms=tf.constant(samples[None, :]), lengths=tf.constant([samples.shape[0]], tf.int32)
    )


@pytest.fixture(scope="module")
def ctc_model(tmp_path_factory) -> str:
    keras.utils.set_random_seed(0)
    inventory = default_inventory()
    acoustic = build_acoustic_model(80, len(inventory.phones) + 1, CTCModelConfig(lstm_units=(24, 24), frame_stack=2))
    layer = acoustic.get_layer("logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 8.0, bias])
    path = str(tmp_path_factory.mktemp("ctc") / "model")
    export_transcriber(path, acoustic, GraphFeatures(FeatureConfig()), inventory.phones, 2)
    with open(os.path.join(path, "training_result.json"), "w") as f:
        json.dump({"features": FeatureConfig().to_json()}, f)
    return path


@pytest.fixture(scope="module")
def recording(tiny_corpus, tmp_path_factory) -> str:
    """The tiny corpus's utterances end to end, as one 16-bit WAV."""
    items = read_manifest(tiny_corpus)[:12]
    samples = np.concatenate([decode(os.path.join(tiny_corpus, r["audio"]), 16000).samples for r in items])
    path = str(tmp_path_factory.mktemp("long") / "recording.wav")
    sf.write(path, samples, 16000, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------- reading in blocks


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_blocks_are_the_whole_file_decode(name, tmp_path):
    path = UNUSUAL[name](str(tmp_path / name))
    blocks = list(FileSource(path, 16000, block_seconds=0.3).blocks())
    assert len(blocks) > 1
    np.testing.assert_array_equal(np.concatenate(blocks), decode(path, 16000).samples)


@pytest.mark.parametrize("name", sorted(set(BAD_AUDIO) - {"long"}))
def test_a_file_that_does_not_decode_is_refused_with_the_whole_file_reason(name, tmp_path):
    writer, reason = BAD_AUDIO[name]
    path = writer(str(tmp_path / name))
    with pytest.raises(AudioRejected) as whole:
        check_usable(decode(path, 16000), 400, float("inf"))
    with pytest.raises(AudioRejected) as streamed:
        ChunkFeatures(FeatureConfig()).scan(FileSource(path, 16000, block_seconds=0.3))
    assert streamed.value.reason == whole.value.reason == reason


def test_too_long_only_when_a_limit_is_given(tmp_path):
    path = write_wav(str(tmp_path / "a.wav"), seconds=3.0)
    with pytest.raises(AudioRejected, match="too_long"):
        FileSource(path, 16000, max_seconds=2.0)
    assert sum(b.shape[0] for b in FileSource(path, 16000).blocks()) == 48000


@pytest.mark.parametrize("normalization", ["cmvn", "minmax", "none"])
def test_features_by_range_are_the_whole_file_features(normalization, recording):
    config = FeatureConfig(normalization=normalization)
    samples = decode(recording, 16000).samples
    whole, frames = GraphFeatures(config)(samples[None, :], np.array([samples.shape[0]]))
    whole = whole.numpy()[0]
    chunked = ChunkFeatures(config)
    source = FileSource(recording, 16000, block_seconds=0.7)
    scan = chunked.scan(source)
    assert scan.frames == int(frames.numpy()[0]) and scan.samples == samples.shape[0]
    ranges = [(0, 150), (100, 420), (420, 421), (900, 5000), (scan.frames - 3, scan.frames + 10)]
    for (start, end), part in zip(ranges, chunked.frames(source, scan, ranges)):
        np.testing.assert_allclose(part, whole[start : min(end, scan.frames)], atol=2e-4)


# ----------------------------------------------------------------------- CTC seams


def test_chunk_plan_keeps_every_frame_once_with_context():
    plan = chunk_plan(1003, 100, 30)
    kept = np.concatenate([np.arange(c.keep_start, c.keep_end) for c in plan])
    np.testing.assert_array_equal(kept, np.arange(1003))
    for c in plan:
        assert c.start == max(0, c.keep_start - 30) and c.end == min(1003, c.keep_end + 30)
    assert chunk_plan(50, 100, 30) == chunk_plan(50, 0, 30) and len(chunk_plan(50, 100, 30)) == 1
    assert chunk_plan(0, 100, 30) == []


def _tf_greedy(best: np.ndarray, classes: int):
    logits = tf.one_hot(best, classes)[:, None, :]
    decoded, _ = tf.nn.ctc_greedy_decoder(logits, [best.shape[0]], merge_repeated=True, blank_index=classes - 1)
    return decoded[0].values.numpy().tolist()


def test_seams_neither_duplicate_nor_lose_phones():
    """A best path cut anywhere, in any number of pieces, collapses to TensorFlow's greedy
    decoding of the whole path: a phone whose run crosses a seam is one phone, a phone repeated
    across a blank at a seam is two, and each phone keeps its run's frames."""
    blank = 4
    cases = [
        np.array([1, 1, 1, 1, 2, 2]),  # a run across every seam
        np.array([3, blank, 3, 3, blank, blank, 3]),  # repeats split by blanks, blanks at seams
        np.array([blank, blank, blank]),
        np.random.default_rng(0).integers(0, 5, 200),
        np.random.default_rng(1).choice([0, 0, 0, 1, blank], 300),
    ]
    for path in cases:
        expected = _tf_greedy(path, 5)
        whole = GreedyAlignment(blank)
        whole.feed(path)
        whole.finish()
        assert whole.ids == expected
        for cut in range(1, 9):
            seams = np.linspace(0, path.shape[0], cut + 1).astype(int)
            pieces = GreedyAlignment(blank)
            for a, b in zip(seams[:-1], seams[1:]):
                pieces.feed(path[a:b])
            pieces.finish()
            assert (pieces.ids, pieces.starts, pieces.ends) == (whole.ids, whole.starts, whole.ends)
    runs = GreedyAlignment(blank)
    runs.feed(np.array([1, 1]))
    runs.feed(np.array([1, blank, 2]))
    runs.feed(np.array([2, 2]))
    runs.finish()
    assert (runs.ids, runs.starts, runs.ends) == ([1, 2], [0, 4], [3, 7])


def test_chunked_transcript_is_the_whole_file_transcript(ctc_model, recording):
    serving = ServingModel(ctc_model, "ctc", SMALL)
    samples = decode(recording, 16000).samples
    whole = _whole(serving.model, "transcribe", samples)["phones"].numpy()[0].decode().split()
    source = FileSource(recording, 16000, block_seconds=2.0)
    ((_, transcript),) = list(serving.transcribe([("r", source, serving.scan(source))]))
    assert len(transcript.chunks) >= 30, "a recording of many seams"
    assert len(whole) > 200
    assert transcript.text().split() == whole
    # Without context the same seams change the transcript: the equality above is the overlap's.
    bare = ServingModel(ctc_model, "ctc", ChunkConfig(chunk_seconds=1.0, overlap_seconds=0.0), serving.model)
    ((_, cut),) = list(bare.transcribe([("r", source, bare.scan(source))]))
    assert cut.text().split() != whole


def test_timestamps_follow_the_alignment(ctc_model, recording):
    serving = ServingModel(ctc_model, "ctc", SMALL)
    source = FileSource(recording, 16000)
    ((_, t),) = list(serving.transcribe([("r", source, serving.scan(source))]))
    times = t.timed_phones()
    assert [p["phone"] for p in times] == t.text().split()
    starts = [p["start"] for p in times]
    assert starts == sorted(starts) and all(p["end"] > p["start"] for p in times)
    assert all(round(p["start"] / 0.02, 6).is_integer() for p in times), "on the 20 ms network frames"
    assert times[-1]["end"] <= t.seconds + 1e-9
    entries = list(t.chunk_entries())
    assert [e["chunk"] for e in entries] == list(range(len(t.chunks)))
    assert entries[0]["start"] == 0.0 and entries[-1]["end"] == round(t.seconds, 3)
    assert all(a["end"] == b["start"] for a, b in zip(entries, entries[1:]))
    assert sum((e["phone_times"] for e in entries), []) == times
    for e in entries:
        assert all(e["start"] <= p["start"] < e["end"] for p in e["phone_times"])


def test_files_of_any_length_share_batches_and_keep_their_order(ctc_model, recording, tmp_path):
    serving = ServingModel(ctc_model, "ctc", SMALL)
    samples = decode(recording, 16000).samples
    paths = []
    for i, seconds in enumerate((0.05, 2.5, 0.3, 7.0)):
        path = str(tmp_path / f"{i}.wav")
        sf.write(path, samples[: int(seconds * 16000)], 16000, subtype="PCM_16")
        paths.append(path)
    items = [(p, FileSource(p, 16000), None) for p in paths]
    items = [(k, s, serving.scan(s)) for k, s, _ in items]
    out = list(serving.transcribe(items))
    assert [k for k, _ in out] == paths
    for path, transcript in out:
        w = decode(path, 16000).samples
        assert transcript.text() == _whole(serving.model, "transcribe", w)["phones"].numpy()[0].decode()


# ----------------------------------------------------------------------- embedder


def test_chunked_embedding_is_the_whole_file_embedding(stand_in_embedder, recording, tmp_path):
    serving = ServingModel(stand_in_embedder, "speaker", SMALL)
    samples = decode(recording, 16000).samples
    short = str(tmp_path / "short.wav")  # under one window: one zero-padded window
    sf.write(short, samples[16000:20000], 16000, subtype="PCM_16")
    items = [(p, FileSource(p, 16000), None) for p in (recording, short)]
    out = dict(serving.embed([(k, s, serving.scan(s)) for k, s, _ in items]))
    for path in (recording, short):
        whole = _whole(serving.model, "embed", decode(path, 16000).samples)
        np.testing.assert_allclose(out[path].embeddings[0], whole["embeddings"].numpy()[0], atol=EMBEDDING_TOLERANCE)
        assert int(out[path].windows[0]) == int(whole["num_segments"].numpy()[0])
    assert int(out[recording].windows[0]) > 100


def test_segments_are_utterances_of_their_own(stand_in_embedder, recording):
    """Segments tile the recording; a segment's embedding is the mean of the `embed` window
    layout over its own frames, normalised with the whole recording's statistics."""
    serving = ServingModel(stand_in_embedder, "speaker", SMALL)
    source = FileSource(recording, 16000)
    scan = serving.scan(source)
    ((_, pooled),) = list(serving.embed([("r", source, scan)], segment_seconds=4.0))
    assert pooled.spans[0][0] == 0.0 and pooled.spans[-1][1] == round(scan.samples / 16000, 3)
    assert all(a[1] == b[0] for a, b in zip(pooled.spans, pooled.spans[1:]))
    assert len(pooled.spans) == int(np.ceil(scan.frames / 400))
    samples = decode(recording, 16000).samples
    features = ChunkFeatures(FeatureConfig())
    raw = features._compute(samples)
    normalised = scan.normalise(raw)
    segment = normalised[400:800]
    starts = window_starts(segment.shape[0], 40, 20)
    windows = np.stack([segment[s : s + 40] for s in starts])
    expected = serving.model.signatures["embed_segments"](segments=tf.constant(windows))["embeddings"].numpy().mean(0)
    np.testing.assert_allclose(pooled.embeddings[1], expected, atol=EMBEDDING_TOLERANCE)
    with pytest.raises(ValueError, match="window"):
        list(serving.embed([("r", source, scan)], segment_seconds=0.2))


# ----------------------------------------------------------------------- the serving paths


def test_transcribe_cli_with_timestamps(ctc_model, recording, tmp_path, capsys):
    from speechpipe.cli import main

    broken = str(tmp_path / "broken.wav")
    with open(broken, "wb") as f:
        f.write(b"RIFF....WAVEnot audio at all" * 10)
    code = main(["transcribe", recording, broken, "--model", ctc_model, "--timestamps", "--chunk-seconds", "5"])
    captured = capsys.readouterr()
    assert code == 1 and f"{broken}: unreadable" in captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    chunks, summary = lines[:-1], lines[-1]
    assert summary["file"] == recording and summary["chunks"] == len(chunks) >= 8
    assert " ".join(c["phones"] for c in chunks if c["phones"]) == summary["phones"]
    assert all(c["end"] - c["start"] <= 5.0 + 1e-9 for c in chunks)
    code = main(["transcribe", recording, "--model", ctc_model, "--chunk-seconds", "0"])
    whole = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 0 and whole["phones"] == summary["phones"]


def test_pyfunc_serves_rows_in_chunks(ctc_model, stand_in_embedder, recording):
    from speechpipe.results.pyfunc import SAVED_MODEL_ARTIFACT, SpeechModel

    # Full-band rows: on audio upsampled from 8 kHz the bins above 4 kHz are constant, their
    # cmvn deviation sits at its 1e-5 floor, and the whole-file path's float32 statistics and the
    # chunked float64 ones then give those bins different (meaningless) values.
    samples = decode(recording, 16000).samples
    rows = {"waveform": [samples[:160000], samples[200000:280000]], "sample_rate": [16000, 16000]}
    for kind, path in (("ctc", ctc_model), ("speaker", stand_in_embedder)):
        context = type("Context", (), {"artifacts": {SAVED_MODEL_ARTIFACT: path}})()
        chunked, whole = SpeechModel(kind, chunking=SMALL), SpeechModel(kind, chunking=ChunkConfig(chunk_seconds=0))
        for model in (chunked, whole):
            model.load_context(context)
        assert chunked._serving is not None and whole._serving is None
        a, b = chunked.predict(None, pd.DataFrame(rows)), whole.predict(None, pd.DataFrame(rows))
        if kind == "ctc":
            assert a["phones"].tolist() == b["phones"].tolist() and a["num_phones"].tolist() == b["num_phones"].tolist()
        else:
            np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=EMBEDDING_TOLERANCE)
            assert a["num_segments"].tolist() == b["num_segments"].tolist()
    with pytest.raises(ValueError, match="row 0: silent"):
        chunked.predict(None, pd.DataFrame({"waveform": [np.zeros(8000)]}))


def test_a_model_that_cannot_be_chunked_is_served_whole(tmp_path):
    class Stand(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)])
        def transcribe(self, waveforms, lengths):
            return {"phones": tf.strings.as_string(lengths)}

    stand = Stand()
    tf.saved_model.save(stand, str(tmp_path), signatures={"transcribe": stand.transcribe})
    chunking, note = serving_chunking(str(tmp_path), "ctc", ChunkConfig())
    assert not chunking.chunked and "no `logits` signature" in note
    assert serving_chunking(str(tmp_path), "ctc", ChunkConfig(chunk_seconds=0)) == (ChunkConfig(chunk_seconds=0), "")


def test_array_source_resamples_as_decode(recording):
    samples = decode(recording, 16000).samples[:48000]
    at8k = decode(recording, 8000).samples[:24000]
    blocks = list(ArraySource(at8k, 8000, 16000, block_seconds=0.5).blocks())
    np.testing.assert_array_equal(np.concatenate(blocks), soxr.resample(at8k, 8000, 16000, quality="HQ"))
    assert np.concatenate(blocks).shape[0] == samples.shape[0]


@pytest.mark.slow  # two Beam jobs
def test_batch_inference_job_in_chunks(ctc_model, stand_in_embedder, recording, tmp_path):
    import shutil

    from speechpipe.audio.sources import make_spec
    from speechpipe.jobs import inference_job

    manifest = tmp_path / "manifest.jsonl"
    shutil.copy(recording, tmp_path / "long.wav")
    (tmp_path / "broken.wav").write_bytes(b"")
    manifest.write_text(
        json.dumps({"utterance": "long", "speaker": "s", "audio": "long.wav"})
        + "\n"
        + json.dumps({"utterance": "bad", "speaker": "s", "audio": "broken.wav"})
        + "\n"
    )
    spec = make_spec(str(manifest))
    out = str(tmp_path / "ctc")
    summary = inference_job.run_job(spec, ctc_model, "ctc", 16000, out, chunking=SMALL, timestamps=True)
    assert summary["results"] == 1 and summary["dead_letter"]["by_reason"] == {"empty": 1}
    assert summary["chunking"] == SMALL.to_json()
    (line,) = inference_job.read_lines(out, inference_job.RESULTS_PREFIX)
    model = tf.saved_model.load(ctc_model)
    assert line["phones"] == _whole(model, "transcribe", decode(recording, 16000).samples)["phones"].numpy()[0].decode()
    assert [p["phone"] for p in line["phone_times"]] == line["phones"].split()
    out = str(tmp_path / "speaker")
    summary = inference_job.run_job(spec, stand_in_embedder, "speaker", 16000, out, chunking=SMALL, segment_seconds=5.0)
    lines = inference_job.read_lines(out, inference_job.RESULTS_PREFIX)
    assert summary["results"] == 1 and summary["lines"] == len(lines) == int(np.ceil(line["seconds"] / 5.0))
    assert sorted(r["segment"] for r in lines) == list(range(len(lines)))
