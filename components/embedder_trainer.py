"""TFX Trainer module for the siamese speaker embedder: `run_fn(fn_args)`, and `train(...)`,
which `run_fn` calls and which the bench and tests call without TFX.

    custom_config = {
        "features": {...},        # the feature job's summary.json "features" (FeatureConfig)
        "global_stats": {...},    # global_stats.json, only for --normalization global
        "embedder": {...},        # EmbedderTrainConfig.to_json(); "model" holds EmbedderConfig
        "warm_start": true,
    }
(the contract both trainers keep: speechpipe.components.trainer_contract).

Training: each step draws P speakers and K segments of each (random utterances, random 40-frame
crops, seeded; speechpipe.speakers.speaker_batches) and the loss takes every pair inside the
batch (docs/embedder.md has the measurement against explicit pairs, which bench/ keeps).

Validation: every `eval_every_steps` steps, utterance embeddings of the validation speakers
(eval_files) and the EER over all their utterance pairs, or a seeded sample of `max_trials` of
them on a larger split, with the back end fitted on at most `backend_max_utterances` training
utterances; the best weights by that EER are kept and exported. Training stops after
`max_seconds` of wall-clock time (validation included), `max_steps`, or `patience_evals`
evaluations without a better validation EER. The clustering
threshold for "number of speakers not given" is chosen on the validation speakers (at most
`cluster_max_speakers` of at most `cluster_max_utterances` utterances each) with the best weights
and saved with the model. training_result.json's `inputs.evaluation_bounds` (and the export's
embedder_config.json) record each cap and whether it bound.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tf_keras as keras

from speechpipe.components import trainer_contract
from speechpipe.config import FeatureConfig
from speechpipe.speakers import speaker_eval
from speechpipe.speakers.embedder import (
    EmbedderConfig,
    EmbedderTrainConfig,
    LinearBackend,
    build_base_network,
    clustering_distances,
    embed_utterances,
    embedding_model,
    export_embedder,
    fit_lda,
    loss_for,
    restore_network,
    score,
)
from speechpipe.speakers.speaker_batches import SpeakerBatches
from speechpipe.speakers.split_data import SplitData, read_split
from speechpipe.training import (
    StopOnNonFiniteLoss,
    distribution_strategy,
    expand_files,
    set_mixed_precision,
    tensorboard,
)
from speechpipe.validation import ConfigError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- validation


@dataclass
class Evaluation:
    verification: speaker_eval.Verification
    embeddings: np.ndarray  # [utterances, E] float32


def validation_trials(data: SplitData, config: EmbedderTrainConfig) -> speaker_eval.IndexTrials:
    """The validation trials: every pair of the split's utterances up to `config.max_trials`,
    else a seeded sample of that many (speechpipe.speakers.speaker_eval.sample_trials)."""
    return speaker_eval.sample_trials(data.speakers, config.max_trials, speaker_eval.SAMPLE_SEED)


def evaluate_split(
    model: keras.Model,
    data: SplitData,
    config: EmbedderConfig,
    trials: Optional[speaker_eval.IndexTrials] = None,
    backend: Optional[LinearBackend] = None,
) -> Evaluation:
    """Utterance embeddings of a split (through the back end, when one is given) and the EER /
    minDCF of its trials (default: `sample_trials` at its default cap)."""
    embeddings = embed_utterances(model, data.features, config)
    return verify(embeddings if backend is None else backend.apply(embeddings), data, config, trials)


def verify(
    embeddings: np.ndarray,
    data: SplitData,
    config: EmbedderConfig,
    trials: Optional[speaker_eval.IndexTrials] = None,
) -> Evaluation:
    """The EER / minDCF of a split's trials (rows of `embeddings`; default: `sample_trials` at its
    default cap), scored a chunk at a time."""
    if trials is None:
        trials = speaker_eval.sample_trials(data.speakers)
    scores = speaker_eval.index_scores(
        embeddings, trials.first, trials.second, lambda a, b: score(a, b, config.scoring)
    )
    return Evaluation(speaker_eval.verification(scores, trials.labels), embeddings)


@dataclass
class BackendSample:
    """The training utterances the back end is fitted on, and the record of the cap."""

    rows: np.ndarray
    record: Dict[str, object]


def backend_sample(data: SplitData, config: EmbedderTrainConfig) -> BackendSample:
    """At most `config.backend_max_utterances` training utterances, as even over the speakers
    as the cap allows (seeded); all of them under the cap."""
    rows = speaker_eval.balanced_utterances(data.speakers, config.backend_max_utterances, speaker_eval.SAMPLE_SEED)
    return BackendSample(
        rows,
        {
            "max_utterances": config.backend_max_utterances,
            "utterances": int(rows.size),
            "of_utterances": len(data),
            "speakers": len({data.speakers[k] for k in rows}),
            "bound": int(rows.size) < len(data),
        },
    )


def fit_backend(
    model: keras.Model, data: SplitData, config: EmbedderConfig, rows: Optional[np.ndarray] = None
) -> Optional[LinearBackend]:
    """The configured back end fitted on `data` (the training speakers; only its `rows` when
    given: `backend_sample`), or None. The chosen utterances are embedded once."""
    if config.backend == "none":
        return None
    rows = np.arange(len(data)) if rows is None else rows
    embeddings = embed_utterances(model, [data.features[k] for k in rows], config)
    return fit_lda(
        embeddings, [data.speakers[k] for k in rows], config.lda_dims, config.lda_shrinkage, config.lda_shrink_toward
    )


def cluster_threshold(
    embeddings: np.ndarray, data: SplitData, config: EmbedderTrainConfig
) -> Tuple[float, float, Dict[str, object]]:
    """(threshold, MR, record): the clustering cut with the lowest MR on at most
    `config.cluster_max_speakers` validation speakers of at most `config.cluster_max_utterances`
    utterances each (seeded; all of them under both caps)."""
    rows, record = speaker_eval.cluster_sample(
        data.speakers, config.cluster_max_speakers, config.cluster_max_utterances, speaker_eval.SAMPLE_SEED
    )
    tree = speaker_eval.linkage_tree(clustering_distances(embeddings[rows], config.model), config.model.linkage)
    threshold, mr = speaker_eval.best_threshold(tree, [data.speakers[k] for k in rows])
    return threshold, mr, record


# ------------------------------------------------------------------------------------ training


@dataclass
class TrainResult:
    base: keras.Model
    embedder: keras.Model  # the embedding layer; the export applies `backend` after it
    backend: Optional[LinearBackend]
    summary: Dict[str, object]


@dataclass
class Splits:
    """The training and validation speakers in memory, checked, and what the input counts say."""

    train: SplitData
    validation: SplitData
    inputs: Dict[str, object]


def read_splits(
    train_files: Sequence[str], eval_files: Sequence[str], feature_config: FeatureConfig, replicas: int = 1
) -> Splits:
    """The two splits of a run; speaker-disjoint, with 2+ validation speakers (an EER needs both
    kinds of trial)."""
    if feature_config.normalization in ("cmvn", "minmax"):
        log.warning(
            "features normalised per utterance (%s) lose the long-term spectrum, which carries most of a "
            "speaker's identity: the embedder learns better on --normalization global (docs/embedder.md)",
            feature_config.normalization,
        )
    loaded = time.time()
    train_data = read_split(expand_files(train_files))
    eval_data = read_split(expand_files(eval_files), min_speakers=2)
    if len(set(train_data.speakers) & set(eval_data.speakers)):
        raise ValueError("training and validation share speakers: the embedder is judged on unseen speakers")
    inputs: Dict[str, object] = {
        "train_utterances": len(train_data),
        "validation_utterances": len(eval_data),
        "train_speakers": len(set(train_data.speakers)),
        "validation_speakers": len(set(eval_data.speakers)),
        "replicas": replicas,
        "load_seconds": round(time.time() - loaded, 1),
    }
    return Splits(train_data, eval_data, inputs)


def best_weights_validation(
    base: keras.Model, splits: Splits, config: EmbedderTrainConfig
) -> Tuple[keras.Model, trainer_contract.BestWeights]:
    """The embedding model of `base` and the callback that keeps its best weights by the
    validation EER. With a back end, each evaluation first fits it on the training speakers, so
    that the weights are chosen by what the export will compute."""
    embedder = embedding_model(base, config.model)
    trials = validation_trials(splits.validation, config)
    sample = backend_sample(splits.train, config)

    def evaluate():
        backend = fit_backend(embedder, splits.train, config.model, sample.rows)
        result = evaluate_split(embedder, splits.validation, config.model, trials, backend).verification
        return {"val_eer": result.eer, "val_min_dcf": result.min_dcf}, backend

    return embedder, trainer_contract.BestWeights(
        base,
        evaluate,
        "val_eer",
        patience=config.patience_evals,
        max_seconds=config.max_seconds,
        max_steps=config.max_steps,
        log_every_steps=config.log_every_steps,
    )


def fit_epochs(config: EmbedderTrainConfig) -> int:
    """Keras epochs of `eval_every_steps` steps: one evaluation per epoch, the budgets bind."""
    return 1_000_000 if config.max_steps <= 0 else -(-config.max_steps // config.eval_every_steps)


def finish(
    base: keras.Model,
    embedder: keras.Model,
    validation: trainer_contract.BestWeights,
    splits: Splits,
    config: EmbedderTrainConfig,
    feature_config: FeatureConfig,
    global_stats: Optional[Dict[str, object]],
    serving_model_dir: Optional[str],
    warm: trainer_contract.WarmStart,
    train_seconds: float,
    segments_per_step: int,
) -> TrainResult:
    """After fit (best weights restored): the back end at the best evaluation, the clustering
    threshold chosen on the validation speakers, the summary, and the export when asked for."""
    backend_info: Dict[str, object] = {"kind": config.model.backend}
    sample = backend_sample(splits.train, config)
    # Fitted on the training speakers only (validation stays unseen, for the threshold below), at
    # the best evaluation, whose weights the model now holds.
    backend = validation.best_state
    if backend is None and config.model.backend != "none":
        backend = fit_backend(embedder, splits.train, config.model, sample.rows)
    eval_data = splits.validation
    trials = validation_trials(eval_data, config)
    raw = embed_utterances(embedder, eval_data.features, config.model)
    final = verify(raw if backend is None else backend.apply(raw), eval_data, config.model, trials)
    if backend is not None:
        backend_info.update(
            backend.to_json(),
            validation_without_backend=verify(raw, eval_data, config.model, trials).verification.to_json(),
        )
    threshold, validation_mr, clustered = cluster_threshold(final.embeddings, eval_data, config)
    # Every cap an evaluation ran under, and whether it left anything out.
    bounds = {
        "validation_trials": trials.to_json(),
        "backend_utterances": sample.record if config.model.backend != "none" else None,
        "clustering": clustered,
    }
    summary: Dict[str, object] = {
        "config": config.to_json(),
        "features": feature_config.to_json(),
        "inputs": {**splits.inputs, "evaluation_bounds": bounds},
        **validation.summary(),
        "segments_seen": validation.steps * segments_per_step,
        "train_seconds": round(train_seconds, 1),
        "best_val_eer": validation.best,
        "validation": final.verification.to_json(),
        "backend": backend_info,
        "cluster_threshold": threshold,
        "validation_mr_at_threshold": validation_mr,
        "warm_start": warm.to_json(),
    }
    if serving_model_dir:
        export_embedder(
            serving_model_dir,
            base,
            config.model,
            feature_config,
            global_stats,
            extra={"cluster_threshold": threshold, "best_val_eer": validation.best, "evaluation_bounds": bounds},
            backend=backend,
        )
        trainer_contract.write_result(serving_model_dir, summary)
    return TrainResult(base, embedder, backend, summary)


def train(
    train_files: Sequence[str],
    eval_files: Sequence[str],
    feature_config: FeatureConfig,
    serving_model_dir: Optional[str] = None,
    log_dir: Optional[str] = None,
    config: EmbedderTrainConfig = EmbedderTrainConfig(),
    global_stats: Optional[Dict[str, object]] = None,
    champion: Optional[str] = None,
    warm_start_enabled: bool = True,
) -> TrainResult:
    """Trains on the training speakers (from the champion's weights when `champion` is given and
    the architecture agrees), keeps the weights with the best validation EER, chooses the
    clustering threshold on the validation speakers, and exports the `embed` SavedModel to
    `serving_model_dir` (with training_result.json beside it) when given."""
    config = replace(config, model=replace(config.model, n_bins=feature_config.n_bins)).validate()
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TensorFlow
    set_mixed_precision(config.mixed_precision)
    strategy = distribution_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.speakers_per_batch % replicas:
        raise ConfigError(
            f"speakers_per_batch={config.speakers_per_batch} must divide by the {replicas} "
            "replicas, so that every replica holds whole speakers"
        )
    splits = read_splits(train_files, eval_files, feature_config, replicas)
    sampler = SpeakerBatches(
        splits.train, config.model.segment_frames, config.speakers_per_batch, config.segments_per_speaker, config.seed
    )
    splits.inputs["excluded_short"] = sampler.excluded_short

    with strategy.scope():
        base, warm = trainer_contract.warm_start(
            lambda: build_base_network(config.model), champion, restore_network, warm_start_enabled
        )
        base.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm), loss=loss_for(config.model)
        )
    embedder, validation = best_weights_validation(base, splits, config)
    callbacks: List[keras.callbacks.Callback] = [StopOnNonFiniteLoss(), validation]
    if log_dir:
        callbacks.append(tensorboard(log_dir))  # after the validation, which adds val_eer to the logs
    started = time.time()
    base.fit(
        sampler.dataset(),
        steps_per_epoch=config.eval_every_steps,
        epochs=fit_epochs(config),
        callbacks=callbacks,
        verbose=0,
    )
    return finish(
        base,
        embedder,
        validation,
        splits,
        config,
        feature_config,
        global_stats,
        serving_model_dir,
        warm,
        time.time() - started,
        config.speakers_per_batch * config.segments_per_speaker,
    )


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (see the module docstring for custom_config). fn_args.train_steps,
    when set, becomes the step budget (max_steps); the time budget still applies."""
    trainer_contract.run_trainer(fn_args, "embedder", EmbedderTrainConfig.from_json, train)
