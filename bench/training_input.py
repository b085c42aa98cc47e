"""The embedder's training input for a bench run, written once per setting that shapes it and
reused by every run that shares those settings (the benches train many configurations on one
feature run)."""

from __future__ import annotations

import hashlib
import os


def cached_training_input(features_dir: str, cache_root: str, config) -> str:
    """The folder `speechpipe.components.embedder_trainer.train` takes as `blocks` for
    `features_dir` under `config` (an EmbedderTrainConfig), under `cache_root/training_input/`."""
    from speechpipe.components.embedder_trainer import write_training_input

    source = hashlib.sha1(os.path.abspath(features_dir).encode("utf-8")).hexdigest()[:10]
    key = (
        f"{source}_k{config.segments_per_speaker}_b{config.blocks_per_speaker}_f{config.model.segment_frames}"
        f"_n{config.backend_max_utterances}_s{config.seed}"
    )
    out = os.path.join(cache_root, "training_input", key)
    if os.path.exists(os.path.join(out, "summary.json")) and os.path.isdir(os.path.join(out, "blocks", "train")):
        return out
    print(f"writing the training input {key} (speaker blocks, back-end sample) ...", flush=True)
    return write_training_input(features_dir, out, config)
