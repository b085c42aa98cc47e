"""ChampionStrategy: resolves the current champion through ML Metadata for warm start and comparison.

Like TFX's LatestBlessedModelStrategy (the latest Model with a ModelBlessing whose `blessed` is 1
and `current_model_id` is the model's id), except that models blessed on this run's own data key
are skipped. A re-run with nothing new therefore resolves the same champion as the run before it
(and its Trainer and Evaluator are cache hits), while a run on new data resolves the model that is
champion now.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver


class ChampionStrategy(resolver.ResolverStrategy):
    """`model_kind`: "ctc" or "speaker", the evaluator's `model_kind` blessing property, so each
    trainer resolves its own champion among the pipeline's Model artifacts (a blessing without
    the property is a CTC one: pipelines before the speaker branch wrote none)."""

    def __init__(self, data_key: str = "", model_kind: str = "ctc") -> None:
        self._data_key = data_key
        self._model_kind = model_kind

    def resolve_artifacts(
        self, store, input_dict: Dict[str, List[types.Artifact]]
    ) -> Optional[Dict[str, List[types.Artifact]]]:
        models = sorted(input_dict.get("model", []), key=lambda a: a.id, reverse=True)
        blessings = input_dict.get("model_blessing", [])
        blessed = {}
        for b in sorted(blessings, key=lambda a: a.id):
            kind = b.get_string_custom_property("model_kind") or "ctc"
            if (
                b.get_int_custom_property("blessed") == 1
                and kind == self._model_kind
                and b.get_string_custom_property("data_key") != self._data_key
            ):
                blessed[b.get_int_custom_property("current_model_id")] = b
        for model in models:
            if model.id in blessed:
                return {"model": [model], "model_blessing": [blessed[model.id]]}
        return {"model": [], "model_blessing": []}
