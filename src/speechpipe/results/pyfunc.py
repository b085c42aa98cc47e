"""The MLflow pyfunc flavor of the two models: raw waveforms in, phones or embeddings out.

The pusher saves every registry version as an MLflow model folder: `MLmodel` (the pyfunc flavor
with an input/output signature), and the SavedModel itself under `artifacts/saved_model`, which
TensorFlow Serving (or `tf.saved_model.load`) serves as it is. So

    mlflow.pyfunc.load_model("models:/speechpipe-embedder@champion").predict(frame)
    mlflow models serve -m models:/speechpipe-ctc@champion --env-manager local

work on what the pipeline pushed. Input: a DataFrame, one row per recording, with `waveform` (mono
float samples in [-1, 1]) and optionally `sample_rate` (default 16000; other rates are resampled
to the model's). Output: `phones` (space-separated) and `num_phones` for the transcriber;
`embedding` (a list of floats) and `num_segments` for the embedder.

Each row is served in chunks (the flavor's `ChunkConfig`, saved with it and in its metadata):
the network's memory is set by the chunk, not by the longest row, through the same
speechpipe.results.serving_models as the CLI and the batch-inference job. A SavedModel that
cannot be chunked (see `serving_chunking`) is served whole, as before.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence

import mlflow.pyfunc
import numpy as np
import pandas as pd

from speechpipe.audio.batching import pad_waveforms
from speechpipe.config import ChunkConfig

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SAVED_MODEL_ARTIFACT = "saved_model"
KINDS = ("ctc", "speaker")


def _to_model_rate(samples: Sequence[float], rate: int, model_rate: int) -> np.ndarray:
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    if rate == model_rate:
        return audio
    import soxr

    return soxr.resample(audio, rate, model_rate, quality="HQ").astype(np.float32)


class SpeechModel(mlflow.pyfunc.PythonModel):
    """One of the two SavedModels behind MLflow's pyfunc interface."""

    def __init__(self, kind: str, sample_rate: int = 16000, chunking: Optional[ChunkConfig] = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: one of {KINDS}")
        self.kind = kind
        self.sample_rate = int(sample_rate)  # the rate the SavedModel's in-graph features expect
        self.chunking = (chunking or ChunkConfig()).to_json()
        self._model = None
        self._serving = None

    def load_context(self, context) -> None:
        import tensorflow as tf

        from speechpipe.results.serving_models import ServingModel, serving_chunking

        saved_model_dir = context.artifacts[SAVED_MODEL_ARTIFACT]
        self._model = tf.saved_model.load(saved_model_dir)
        # A flavor pickled before chunking has no `chunking`: it gets the defaults.
        chunking, note = serving_chunking(
            saved_model_dir, self.kind, ChunkConfig.from_json(getattr(self, "chunking", None) or {})
        )
        if note:
            logging.getLogger(__name__).info("%s", note)
        self._serving = ServingModel(saved_model_dir, self.kind, chunking, self._model) if chunking.chunked else None

    # A DataFrame type hint: MLflow then takes the explicit signature (`signature` below: a column of
    # waveform arrays) instead of inferring one from the hint.
    def predict(self, context, model_input: pd.DataFrame, params: Optional[Dict[str, object]] = None):
        import tensorflow as tf

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "waveform" not in frame.columns:
            raise ValueError(f"input needs a `waveform` column (mono float samples); got {list(frame.columns)}")
        rates = frame["sample_rate"] if "sample_rate" in frame.columns else [self.sample_rate] * len(frame)
        if getattr(self, "_serving", None) is not None:
            return self._predict_chunked(frame, rates)
        waveforms = [
            _to_model_rate(w, int(r) if r == r else self.sample_rate, self.sample_rate)
            for w, r in zip(frame["waveform"], rates)
        ]
        if any(w.shape[0] == 0 for w in waveforms):
            raise ValueError("an empty waveform: every row needs samples")
        padded, lengths = pad_waveforms(waveforms)
        signature = "transcribe" if self.kind == "ctc" else "embed"
        out = self._model.signatures[signature](waveforms=tf.constant(padded), lengths=tf.constant(lengths))
        if self.kind == "ctc":
            return pd.DataFrame(
                {
                    "phones": [p.decode("utf-8") for p in out["phones"].numpy()],
                    "num_phones": out["num_phones"].numpy().astype(np.int64),
                }
            )
        return pd.DataFrame(
            {
                "embedding": [row.astype(np.float64).tolist() for row in out["embeddings"].numpy()],
                "num_segments": out["num_segments"].numpy().astype(np.int64),
            }
        )

    def _predict_chunked(self, frame: pd.DataFrame, rates) -> pd.DataFrame:
        from speechpipe.audio.decode import AudioRejected
        from speechpipe.audio.stream import ArraySource

        def items():
            for row, (w, r) in enumerate(zip(frame["waveform"], rates)):
                rate = int(r) if r == r else self.sample_rate
                try:
                    source = ArraySource(np.asarray(w, np.float32), rate, self.sample_rate)
                    yield row, source, self._serving.scan(source)
                except AudioRejected as rejected:
                    raise ValueError(f"row {row}: {rejected.reason}: {rejected.detail}") from None

        if self.kind == "ctc":
            out = list(self._serving.transcribe(items()))
            return pd.DataFrame(
                {
                    "phones": [t.text() for _, t in out],
                    "num_phones": np.array([t.num_phones for _, t in out], np.int64),
                }
            )
        out = list(self._serving.embed(items()))
        return pd.DataFrame(
            {
                "embedding": [p.embeddings[0].astype(np.float64).tolist() for _, p in out],
                "num_segments": np.array([int(p.windows[0]) for _, p in out], np.int64),
            }
        )


def signature(kind: str):
    """The flavor's input/output signature: what `mlflow models serve` checks requests against."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    inputs = Schema(
        [ColSpec(Array(DataType.double), "waveform"), ColSpec(DataType.long, "sample_rate", required=False)]
    )
    if kind == "ctc":
        outputs = Schema([ColSpec(DataType.string, "phones"), ColSpec(DataType.long, "num_phones")])
    else:
        outputs = Schema([ColSpec(Array(DataType.double), "embedding"), ColSpec(DataType.long, "num_segments")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def save_flavor(
    saved_model_dir: str,
    kind: str,
    out_dir: str,
    sample_rate: int = 16000,
    metadata: Optional[Dict[str, str]] = None,
    chunking: Optional[ChunkConfig] = None,
) -> str:
    """Writes the MLflow model folder (MLmodel + the SavedModel under artifacts/) to `out_dir`,
    a new local folder; returns it. `saved_model_dir` is local. `chunking` (default
    `ChunkConfig()`) is how the flavor serves rows; it is also in the MLmodel's metadata."""
    chunking = chunking or ChunkConfig()
    import tempfile

    requirements = [f"speechpipe=={_version()}"]
    with tempfile.TemporaryDirectory() as staging:
        # MLflow names an artifact folder after its source (and refuses links): a copy named
        # saved_model gives every version one layout, artifacts/saved_model (a few MB).
        import shutil

        named = os.path.join(staging, SAVED_MODEL_ARTIFACT)
        shutil.copytree(saved_model_dir, named)
        # Half a second of quiet noise: MLflow stores it with the model and checks that the model
        # answers it, so a flavor that cannot serve fails here, at push time.
        example = {
            "waveform": [(0.01 * np.random.default_rng(0).standard_normal(sample_rate // 2)).tolist()],
            "sample_rate": [sample_rate],
        }

        # MLflow logs, at WARNING, that a python_model object is pickled (a caution about loading
        # models from untrusted sources; these are the pipeline's own): kept out of the run's output.
        mlflow_log = logging.getLogger("mlflow.pyfunc")
        level = mlflow_log.level
        mlflow_log.setLevel(logging.ERROR)
        try:
            mlflow.pyfunc.save_model(
                path=out_dir,
                python_model=SpeechModel(kind, sample_rate, chunking),
                artifacts={SAVED_MODEL_ARTIFACT: named},
                signature=signature(kind),
                input_example=pd.DataFrame(example),
                pip_requirements=requirements,
                metadata={**(metadata or {}), "chunking": chunking.to_json()},
            )
        finally:
            mlflow_log.setLevel(level)
    return out_dir


def _version() -> str:
    from speechpipe.results.registry import speechpipe_version

    return speechpipe_version()


def smoke_test_flavor(model_dir: str, kind: str, sample_rate: int = 16000) -> Dict[str, object]:
    """Loads a saved flavor through mlflow.pyfunc (as a user would) and predicts on two waveforms
    of different lengths at another sample rate than the model's, which exercises the resampling."""
    rate = 8000
    rng = np.random.default_rng(0)
    t = np.arange(rate) / rate
    rows = [
        {"waveform": (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)).tolist(), "sample_rate": rate},
        {"waveform": (0.05 * rng.standard_normal(rate * 3 // 4)).tolist(), "sample_rate": rate},
    ]

    out = mlflow.pyfunc.load_model(model_dir).predict(pd.DataFrame(rows))
    if len(out) != 2:
        raise ValueError(f"the pyfunc flavor gave {len(out)} rows for 2 waveforms")
    return {"pyfunc_rows": len(out), "columns": list(out.columns)}
