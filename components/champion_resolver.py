"""ChampionStrategy: resolves the current champion through ML Metadata for warm start and comparison.

Like TFX's LatestBlessedModelStrategy (the latest Model with a ModelBlessing whose `blessed` is 1
and `current_model_id` is the model's id), except that models blessed on this run's own data key
are skipped. A re-run with nothing new therefore resolves the same champion as the run before it
(and its Trainer and Evaluator are cache hits), while a run on new data resolves the model that is
champion now.

`champion_resolver` builds the node. KubeflowV2DagRunner compiles no strategy of our own (only
TFX's LatestBlessedModelStrategy and LatestArtifactStrategy, into KFP resolver tasks that query the
orchestrator's metadata store), so a pipeline built inside `kubeflow_champions()` gets
LatestBlessedModelStrategy resolvers instead, and the Kubeflow runner adds ChampionStrategy's rules
to their compiled queries (pipeline/kubeflow_v2_runner.py).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from tfx import types
from tfx import v1 as tfx
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


@dataclass(frozen=True)
class KubeflowChampion:
    """A champion resolver built for KubeflowV2DagRunner, with the ChampionStrategy rules its
    compiled queries must add (the node's id is read after `with_id`)."""

    node: tfx.dsl.Resolver
    data_key: str
    model_kind: str


# The resolvers built inside `kubeflow_champions()`; None outside it.
_KUBEFLOW_CHAMPIONS: contextvars.ContextVar[Optional[List[KubeflowChampion]]] = contextvars.ContextVar(
    "speechpipe_kubeflow_champions", default=None
)


@contextlib.contextmanager
def kubeflow_champions() -> Iterator[List[KubeflowChampion]]:
    """Within it, `champion_resolver` builds the form KubeflowV2DagRunner compiles (TFX's
    LatestBlessedModelStrategy) and appends each node it built to the list this yields."""
    built: List[KubeflowChampion] = []
    token = _KUBEFLOW_CHAMPIONS.set(built)
    try:
        yield built
    finally:
        _KUBEFLOW_CHAMPIONS.reset(token)


def champion_resolver(data_key: str, model_kind: str) -> tfx.dsl.Resolver:
    """The resolver node of one branch's champion ("ctc" or "speaker"): ChampionStrategy through ML
    Metadata, or, inside `kubeflow_champions()`, LatestBlessedModelStrategy (recorded there)."""
    channels = {
        "model": tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        "model_blessing": tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    }
    kubeflow = _KUBEFLOW_CHAMPIONS.get()
    if kubeflow is None:
        return tfx.dsl.Resolver(
            strategy_class=ChampionStrategy, config={"data_key": data_key, "model_kind": model_kind}, **channels
        )
    node = tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy, **channels)
    kubeflow.append(KubeflowChampion(node, data_key, model_kind))
    return node
