"""PairGen: the pair builder (src/speechpipe/pipeline/pairs_job.py) as a TFX component, one node per span.

Its output, a `SpeakerPairs` artifact, holds the span's same/different-speaker pairs
(`pairs/<split>/`) and its VoxCeleb-format trial lists (`trials_<split>.txt`); the speaker
evaluator scores the fixed test span's `trials_test.txt`. It reads the span's FeatureGen output
(the feature job's index), so an unchanged span is a cache hit here too.
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

import json

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact, standard_artifacts
from tfx.types.system_artifacts import Dataset

from speechpipe.io import storage


class SpeakerPairs(artifact.Artifact):
    """Pairs and trial lists of one span, in the layout `speechpipe pairs --out` writes. The span
    is a custom property: KFP v2 takes custom types named `<namespace>.<Name>` without typed
    PROPERTIES."""

    TYPE_NAME = "speechpipe.SpeakerPairs"
    TYPE_ANNOTATION = Dataset


@component
def PairGen(  # noqa: N802 - TFX names components in CamelCase
    examples: InputArtifact[standard_artifacts.Examples],
    pairs: OutputArtifact[SpeakerPairs],
    beam_args: Parameter[str] = "[]",
    seed: Parameter[int] = 0,
) -> None:
    from speechpipe.pipeline import pairs_job

    argv = ["--features", examples.uri, "--out", pairs.uri, "--seed", str(seed), "--overwrite"]
    pairs_job.run(argv + list(json.loads(beam_args)))
    summary = storage.read_json(storage.join(pairs.uri, pairs_job.SUMMARY))  # local or object storage
    pairs.set_int_custom_property("span", int(examples.span or 0))
    counts = {split: c["pairs"] for split, c in summary["splits"].items()}
    pairs.set_string_custom_property("pairs", json.dumps(counts, sort_keys=True))
    pairs.set_int_custom_property("test_trials", int(summary["splits"].get("test", {}).get("trials_lines") or 0))
