"""A pushed model ready for chunked serving: the one place where the three serving paths (the
CLI, the pyfunc flavor, the batch-inference job's RunInference handler) turn a SavedModel folder
and the chunk settings into `ChunkedTranscriber` / `ChunkedEmbedder`, so that none of them holds
its own copy of the chunking.

What an export records of itself says how: its feature settings (training_result.json or
assets.extra/embedder_config.json; the defaults where a folder records none, as
`model_sample_rate` assumes), the global normalisation statistics
(assets.extra/global_stats.json, written by exports since chunked serving), the phone inventory
and the embedder's window layout. The CTC frame stacking is read off the `logits` signature
itself.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from speechpipe.audio.decode import AudioRejected
from speechpipe.audio.stream import AudioStream
from speechpipe.config import ChunkConfig, FeatureConfig
from speechpipe.filenames import GLOBAL_STATS_FILE
from speechpipe.results.resolve import model_settings
from speechpipe.validation import validate_chunk_config

KINDS = ("ctc", "speaker")
# The network signature each kind's chunks go through.
CHUNK_SIGNATURES = {"ctc": "logits", "speaker": "embed_segments"}


class ChunkingUnavailable(ValueError):
    """A model that cannot be served in chunks (then serve it whole: chunk_seconds 0)."""


PROBE_FRAMES = 840  # frames // (frames // s) == s for every stacking s up to 12


class ServingModel:
    """`scan` each source once, then `transcribe` (ctc) or `embed` (speaker) the scanned ones."""

    def __init__(self, saved_model_dir: str, kind: str, chunking: ChunkConfig, model=None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: one of {KINDS}")
        validate_chunk_config(chunking)
        if not chunking.chunked:
            raise ChunkingUnavailable("chunk_seconds 0 serves whole files: no chunked model to build")
        import tensorflow as tf

        self.kind, self.chunking, self.saved_model_dir = kind, chunking, saved_model_dir
        self.model = model if model is not None else tf.saved_model.load(saved_model_dir)
        signature = CHUNK_SIGNATURES[kind]
        if signature not in self.model.signatures:
            raise ChunkingUnavailable(
                f"{saved_model_dir}: no `{signature}` signature (has {sorted(self.model.signatures)}): "
                "serve it whole (chunk_seconds 0)"
            )
        self.settings = model_settings(saved_model_dir)
        self.features = chunk_features_for(saved_model_dir)
        self.feature_config = self.features.config
        self.sample_rate = self.feature_config.sample_rate
        if kind == "ctc":
            self.engine = self._transcriber(self.model.signatures[signature])
        else:
            self.engine = self._embedder(self.model.signatures[signature])

    def _transcriber(self, logits):
        import numpy as np
        import tensorflow as tf

        from speechpipe.phones.ctc_chunks import ChunkedTranscriber
        from speechpipe.phones.inventory import DEFAULT_INVENTORY, load_inventory

        # The network's frame stacking, read from the model itself: a probe from which every
        # stacking up to 12 reads back exactly (8 frames read a stacking of 3 as 4).
        frames = PROBE_FRAMES
        probe = logits(
            features=tf.zeros([1, frames, self.feature_config.n_bins]), num_frames=tf.constant([frames], tf.int32)
        )
        frame_stack = frames // int(probe["logit_lengths"].numpy()[0])
        inventory = load_inventory(str((self.settings.get("config") or {}).get("inventory") or DEFAULT_INVENTORY))
        classes = int(np.shape(probe["logits"])[-1])
        if classes != len(inventory.phones) + 1:
            raise ChunkingUnavailable(
                f"{self.saved_model_dir}: {classes} output classes, but its inventory "
                f"{inventory.name if hasattr(inventory, 'name') else ''} has {len(inventory.phones)} phones + blank"
            )
        c = self.chunking
        return ChunkedTranscriber(
            logits, self.features, inventory.phones, frame_stack, c.chunk_seconds, c.overlap_seconds, c.batch_seconds
        )

    def _embedder(self, embed_segments):
        from speechpipe.speakers.embedder.chunks import ChunkedEmbedder
        from speechpipe.speakers.embedder.config import EmbedderConfig, with_legacy_settings

        config = EmbedderConfig.from_json(with_legacy_settings(dict(self.settings.get("embedder") or {})))
        windows_per_batch = max(
            1, int(self.chunking.batch_seconds * self.sample_rate / self.feature_config.hop_length / config.eval_hop)
        )
        return ChunkedEmbedder(
            embed_segments,
            self.features,
            config.segment_frames,
            config.eval_hop,
            self.chunking.chunk_seconds,
            max_windows=windows_per_batch,
        )

    def window_seconds(self) -> float:
        """The embedder's window: the shortest segment `embed(..., segment_seconds)` takes."""
        return embedder_window_seconds(self.saved_model_dir)

    def scan(self, source: AudioStream):
        return self.features.scan(source)

    def transcribe(self, items: Iterable[Tuple[object, AudioStream, object]]):
        return self.engine.transcribe(items)

    def embed(self, items: Iterable[Tuple[object, AudioStream, object]], segment_seconds: Optional[float] = None):
        if segment_seconds is not None and segment_seconds < self.window_seconds():
            raise ValueError(
                f"segments of {segment_seconds:g} s: need at least one embedder window ({self.window_seconds():g} s)"
            )
        return self.engine.embed(items, segment_seconds)

    def describe(self) -> Dict[str, object]:
        """What summaries and flavors record of the serving settings."""
        return {"chunking": self.chunking.to_json()}


def scanned(
    model: ServingModel, sources: Iterable[Tuple[object, "callable"]], failures: List[Tuple[object, AudioRejected]]
) -> Iterator[Tuple[object, AudioStream, object]]:
    """(key, source, scan) for each (key, open) whose source opens and scans; each
    (key, AudioRejected) that does not goes to `failures` (nothing is dropped silently)."""
    for key, open_source in sources:
        try:
            source = open_source()
            yield key, source, model.scan(source)
        except AudioRejected as rejected:
            failures.append((key, rejected))
        except OSError as error:
            failures.append((key, AudioRejected("unreadable", str(error))))


def chunking_unavailable(saved_model_dir: str, kind: str) -> str:
    """Why an export cannot be served in chunks ('' when it can), read from its files without
    loading it: a SavedModel without the network signature chunks go through (a stand-in, a
    folder from elsewhere), or a globally normalised one exported before its statistics were."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    names = {name for graph in saved.meta_graphs for name in graph.signature_def}
    if CHUNK_SIGNATURES[kind] not in names:
        return f"no `{CHUNK_SIGNATURES[kind]}` signature (has {sorted(names)})"
    try:
        _global_stats(saved_model_dir, FeatureConfig.from_json(model_settings(saved_model_dir).get("features") or {}))
    except ChunkingUnavailable as error:
        return str(error)
    return ""


def serving_chunking(saved_model_dir: str, kind: str, chunking: ChunkConfig) -> Tuple[ChunkConfig, str]:
    """(the chunking to serve an export with, a note when it falls back to whole files)."""
    if not chunking.chunked:
        return chunking, ""
    reason = chunking_unavailable(saved_model_dir, kind)
    if not reason:
        return chunking, ""
    whole = ChunkConfig(
        chunk_seconds=0.0, overlap_seconds=chunking.overlap_seconds, batch_seconds=chunking.batch_seconds
    )
    return whole, f"{saved_model_dir}: served whole, not in chunks: {reason}"


def embedder_window_seconds(saved_model_dir: str) -> float:
    """The seconds of one embedder window (`segment_frames` frames): the shortest segment."""
    from speechpipe.speakers.embedder.config import EmbedderConfig, with_legacy_settings

    settings = model_settings(saved_model_dir)
    config = EmbedderConfig.from_json(with_legacy_settings(dict(settings.get("embedder") or {})))
    features = FeatureConfig.from_json(settings.get("features") or {})
    return config.segment_frames * features.hop_length / features.sample_rate


def chunk_features_for(saved_model_dir: str):
    """The `ChunkFeatures` of an export: what scanning a recording for it needs (no network)."""
    from speechpipe.audio.feature_chunks import ChunkFeatures

    config = FeatureConfig.from_json(model_settings(saved_model_dir).get("features") or {})
    return ChunkFeatures(config, _global_stats(saved_model_dir, config))


def _global_stats(saved_model_dir: str, config: FeatureConfig) -> Optional[Dict[str, object]]:
    if config.normalization != "global":
        return None
    path = os.path.join(saved_model_dir, "assets.extra", GLOBAL_STATS_FILE)
    if not os.path.isfile(path):
        raise ChunkingUnavailable(
            f"{saved_model_dir}: globally normalised, but exported before its statistics were recorded "
            f"(assets.extra/{GLOBAL_STATS_FILE}): serve it whole (chunk_seconds 0)"
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)
