"""TFX Trainer module for the siamese speaker embedder: `run_fn(fn_args)`, and `train(...)`,
which `run_fn` calls and which the bench and tests call without TFX.

    custom_config = {
        "features": {...},        # the feature job's summary.json "features" (FeatureConfig)
        "global_stats": {...},    # global_stats.json, only for --normalization global
        "embedder": {...},        # EmbedderTrainConfig.to_json(); "model" holds EmbedderConfig
        "warm_start": true,
    }
(the contract both trainers keep: speechpipe.components.trainer_contract).

Training input (speechpipe.components.speaker_block_gen writes it; `train` reads it): the pair
job's speaker blocks, streamed by tf.data (speechpipe.speakers.speaker_blocks.block_dataset):
each step takes P blocks of different speakers and K of each block's 2K stored crops, with a
random 40-frame window inside each (seeded), and the loss takes every pair inside the batch
(docs/embedder.md has the measurement against explicit pairs, which bench/ keeps). Memory is the
shuffle buffer's, whatever the corpus's size.

Validation: every `eval_every_steps` steps, utterance embeddings of at most
`validation_max_utterances` validation utterances (eval_files; their features streamed from the
split at each evaluation, speechpipe.speakers.split_stream) and the EER over all their pairs, or
a seeded sample of `max_trials` of them, with the back end fitted on at most
`backend_max_utterances` utterances of the pair job's back-end sample of the training speakers;
the best weights by that EER are kept and exported. Training stops after `max_seconds` of
wall-clock time (validation included), `max_steps`, or `patience_evals` evaluations without a
better validation EER. The clustering threshold for "number of speakers not given" is chosen on
the validation speakers (at most `cluster_max_speakers` of at most `cluster_max_utterances`
utterances each) with the best weights and saved with the model. training_result.json's
`inputs.evaluation_bounds` (and the export's embedder_config.json) record each cap and whether
it bound. Nothing here holds a split's features: memory is the buffers, the indexes (ids) and
the embeddings of the chosen utterances.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tf_keras as keras

from speechpipe.components import trainer_contract
from speechpipe.config import FeatureConfig
from speechpipe.filenames import BACKEND_SPLIT, SPLIT_PREFIX, split_dir
from speechpipe.io import storage
from speechpipe.speakers import speaker_eval
from speechpipe.speakers.backend_sample import BACKEND_DIR
from speechpipe.speakers.block_records import BLOCKS_DIR
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
from speechpipe.speakers.speaker_blocks import block_dataset, block_files, block_header
from speechpipe.speakers.split_stream import SplitIndex, read_index, stream_features
from speechpipe.training import (
    StopOnNonFiniteLoss,
    distribution_strategy,
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


@dataclass
class EvalSet:
    """Chosen utterances of a split, embedded afresh at each evaluation: their rows in the split's
    index (ascending), their speakers, and the record of the cap that chose them. Their features
    are streamed from the split each time (speechpipe.speakers.split_stream), never held."""

    index: SplitIndex
    rows: np.ndarray
    speakers: List[str]
    record: Dict[str, object]

    def __len__(self) -> int:
        return int(self.rows.size)

    def embed(self, model: keras.Model, config: EmbedderConfig) -> np.ndarray:
        return embed_utterances(model, stream_features(self.index, self.rows), config, count=len(self))


def eval_set(index: SplitIndex, max_utterances: int) -> EvalSet:
    """At most `max_utterances` utterances of `index`, as even over its speakers as the cap allows
    (seeded); all of them under the cap."""
    rows = speaker_eval.balanced_utterances(index.speakers, max_utterances, speaker_eval.SAMPLE_SEED)
    speakers = [index.speakers[k] for k in rows]
    return EvalSet(
        index,
        rows,
        speakers,
        {
            "max_utterances": max_utterances,
            "utterances": int(rows.size),
            "of_utterances": len(index),
            "speakers": len(set(speakers)),
            "of_speakers": len(set(index.speakers)),
            "bound": int(rows.size) < len(index),
        },
    )


def validation_trials(validation: EvalSet, config: EmbedderTrainConfig) -> speaker_eval.IndexTrials:
    """The validation trials among the chosen validation utterances: every pair up to
    `config.max_trials`, else a seeded sample of that many (speaker_eval.sample_trials)."""
    return speaker_eval.sample_trials(validation.speakers, config.max_trials, speaker_eval.SAMPLE_SEED)


def verify(
    embeddings: np.ndarray, trials: speaker_eval.IndexTrials, config: EmbedderConfig
) -> speaker_eval.Verification:
    """The EER / minDCF of `trials` over rows of `embeddings`, scored a chunk at a time."""
    scores = speaker_eval.index_scores(
        embeddings, trials.first, trials.second, lambda a, b: score(a, b, config.scoring)
    )
    return speaker_eval.verification(scores, trials.labels)


def fit_backend(model: keras.Model, sample: EvalSet, config: EmbedderConfig) -> Optional[LinearBackend]:
    """The configured back end fitted on the training utterances of `sample`, embedded once, or
    None."""
    if config.backend == "none":
        return None
    return fit_lda(
        sample.embed(model, config), sample.speakers, config.lda_dims, config.lda_shrinkage, config.lda_shrink_toward
    )


def cluster_threshold(
    embeddings: np.ndarray, speakers: Sequence[str], config: EmbedderTrainConfig
) -> Tuple[float, float, Dict[str, object]]:
    """(threshold, MR, record): the clustering cut with the lowest MR on at most
    `config.cluster_max_speakers` validation speakers of at most `config.cluster_max_utterances`
    utterances each (seeded; all of them under both caps)."""
    rows, record = speaker_eval.cluster_sample(
        speakers, config.cluster_max_speakers, config.cluster_max_utterances, speaker_eval.SAMPLE_SEED
    )
    tree = speaker_eval.linkage_tree(clustering_distances(embeddings[rows], config.model), config.model.linkage)
    threshold, mr = speaker_eval.best_threshold(tree, [speakers[k] for k in rows])
    return threshold, mr, record


# ------------------------------------------------------------------------------------ training


@dataclass
class TrainResult:
    base: keras.Model
    embedder: keras.Model  # the embedding layer; the export applies `backend` after it
    backend: Optional[LinearBackend]
    summary: Dict[str, object]


@dataclass
class TrainingInput:
    """What a run trains and validates on: the block shards it streams, the validation
    utterances and the back end's training sample (both streamed at each evaluation), and what
    the input counts say."""

    blocks: List[str]
    validation: EvalSet
    backend: EvalSet
    inputs: Dict[str, object]


def backend_files_for(blocks: Union[str, Sequence[str]]) -> List[str]:
    """Where the back-end sample lies beside the blocks: the pair job's `backend/<split>/` beside
    its `blocks/<split>/` (or under its --out), or an Examples artifact's Split-backend beside its
    Split-train (speechpipe.components.speaker_block_gen)."""
    found = []
    for pattern in [blocks] if isinstance(blocks, str) else list(blocks):
        folder = pattern.rstrip("/").removesuffix("/*").rstrip("/")
        name = storage.basename(folder)
        if name.startswith(SPLIT_PREFIX):  # an Examples artifact's split folder
            found.append(storage.join(storage.dirname(folder), split_dir(BACKEND_SPLIT)))
        elif storage.basename(storage.dirname(folder)) == BLOCKS_DIR:  # the pair job's blocks/<split>
            found.append(storage.join(storage.dirname(storage.dirname(folder)), BACKEND_DIR, name))
        else:  # the pair job's --out
            found.append(storage.join(folder, BACKEND_DIR, "train"))
    return found


def write_training_input(
    features: str, out: str, config: EmbedderTrainConfig = EmbedderTrainConfig(), beam_args: Sequence[str] = ()
) -> str:
    """The training input of `features` (a feature job's output or an Examples artifact) under
    `out`, as SpeakerBlockGen writes it in a pipeline: the pair job's speaker blocks of the
    training split (K = `config.segments_per_speaker` of 2K stored crops, `config.blocks_per_speaker`
    per speaker) and its back-end sample. Returns `out`, which `train` takes as `blocks`."""
    from speechpipe.components.speaker_block_gen import training_input_argv
    from speechpipe.jobs import pairs_job

    argv = training_input_argv(
        features,
        out,
        config.seed,
        config.segments_per_speaker,
        config.blocks_per_speaker,
        config.model.segment_frames,
        config.backend_max_utterances,
    )
    pairs_job.run(argv + list(beam_args))
    return out


def read_training_input(
    blocks: Union[str, Sequence[str]],
    eval_files: Sequence[str],
    backend_files: Optional[Sequence[str]],
    feature_config: FeatureConfig,
    config: EmbedderTrainConfig,
    replicas: int = 1,
) -> TrainingInput:
    """The block shards, and the indexes (ids only) of the validation split and the back end's
    sample, chosen under their caps; speaker-disjoint, with 2+ validation speakers (an EER needs
    both kinds of trial)."""
    if feature_config.normalization in ("cmvn", "minmax"):
        log.warning(
            "features normalised per utterance (%s) lose the long-term spectrum, which carries most of a "
            "speaker's identity: the embedder learns better on --normalization global (docs/embedder.md)",
            feature_config.normalization,
        )
    loaded = time.time()
    files = block_files(blocks)
    header = block_header(files)
    if header["num_bins"] != feature_config.n_bins:
        raise ConfigError(f"the blocks hold {header['num_bins']} bins, the features {feature_config.n_bins}")
    validation = eval_set(read_index(eval_files, min_speakers=2), config.validation_max_utterances)
    backend_index = read_index(backend_files or backend_files_for(blocks), min_speakers=2)
    backend = eval_set(backend_index, config.backend_max_utterances)
    shared = set(backend_index.speakers) & set(validation.index.speakers)
    if shared:
        raise ValueError(
            f"training and validation share speakers ({sorted(shared)[:3]} ...): the embedder is judged on unseen speakers"
        )
    # The back-end sample holds every training speaker, or (capped) at least cap/2 of them.
    train_speakers = len(set(backend_index.speakers))
    if train_speakers < config.speakers_per_batch:
        raise ConfigError(
            f"speakers_per_batch={config.speakers_per_batch}, but the training split has {train_speakers} "
            "speakers: a batch takes that many different speakers"
        )
    inputs: Dict[str, object] = {
        "block_files": len(files),
        "block_segments": header["max_segments"],
        "block_frames": header["stored_frames"],
        "validation_utterances": len(validation.index),
        "validation_speakers": len(set(validation.index.speakers)),
        "backend_sample_utterances": len(backend_index),
        "backend_sample_speakers": len(set(backend_index.speakers)),
        "replicas": replicas,
        "load_seconds": round(time.time() - loaded, 1),
    }
    return TrainingInput(files, validation, backend, inputs)


def best_weights_validation(
    base: keras.Model, data: TrainingInput, config: EmbedderTrainConfig
) -> Tuple[keras.Model, trainer_contract.BestWeights]:
    """The embedding model of `base` and the callback that keeps its best weights by the
    validation EER. With a back end, each evaluation first fits it on the training sample, so
    that the weights are chosen by what the export will compute."""
    embedder = embedding_model(base, config.model)
    trials = validation_trials(data.validation, config)

    def evaluate():
        backend = fit_backend(embedder, data.backend, config.model)
        embeddings = data.validation.embed(embedder, config.model)
        result = verify(embeddings if backend is None else backend.apply(embeddings), trials, config.model)
        return {"val_eer": result.eer, "val_min_dcf": result.min_dcf}, backend

    return embedder, trainer_contract.BestWeights(
        base,
        evaluate,
        "val_eer",
        patience=config.patience_evals,
        max_seconds=config.max_seconds,
        max_steps=config.max_steps,
        log_every_steps=config.log_every_steps,
        smoothing=config.validation_smoothing,
    )


def fit_epochs(config: EmbedderTrainConfig) -> int:
    """Keras epochs of `eval_every_steps` steps: one evaluation per epoch, the budgets bind."""
    return 1_000_000 if config.max_steps <= 0 else -(-config.max_steps // config.eval_every_steps)


def finish(
    base: keras.Model,
    embedder: keras.Model,
    validation: trainer_contract.BestWeights,
    data: TrainingInput,
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
        backend = fit_backend(embedder, data.backend, config.model)
    trials = validation_trials(data.validation, config)
    raw = data.validation.embed(embedder, config.model)
    embeddings = raw if backend is None else backend.apply(raw)
    final = verify(embeddings, trials, config.model)
    if backend is not None:
        backend_info.update(backend.to_json(), validation_without_backend=verify(raw, trials, config.model).to_json())
    threshold, validation_mr, clustered = cluster_threshold(embeddings, data.validation.speakers, config)
    # Every cap an evaluation ran under, and whether it left anything out.
    bounds = {
        "validation_trials": trials.to_json(),
        "validation_utterances": data.validation.record,
        "backend_utterances": data.backend.record if config.model.backend != "none" else None,
        "clustering": clustered,
    }
    summary: Dict[str, object] = {
        "config": config.to_json(),
        "features": feature_config.to_json(),
        "inputs": {**data.inputs, "evaluation_bounds": bounds},
        **validation.summary(),
        "segments_seen": validation.steps * segments_per_step,
        "train_seconds": round(train_seconds, 1),
        "best_val_eer": validation.best,
        "validation": final.to_json(),
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
    blocks: Union[str, Sequence[str]],
    eval_files: Sequence[str],
    feature_config: FeatureConfig,
    serving_model_dir: Optional[str] = None,
    log_dir: Optional[str] = None,
    config: EmbedderTrainConfig = EmbedderTrainConfig(),
    global_stats: Optional[Dict[str, object]] = None,
    champion: Optional[str] = None,
    warm_start_enabled: bool = True,
    backend_files: Optional[Sequence[str]] = None,
) -> TrainResult:
    """Trains on the training speakers' blocks (`blocks`: the pair job's --out, its
    blocks/<split>/, shard globs, or an Examples artifact's Split-train; from the champion's
    weights when `champion` is given and the architecture agrees), keeps the weights with the
    best validation EER on `eval_files`, chooses the clustering threshold on the validation
    speakers, and exports the `embed` SavedModel to `serving_model_dir` (with
    training_result.json beside it) when given. The back end is fitted on `backend_files`
    (training-speaker feature records; default: the back-end sample beside the blocks,
    `backend_files_for`)."""
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
    data = read_training_input(blocks, eval_files, backend_files, feature_config, config, replicas)
    batches = block_dataset(
        data.blocks, config.model.segment_frames, config.speakers_per_batch, config.segments_per_speaker, config.seed
    )

    with strategy.scope():
        base, warm = trainer_contract.warm_start(
            lambda: build_base_network(config.model), champion, restore_network, warm_start_enabled
        )
        base.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm), loss=loss_for(config.model)
        )
    embedder, validation = best_weights_validation(base, data, config)
    callbacks: List[keras.callbacks.Callback] = [StopOnNonFiniteLoss(), validation]
    if log_dir:
        callbacks.append(tensorboard(log_dir))  # after the validation, which adds val_eer to the logs
    started = time.time()
    base.fit(
        batches,
        steps_per_epoch=config.eval_every_steps,
        epochs=fit_epochs(config),
        callbacks=callbacks,
        verbose=0,
    )
    return finish(
        base,
        embedder,
        validation,
        data,
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
