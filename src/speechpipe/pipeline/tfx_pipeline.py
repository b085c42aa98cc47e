"""The speechpipe TFX pipeline, built from explicit arguments (`create_pipeline`).

    FeatureGen_span<i> -> StatisticsGen_span<i> -> ExampleValidator_span<i> (<- ImportSchemaGen)
                       -> ValidationGate_span<i>  (fails the run on anomalies / dead letters)
    ExamplesUnion (only with 2+ spans, after every gate: every span's splits as one Examples artifact)
    ChampionResolver (ML Metadata) -> Trainer (CTC; warm start from the champion, after every gate)
                                   -> SpeechEvaluator (PER threshold + champion comparison -> ModelBlessing)
                                   -> RegistryPusher (MLflow; only when blessed; alias `champion`)
    with include_speaker (the speaker branch, same pattern):
    SpeakerFeatureGen_span<i> (when the embedder's features differ; after ValidationGate_span<i>)
    SpeakerExamplesUnion (2+ spans and the embedder's own features; else the trainers share ExamplesUnion)
    PairGen (pair builder on the test span: trial lists)
    SpeakerChampionResolver -> SpeakerTrainer (siamese embedder) -> SpeakerEvaluator (EER, clustering)
                            -> SpeakerRegistryPusher
    with champion_from="registry" (open-source KFP runs no resolver tasks): RegistryChampion and
    SpeakerRegistryChampion, container steps reading the MLflow registry's `champion` alias, stand
    in for the two resolvers (src/speechpipe/components/registry_champion.py).

`src/speechpipe/pipeline/local_runner.py` runs it with LocalDagRunner, Beam's DirectRunner and SQLite ML Metadata
under one home folder; the same function serves other orchestrators (KFP) unchanged.
"""
from __future__ import annotations

import json
from typing import Dict, List, Sequence, Tuple

from tfx import v1 as tfx

from speechpipe.config import FeatureConfig

CTC_RUN_FN = "speechpipe.components.ctc_pipeline_trainer.run_fn"
EMBEDDER_RUN_FN = "speechpipe.components.embedder_trainer.run_fn"

# The node ids of the trainers: the only nodes a cluster deployment gives GPUs to
# (src/speechpipe/pipeline/kubeflow_v2_runner.py). "SpeakerTrainer" exists when the speaker branch is on.
CTC_TRAINER_ID = "Trainer"
SPEAKER_TRAINER_ID = "SpeakerTrainer"
TRAINER_NODE_IDS = (CTC_TRAINER_ID, SPEAKER_TRAINER_ID)
# The node that joins every span's Examples into one artifact (2+ spans only), per feature set.
UNION_ID = "ExamplesUnion"
SPEAKER_UNION_ID = "SpeakerExamplesUnion"
# Where a branch's champion comes from: ML Metadata (a resolver node) or the MLflow registry's alias.
CHAMPION_SOURCES = ("resolver", "registry")


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    spans: Sequence[Tuple[str, str]],
    feature_config: FeatureConfig,
    ctc_config: Dict[str, object],
    schema_path: str,
    tracking_uri: str,
    model_name: str,
    data_key: str,
    metadata_connection_config=None,
    artifact_root: str = "",
    test_span: int = 0,
    max_per: float = 0.95,
    min_per_improvement: float = 0.0,
    max_dead_letter_fraction: float = 0.2,
    min_train_examples: int = 1,
    warm_start: bool = True,
    beam_args: Sequence[str] = ("--direct_running_mode=in_memory",),
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    include_speaker: bool = False,
    speaker_feature_config: FeatureConfig = None,
    embedder_config: Dict[str, object] = None,
    embedder_model_name: str = "speechpipe-embedder",
    max_eer: float = 0.4,
    min_eer_improvement: float = 0.0,
    enable_cache: bool = True,
    champion_from: str = "resolver",
) -> tfx.dsl.Pipeline:
    """spans: (input path, content fingerprint) per span, span number = position. champion_from:
    "resolver" (the champion through ML Metadata, ChampionStrategy) or "registry" (a container
    step reads the MLflow registry's `champion` alias: for orchestrators without resolver tasks,
    open-source KFP; src/speechpipe/components/registry_champion.py)."""
    if champion_from not in CHAMPION_SOURCES:
        raise ValueError(f"champion_from={champion_from!r}: one of {', '.join(CHAMPION_SOURCES)}")
    from speechpipe.components.evaluator import SpeechEvaluator
    from speechpipe.components.feature_gen import FeatureGen
    from speechpipe.components.registry_pusher import RegistryPusher
    from speechpipe.components.validation_gate import ValidationGate

    components: List = []
    feature_json = json.dumps(feature_config.to_json(), sort_keys=True)

    # The TFMD schema is part of the code (src/speechpipe/schemas/features.pbtxt), not inferred from whatever data
    # arrived: a span that drifts from it must fail, not redefine it.
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    components.append(schema_gen)

    gates, span_examples = [], []
    for span, (path, fingerprint) in enumerate(spans):
        # One feature job per span: an unchanged span is an ML Metadata cache hit; only new audio
        # pays for decoding and spectrograms.
        features = FeatureGen(
            input_path=path, span=span, feature_config=feature_json, input_fingerprint=fingerprint,
            beam_args=json.dumps(list(beam_args)), split_fractions=",".join(str(f) for f in split_fractions),
        ).with_id(f"FeatureGen_span{span}")
        # Statistics of every split, for the validator and the report.
        statistics = tfx.components.StatisticsGen(examples=features.outputs["examples"]).with_id(f"StatisticsGen_span{span}")
        # Checks the span against the imported schema; it only reports.
        validator = tfx.components.ExampleValidator(
            statistics=statistics.outputs["statistics"], schema=schema_gen.outputs["schema"],
        ).with_id(f"ExampleValidator_span{span}")
        # The explicit gate: anomalies or too many dead letters fail the run before training.
        gate = ValidationGate(
            examples=features.outputs["examples"], anomalies=validator.outputs["anomalies"],
            max_dead_letter_fraction=max_dead_letter_fraction, min_train_examples=min_train_examples,
        ).with_id(f"ValidationGate_span{span}")
        components += [features, statistics, validator, gate]
        gates.append(gate)
        span_examples.append(features.outputs["examples"])
    # The trainers and pushers read ONE channel holding every span (KubeflowV2DagRunner compiles no
    # channel union): the span's own Examples for one span, else an ExamplesUnion node's copy.
    all_examples, union_node = examples_of_all_spans(span_examples, gates, UNION_ID)
    if union_node is not None:
        components.append(union_node)

    # The current champion, resolved through ML Metadata: the latest blessed model trained on
    # other data than this run's (so a re-run with nothing new resolves what the last run did).
    # (Or, with champion_from="registry", the version holding the registry's `champion` alias.)
    champion = champion_node(champion_from, data_key, "ctc", tracking_uri, model_name)
    components.append(champion)

    # The CTC phone recogniser on every span's train split, stopping on the validation splits'
    # PER; warm-started from the champion when there is one.
    trainer = gated_trainer(_run_fn(CTC_RUN_FN, champion_from), all_examples, champion, gates,
                            {"features": feature_config.to_json(), "ctc": ctc_config, "warm_start": warm_start},
                            ).with_id(CTC_TRAINER_ID)
    components.append(trainer)

    # PER on the fixed test split (span `test_span`) against the threshold and the champion.
    evaluator = SpeechEvaluator(
        model=trainer.outputs["model"], examples=span_examples[test_span], champion=champion.outputs["model"],
        max_per=max_per, min_per_improvement=min_per_improvement, data_key=data_key,
    )
    components.append(evaluator)

    # Registers, loads back, smoke-tests and crowns the model, only when it is blessed.
    pusher = RegistryPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"], examples=all_examples,
        tracking_uri=tracking_uri, artifact_root=artifact_root, model_name=model_name,
        pipeline_name=pipeline_name, data_key=data_key, feature_config=feature_json,
    )
    components.append(pusher)

    if include_speaker:
        speaker_feature_config = speaker_feature_config or feature_config
        speaker_examples = span_examples
        # Same features: the speaker trainer reads the CTC branch's union (or single span).
        shared_union = (all_examples, union_node)
        if speaker_feature_config != feature_config:
            shared_union = None
            # The embedder's own features (by default globally normalised: a per-utterance
            # normalisation removes the long-term spectrum, which carries the speaker). Same audio,
            # so the CTC features' statistics, validation and gate stand for them too.
            speaker_json = json.dumps(speaker_feature_config.to_json(), sort_keys=True)
            speaker_examples = []
            for span, (path, fingerprint) in enumerate(spans):
                node = FeatureGen(
                    input_path=path, span=span, feature_config=speaker_json, input_fingerprint=fingerprint,
                    beam_args=json.dumps(list(beam_args)),
                    split_fractions=",".join(str(f) for f in split_fractions),
                ).with_id(f"SpeakerFeatureGen_span{span}")
                node.add_upstream_node(gates[span])
                components.append(node)
                speaker_examples.append(node.outputs["examples"])
        components += _speaker_branch(
            features=speaker_examples, gates=gates, test_span=test_span, feature_config=speaker_feature_config,
            embedder_config=embedder_config or {}, warm_start=warm_start, beam_args=beam_args, data_key=data_key,
            max_eer=max_eer, min_eer_improvement=min_eer_improvement, tracking_uri=tracking_uri,
            artifact_root=artifact_root, model_name=embedder_model_name, pipeline_name=pipeline_name,
            feature_json=json.dumps(speaker_feature_config.to_json(), sort_keys=True), shared_union=shared_union,
            champion_from=champion_from)

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_args),
    )


def examples_of_all_spans(span_examples: List, gates: List, node_id: str):
    """(channel, node or None): the one Examples channel that holds every span's splits. One span:
    its FeatureGen's channel, no node. More: an ExamplesUnion node (src/speechpipe/components/examples_union.py)
    with one input per span, run only after every span passed its gate, and its output."""
    if len(span_examples) == 1:
        return span_examples[0], None
    from speechpipe.components.examples_union import ExamplesUnion

    node = ExamplesUnion(examples=span_examples).with_id(node_id)
    for gate in gates:
        node.add_upstream_node(gate)  # nothing is copied unless every span passed its gate
    return node.outputs["examples"], node


def gated_trainer(run_fn: str, examples, champion, gates: List, custom_config: Dict[str, object]):
    """A TFX Trainer on every span's train split, stopping on the validation splits, with the
    champion as its base model (warm start), run only after every span passed its gate."""
    trainer = tfx.components.Trainer(
        run_fn=run_fn,
        examples=examples,
        base_model=champion.outputs["model"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["validation"]),
        custom_config=custom_config,
    )
    for gate in gates:
        trainer.add_upstream_node(gate)  # no training unless every span passed its gate
    return trainer


def champion_node(champion_from: str, data_key: str, model_kind: str, tracking_uri: str, model_name: str):
    """The node whose `outputs["model"]` is a branch's champion: the ML Metadata resolver
    (`ChampionResolver`, `SpeakerChampionResolver`), or the registry step (`RegistryChampion`,
    `SpeakerRegistryChampion`)."""
    prefix = "Speaker" if model_kind == "speaker" else ""
    if champion_from == "registry":
        from speechpipe.components.registry_champion import RegistryChampion

        return RegistryChampion(tracking_uri=tracking_uri, model_name=model_name, data_key=data_key,
                                model_kind=model_kind).with_id(f"{prefix}RegistryChampion")
    return champion_resolver(data_key, model_kind).with_id(f"{prefix}ChampionResolver")


def _run_fn(run_fn: str, champion_from: str) -> str:
    """A trainer's run_fn; with a registry champion, its wrapper that drops a champion published
    as absent (src/speechpipe/components/registry_champion.py), so the trainer sees no base model, as when the
    resolver finds none."""
    if champion_from != "registry":
        return run_fn
    from speechpipe.components import registry_champion

    return {CTC_RUN_FN: registry_champion.CTC_RUN_FN, EMBEDDER_RUN_FN: registry_champion.EMBEDDER_RUN_FN}[run_fn]


def champion_resolver(data_key: str, model_kind: str) -> tfx.dsl.Resolver:
    """The champion of one branch ("ctc" or "speaker") through ML Metadata (ChampionStrategy)."""
    from speechpipe.components.champion_resolver import ChampionStrategy

    return tfx.dsl.Resolver(
        strategy_class=ChampionStrategy, config={"data_key": data_key, "model_kind": model_kind},
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    )


def _speaker_branch(features: List, gates: List, test_span: int, feature_config: FeatureConfig,
                    embedder_config: Dict[str, object], warm_start: bool, beam_args: Sequence[str], data_key: str,
                    max_eer: float, min_eer_improvement: float, tracking_uri: str, artifact_root: str,
                    model_name: str, pipeline_name: str, feature_json: str, shared_union=None,
                    champion_from: str = "resolver") -> List:
    """The speaker embedder's nodes, on the same Examples and gates as the CTC branch."""
    from speechpipe.components.pair_gen import PairGen
    from speechpipe.components.registry_pusher import RegistryPusher
    from speechpipe.components.speaker_evaluator import SpeakerEvaluator

    # The union of the spans: the CTC branch's when both branches read the same features.
    all_examples, union_node = (shared_union if shared_union is not None
                                else examples_of_all_spans(features, gates, SPEAKER_UNION_ID))
    # The trial list of the fixed test span (VoxCeleb format), after its gate passed. The
    # trainer's default in-batch form draws its own pairs, so no other span needs pairs.
    pairs = PairGen(examples=features[test_span], beam_args=json.dumps(list(beam_args))).with_id("PairGen")
    pairs.add_upstream_node(gates[test_span])
    # The speaker champion: the same rule as the CTC one, among the speaker blessings.
    champion = champion_node(champion_from, data_key, "speaker", tracking_uri, model_name)
    # The siamese embedder on every span's training speakers, best weights by validation EER.
    trainer = gated_trainer(_run_fn(EMBEDDER_RUN_FN, champion_from), all_examples, champion, gates,
                            {"features": feature_config.to_json(), "embedder": dict(embedder_config),
                             "warm_start": warm_start}).with_id(SPEAKER_TRAINER_ID)
    # EER on the test span's trial list (speakers never seen), against the threshold and the champion.
    evaluator = SpeakerEvaluator(
        model=trainer.outputs["model"], examples=features[test_span], pairs=pairs.outputs["pairs"],
        champion=champion.outputs["model"], max_eer=max_eer, min_eer_improvement=min_eer_improvement,
        data_key=data_key,
    ).with_id("SpeakerEvaluator")
    # Registers, loads back, smoke-tests `embed` and crowns the embedder, only when blessed.
    pusher = RegistryPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"], examples=all_examples,
        tracking_uri=tracking_uri, artifact_root=artifact_root, model_name=model_name,
        pipeline_name=pipeline_name, data_key=data_key, feature_config=feature_json, model_kind="speaker",
    ).with_id("SpeakerRegistryPusher")
    return ([union_node] if union_node is not None and shared_union is None else []) + \
        [pairs, champion, trainer, evaluator, pusher]
