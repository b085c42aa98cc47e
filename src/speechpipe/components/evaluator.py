"""SpeechEvaluator: PER on the fixed test split, thresholds, and the comparison with the champion;
its output is a standard `ModelBlessing`.

Both the candidate and the champion (resolved through ML Metadata by the pipeline's champion
resolver) are loaded back as SavedModels through TensorFlow alone and decoded on the same test
records through their `logits` signature, so the comparison is like for like and also proves the
export loads. The blessing carries `blessed` and `current_model_id` (what TFX's
LatestBlessedModelStrategy reads), the data key the candidate was trained on, the metrics, and
every reason; `evaluation.json` in the blessing's folder holds the details for the report.
Artifact URIs may be local folders or object storage (TFX's fileio; TensorFlow loads SavedModels
and reads records from either).
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

from typing import Dict, List, Optional

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from speechpipe.io import storage

EVALUATION_FILE = "evaluation.json"
MODEL_KIND = "ctc"  # the champion resolver tells the two models' blessings apart by it


def serving_dir(model_uri: str) -> str:
    """A TFX Model artifact's SavedModel folder."""
    candidate = storage.join(model_uri, "Format-Serving")
    return candidate if storage.isdir(candidate) else model_uri


def present_champion(champion):
    """The champion to compare with, or None: none resolved, or one published as absent (the
    registry step of `--champion-from registry`, src/speechpipe/components/registry_champion.py, always
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
    return {"registry_model": champion.get_string_custom_property("registry_model"),
            "registry_version": champion.get_string_custom_property("registry_version")}


def transcriber_per(saved_model_dir: str, test_split_uri: str, batch_size: int = 16,
                    samples: int = 5, inventory: str = "phones_de.json") -> Dict[str, object]:
    """Greedy-decoding PER of an exported transcriber on feature records (utterances with
    transcripts only), through its `logits` signature."""
    import tensorflow as tf

    from speechpipe.phones.ctc_model import PERResult, greedy_decode
    from speechpipe.phones.inventory import load_inventory
    from speechpipe.training import record_dataset

    model = tf.saved_model.load(saved_model_dir)
    logits_fn = model.signatures["logits"]
    phones = load_inventory(inventory)
    blank, table = phones.blank_id, list(phones.phones)
    dataset = record_dataset(test_split_uri).filter(lambda e: tf.size(e["phone_ids"]) > 0).padded_batch(
        batch_size, padded_shapes={"utterance": [], "speaker": [], "session": [], "features": [None, None],
                                   "num_frames": [], "phone_ids": [None]},
        padding_values={"utterance": b"", "speaker": b"", "session": b"", "features": 0.0, "num_frames": 0,
                        "phone_ids": -1})
    result = PERResult()
    shown: List[Dict[str, str]] = []
    for batch in dataset:
        out = logits_fn(features=batch["features"], num_frames=batch["num_frames"])
        decoded = greedy_decode(out["logits"], out["logit_lengths"], blank)
        for utterance, reference, hypothesis in zip(batch["utterance"].numpy(), batch["phone_ids"].numpy(), decoded):
            ref = [int(k) for k in reference if k >= 0]
            result.add(utterance.decode(), ref, hypothesis)
            if len(shown) < samples:
                shown.append({"utterance": utterance.decode(), "reference": " ".join(table[k] for k in ref),
                              "hypothesis": " ".join(table[k] for k in hypothesis)})
    if result.reference_phones == 0:
        raise ValueError(f"no test utterance with a transcript in {test_split_uri}")
    return {"per": float(result.per), "utterances": len(result.per_utterance),
            "reference_phones": int(result.reference_phones), "edits": int(result.edits), "samples": shown}


def decide(candidate: Dict[str, float], champion: Optional[Dict[str, float]], thresholds: Dict[str, float],
           improvements: Dict[str, float]) -> List[str]:
    """Reasons NOT to bless (empty = blessed). Lower is better for every metric here (PER, EER).
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
                reasons.append(f"{metric.upper()} {new:.4f} does not beat the champion's {old:.4f}"
                               + (f" by more than {margin:.4f}" if margin else ""))
    return reasons


def write_blessing(blessing, evaluation: Dict[str, object], model, champion, data_key: str, model_kind: str,
                   metric: str) -> None:
    """Writes an evaluator's verdict: evaluation.json and, by TFX's Evaluator convention, an empty
    BLESSED or NOT_BLESSED file in the blessing's folder, and the properties TFX's
    LatestBlessedModelStrategy and our ChampionStrategy read (`blessed`, `current_model_id`,
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


@component
def SpeechEvaluator(  # noqa: N802
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    champion: InputArtifact[standard_artifacts.Model] = None,
    max_per: Parameter[float] = 0.95,
    min_per_improvement: Parameter[float] = 0.0,
    data_key: Parameter[str] = "",
) -> None:
    test_uri = storage.join(examples.uri, "Split-test")
    # The inventory the test transcripts were tokenised with (FeatureGen records it).
    inventory = examples.get_string_custom_property("phone_inventory") or "phones_de.json"
    candidate = transcriber_per(serving_dir(model.uri), test_uri, inventory=inventory)
    champion_metrics = None
    champion = present_champion(champion)
    if champion is not None:
        champion_metrics = transcriber_per(serving_dir(champion.uri), test_uri, inventory=inventory)
    reasons = decide({"per": candidate["per"]}, {"per": champion_metrics["per"]} if champion_metrics else None,
                     {"per": max_per}, {"per": min_per_improvement})
    blessed = not reasons
    why = ("blessed: PER within the threshold" + (" and better than the champion" if champion_metrics else
                                                  " (no champion yet)")) if blessed else "; ".join(reasons)
    evaluation = {
        "blessed": blessed, "reasons": reasons, "why": why,
        "candidate": {"model_id": model.id, "uri": model.uri, **candidate},
        "champion": ({"model_id": champion.id, "uri": champion.uri, **champion_origin(champion), **champion_metrics}
                     if champion_metrics else None),
        "thresholds": {"max_per": max_per, "min_per_improvement": min_per_improvement},
        "test_examples": {"id": examples.id, "span": examples.span, "uri": test_uri},
        "data_key": data_key,
    }
    write_blessing(blessing, evaluation, model, champion, data_key, MODEL_KIND, "per")
