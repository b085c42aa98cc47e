"""FeatureGen: the feature job (src/speechpipe/jobs/features_job.py) as a TFX component.

One FeatureGen node per span. Its output is an `Examples` artifact in TFX's layout
(`Split-{train,validation,test}/`), with `span` set and the feature job's summary, dead-letter
counts and feature config as custom properties, so StatisticsGen, ExampleValidator and the
Trainer read it unchanged, and ML Metadata records what every span held. The span's content
fingerprint is an execution parameter: an unchanged span is a cache hit, new audio runs again.
The span and the artifact URI may be local or on object storage (the feature job reads and
writes both through Beam's FileSystems).
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

import json
import os

from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from speechpipe.config import SPLIT_FRACTIONS
from speechpipe.io import storage

SPLIT_NAMES = ("train", "validation", "test")


@component
def FeatureGen(  # TFX names components in CamelCase
    examples: OutputArtifact[standard_artifacts.Examples],
    input_path: Parameter[str],
    span: Parameter[int],
    feature_config: Parameter[str],
    input_fingerprint: Parameter[str],
    beam_args: Parameter[str] = "[]",
    split_fractions: Parameter[str] = ",".join(str(f) for f in SPLIT_FRACTIONS),
    inventory: Parameter[str] = "",
    language: Parameter[str] = "",
    augment_config: Parameter[str] = "",
    data_root: Parameter[str] = "",
    split_overrides: Parameter[str] = "",
) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

    from speechpipe.audio.augment import AugmentConfig
    from speechpipe.audio.sources import make_spec
    from speechpipe.config import FeatureConfig
    from speechpipe.jobs.features_job import run_job
    from speechpipe.validation import validate_feature_config

    config = validate_feature_config(FeatureConfig.from_json(json.loads(feature_config)))
    fractions = tuple(float(x) for x in split_fractions.split(","))
    # The run's --data-root for a span naming absolute paths ("" = the span's own folder), and the
    # preflight's split moves ({speaker: split} JSON, pipeline/preflight.py; "" = none).
    spec = make_spec(
        input_path,
        data_root=data_root or None,
        split_fractions=fractions,
        split_overrides=json.loads(split_overrides) if split_overrides else None,
    )
    options = PipelineOptions(json.loads(beam_args))
    options.view_as(SetupOptions).save_main_session = False
    # Augmented copies of the training utterances (speechpipe.audio.augment); "" = none.
    augment = AugmentConfig.from_json(json.loads(augment_config)).validate() if augment_config else None
    summary = run_job(spec, config, examples.uri, options, inventory_name=inventory, language=language, augment=augment)

    examples.span = span
    examples.version = 0
    examples.split_names = artifact_utils.encode_split_names(list(SPLIT_NAMES))
    examples.set_string_custom_property(
        "input_path", input_path if storage.is_uri(input_path) else os.path.abspath(input_path)
    )
    examples.set_string_custom_property("input_fingerprint", input_fingerprint)
    examples.set_string_custom_property("feature_config", json.dumps(config.to_json(), sort_keys=True))
    examples.set_string_custom_property("good", json.dumps(summary["good"], sort_keys=True))
    examples.set_string_custom_property("dead_letter", json.dumps(summary["dead_letter"], sort_keys=True))
    examples.set_int_custom_property("inputs", int(summary["inputs"]))
    examples.set_float_custom_property("audio_hours", sum(summary["audio_seconds"].values()) / 3600)
    examples.set_string_custom_property("phone_inventory", summary["phone_inventory"])
    if augment is not None:
        examples.set_string_custom_property("augmentation", json.dumps(summary["augmentation"], sort_keys=True))
