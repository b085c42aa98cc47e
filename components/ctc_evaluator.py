"""CTCEvaluator: the CTC recogniser's PER on the fixed test split, blessed against the
threshold and the champion (speechpipe.components.blessing); its output is a `ModelBlessing`.

Both models decode the same test records greedily through their SavedModel's `logits` signature,
and the PER is the definition the trainer's validation uses (speechpipe.phones.phone_error_rate):
every utterance with a transcript. The gate reads the greedy PER, the decoding the `transcribe`
signature serves; a model that carries a phone LM also reports `per_lm`, its PER with the
LM-scored beam search (speechpipe.phones.ctc_lm_decoder).
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

from typing import Dict

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from speechpipe.components.blessing import evaluate_and_bless
from speechpipe.config import MAX_PER
from speechpipe.filenames import split_dir
from speechpipe.io import storage

MODEL_KIND = "ctc"  # the champion resolver tells the two models' blessings apart by it


def transcriber_per(
    saved_model_dir: str, test_split_uri: str, batch_size: int = 16, samples: int = 5, inventory: str = "phones_de.json"
) -> Dict[str, object]:
    """Greedy-decoding PER of an exported transcriber on feature records, through its `logits`
    signature, with a few decoded samples for the report, and `per_lm` when the model carries a
    phone LM."""
    import tensorflow as tf

    from speechpipe.phones.ctc_lm_decoder import load_lm_decoder
    from speechpipe.phones.inventory import load_inventory
    from speechpipe.phones.phone_error_rate import decoding, records_pers

    logits_fn = tf.saved_model.load(saved_model_dir).signatures["logits"]

    def forward(features, num_frames):
        out = logits_fn(features=features, num_frames=num_frames)
        return out["logits"], out["logit_lengths"]

    phones = load_inventory(inventory)
    decoders = {"per": decoding(phones.blank_id)}
    lm_decoder = load_lm_decoder(saved_model_dir, list(phones.phones), phones.blank_id)
    if lm_decoder is not None:
        decoders["per_lm"] = decoding(phones.blank_id, lm_decoder=lm_decoder)
    results, shown = records_pers(
        forward, test_split_uri, decoders, batch_size, phones=list(phones.phones), samples=samples
    )
    result = results["per"]
    if result.reference_phones == 0:
        raise ValueError(f"no test utterance with a transcript in {test_split_uri}")
    figures: Dict[str, object] = {
        "per": float(result.per),
        "utterances": len(result.per_utterance),
        "reference_phones": int(result.reference_phones),
        "edits": int(result.edits),
        "samples": shown,
    }
    if "per_lm" in results:
        figures["per_lm"] = float(results["per_lm"].per)
    return figures


@component
def CTCEvaluator(
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    champion: InputArtifact[standard_artifacts.Model] = None,
    max_per: Parameter[float] = MAX_PER,
    min_per_improvement: Parameter[float] = 0.0,
    data_key: Parameter[str] = "",
) -> None:
    test_uri = storage.join(examples.uri, split_dir("test"))
    # The inventory the test transcripts were tokenised with (FeatureGen records it).
    inventory = examples.get_string_custom_property("phone_inventory") or "phones_de.json"
    evaluate_and_bless(
        blessing,
        model,
        champion,
        examples,
        test_uri,
        MODEL_KIND,
        "per",
        max_per,
        min_per_improvement,
        lambda saved_model, role: transcriber_per(saved_model, test_uri, inventory=inventory),
        data_key,
    )
