"""ValidationGate: stops the run before training when a span's data is not fit to train on.

ExampleValidator only *reports* anomalies; this node reads its report (and the feature job's
dead-letter counts) and fails the execution when anything is wrong. A branch's Trainer depends on
the gate of every span it reads, so a failed gate means no training, evaluation or push in that
branch (the other branch, on other spans, goes on); the run ends with `ValidationGateError`
naming the span and the reasons, and the report says which branch stopped and why.
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

import json
from typing import Dict, List

from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from speechpipe.filenames import SPLIT_PREFIX, split_of
from speechpipe.io import storage


class ValidationResult(types.Artifact):
    """The gate's verdict on one span (always `passed`: a failing gate publishes nothing)."""

    TYPE_NAME = "speechpipe.ValidationResult"  # KFP v2 takes <namespace>.<Name>


class ValidationGateError(RuntimeError):
    """A span failed validation; the message names the span and every reason."""


def read_anomalies(anomalies_uri: str) -> Dict[str, List[str]]:
    """{split: ["feature: short description (description)", ...]} from an ExampleAnomalies artifact
    (a local folder or a URI: read through TFX's fileio)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found: Dict[str, List[str]] = {}
    for path in storage.glob(storage.join(anomalies_uri, SPLIT_PREFIX + "*", "*")):
        split = split_of(storage.basename(storage.dirname(path)))
        anomalies = anomalies_pb2.Anomalies()
        data = storage.read_bytes(path)
        try:
            anomalies.ParseFromString(data)
        except Exception:  # a text proto
            from google.protobuf import text_format

            text_format.Parse(data.decode("utf-8"), anomalies)
        messages = [
            f"{name}: {info.short_description} ({info.description})"
            for name, info in sorted(anomalies.anomaly_info.items())
        ]
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            messages.append(f"dataset: {info.short_description} ({info.description})")
        found[split] = found.get(split, []) + messages
    return found


def gate_reasons(
    anomalies: Dict[str, List[str]],
    examples_props: Dict[str, object],
    max_dead_letter_fraction: float,
    min_train_examples: int,
) -> List[str]:
    reasons = [f"{split}: {message}" for split, messages in sorted(anomalies.items()) for message in messages]
    inputs = int(examples_props.get("inputs", 0))
    dead = int(examples_props.get("dead_letter", {}).get("total", 0))
    by_reason = examples_props.get("dead_letter", {}).get("by_reason", {})
    if inputs == 0:
        reasons.append("the span has no input at all")
    elif dead / inputs > max_dead_letter_fraction:
        reasons.append(
            f"{dead} of {inputs} inputs dead-lettered ({dead / inputs:.0%} > {max_dead_letter_fraction:.0%}): "
            f"{by_reason}"
            + (
                # Audio named by absolute paths (a Kaldi wav.scp, a manifest) outside the span's folder.
                "; audio outside the data root: give `speechpipe run --data-root DIR`, a folder holding it"
                if by_reason.get("outside_root")
                else ""
            )
        )
    train = int(examples_props.get("good", {}).get("train", 0))
    if train < min_train_examples:
        reasons.append(f"{train} training examples, fewer than {min_train_examples}")
    return reasons


@component
def ValidationGate(
    examples: InputArtifact[standard_artifacts.Examples],
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    result: OutputArtifact[ValidationResult],
    max_dead_letter_fraction: Parameter[float] = 0.2,
    min_train_examples: Parameter[int] = 1,
) -> None:
    props = {
        "inputs": examples.get_int_custom_property("inputs"),
        "dead_letter": json.loads(examples.get_string_custom_property("dead_letter") or "{}"),
        "good": json.loads(examples.get_string_custom_property("good") or "{}"),
    }
    found = read_anomalies(anomalies.uri)
    reasons = gate_reasons(found, props, max_dead_letter_fraction, min_train_examples)
    verdict = {
        "span": examples.span,
        "examples_id": examples.id,
        "passed": not reasons,
        "reasons": reasons,
        "counts": props,
    }
    storage.makedirs(result.uri)
    storage.write_json(storage.join(result.uri, "validation.json"), verdict, indent=1)
    if reasons:
        raise ValidationGateError(f"span {examples.span} failed validation: " + "; ".join(reasons))
    result.set_int_custom_property("passed", 1)
    result.set_int_custom_property("span", examples.span)
