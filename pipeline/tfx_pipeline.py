"""The speechpipe TFX pipeline, built from explicit arguments (`create_pipeline`).

    FeatureGen_span<i> -> StatisticsGen_span<i> -> ExampleValidator_span<i> (<- ImportSchemaGen)
                       -> ValidationGate_span<i>  (fails the run on anomalies / dead letters)
    ChampionResolver (ML Metadata) -> Trainer (CTC; warm start from the champion, after every gate)
                                   -> SpeechEvaluator (PER threshold + champion comparison -> ModelBlessing)
                                   -> RegistryPusher (MLflow; only when blessed; alias `champion`)

`pipeline/local_runner.py` runs it with LocalDagRunner, Beam's DirectRunner and SQLite ML Metadata
under one home folder; the same function serves other orchestrators (KFP) unchanged.
"""
from __future__ import annotations

import json
from typing import Dict, List, Sequence, Tuple

from tfx import v1 as tfx
from tfx.types.channel import union

from speechpipe.config import FeatureConfig

CTC_RUN_FN = "speechpipe.components.ctc_pipeline_trainer.run_fn"

# The node ids of the trainers: the only nodes a cluster deployment gives GPUs to
# (pipeline/kubeflow_v2_runner.py). "SpeakerTrainer" exists when the speaker branch is on.
CTC_TRAINER_ID = "Trainer"
SPEAKER_TRAINER_ID = "SpeakerTrainer"
TRAINER_NODE_IDS = (CTC_TRAINER_ID, SPEAKER_TRAINER_ID)


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
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """spans: (input path, content fingerprint) per span, span number = position."""
    from speechpipe.components.champion_resolver import ChampionStrategy
    from speechpipe.components.evaluator import SpeechEvaluator
    from speechpipe.components.feature_gen import FeatureGen
    from speechpipe.components.registry_pusher import RegistryPusher
    from speechpipe.components.validation_gate import ValidationGate

    if include_speaker:
        # Hook for issue 6: the pairs job + siamese embedder + EER blessing plug in here (see
        # docs/pipeline.md, "Speaker branch"). Refused rather than silently skipped.
        raise NotImplementedError("include_speaker: the pairs + embedder nodes are not wired into the TFX "
                                  "pipeline yet (docs/pipeline.md, 'Speaker branch')")

    components: List = []
    feature_json = json.dumps(feature_config.to_json(), sort_keys=True)

    # The TFMD schema is part of the code (schemas/features.pbtxt), not inferred from whatever data
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
    all_examples = span_examples[0] if len(span_examples) == 1 else union(span_examples)

    # The current champion, resolved through ML Metadata: the latest blessed model trained on
    # other data than this run's (so a re-run with nothing new resolves what the last run did).
    champion = tfx.dsl.Resolver(
        strategy_class=ChampionStrategy, config={"data_key": data_key},
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("ChampionResolver")
    components.append(champion)

    # The CTC phone recogniser on every span's train split, stopping on the validation splits'
    # PER; warm-started from the champion when there is one.
    trainer = tfx.components.Trainer(
        run_fn=CTC_RUN_FN,
        examples=all_examples,
        base_model=champion.outputs["model"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["validation"]),
        custom_config={"features": feature_config.to_json(), "ctc": ctc_config, "warm_start": warm_start},
    )
    for gate in gates:
        trainer.add_upstream_node(gate)  # no training unless every span passed its gate
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

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_args),
    )
