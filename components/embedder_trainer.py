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
(eval_files) and the EER over all their utterance pairs; the best weights by that EER are kept
and exported. Training stops after `max_seconds` of wall-clock time (validation included),
`max_steps`, or `patience_evals` evaluations without a better validation EER. The clustering
threshold for "number of speakers not given" is chosen on the validation speakers with the
best weights and saved with the model.
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
    embeddings: np.ndarray


def evaluate_split(
    model: keras.Model,
    data: SplitData,
    config: EmbedderConfig,
    trials: Optional[Sequence[Tuple[int, str, str]]] = None,
    backend: Optional[LinearBackend] = None,
) -> Evaluation:
    """Utterance embeddings of a split (through the back end, when one is given) and the EER /
    minDCF of its trials (default: every pair of its utterances)."""
    embeddings = embed_utterances(model, data.features, config)
    return verify(embeddings if backend is None else backend.apply(embeddings), data, config, trials)


def verify(
    embeddings: np.ndarray,
    data: SplitData,
    config: EmbedderConfig,
    trials: Optional[Sequence[Tuple[int, str, str]]] = None,
) -> Evaluation:
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
    trials = speaker_eval.all_pairs_trials(splits.validation.utterances, splits.validation.speakers)

    def evaluate():
        backend = fit_backend(embedder, splits.train, config.model)
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
    # Fitted on the training speakers only (validation stays unseen, for the threshold below), at
    # the best evaluation, whose weights the model now holds.
    backend = validation.best_state
    if backend is None and config.model.backend != "none":
        backend = fit_backend(embedder, splits.train, config.model)
    eval_data = splits.validation
    raw = embed_utterances(embedder, eval_data.features, config.model)
    final = verify(raw if backend is None else backend.apply(raw), eval_data, config.model)
    if backend is not None:
        backend_info.update(
            backend.to_json(), validation_without_backend=verify(raw, eval_data, config.model).verification.to_json()
        )
    tree = speaker_eval.linkage_tree(clustering_distances(final.embeddings, config.model), config.model.linkage)
    threshold, validation_mr = speaker_eval.best_threshold(tree, eval_data.speakers)
    summary: Dict[str, object] = {
        "config": config.to_json(),
        "features": feature_config.to_json(),
        "inputs": splits.inputs,
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
            extra={"cluster_threshold": threshold, "best_val_eer": validation.best},
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
