"""The siamese speaker embedder (seed 002's model, made to separate speakers).

Model
    A shared base network maps one segment (40 frames x bins) to a probability distribution:
    BLSTM -> dropout -> BLSTM (last states) -> dense (ReLU) -> dense -> softmax.
    With `input_statistics` (default) the segment's per-bin mean and standard deviation join the
    BLSTM's summary before the dense layers: the long-term spectrum, which carries most of a
    speaker's identity, reaches the embedding directly instead of through the LSTMs' states.
    While training only, SpecAugment masks and Gaussian noise regularise the input.

Loss (pairwise KL + hinge, Hsu & Kira 2016; Lukic et al. 2016/2017)
    For a pair of branch outputs p, q and margin m:
        same speaker:       l(p, q) = KL(p || q)
        different speakers: l(p, q) = max(0, m - KL(p || q))
    The reference implementations add l(p, q) + l(q, p); speechpipe uses the mean of the two
    directions, 1/2 [l(p, q) + l(q, p)], which is the same objective on the margin's scale:
    identical outputs cost 0 for a same-speaker pair and exactly m for a different one.

    Numerics: each distribution is smoothed, p~ = (p + eps) / (1 + D eps) -- still a
    distribution, so KL(p~ || q~) >= 0 -- and its log is taken in log space as
    log(p + eps) - log1p(D eps). Every term is bounded (KL <= log((1 + D eps) / eps), 16.1 for
    eps = 1e-7), so one-hot outputs give a finite loss and finite gradients.

    Training takes every pair inside a batch of P speakers x K segments (`InBatchKLHingeLoss`):
    KL(p_i || p_j) for all ordered pairs i != j at once, as sum_k p_ik log p_ik - p_i . log p_j
    (one matmul); same- and different-speaker pairs are averaged separately and weighted 1:1,
    the pair builder's default ratio. Seed 002's variant (PReLU output, one-sided KL of clipped
    outputs, explicit pairs, Keras "accuracy") is rebuilt in bench/seed002.py, which shows why it
    stayed at chance.

Embeddings
    `embedding="hidden_statistics"` (default) is the last dense layer below the output joined with
    the segment's input statistics; `"hidden"` the dense layer alone; `"output"` the output
    distribution (seed 002's). An utterance's embedding is the mean over its segments -- every 40-frame
    window with a hop of `eval_hop` (20) frames plus one aligned to the end
    (`speechpipe.speakers.pair_dataset.utterance_windows`); an utterance shorter than one segment gets
    one zero-padded window (zero is the normalised mean). Scores: cosine similarity, or the
    negative symmetric KL of two output distributions (`scoring="kl"`). The default back end
    (`backend="lda"`, `fit_lda`) projects embeddings onto the discriminants of the training
    speakers; clustering uses Ward linkage on unit-length embeddings (`clustering_distances`).

Export
    `export_embedder` writes a SavedModel whose signature `embed` takes raw 16 kHz float32
    waveforms [batch, samples] and their lengths [batch] and returns utterance embeddings, the
    features computed in the graph by `speechpipe.audio.tf_features.GraphFeatures`;
    `embed_segments` embeds already computed segments.

Modules: `config` (EmbedderConfig, EmbedderTrainConfig; no TensorFlow), `network`, `losses`, `scoring` (embeddings, scores, the LDA
back end), `export` (the SavedModel, warm-start restore, loading back). The names below are the
package's public API, re-exported so that callers need not know which module holds what.
"""

from importlib import import_module
from typing import Any

from speechpipe.speakers.embedder.config import (  # noqa: F401
    BACKENDS,
    CONFIG_FILE,
    EMBEDDING_LAYERS,
    HIDDEN_LAYER,
    INPUT_STATISTICS_LAYER,
    LDA_SHRINK_TARGETS,
    LEGACY_SETTINGS,
    LINKAGES,
    OUTPUT_LAYER,
    POOLINGS,
    REMOVED_SETTINGS,
    SCORINGS,
    EmbedderConfig,
    EmbedderTrainConfig,
    with_legacy_settings,
)

# The names of the modules that need TensorFlow, imported on first use: the configs above are
# read by the run configuration and the CLI, which must not pay for TensorFlow to check a run.
_LAZY = {
    "export": ("EmbedderModule", "LoadedEmbedder", "export_embedder", "load_embedder", "restore_network"),
    "losses": (
        "InBatchKLHingeLoss",
        "in_batch_kl_hinge_loss",
        "kl_divergence",
        "kl_hinge_pair_loss",
        "log_distribution",
        "loss_for",
        "pairwise_kl_matrix",
    ),
    "network": ("CosineLogits", "SpecAugment", "StatisticsPooling", "build_base_network", "embedding_model"),
    "scoring": (
        "LinearBackend",
        "clustering_distances",
        "distance_matrix",
        "embed_segments",
        "embed_utterances",
        "fit_lda",
        "score",
        "segment_windows",
    ),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_MODULE_OF))
