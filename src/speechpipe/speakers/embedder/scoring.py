"""Utterance embeddings (the mean over an utterance's segment windows), trial scores and
clustering distances, and the LDA back end fitted on the training speakers."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from speechpipe.speakers.embedder.config import LDA_SHRINK_TARGETS, SCORINGS, EmbedderConfig
from speechpipe.speakers.pair_dataset import EVAL_HOP, SEGMENT_FRAMES, utterance_windows
from speechpipe.validation import ConfigError


def segment_windows(features: np.ndarray, segment_frames: int = SEGMENT_FRAMES, hop: int = EVAL_HOP) -> np.ndarray:
    """An utterance's evaluation windows [windows, segment_frames, bins]: the pair builder's
    `utterance_windows`, and for an utterance shorter than one segment a single window padded
    with zeros (the graph export does the same). An utterance without frames is an error."""
    features = np.asarray(features, np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [frames, bins], got shape {features.shape}")
    frames = features.shape[0]
    if frames == 0:
        raise ValueError("an utterance without frames has no embedding")
    if frames < segment_frames:
        padded = np.zeros((segment_frames, features.shape[1]), np.float32)
        padded[:frames] = features
        return padded[None]
    return utterance_windows(features, segment_frames, hop)


# Traced inference functions, by model (weak keys: a model's function goes with the model; an
# attribute on the model would be tracked by Keras and saved with it).
_INFERENCE: "weakref.WeakKeyDictionary[keras.Model, Callable]" = weakref.WeakKeyDictionary()


def embed_segments(model: keras.Model, segments: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Runs `model` (inference mode) over segments [N, frames, bins] -> [N, E] float32."""
    call = _INFERENCE.get(model)
    if call is None:  # one traced function per model, not one per call
        ref = weakref.ref(model)  # the function must not keep its own key alive
        call = _INFERENCE[model] = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)
    out = [call(tf.constant(segments[i : i + batch_size])).numpy() for i in range(0, len(segments), batch_size)]
    return np.concatenate(out, 0).astype(np.float32) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def embed_utterances(
    model: keras.Model,
    features: Iterable[np.ndarray],
    config: EmbedderConfig,
    batch_size: int = 512,
    count: Optional[int] = None,
) -> np.ndarray:
    """Utterance embeddings [U, E] float32: the mean of each utterance's window embeddings.
    `features` may be a stream (speechpipe.speakers.split_stream.stream_features) of `count`
    utterances: windows are cut as the batches reach them and embedded `batch_size` at a time, so
    memory holds one batch of windows and the [U, E] result, never every utterance's windows or
    features; the batches are the same windows in the same order as one concatenation of all of
    them would give."""
    count = len(features) if count is None else count  # type: ignore[arg-type]
    if count == 0:
        raise ValueError("embed_utterances: no utterances")
    sums: Optional[np.ndarray] = None
    counts = np.zeros(count, np.int64)
    pending: List[np.ndarray] = []  # windows cut and not yet embedded, in utterance order
    owners: List[np.ndarray] = []  # the utterance of each pending window
    waiting = 0

    def embed_batches(final: bool) -> None:
        nonlocal sums, pending, owners, waiting
        if not waiting or (waiting < batch_size and not final):
            return
        windows, rows = np.concatenate(pending, 0), np.concatenate(owners, 0)
        take = len(windows) if final else len(windows) // batch_size * batch_size
        segments = embed_segments(model, windows[:take], batch_size).astype(np.float64)
        if sums is None:
            sums = np.zeros((count, segments.shape[1]), np.float64)
        np.add.at(sums, rows[:take], segments)  # in window order, as one sum per utterance would add
        pending, owners = [windows[take:]], [rows[take:]]
        waiting = len(windows) - take

    row = -1
    for row, utterance in enumerate(features):
        if row >= count:
            raise ValueError(f"embed_utterances: more than count={count} utterances")
        windows = segment_windows(utterance, config.segment_frames, config.eval_hop)
        counts[row] = len(windows)
        pending.append(windows)
        owners.append(np.full(len(windows), row, np.int64))
        waiting += len(windows)
        embed_batches(final=False)
    if row + 1 != count:
        raise ValueError(f"embed_utterances: {row + 1} utterances, count={count}")
    embed_batches(final=True)
    return (sums / counts[:, None]).astype(np.float32)


def _smoothed(e: np.ndarray, epsilon: float) -> np.ndarray:
    """Rows as distributions with the loss's smoothing (a mean of softmax outputs sums to 1)."""
    p = np.maximum(e, 0.0) + epsilon
    return p / p.sum(axis=1, keepdims=True)


def score(a: np.ndarray, b: np.ndarray, scoring: str = "cosine", epsilon: float = 1e-7) -> np.ndarray:
    """Scores of embedding pairs (rows of a and b), higher = more likely the same speaker:
    cosine similarity, or the negative symmetric KL of two distributions (`"kl"`)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"score: need two [N, E] arrays of one shape, got {a.shape} and {b.shape}")
    if scoring == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)
    if scoring == "kl":
        pa, pb = _smoothed(a, epsilon), _smoothed(b, epsilon)
        la, lb = np.log(pa), np.log(pb)
        return -(np.sum(pa * (la - lb), axis=1) + np.sum(pb * (lb - la), axis=1))
    raise ConfigError(f"scoring={scoring!r}: expected one of {SCORINGS}")


def distance_matrix(embeddings: np.ndarray, scoring: str = "cosine", epsilon: float = 1e-7) -> np.ndarray:
    """Pairwise distances [U, U] for clustering: 1 - cosine, or the symmetric KL."""
    e = np.asarray(embeddings, np.float64)
    if scoring == "cosine":
        unit = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        d = 1.0 - unit @ unit.T
    elif scoring == "kl":
        p = _smoothed(e, epsilon)
        log = np.log(p)
        neg_entropy = np.sum(p * log, axis=1)
        kl = neg_entropy[:, None] - p @ log.T  # KL(p_i || p_j)
        d = kl + kl.T
    else:
        raise ConfigError(f"scoring={scoring!r}: expected one of {SCORINGS}")
    d = np.maximum(d, 0.0)
    np.fill_diagonal(d, 0.0)
    return 0.5 * (d + d.T)


def clustering_distances(embeddings: np.ndarray, config: EmbedderConfig) -> np.ndarray:
    """The distances the configured linkage clusters on: for Ward, the Euclidean distance between
    unit-length embeddings, sqrt(2 (1 - cosine)) (Ward's merge costs hold for Euclidean
    distances only); otherwise the scoring's `distance_matrix`."""
    d = distance_matrix(embeddings, config.scoring, config.epsilon)
    return np.sqrt(2.0 * d) if config.linkage == "ward" else d


# ------------------------------------------------------------------------------------ back end


@dataclass(frozen=True)
class LinearBackend:
    """An affine map of embeddings, (e - mean) @ projection, fitted after training. Affine maps
    commute with the mean over an utterance's windows, so it applies per window or per utterance
    alike."""

    mean: np.ndarray  # [E]
    projection: np.ndarray  # [E, D]

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        return ((np.asarray(embeddings, np.float64) - self.mean) @ self.projection).astype(np.float32)

    def to_json(self) -> Dict[str, object]:
        return {"input_dims": int(self.projection.shape[0]), "output_dims": int(self.projection.shape[1])}


def fit_lda(
    embeddings: np.ndarray, speakers: Sequence[str], dims: int = 0, shrinkage: float = 0.1, shrink_toward: str = "total"
) -> LinearBackend:
    """Linear discriminant analysis of utterance embeddings [U, E] by speaker: the generalised
    eigenvectors of (between-speaker, within-speaker) covariance with the largest eigenvalues,
    scaled so that the within-speaker covariance becomes the identity. `dims` = 0 keeps
    speakers - 1 (the rank of the between-speaker covariance).

    `shrinkage` mixes the within-speaker covariance W with a target (regularised discriminant
    analysis; W is singular where units are dead or utterances are few):
    `shrink_toward="total"` (default) takes the total covariance T, scaled to W's size
    (tr(T^-1 W) / E): every direction is regularised in proportion to its own spread, which is
    ordinary shrinkage in the space whitened by T, and rescaling the embedding's axes changes
    nothing (up to T's ridge of 1e-6 of its mean variance, which keeps T invertible when units
    are dead). `"isotropic"` takes W's mean variance times the identity (exports recorded without
    this setting were made with it), which drowns the directions of small spread, and on a trained network
    those carry much of what tells unseen speakers apart (docs/embedder.md, on the back end and
    the embedding)."""
    from scipy.linalg import eigh

    if shrink_toward not in LDA_SHRINK_TARGETS:
        raise ValueError(f"fit_lda: shrink_toward={shrink_toward!r}, expected one of {LDA_SHRINK_TARGETS}")
    x = np.asarray(embeddings, np.float64)
    labels = np.asarray(speakers)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"fit_lda: need [U, E] embeddings and U speakers, got {x.shape} and {labels.shape}")
    names, index = np.unique(labels, return_inverse=True)
    if len(names) < 2:
        raise ValueError("fit_lda: needs at least 2 speakers")
    counts = np.bincount(index).astype(np.float64)
    means = np.zeros((len(names), x.shape[1]))
    np.add.at(means, index, x)
    means /= counts[:, None]
    mean = x.mean(axis=0)
    within = (x - means[index]).T @ (x - means[index]) / len(x)
    centred = (means - mean) * np.sqrt(counts / len(x))[:, None]
    between = centred.T @ centred
    identity = np.eye(len(within))
    if shrink_toward == "total":
        total = within + between
        total += 1e-6 * np.trace(total) / len(total) * identity
        target = np.trace(np.linalg.solve(total, within)) / len(total) * total
    else:
        target = np.trace(within) / len(within) * identity
    within = (1.0 - shrinkage) * within + shrinkage * target
    keep = min(dims or len(names) - 1, len(names) - 1, x.shape[1])
    values, vectors = eigh(between, within)  # vectors.T @ within @ vectors = I
    order = np.argsort(values)[::-1][:keep]
    return LinearBackend(mean.astype(np.float32), vectors[:, order].astype(np.float32))
