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
"""

from __future__ import annotations

import json
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from speechpipe.audio.decode import AudioRejected, check_usable, decode
from speechpipe.audio.sources import DeadLetter, InputSpec, SourceRecord, expand_input, parse_input
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


def _format(keyed, kind: str, rate: int) -> str:
    import numpy as np

    _, result = keyed
    record, samples = result.example
    out = {
        "utterance": record.utterance,
        "speaker": record.speaker,
        "file": record.audio_path,
        "seconds": round(float(samples.shape[0]) / rate, 4),
    }
    if kind == "ctc":
        out["phones"] = result.inference["phones"].decode("utf-8")
    else:
        out["embedding"] = np.asarray(result.inference["embeddings"], np.float64).tolist()
    return json.dumps(out, ensure_ascii=False)


def build(
    pipeline: beam.Pipeline,
    spec: InputSpec,
    saved_model_dir: str,
    kind: str,
    sample_rate: int,
    out_dir: str,
    max_seconds: float = 3600.0,
    min_samples: int = 400,
) -> Dict[str, beam.PCollection]:
    """Adds the job's transforms; returns the results and the dead letter."""
    parsed = (
        pipeline
        | "Start" >> beam.Impulse()
        | "ListInputs" >> beam.FlatMap(lambda _: expand_input(spec))
        # The listing is one element on one worker; without a redistribution, fusion keeps every
        # decode and inference that follows on that worker too.
        | "SpreadInputs" >> beam.Reshuffle()
        | "ParseInputs" >> beam.FlatMap(_parse, spec=spec).with_outputs(DEAD_LETTER, main=GOOD)
    )
    decoded = parsed[GOOD] | "Decode" >> beam.ParDo(DecodeFn(sample_rate, max_seconds, min_samples)).with_outputs(
        DEAD_LETTER, main=GOOD
    )
    handler = KeyedModelHandler(SavedModelSignatureHandler(saved_model_dir, SIGNATURES[kind]))
    results = (
        decoded[GOOD]
        | "RunInference" >> RunInference(handler)
        | "Format" >> beam.Map(_format, kind=kind, rate=sample_rate)
    )
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
    spec: InputSpec, saved_model_dir: str, kind: str, sample_rate: int, out_dir: str, beam_args: Sequence[str] = ()
) -> Dict[str, object]:
    """Runs the job and writes summary.json; returns it. Every input is a result or a dead letter."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.jobs.beam_options import IN_MEMORY_ARGS, with_quiet_workers

    storage.makedirs(out_dir)
    with beam.Pipeline(options=PipelineOptions(with_quiet_workers(list(beam_args or IN_MEMORY_ARGS)))) as p:
        build(p, spec, saved_model_dir, kind, sample_rate, out_dir)
    results, dead = read_lines(out_dir, RESULTS_PREFIX), read_lines(out_dir, DEAD_LETTER_PREFIX)
    listed = sum(1 for _ in expand_input(spec))
    if len(results) + len(dead) != listed:
        raise RuntimeError(f"{listed} inputs but {len(results)} results + {len(dead)} dead-lettered")
    by_reason: Dict[str, int] = {}
    for line in dead:
        by_reason[line["reason"]] = by_reason.get(line["reason"], 0) + 1
    summary = {
        "inputs": listed,
        "results": len(results),
        "dead_letter": {"total": len(dead), "by_reason": by_reason},
        "kind": kind,
        "model": saved_model_dir,
        "input": spec.path,
        "data_root": spec.data_root,
    }
    storage.write_json(storage.join(out_dir, SUMMARY), summary, indent=1)
    return summary
