"""Batch inference on a corpus: transcripts or embeddings for every utterance, as a Beam job.

    ListInputs -> SpreadInputs -> ParseInputs [records | DEAD_LETTER] -> Decode [waveforms | DEAD_LETTER]
      -> RunInference (a TensorFlow model handler on the SavedModel's serving signature)
      -> Format -> WriteResults;   DEAD_LETTER -> WriteDeadLetter;   counts -> summary.json

The corpus is anything the feature job reads (a VoxCeleb-layout folder, a JSON Lines manifest, a
Kaldi data directory), listed, parsed and decoded by the same code with the same dead-letter
reasons; the model runs through Beam's RunInference, so the job runs on the same runners as the
feature job (DirectRunner here; Dataflow or Flink by options). Outputs under --out:

    results-SSSSS-of-NNNNN.jsonl       one line per utterance: {utterance, speaker, file, seconds,
                                       phones} or {..., embedding}
    dead_letter-SSSSS-of-NNNNN.jsonl   one line per input that could not be used, with the reason
    summary.json                       counts; written last

The model handler is Beam's ModelHandler interface for a TensorFlow SavedModel: Beam's own
TFModelHandlerTensor cannot serve here, since it loads Keras models only (speechpipe's SavedModels
are tf.Modules with named signatures) and its module imports tensorflow-hub, whose 0.15 release
(the one TFX 1.16 allows) fails to import under TensorFlow 2.16 (no tf.compat.v1.estimator).
`SavedModelSignatureHandler` loads the SavedModel with tf.saved_model.load, once per worker, and
calls one signature per batch, zero-padded with the real lengths; RunInference does the
batching, model sharing and metrics.

Chunked (the default, `ChunkConfig`): a worker never holds a recording. `Scan` reads each file in
blocks once (the usability checks and the normalisation statistics, speechpipe.audio.
feature_chunks) and passes on the record with its scan, a few KB; `ChunkedModelHandler` reads the
file again in blocks and runs the network chunk by chunk (speechpipe.results.serving_models), so
a worker's memory is set by the chunk length whatever the recordings' lengths, and no recording
is refused for its length. With `segment_seconds` the embedder gives one line per segment of
each recording, with its times. chunk_seconds 0 is the whole-file path above (recordings up to
`max_seconds`).
"""

from __future__ import annotations

import json
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from speechpipe.audio.decode import AudioRejected, check_usable, decode
from speechpipe.audio.sources import DeadLetter, InputSpec, SourceRecord, expand_input, parse_input
from speechpipe.config import ChunkConfig
from speechpipe.io import storage

GOOD, DEAD_LETTER = "good", "dead_letter"
SIGNATURES = {"ctc": "transcribe", "speaker": "embed"}
RESULTS_PREFIX, DEAD_LETTER_PREFIX, SUMMARY = "results", "dead_letter", "summary.json"
NAMESPACE = "speechpipe.inference"


class SavedModelSignatureHandler(ModelHandler):
    """RunInference's handler for a TensorFlow SavedModel's named signature. Elements are
    `(record, waveform)` pairs; each prediction keeps the pair as its example."""

    def __init__(self, saved_model_dir: str, signature: str, max_batch_size: int = 16) -> None:
        super().__init__()
        self._saved_model_dir, self._signature, self._max_batch_size = saved_model_dir, signature, max_batch_size

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(self._saved_model_dir)

    def run_inference(
        self, batch: Sequence, model, inference_args: Optional[Dict] = None
    ) -> Iterable[PredictionResult]:
        import numpy as np
        import tensorflow as tf

        from speechpipe.audio.batching import pad_waveforms

        waveforms, lengths = pad_waveforms([np.asarray(samples, np.float32) for _, samples in batch])
        out = model.signatures[self._signature](waveforms=tf.constant(waveforms), lengths=tf.constant(lengths))
        rows = {key: value.numpy() for key, value in out.items()}
        for i, example in enumerate(batch):
            yield PredictionResult(example, {key: value[i] for key, value in rows.items()}, self._saved_model_dir)

    def batch_elements_kwargs(self) -> Dict[str, int]:
        return {"max_batch_size": self._max_batch_size}

    def get_num_bytes(self, batch: Sequence) -> int:
        return sum(int(samples.nbytes) for _, samples in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class ChunkedModelHandler(ModelHandler):
    """RunInference's handler for chunked serving. Elements are `(record, scan)` pairs from
    `ScanFn`; each is read again from its file in blocks, the batch's chunks packed into shared
    network calls. Each prediction's inference is a `Transcript` or a `Pooled`."""

    def __init__(
        self,
        saved_model_dir: str,
        kind: str,
        sample_rate: int,
        chunking: ChunkConfig,
        segment_seconds: Optional[float] = None,
        max_batch_size: int = 16,
    ) -> None:
        super().__init__()
        self._saved_model_dir, self._kind, self._rate = saved_model_dir, kind, sample_rate
        self._chunking, self._segment_seconds, self._max_batch_size = chunking, segment_seconds, max_batch_size

    def load_model(self):
        from speechpipe.results.serving_models import ServingModel

        return ServingModel(self._saved_model_dir, self._kind, self._chunking)

    def run_inference(
        self, batch: Sequence, model, inference_args: Optional[Dict] = None
    ) -> Iterable[PredictionResult]:
        from speechpipe.audio.stream import FileSource

        items = [(i, FileSource(record.audio_path, self._rate), scan) for i, (record, scan) in enumerate(batch)]
        if self._kind == "ctc":
            results = model.transcribe(items)
        else:
            results = model.embed(items, self._segment_seconds)
        for i, inference in results:
            yield PredictionResult(batch[i], inference, self._saved_model_dir)

    def batch_elements_kwargs(self) -> Dict[str, int]:
        return {"max_batch_size": self._max_batch_size}

    def get_num_bytes(self, batch: Sequence) -> int:
        return sum(int(scan.samples) * 4 for _, scan in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class ScanFn(beam.DoFn):
    """SourceRecord -> (utterance, (record, scan)): the first pass of chunked serving over the
    file read in blocks, or a DeadLetter (tagged) with the reason the whole-file decode gives."""

    def __init__(self, saved_model_dir: str, sample_rate: int) -> None:
        self._saved_model_dir, self._rate = saved_model_dir, sample_rate
        self._features = None

    def setup(self) -> None:
        from speechpipe.results.serving_models import chunk_features_for

        self._features = chunk_features_for(self._saved_model_dir)

    def process(self, record: SourceRecord):
        from speechpipe.audio.stream import FileSource

        try:
            scan = self._features.scan(FileSource(record.audio_path, self._rate))
        except AudioRejected as rejected:
            Metrics.counter(NAMESPACE, f"dead_letter_{rejected.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter.rejected_audio(record, rejected.reason, rejected.detail)
            )
            return
        yield record.utterance, (record, scan)


class DecodeFn(beam.DoFn):
    """SourceRecord -> (utterance, waveform at the model's rate), or a DeadLetter (tagged)."""

    def __init__(self, sample_rate: int, max_seconds: float, min_samples: int) -> None:
        self._rate, self._max_seconds, self._min_samples = sample_rate, max_seconds, min_samples

    def process(self, record: SourceRecord):
        try:
            audio = decode(record.audio_path, self._rate, self._max_seconds)
            check_usable(audio, self._min_samples, self._max_seconds)
        except AudioRejected as rejected:
            Metrics.counter(NAMESPACE, f"dead_letter_{rejected.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter.rejected_audio(record, rejected.reason, rejected.detail)
            )
            return
        yield record.utterance, (record, audio.samples)


def _parse(item, spec: InputSpec):
    result = parse_input(item, spec)
    if isinstance(result, DeadLetter):
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, result)
    else:
        yield result


def _head(record, seconds: float) -> Dict[str, object]:
    """What every result line says of its recording."""
    return {
        "utterance": record.utterance,
        "speaker": record.speaker,
        "file": record.audio_path,
        "seconds": round(seconds, 4),
    }


def _format(keyed, kind: str, rate: int) -> str:
    import numpy as np

    _, result = keyed
    record, samples = result.example
    out = _head(record, float(samples.shape[0]) / rate)
    if kind == "ctc":
        out["phones"] = result.inference["phones"].decode("utf-8")
    else:
        out["embedding"] = np.asarray(result.inference["embeddings"], np.float64).tolist()
    return json.dumps(out, ensure_ascii=False)


def _format_chunked(keyed, kind: str, rate: int, timestamps: bool, segments: bool):
    """The lines of one recording: one for a transcript (with each phone's times when
    `timestamps`), one for its embedding, or one per segment with its times when `segments`."""
    import numpy as np

    _, result = keyed
    record, scan = result.example
    head = _head(record, scan.samples / rate)
    if kind == "ctc":
        transcript = result.inference
        line = {**head, "phones": transcript.text()}
        if timestamps:
            line["phone_times"] = transcript.timed_phones()
        yield json.dumps(line, ensure_ascii=False)
        return
    pooled = result.inference
    if not segments:
        yield json.dumps({**head, "embedding": np.asarray(pooled.embeddings[0], np.float64).tolist()})
        return
    for k, ((start, end), row) in enumerate(zip(pooled.spans, pooled.embeddings)):
        line = {**head, "segment": k, "start": start, "end": end}
        line["embedding"] = np.asarray(row, np.float64).tolist()
        yield json.dumps(line, ensure_ascii=False)


def build(
    pipeline: beam.Pipeline,
    spec: InputSpec,
    saved_model_dir: str,
    kind: str,
    sample_rate: int,
    out_dir: str,
    max_seconds: float = 3600.0,
    min_samples: int = 400,
    chunking: ChunkConfig = ChunkConfig(),
    segment_seconds: Optional[float] = None,
    timestamps: bool = False,
) -> Dict[str, beam.PCollection]:
    """Adds the job's transforms; returns the results and the dead letter. `max_seconds` bounds
    the whole-file path only (chunk_seconds 0): chunked, a recording of any length is served."""
    if segment_seconds is not None and (kind != "speaker" or not chunking.chunked):
        raise ValueError("segments are for the embedder, served in chunks (chunk_seconds > 0)")
    parsed = (
        pipeline
        | "Start" >> beam.Impulse()
        | "ListInputs" >> beam.FlatMap(lambda _: expand_input(spec))
        # The listing is one element on one worker; without a redistribution, fusion keeps every
        # decode and inference that follows on that worker too.
        | "SpreadInputs" >> beam.Reshuffle()
        | "ParseInputs" >> beam.FlatMap(_parse, spec=spec).with_outputs(DEAD_LETTER, main=GOOD)
    )
    if chunking.chunked:
        decoded = parsed[GOOD] | "Scan" >> beam.ParDo(ScanFn(saved_model_dir, sample_rate)).with_outputs(
            DEAD_LETTER, main=GOOD
        )
        handler = KeyedModelHandler(ChunkedModelHandler(saved_model_dir, kind, sample_rate, chunking, segment_seconds))
        format_lines = beam.FlatMap(
            _format_chunked, kind=kind, rate=sample_rate, timestamps=timestamps, segments=segment_seconds is not None
        )
    else:
        decoded = parsed[GOOD] | "Decode" >> beam.ParDo(DecodeFn(sample_rate, max_seconds, min_samples)).with_outputs(
            DEAD_LETTER, main=GOOD
        )
        handler = KeyedModelHandler(SavedModelSignatureHandler(saved_model_dir, SIGNATURES[kind]))
        format_lines = beam.Map(_format, kind=kind, rate=sample_rate)
    results = decoded[GOOD] | "RunInference" >> RunInference(handler) | "Format" >> format_lines
    dead = (parsed[DEAD_LETTER], decoded[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
    results | "WriteResults" >> beam.io.WriteToText(storage.join(out_dir, RESULTS_PREFIX), file_name_suffix=".jsonl")
    (
        dead
        | "DeadLetterLines" >> beam.Map(DeadLetter.to_json)
        | "WriteDeadLetter" >> beam.io.WriteToText(storage.join(out_dir, DEAD_LETTER_PREFIX), file_name_suffix=".jsonl")
    )
    return {"results": results, "dead_letter": dead}


def read_lines(out_dir: str, prefix: str) -> List[dict]:
    """Every JSON line of an output of the job (results or dead letter), in file order."""
    lines: List[dict] = []
    for path in sorted(storage.glob(storage.join(out_dir, f"{prefix}-*"))):
        lines += [json.loads(line) for line in storage.read_bytes(path).decode("utf-8").splitlines() if line.strip()]
    return lines


def run_job(
    spec: InputSpec,
    saved_model_dir: str,
    kind: str,
    sample_rate: int,
    out_dir: str,
    beam_args: Sequence[str] = (),
    chunking: ChunkConfig = ChunkConfig(),
    segment_seconds: Optional[float] = None,
    timestamps: bool = False,
) -> Dict[str, object]:
    """Runs the job and writes summary.json; returns it. Every input is a result (one line, or
    one per segment) or a dead letter."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.jobs.beam_options import IN_MEMORY_ARGS, with_quiet_workers

    storage.makedirs(out_dir)
    with beam.Pipeline(options=PipelineOptions(with_quiet_workers(list(beam_args or IN_MEMORY_ARGS)))) as p:
        build(
            p,
            spec,
            saved_model_dir,
            kind,
            sample_rate,
            out_dir,
            chunking=chunking,
            segment_seconds=segment_seconds,
            timestamps=timestamps,
        )
    results, dead = read_lines(out_dir, RESULTS_PREFIX), read_lines(out_dir, DEAD_LETTER_PREFIX)
    listed = sum(1 for _ in expand_input(spec))
    recordings = len({line["utterance"] for line in results})
    if recordings + len(dead) != listed or (segment_seconds is None and len(results) != recordings):
        raise RuntimeError(f"{listed} inputs but {len(results)} results + {len(dead)} dead-lettered")
    by_reason: Dict[str, int] = {}
    for line in dead:
        by_reason[line["reason"]] = by_reason.get(line["reason"], 0) + 1
    summary = {
        "inputs": listed,
        "results": recordings,
        "lines": len(results),
        "dead_letter": {"total": len(dead), "by_reason": by_reason},
        "kind": kind,
        "model": saved_model_dir,
        "input": spec.path,
        "data_root": spec.data_root,
        "chunking": chunking.to_json(),
        "segment_seconds": segment_seconds,
    }
    storage.write_json(storage.join(out_dir, SUMMARY), summary, indent=1)
    return summary
