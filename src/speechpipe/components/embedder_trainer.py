"""TFX Trainer module for the siamese speaker embedder: `run_fn(fn_args)`, and `train(...)`,
which `run_fn` calls and which the bench and tests call without TFX.

    custom_config = {
        "features": {...},        # the feature job's summary.json "features" (FeatureConfig)
        "global_stats": {...},    # global_stats.json, only for --normalization global
        "embedder": {...},        # EmbedderTrainConfig.to_json(); "model" holds EmbedderConfig
    }

Training forms (`form`):
    * "in_batch" (default; docs/embedder.md has the measurement): each step draws P speakers
      and K segments of each (random utterances, random 40-frame crops, seeded) and the loss
      takes every pair inside the batch.
    * "pairs": the pair builder's pairs (`speechpipe pairs`, pairs/train/*.tfrecord.gz under
      `pairs_dir`), resolved to segments by `speechpipe.speakers.pair_dataset`.

Validation: every `eval_every_steps` steps, utterance embeddings of the validation speakers
(eval_files) and the EER over all their utterance pairs; the best weights by that EER are kept
and exported. Training stops after `max_seconds` of wall-clock time (validation included),
`max_steps`, or `patience_evals` evaluations without a better validation EER. The clustering
threshold for "number of speakers not given" is chosen on the validation speakers with the
best weights and saved with the model.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from speechpipe.speakers import speaker_eval
from speechpipe.config import FeatureConfig
from speechpipe.audio.features import global_mean_std
from speechpipe.speakers.embedder import (
    EmbedderConfig,
    build_base_network,
    build_siamese_model,
    clustering_distances,
    embed_utterances,
    embedding_model,
    export_embedder,
    LinearBackend,
    fit_lda,
    loss_for,
    restore_network,
    score,
    seed002_keras_accuracy,
)
from speechpipe.training import (
    StopOnNonFiniteLoss,
    distribution_strategy,
    expand_files,
    record_dataset,
    set_mixed_precision,
    tensorboard,
)
from speechpipe.validation import ConfigError

log = logging.getLogger(__name__)

FORMS: Tuple[str, ...] = ("in_batch", "pairs")
RESULT_FILE = "training_result.json"


@dataclass(frozen=True)
class EmbedderTrainConfig:
    """How the embedder trains. Defaults are measured in docs/embedder.md."""

    model: EmbedderConfig = field(default_factory=EmbedderConfig)
    form: str = "in_batch"
    speakers_per_batch: int = 16  # P (in_batch)
    segments_per_speaker: int = 8  # K (in_batch): a batch of P x K = 128 segments
    pairs_per_batch: int = 64  # pairs form: 128 segments a step, the in-batch form's cost
    # In-batch form: each real speaker also appears as "virtual speakers" whose features are
    # warped along the frequency axis by these factors (vocal-tract-length perturbation); a
    # warped copy counts as another speaker. () = off.
    warp_factors: Tuple[float, ...] = ()
    # Channel augmentation (in-batch form): each training segment gets a random gain, uniform in
    # +-channel_gain_db, and a random first-order tilt filter 1 - a z^-1, a uniform in
    # +-channel_tilt, applied to its log-mel spectrum. Recording channels differ between a
    # speaker's sessions; this teaches the network that they do not change the speaker. 0 = off.
    channel_gain_db: float = 0.0
    channel_tilt: float = 0.0
    pairs_dir: Optional[str] = None  # the pair job's --out (pairs form)
    learning_rate: float = 1e-3  # Adam
    clipnorm: float = 1.0
    max_seconds: float = 1200.0  # wall-clock budget of fit(), validation included
    max_steps: int = 0  # 0 = no step limit
    eval_every_steps: int = 200
    # Stop when this many evaluations in a row bring no better validation EER (0 = never): on
    # the demo corpus the validation EER stops improving well inside the budget.
    patience_evals: int = 6
    seed: int = 0
    mixed_precision: bool = True  # float16 compute on a GPU; CPU stays float32
    keras_accuracy: bool = False  # seed 002's Keras "accuracy" (pairs form), for the reproduction
    log_every_steps: int = 0  # > 0: print progress lines while training

    def validate(self) -> "EmbedderTrainConfig":
        self.model.validate()
        if self.form not in FORMS:
            raise ConfigError(f"form={self.form!r}: expected one of {FORMS}")
        if self.speakers_per_batch < 2 or self.segments_per_speaker < 2:
            raise ConfigError(f"speakers_per_batch={self.speakers_per_batch}, segments_per_speaker="
                              f"{self.segments_per_speaker}: the in-batch loss needs >= 2 of each")
        if any(not 0.5 <= w <= 2.0 or w == 1.0 for w in self.warp_factors):
            raise ConfigError(f"warp_factors={self.warp_factors}: need factors in [0.5, 2], other than 1")
        if self.channel_gain_db < 0 or not 0 <= self.channel_tilt < 1:
            raise ConfigError(f"channel_gain_db={self.channel_gain_db}, channel_tilt={self.channel_tilt}: need a gain "
                              ">= 0 dB and a tilt in [0, 1)")
        if (self.channel_gain_db or self.channel_tilt) and self.form != "in_batch":
            raise ConfigError("channel augmentation needs form='in_batch'")
        if self.warp_factors and self.form != "in_batch":
            raise ConfigError("warp_factors (virtual speakers) need form='in_batch'")
        if self.pairs_per_batch < 1:
            raise ConfigError(f"pairs_per_batch={self.pairs_per_batch}: need >= 1")
        if self.form == "pairs" and not self.pairs_dir:
            raise ConfigError("form='pairs' needs pairs_dir: the output folder of `speechpipe pairs`")
        if self.keras_accuracy and self.form != "pairs":
            raise ConfigError("keras_accuracy reproduces seed 002's siamese model: it needs form='pairs'")
        if self.learning_rate <= 0 or self.clipnorm <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate}, clipnorm={self.clipnorm}: must be positive")
        if self.max_seconds <= 0 and self.max_steps <= 0:
            raise ConfigError("need a budget: max_seconds > 0 or max_steps > 0")
        if self.patience_evals < 0:
            raise ConfigError(f"patience_evals={self.patience_evals}: need >= 0")
        if self.eval_every_steps < 1:
            raise ConfigError(f"eval_every_steps={self.eval_every_steps}: need >= 1")
        return self

    def to_json(self) -> Dict[str, object]:
        data = asdict(self)
        data["model"] = self.model.to_json()
        data["warp_factors"] = list(self.warp_factors)
        return data

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "EmbedderTrainConfig":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown embedder trainer setting(s): {', '.join(unknown)}")
        values = dict(data)
        values["model"] = EmbedderConfig.from_json(values.get("model", {}))
        if "warp_factors" in values:
            values["warp_factors"] = tuple(float(w) for w in values["warp_factors"])
        return cls(**values)


# ------------------------------------------------------------------------------------- inputs

@dataclass
class SplitData:
    """One split's utterances in memory, in record order."""

    utterances: List[str]
    speakers: List[str]
    sessions: List[str]
    features: List[np.ndarray]  # [frames, bins] float32

    def __len__(self) -> int:
        return len(self.utterances)


def load_split(patterns: Sequence[str]) -> SplitData:
    """Reads feature records (file patterns or Split-* folders) with the shared parser."""
    data = SplitData([], [], [], [])
    for example in record_dataset(list(patterns)).as_numpy_iterator():
        data.utterances.append(example["utterance"].decode("utf-8"))
        data.speakers.append(example["speaker"].decode("utf-8"))
        data.sessions.append(example["session"].decode("utf-8"))
        data.features.append(example["features"])
    if not data.utterances:
        raise ValueError(f"no utterances in {list(patterns)}")
    return data


def warp_bins(segments: np.ndarray, factor: float, mean: Optional[np.ndarray] = None,
              std: Optional[np.ndarray] = None) -> np.ndarray:
    """Segments [..., bins] resampled along the frequency axis: output bin b takes input bin
    b * factor (linear interpolation, clamped at the top bin), so a factor > 1 moves spectral
    features down, as a longer vocal tract does. With global normalisation (mean, std) the warp
    is applied to the unnormalised log spectrum and the result normalised again."""
    x = segments if mean is None else segments * std + mean
    bins = x.shape[-1]
    source = np.clip(np.arange(bins) * factor, 0, bins - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    weight = (source - low).astype(np.float32)
    y = x[..., low] * (1.0 - weight) + x[..., high] * weight
    return (y if mean is None else (y - mean) / std).astype(np.float32)


class ChannelAugmenter:
    """Random gain and first-order tilt, per segment, on log-mel or log-STFT features (natural
    log of power). With global normalisation (mean, std) it works on the unnormalised spectrum and
    normalises again; per-utterance normalisations would remove most of it, so it is for
    `none` and `global` features."""

    def __init__(self, feature_config: FeatureConfig, gain_db: float, tilt: float,
                 global_stats: Optional[Dict[str, object]] = None) -> None:
        import librosa

        self.gain = gain_db * np.log(10.0) / 10.0  # dB of power -> natural log of power
        self.tilt = tilt
        if feature_config.kind == "logmel":
            centres = librosa.mel_frequencies(feature_config.n_mels + 2, fmin=feature_config.fmin,
                                              fmax=feature_config.fmax)[1:-1]
        else:  # log STFT bins
            centres = np.fft.rfftfreq(feature_config.n_fft, 1.0 / feature_config.sample_rate)
        self.omega = 2 * np.pi * centres / feature_config.sample_rate  # the bins' centre frequencies
        self.mean = self.std = None
        if feature_config.normalization == "global":
            if global_stats is None:
                raise ConfigError("channel augmentation on globally normalised features needs global_stats")
            self.mean, self.std = global_mean_std(global_stats)
        elif feature_config.normalization != "none":
            raise ConfigError(f"channel augmentation needs --normalization global or none, not "
                              f"{feature_config.normalization} (a per-utterance normalisation removes the channel)")

    def __call__(self, segments: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = segments.shape[0]
        gain = rng.uniform(-self.gain, self.gain, n)
        a = rng.uniform(-self.tilt, self.tilt, n)
        # log |1 - a e^{-j omega}|^2 = log(1 - 2 a cos(omega) + a^2), per segment and bin
        response = np.log1p(-2 * a[:, None] * np.cos(self.omega)[None, :] + (a ** 2)[:, None])
        offset = (gain[:, None] + response)[:, None, :].astype(np.float32)  # [n, 1, bins]
        if self.mean is None:
            return segments + offset
        return segments + offset / self.std


class SpeakerBatches:
    """In-batch form input: P speakers x K segments per batch, speaker-major, seeded.

    Utterances shorter than one segment are left out (as the pair builder does). A speaker
    with fewer than K usable utterances gives some twice (other crops). With warp factors,
    the P speakers are drawn from the real speakers and their warped copies (virtual
    speakers; labels speaker * (1 + W) + w)."""

    def __init__(self, data: SplitData, segment_frames: int, speakers_per_batch: int,
                 segments_per_speaker: int, seed: int, warp_factors: Sequence[float] = (),
                 global_stats: Optional[Dict[str, object]] = None,
                 augment: Optional[ChannelAugmenter] = None) -> None:
        from speechpipe.speakers.pair_dataset import SegmentTable

        usable = [i for i, f in enumerate(data.features) if f.shape[0] >= segment_frames]
        self.excluded_short = len(data) - len(usable)
        if not usable:
            raise ValueError(f"no training utterance has {segment_frames} frames (one segment)")
        self.table = SegmentTable.from_arrays((data.utterances[i], data.features[i]) for i in usable)
        names = sorted({data.speakers[i] for i in usable})
        if len(names) < speakers_per_batch:
            raise ConfigError(f"speakers_per_batch={speakers_per_batch}, but the training split has "
                              f"{len(names)} speakers with a usable utterance")
        index = {name: k for k, name in enumerate(names)}
        speaker_of_row = np.array([index[data.speakers[i]] for i in usable])
        self.rows_by_speaker = [np.flatnonzero(speaker_of_row == k) for k in range(len(names))]
        self.speakers = names
        self.segment_frames = segment_frames
        self.p, self.k = speakers_per_batch, segments_per_speaker
        self.seed = seed
        self.factors = (1.0,) + tuple(warp_factors)
        self.augment = augment
        self.mean = self.std = None
        if warp_factors and global_stats is not None:
            self.mean, self.std = global_mean_std(global_stats)

    def batches(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        window = np.arange(self.segment_frames)
        table = self.table
        n_factors = len(self.factors)
        while True:
            virtual = rng.choice(len(self.rows_by_speaker) * n_factors, self.p, replace=False)
            speakers, warps = virtual // n_factors, virtual % n_factors
            rows = np.concatenate([
                rng.choice(self.rows_by_speaker[s], self.k, replace=len(self.rows_by_speaker[s]) < self.k)
                for s in speakers])
            span = table.lengths[rows] - self.segment_frames + 1
            offsets = np.minimum((rng.random(rows.size) * span).astype(np.int64), span - 1)
            x = table.frames[(table.starts[rows] + offsets)[:, None] + window[None, :]].astype(np.float32)
            for i, w in enumerate(warps):
                if w:
                    block = slice(i * self.k, (i + 1) * self.k)
                    x[block] = warp_bins(x[block], self.factors[w], self.mean, self.std)
            if self.augment is not None:
                x = self.augment(x, rng)
            yield x, np.repeat(virtual, self.k).astype(np.int32)

    def dataset(self) -> tf.data.Dataset:
        n, f, bins = self.p * self.k, self.segment_frames, self.table.n_bins
        return tf.data.Dataset.from_generator(self.batches, output_signature=(
            tf.TensorSpec([n, f, bins], tf.float32), tf.TensorSpec([n], tf.int32))).prefetch(2)


def pair_training_dataset(data: SplitData, config: EmbedderTrainConfig) -> Tuple[tf.data.Dataset, int]:
    """Pairs form input: the pair job's training pairs -> ((segments_a, segments_b), labels)."""
    from speechpipe.speakers.pair_dataset import PairReferences, SegmentTable, pair_dataset

    pattern = f"{config.pairs_dir.rstrip('/')}/pairs/train/pairs-*"  # local or gs://
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no training pairs match {pattern}: run `speechpipe pairs --out {config.pairs_dir}`")
    table = SegmentTable.from_arrays(zip(data.utterances, data.features))
    references = PairReferences.read(files, table, config.model.segment_frames)
    dataset = pair_dataset(references, table, config.model.segment_frames, config.pairs_per_batch,
                           training=True, seed=config.seed, repeat=True, drop_remainder=True)
    return dataset, len(references)


# --------------------------------------------------------------------------------- validation

@dataclass
class Evaluation:
    verification: speaker_eval.Verification
    embeddings: np.ndarray


def evaluate_split(model: keras.Model, data: SplitData, config: EmbedderConfig,
                   trials: Optional[Sequence[Tuple[int, str, str]]] = None,
                   backend: Optional[LinearBackend] = None) -> Evaluation:
    """Utterance embeddings of a split (through the back end, when one is given) and the EER /
    minDCF of its trials (default: every pair of its utterances)."""
    embeddings = embed_utterances(model, data.features, config)
    return verify(embeddings if backend is None else backend.apply(embeddings), data, config, trials)


def verify(embeddings: np.ndarray, data: SplitData, config: EmbedderConfig,
           trials: Optional[Sequence[Tuple[int, str, str]]] = None) -> Evaluation:
    """The EER / minDCF of a split's trials (default: every pair of its utterances) on given
    utterance embeddings."""
    by_utterance = dict(zip(data.utterances, embeddings))
    if trials is None:
        trials = speaker_eval.all_pairs_trials(data.utterances, data.speakers)
    scores, labels = speaker_eval.trial_scores(by_utterance, trials, lambda a, b: score(a, b, config.scoring))
    return Evaluation(speaker_eval.verification(scores, labels), embeddings)


def fit_backend(model: keras.Model, data: SplitData, config: EmbedderConfig) -> Optional[LinearBackend]:
    """The configured back end fitted on `data` (the training speakers), or None."""
    if config.backend == "none":
        return None
    embeddings = embed_utterances(model, data.features, config)
    return fit_lda(embeddings, data.speakers, config.lda_dims, config.lda_shrinkage, config.lda_shrink_toward)


class ValidationEER(keras.callbacks.Callback):
    """At each epoch end: the validation EER (logged as val_eer / val_min_dcf for TensorBoard),
    the history, and the best weights, restored when training ends. Also enforces the time and
    step budget at every batch. With a back end, each evaluation first fits it on the training
    speakers (`train_data`), so that the weights are chosen by what the export will compute."""

    def __init__(self, base: keras.Model, data: SplitData, config: EmbedderTrainConfig,
                 train_data: Optional[SplitData] = None) -> None:
        super().__init__()
        if config.model.backend != "none" and train_data is None:
            raise ValueError(f"backend={config.model.backend!r}: validation needs the training split to fit it on")
        self.train_data = train_data
        self.base = base
        self.embedder = embedding_model(base, config.model)
        self.data = data
        self.config = config
        self.trials = speaker_eval.all_pairs_trials(data.utterances, data.speakers)
        self.history: List[Dict[str, float]] = []
        self.best_eer = float("inf")
        self.best_step = 0
        self.best_weights: Optional[List[np.ndarray]] = None
        self.best_backend: Optional[LinearBackend] = None  # fitted on the best weights
        self.steps = 0
        self.started = 0.0
        self.eval_seconds = 0.0
        self.budget_reached = False
        self.stopped_early = False
        self._since_best = 0

    def on_train_begin(self, logs=None) -> None:
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.steps += 1
        c = self.config
        if (c.max_seconds > 0 and time.time() - self.started >= c.max_seconds) or (0 < c.max_steps <= self.steps):
            self.budget_reached = True
            self.model.stop_training = True
        if c.log_every_steps and self.steps % c.log_every_steps == 0:
            print(f"  step {self.steps}: loss {float((logs or {}).get('loss', float('nan'))):.4f} "
                  f"({time.time() - self.started:.0f} s)", flush=True)

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs if logs is not None else {}
        t0 = time.time()
        backend = fit_backend(self.embedder, self.train_data, self.config.model) if self.train_data else None
        result = evaluate_split(self.embedder, self.data, self.config.model, self.trials, backend).verification
        self.eval_seconds += time.time() - t0
        logs["val_eer"] = result.eer
        logs["val_min_dcf"] = result.min_dcf
        row = {"epoch": epoch + 1, "step": self.steps, "seconds": round(time.time() - self.started, 1),
               "loss": float(logs.get("loss", float("nan"))), "val_eer": result.eer, "val_min_dcf": result.min_dcf}
        if "accuracy" in logs:
            row["keras_accuracy"] = float(logs["accuracy"])
        self.history.append(row)
        if result.eer < self.best_eer:
            self.best_eer, self.best_step = result.eer, self.steps
            self.best_weights, self.best_backend = self.base.get_weights(), backend
            self._since_best = 0
        else:
            self._since_best += 1
            if 0 < self.config.patience_evals <= self._since_best:
                self.stopped_early = True
                self.model.stop_training = True
        if self.config.log_every_steps:
            print(f"  eval at step {self.steps} ({row['seconds']:.0f} s): loss {row['loss']:.4f} "
                  f"val EER {100 * result.eer:.2f} % minDCF {result.min_dcf:.3f}", flush=True)

    def on_train_end(self, logs=None) -> None:
        if self.best_weights is not None:
            self.base.set_weights(self.best_weights)


# ------------------------------------------------------------------------------------ training

@dataclass
class TrainResult:
    base: keras.Model
    embedder: keras.Model  # the embedding layer; the export applies `backend` after it
    backend: Optional[LinearBackend]
    summary: Dict[str, object]


def _set_seeds(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow


def train(train_files: Sequence[str], eval_files: Sequence[str], feature_config: FeatureConfig,
          serving_model_dir: Optional[str] = None, log_dir: Optional[str] = None,
          config: EmbedderTrainConfig = EmbedderTrainConfig(),
          global_stats: Optional[Dict[str, object]] = None, warm_start_from: Optional[str] = None) -> TrainResult:
    """Trains on the training speakers, keeps the weights with the best validation EER,
    chooses the clustering threshold on the validation speakers, and exports the `embed`
    SavedModel to `serving_model_dir` (with training_result.json beside it) when given.
    `warm_start_from`: an exported embedder (the champion) whose network weights are the
    starting point when the architecture agrees; otherwise training starts from scratch and
    the summary's `warm_start` says why."""
    config = replace(config, model=replace(config.model, n_bins=feature_config.n_bins)).validate()
    if feature_config.normalization in ("cmvn", "minmax"):
        log.warning("features normalised per utterance (%s) lose the long-term spectrum, which carries most of a "
                    "speaker's identity: the embedder learns better on --normalization global (docs/embedder.md)",
                    feature_config.normalization)
    train_files, eval_files = expand_files(train_files), expand_files(eval_files)
    _set_seeds(config.seed)
    set_mixed_precision(config.mixed_precision)
    loaded = time.time()
    train_data, eval_data = load_split(train_files), load_split(eval_files)
    if len(set(train_data.speakers) & set(eval_data.speakers)):
        raise ValueError("training and validation share speakers: the embedder is judged on unseen speakers")
    if len(set(eval_data.speakers)) < 2:
        raise ValueError("validation needs at least 2 speakers (the EER needs different-speaker trials)")

    strategy = distribution_strategy()
    replicas = strategy.num_replicas_in_sync
    inputs: Dict[str, object] = {"train_utterances": len(train_data), "validation_utterances": len(eval_data),
                                 "train_speakers": len(set(train_data.speakers)),
                                 "validation_speakers": len(set(eval_data.speakers)), "replicas": replicas}
    if config.form == "in_batch":
        if config.speakers_per_batch % replicas:
            raise ConfigError(f"speakers_per_batch={config.speakers_per_batch} must divide by the {replicas} "
                              "replicas, so that every replica holds whole speakers")
        if feature_config.normalization == "global" and config.warp_factors and global_stats is None:
            raise ConfigError("warp_factors on globally normalised features need global_stats (global_stats.json)")
        augment = None
        if config.channel_gain_db or config.channel_tilt:
            augment = ChannelAugmenter(feature_config, config.channel_gain_db, config.channel_tilt, global_stats)
        sampler = SpeakerBatches(train_data, config.model.segment_frames, config.speakers_per_batch,
                                 config.segments_per_speaker, config.seed, config.warp_factors, global_stats, augment)
        dataset = sampler.dataset()
        inputs["excluded_short"] = sampler.excluded_short
        segments_per_step = config.speakers_per_batch * config.segments_per_speaker
    else:
        dataset, inputs["train_pairs"] = pair_training_dataset(train_data, config)
        segments_per_step = 2 * config.pairs_per_batch
    inputs["load_seconds"] = round(time.time() - loaded, 1)

    with strategy.scope():
        base = build_base_network(config.model)
        warm: Dict[str, object] = {"warm_start": False, "from": warm_start_from, "reason": "no champion given"}
        if warm_start_from:
            try:
                restore_network(base, warm_start_from)
                warm["warm_start"], warm["reason"] = True, "champion weights restored"
                log.info("warm start from the champion: %s", warm_start_from)
            except (ValueError, tf.errors.OpError, AssertionError) as error:
                warm["reason"] = f"champion's architecture differs, trained from scratch: {error}"[:500]
                log.warning("%s", warm["reason"])
                base = build_base_network(config.model)
        model = base if config.form == "in_batch" else build_siamese_model(base)
        metrics = [keras.metrics.MeanMetricWrapper(seed002_keras_accuracy, name="accuracy")] if config.keras_accuracy else []
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
                      loss=loss_for(config.model, config.form), metrics=metrics)
    validation = ValidationEER(base, eval_data, config, train_data if config.model.backend != "none" else None)
    callbacks: List[keras.callbacks.Callback] = [StopOnNonFiniteLoss(), validation]
    if log_dir:
        callbacks.append(tensorboard(log_dir))  # after ValidationEER, which adds val_eer to the logs
    epochs = 1_000_000 if config.max_steps <= 0 else -(-config.max_steps // config.eval_every_steps)
    started = time.time()
    model.fit(dataset, steps_per_epoch=config.eval_every_steps, epochs=epochs, callbacks=callbacks, verbose=0)
    train_seconds = time.time() - started

    embedder = embedding_model(base, config.model)
    backend_info: Dict[str, object] = {"kind": config.model.backend}
    # Fitted on the training speakers only (validation stays unseen, for the threshold below), at
    # the best evaluation, whose weights the model now holds.
    backend = validation.best_backend
    if backend is None and config.model.backend != "none":
        backend = fit_backend(embedder, train_data, config.model)
    raw = embed_utterances(embedder, eval_data.features, config.model)
    final = verify(raw if backend is None else backend.apply(raw), eval_data, config.model)
    if backend is not None:
        backend_info.update(backend.to_json(),
                            validation_without_backend=verify(raw, eval_data, config.model).verification.to_json())
    tree = speaker_eval.linkage_tree(clustering_distances(final.embeddings, config.model), config.model.linkage)
    threshold, validation_mr = speaker_eval.best_threshold(tree, eval_data.speakers)
    summary: Dict[str, object] = {
        "config": config.to_json(),
        "features": feature_config.to_json(),
        "inputs": inputs,
        "steps": validation.steps,
        "segments_seen": validation.steps * segments_per_step,
        "train_seconds": round(train_seconds, 1),
        "validation_seconds": round(validation.eval_seconds, 1),
        "budget_reached": validation.budget_reached,
        "stopped_early": validation.stopped_early,
        "best_step": validation.best_step,
        "best_val_eer": validation.best_eer,
        "validation": final.verification.to_json(),
        "backend": backend_info,
        "cluster_threshold": threshold,
        "validation_mr_at_threshold": validation_mr,
        "history": validation.history,
        "warm_start": warm,
    }
    if serving_model_dir:
        export_embedder(serving_model_dir, base, config.model, feature_config, global_stats,
                        extra={"cluster_threshold": threshold, "best_val_eer": validation.best_eer}, backend=backend)
        with tf.io.gfile.GFile(f"{serving_model_dir.rstrip('/')}/{RESULT_FILE}", "w") as f:  # may be gs://
            f.write(json.dumps(summary, indent=1))
    return TrainResult(base, embedder, backend, summary)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (see the module docstring for custom_config). fn_args.train_steps,
    when set, becomes the step budget (max_steps); the time budget still applies. With
    `"warm_start": true` (the default) and a `base_model` (the pipeline's champion), training
    starts from the champion's weights when the architecture agrees. Global statistics, when the
    normalisation needs them and custom_config has none, are read from the features' folder."""
    from speechpipe.training import find_global_stats

    custom = dict(fn_args.custom_config or {})
    unknown = sorted(set(custom) - {"features", "global_stats", "embedder", "warm_start"})
    if unknown:
        raise ConfigError(f"custom_config: unknown key(s) {', '.join(unknown)}; expected features, global_stats, "
                          "embedder, warm_start")
    if "features" not in custom:
        raise ConfigError("custom_config needs 'features': the feature job's summary.json 'features' entry")
    feature_config = FeatureConfig.from_json(custom["features"])
    config = EmbedderTrainConfig.from_json(custom.get("embedder", {}))
    if getattr(fn_args, "train_steps", None):
        config = replace(config, max_steps=int(fn_args.train_steps))
    global_stats = custom.get("global_stats")
    if feature_config.normalization == "global" and not global_stats:
        global_stats = find_global_stats(fn_args.train_files)
    base_model = getattr(fn_args, "base_model", None) if custom.get("warm_start", True) else None
    log_dir = os.path.join(fn_args.model_run_dir, "tensorboard") if fn_args.model_run_dir else None
    train(fn_args.train_files, fn_args.eval_files, feature_config, fn_args.serving_model_dir, log_dir, config,
          global_stats, warm_start_from=base_model or None)
