"""The CTC trainer as the pipeline runs it: `speechpipe.components.ctc_trainer.run_fn`, plus a warm
start from the champion (the Trainer's `base_model` input, resolved through ML Metadata) and the
global statistics read from the span's feature output when the normalisation needs them.

Warm start restores the champion's acoustic-model variables from its SavedModel checkpoint
(`Transcriber.acoustic`, matched by Keras' object graph, not by name); when the architecture
differs (another feature config or LSTM sizes) it logs why and trains from scratch.
"""
from __future__ import annotations

import logging

from speechpipe.io import storage

log = logging.getLogger(__name__)

WARM_START_FILE = "warm_start.json"


def restore_acoustic(acoustic, saved_model_dir: str) -> None:
    """Loads a champion's acoustic weights into `acoustic` (same architecture), or raises."""
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(acoustic=acoustic)
    status = checkpoint.read(storage.join(saved_model_dir, "variables", "variables"))  # TF reads URIs
    status.expect_partial()
    status.assert_existing_objects_matched()


def run_fn(fn_args) -> None:
    from speechpipe.components import ctc_trainer
    from speechpipe.training import find_global_stats

    custom = dict(fn_args.custom_config or {})
    features = custom.get("features", {})
    if features.get("normalization") == "global" and not custom.get("global_stats"):
        custom["global_stats"] = find_global_stats(fn_args.train_files)
        fn_args.custom_config = custom
    base_model = getattr(fn_args, "base_model", None)
    warm = {"warm_start": False, "from": None, "reason": "no champion yet"}
    if base_model and custom.get("warm_start", True):
        original = ctc_trainer.build_acoustic_model

        def build_warm(num_bins, num_classes, config):
            model = original(num_bins, num_classes, config)
            try:
                restore_acoustic(model, base_model)
                warm.update({"warm_start": True, "from": base_model, "reason": "champion weights restored"})
                log.info("warm start from the champion: %s", base_model)
            except Exception as error:  # noqa: BLE001 - any mismatch means train from scratch
                warm.update({"warm_start": False, "from": base_model,
                             "reason": f"champion's architecture differs, trained from scratch: {error}"[:500]})
                log.warning("%s", warm["reason"])
                model = original(num_bins, num_classes, config)
            return model

        ctc_trainer.build_acoustic_model = build_warm
        try:
            ctc_trainer.run_fn(fn_args)
        finally:
            ctc_trainer.build_acoustic_model = original
    else:
        if base_model:
            warm["reason"] = "warm start switched off"
        ctc_trainer.run_fn(fn_args)
    # The serving folder is an artifact URI: local, or object storage on a cluster (TFX's fileio).
    storage.write_json(storage.join(fn_args.serving_model_dir, WARM_START_FILE), warm, indent=1)
