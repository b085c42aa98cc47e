"""Where the embedder's gap to its bar comes from: the same data through simpler models.

    .venv/bin/python -m bench bench_embedder_ceiling

On the embedder bench's features (the bench corpus, bench/corpus.py; global normalisation),
every 40-frame window (the embedder's segment) is reduced to its per-bin mean and standard
deviation, and an utterance's embedding is the mean over its windows (hop 20), as the BLSTM's
is. Validation EER over every pair of validation utterances, cosine scoring:

- LDA fitted on the training speakers' window statistics (a linear ceiling);
- an MLP on the same statistics (dense 256 ReLU, dropout 0.5, softmax) trained with speechpipe's
  in-batch KL hinge loss (P 16 x K 8, margin 2, Adam 1e-3), for each output size in
  BENCH_CEILING_OUTPUTS (default 128,2048), BENCH_CEILING_STEPS steps (default 2000); both its
  output distribution and its hidden layer are scored.

Compare with the BLSTM's validation EER in bench_embedder (docs/embedder.md, "Where the gap to
the bar is"). Nothing about time is asserted.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from bench.corpus import CACHE, bench_corpus, derived_dir

WINDOW, HOP = 40, 20


def window_statistics(features: np.ndarray) -> np.ndarray:
    """[windows, 2 x bins]: each window's per-bin mean and std (one window when shorter)."""
    starts = range(0, max(1, features.shape[0] - WINDOW + 1), HOP)
    return np.stack(
        [np.concatenate([features[s : s + WINDOW].mean(0), features[s : s + WINDOW].std(0)]) for s in starts]
    ).astype(np.float32)


def validation_eer(embeddings: np.ndarray, speakers: Sequence[str]) -> float:
    from speechpipe.speakers import speaker_eval

    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    upper = np.triu_indices(len(speakers), 1)
    labels = (np.asarray(speakers)[:, None] == np.asarray(speakers)[None, :])[upper].astype(int)
    return speaker_eval.verification((e @ e.T)[upper], labels).eer


def _load(features: str) -> Tuple[Dict[str, np.ndarray], List[np.ndarray], List[str]]:
    from speechpipe.io import records

    train: Dict[str, List[np.ndarray]] = {}
    for u in records.read_split(features, "train"):
        train.setdefault(u.speaker, []).append(window_statistics(u.features))
    validation = list(records.read_split(features, "validation"))
    return (
        {s: np.concatenate(v) for s, v in train.items()},
        [window_statistics(u.features) for u in validation],
        [u.speaker for u in validation],
    )


def lda_eer(train: Dict[str, np.ndarray], validation: List[np.ndarray], speakers: List[str], dims: int = 40) -> float:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = np.concatenate(list(train.values()))
    y = np.concatenate([[s] * len(v) for s, v in train.items()])
    lda = LinearDiscriminantAnalysis(n_components=min(dims, len(train) - 1)).fit(x, y)

    def embed(windows: np.ndarray) -> np.ndarray:
        z = lda.transform(windows)
        return (z / np.linalg.norm(z, axis=1, keepdims=True)).mean(0)

    return validation_eer(np.stack([embed(v) for v in validation]), speakers)


def mlp_eers(
    train: Dict[str, np.ndarray],
    validation: List[np.ndarray],
    speakers: List[str],
    outputs: int,
    steps: int,
    seed: int = 0,
) -> Tuple[float, float]:
    """(output EER, hidden EER) of the MLP after `steps` steps."""
    import tensorflow as tf
    import tf_keras as keras

    from speechpipe.speakers.embedder import InBatchKLHingeLoss

    tf.keras.utils.set_random_seed(seed)
    inputs = keras.Input((next(iter(train.values())).shape[1],))
    hidden = keras.layers.Dense(256, activation="relu")(inputs)
    out = keras.layers.Dense(outputs, activation="softmax")(keras.layers.Dropout(0.5)(hidden))
    model, hidden_model = keras.Model(inputs, out), keras.Model(inputs, hidden)
    loss, optimizer = InBatchKLHingeLoss(margin=2.0), keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

    rng = np.random.default_rng(seed)
    names = sorted(train)
    for _ in range(steps):
        chosen = rng.choice(len(names), 16, replace=False)
        x = np.concatenate([train[names[i]][rng.integers(0, len(train[names[i]]), 8)] for i in chosen])
        step(x, np.repeat(chosen, 8).astype(np.int32))
    return (
        validation_eer(np.stack([model(v).numpy().mean(0) for v in validation]), speakers),
        validation_eer(np.stack([hidden_model(v).numpy().mean(0) for v in validation]), speakers),
    )


def main() -> None:
    from bench import bench_embedder

    out = os.environ.get("BENCH_EMBEDDER_OUT") or os.path.join(CACHE, "embedder")
    corpus = bench_corpus()
    features = bench_embedder._features(corpus, derived_dir(out, corpus))
    train, validation, speakers = _load(features)
    print(
        f"{len(train)} training speakers, {sum(len(v) for v in train.values())} windows; "
        f"{len(set(speakers))} validation speakers, {len(speakers)} utterances"
    )
    started = time.time()
    print(
        f"LDA on window statistics: validation EER {100 * lda_eer(train, validation, speakers):.2f} % "
        f"({time.time() - started:.0f} s)"
    )
    steps = int(os.environ.get("BENCH_CEILING_STEPS", "2000"))
    for outputs in (int(o) for o in os.environ.get("BENCH_CEILING_OUTPUTS", "128,2048").split(",")):
        started = time.time()
        output_eer, hidden_eer = mlp_eers(train, validation, speakers, outputs, steps)
        print(
            f"MLP + KL hinge, output {outputs}, {steps} steps: validation EER {100 * output_eer:.2f} % (output), "
            f"{100 * hidden_eer:.2f} % (hidden layer) ({time.time() - started:.0f} s)"
        )


if __name__ == "__main__":
    main()
