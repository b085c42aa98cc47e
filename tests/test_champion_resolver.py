"""The champion resolver node (components/champion_resolver.py), built through TFX's public
Resolver: ChampionStrategy for local runs, and inside `kubeflow_champions()` the strategy
KubeflowV2DagRunner compiles, with the rules its queries must keep (pipeline/kubeflow_v2_runner.py)."""

from tfx import v1 as tfx
from tfx.dsl.components.common import resolver

from speechpipe.components.champion_resolver import ChampionStrategy, champion_resolver, kubeflow_champions


def test_the_local_form_runs_champion_strategy():
    node = champion_resolver("key1", "speaker")
    assert node.exec_properties == {
        resolver.RESOLVER_STRATEGY_CLASS: ChampionStrategy,
        resolver.RESOLVER_CONFIG: {"data_key": "key1", "model_kind": "speaker"},
    }
    assert set(node.outputs) == {"model", "model_blessing"}


def test_the_kubeflow_form_is_latest_blessed_model_and_records_the_rules():
    with kubeflow_champions() as champions:
        ctc = champion_resolver("key1", "ctc").with_id("A")
        speaker = champion_resolver("key2", "speaker").with_id("B")
    assert [(c.node, c.node.id, c.data_key, c.model_kind) for c in champions] == [
        (ctc, "A", "key1", "ctc"),
        (speaker, "B", "key2", "speaker"),
    ]
    assert ctc.exec_properties == {
        resolver.RESOLVER_STRATEGY_CLASS: tfx.dsl.experimental.LatestBlessedModelStrategy,
        resolver.RESOLVER_CONFIG: {},
    }
    assert set(ctc.outputs) == {"model", "model_blessing"}
    # Outside the block, the local form again.
    assert champion_resolver("key1", "ctc").exec_properties[resolver.RESOLVER_STRATEGY_CLASS] is ChampionStrategy
