"""Evaluate and bless: the one rule both evaluators apply (speechpipe.components.ctc_evaluator for the
CTC recogniser's PER, speechpipe.components.speaker_evaluator for the embedder's EER).

The candidate and the champion (resolved through ML Metadata, or the registry's, by the
pipeline's champion step) are measured by the same function on the same test records, loaded
back as SavedModels through TensorFlow alone, so the comparison is like for like and proves the
export loads. Lower is better for every metric here. A candidate is blessed when its metric is
within the threshold and, when there is a champion, beats the champion's by more than the
margin; every reason it is not is recorded. The blessing is a standard `ModelBlessing`: an empty
BLESSED or NOT_BLESSED file (TFX's Evaluator convention), `evaluation.json` with the details for
the report, and the properties TFX's LatestBlessedModelStrategy and our champion resolver read.
Artifact URIs may be local folders or object storage (TFX's fileio).

evaluation.json records what the candidate was compared with (`champion`: its ML Metadata id and
URI, and its registry version when it came from the registry) and enough about the test split to
measure another model on it (`measure_on_test_split`): the registry pusher does so when the
registry's champion changed while this run evaluated (components/registry_pusher.py).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from speechpipe.filenames import EVALUATION_FILE
from speechpipe.io import storage

# The blessing metric of each model kind (lower is better).
METRICS = {"ctc": "per", "speaker": "eer"}


def serving_dir(model_uri: str) -> str:
    """A TFX Model artifact's SavedModel folder."""
    candidate = storage.join(model_uri, "Format-Serving")
    return candidate if storage.isdir(candidate) else model_uri


def present_champion(champion):
    """The champion to compare with, or None: none resolved, or one published as absent (the
    registry step of `--champion-from registry`, speechpipe.components.registry_champion, always
    publishes a Model artifact and marks it absent when the registry has no champion)."""
    if champion is None or not champion.uri:
        return None
    if champion.has_custom_property("champion") and champion.get_int_custom_property("champion") == 0:
        return None
    from speechpipe.components.registry_champion import champion_absent

    return None if champion_absent(champion.uri) else champion


def champion_origin(champion) -> Dict[str, object]:
    """Where a registry champion came from (registry model and version), for evaluation.json."""
    if champion is None or not champion.has_custom_property("registry_version"):
        return {}
    return {
        "registry_model": champion.get_string_custom_property("registry_model"),
        "registry_version": champion.get_string_custom_property("registry_version"),
    }


def decide(
    candidate: Dict[str, float],
    champion: Optional[Dict[str, float]],
    thresholds: Dict[str, float],
    improvements: Dict[str, float],
) -> List[str]:
    """Reasons NOT to bless (empty = blessed). Lower is better for every metric.
    thresholds: {metric: max value}; improvements: {metric: the margin to beat the champion by}."""
    reasons = []
    for metric, limit in thresholds.items():
        value = candidate.get(metric)
        if value is None:
            continue
        if not value == value:  # NaN
            reasons.append(f"{metric.upper()} is not a number")
        elif value > limit:
            reasons.append(f"{metric.upper()} {value:.4f} is above the threshold {limit:.4f}")
    if champion:
        for metric, margin in improvements.items():
            new, old = candidate.get(metric), champion.get(metric)
            if new is None or old is None:
                continue
            if not new < old - margin:
                reasons.append(
                    f"{metric.upper()} {new:.4f} does not beat the champion's {old:.4f}"
                    + (f" by more than {margin:.4f}" if margin else "")
                )
    return reasons


# (SavedModel folder, "candidate" or "champion") -> metrics, holding the blessing metric
Measure = Callable[[str, str], Dict[str, object]]


def evaluate_and_bless(
    blessing,
    model,
    champion,
    examples,
    test_uri: str,
    model_kind: str,
    metric: str,
    max_value: float,
    min_improvement: float,
    measure: Measure,
    data_key: str,
    annotate: Optional[Callable[[Dict[str, object]], None]] = None,
) -> Dict[str, object]:
    """Measures the candidate and the champion (when one is present), decides, and writes the
    blessing; `annotate` adds a model kind's own entries to evaluation.json before it is written.
    Returns the evaluation."""
    champion = present_champion(champion)  # None also for a registry champion marked absent
    storage.makedirs(blessing.uri)
    candidate = measure(serving_dir(model.uri), "candidate")
    champion_metrics = measure(serving_dir(champion.uri), "champion") if champion is not None else None
    reasons = decide(
        {metric: candidate[metric]},
        {metric: champion_metrics[metric]} if champion_metrics else None,
        {metric: max_value},
        {metric: min_improvement},
    )
    blessed = not reasons
    why = (
        (
            f"blessed: {metric.upper()} within the threshold"
            + (" and better than the champion" if champion_metrics else " (no champion yet)")
        )
        if blessed
        else "; ".join(reasons)
    )
    evaluation: Dict[str, object] = {
        "model_kind": model_kind,
        "blessed": blessed,
        "reasons": reasons,
        "why": why,
        "candidate": {"model_id": model.id, "uri": model.uri, **candidate},
        "champion": (
            {"model_id": champion.id, "uri": champion.uri, **champion_origin(champion), **champion_metrics}
            if champion_metrics
            else None
        ),
        "thresholds": {f"max_{metric}": max_value, f"min_{metric}_improvement": min_improvement},
        "test_examples": {"id": examples.id, "span": examples.span, "uri": test_uri, **_test_inventory(examples)},
        "data_key": data_key,
    }
    if annotate is not None:
        annotate(evaluation)
    write_blessing(blessing, evaluation, model, champion, data_key, model_kind, metric)
    return evaluation


def _test_inventory(examples) -> Dict[str, str]:
    """The phone inventory the test transcripts were tokenised with (FeatureGen records it on CTC
    Examples), so that another model's PER can be measured on them later."""
    if examples.has_custom_property("phone_inventory"):
        return {"phone_inventory": examples.get_string_custom_property("phone_inventory")}
    return {}


def measure_on_test_split(model_kind: str, evaluation: Dict[str, object], saved_model_dir: str) -> Dict[str, object]:
    """Measures a SavedModel on the test split an evaluation measured its candidate on, with the
    evaluator's own metric function (the CTC evaluator's PER, the speaker evaluator's EER on the
    same trial list), so its metric compares like for like with the candidate's."""
    test = evaluation["test_examples"]
    if model_kind == "speaker":
        from speechpipe.components.speaker_evaluator import embedder_metrics
        from speechpipe.speakers.split_stream import read_index
        from speechpipe.speakers.trials import read_trials

        # The test split's ids only: the utterances the trials and the clustering sample name
        # are streamed and embedded, as the evaluator measured the candidate.
        metrics = embedder_metrics(
            saved_model_dir, read_index(test["uri"], min_speakers=2), read_trials(str(evaluation["trials"]))
        )
        metrics.pop("det", None)
        return metrics
    from speechpipe.components.ctc_evaluator import transcriber_per

    inventory = test.get("phone_inventory")
    return transcriber_per(saved_model_dir, test["uri"], **({"inventory": inventory} if inventory else {}))


def write_blessing(
    blessing, evaluation: Dict[str, object], model, champion, data_key: str, model_kind: str, metric: str
) -> None:
    """evaluation.json, the BLESSED / NOT_BLESSED marker, and the properties TFX's
    LatestBlessedModelStrategy and our champion resolver read (`blessed`, `current_model_id`,
    `model_kind`, `data_key`), with `metric` of the candidate (and the champion) for the record."""
    blessed = bool(evaluation["blessed"])
    storage.makedirs(blessing.uri)
    storage.write_json(storage.join(blessing.uri, EVALUATION_FILE), evaluation, indent=1)
    storage.write_bytes(storage.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), b"")
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_string_custom_property("data_key", data_key)
    blessing.set_string_custom_property("model_kind", model_kind)
    blessing.set_float_custom_property(metric, float(evaluation["candidate"][metric]))
    blessing.set_string_custom_property("why", str(evaluation["why"]))
    if evaluation.get("champion"):
        blessing.set_int_custom_property("champion_model_id", champion.id)
        blessing.set_float_custom_property(f"champion_{metric}", float(evaluation["champion"][metric]))
