"""The speechpipe TFX pipeline, built from explicit arguments (`create_pipeline`).

Two branches, each on its own spans (a span may feed both):

    the CTC branch, on each of its spans i:
    CTCFeatureGen_span<i> -> CTCStatisticsGen_span<i> -> CTCExampleValidator_span<i> (<- ImportSchemaGen)
                          -> CTCValidationGate_span<i>  (fails on anomalies / dead letters)
    CTCExamplesUnion (only with 2+ spans, after every gate: every span's splits as one Examples artifact)
    CTCChampionResolver (ML Metadata) -> CTCTrainer (warm start from the champion, after every gate)
                                      -> CTCEvaluator (PER threshold + champion comparison -> ModelBlessing)
                                      -> CTCRegistryPusher (MLflow; only when blessed; alias `champion`)
    the speaker branch, same pattern:
    SpeakerFeatureGen_span<i> (the embedder's own features: after CTCValidationGate_span<i> on a span
        the CTC branch checks too; on a span of its own, with SpeakerStatisticsGen_span<i>,
        SpeakerExampleValidator_span<i> and SpeakerValidationGate_span<i>)
    SpeakerExamplesUnion (2+ spans; the trainers share CTCExamplesUnion when spans and features agree)
    PairGen (trial list of the test span's test split, or the official list it is given)
    SpeakerBlockGen (the trainer's input: every span's training speakers as speaker blocks, and the
        back end's capped sample of training utterances)
    SpeakerChampionResolver -> SpeakerTrainer (siamese embedder) -> SpeakerEvaluator (EER, clustering)
                            -> SpeakerRegistryPusher
    with champion_from="registry" (open-source KFP runs no resolver tasks): CTCRegistryChampion and
    SpeakerRegistryChampion, container steps reading the MLflow registry's `champion` alias, stand
    in for the two resolvers (components/registry_champion.py).

`pipeline/local_runner.py` runs it with LocalDagRunner, Beam's DirectRunner and SQLite ML Metadata
under one home folder; the same function serves other orchestrators (KFP) unchanged.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

from tfx import v1 as tfx

from speechpipe.config import EMBEDDER_MODEL_NAME, MAX_EER, MAX_PER, SPLIT_FRACTIONS, FeatureConfig
from speechpipe.jobs.beam_options import IN_MEMORY_ARGS
from speechpipe.pipeline.run_config import CHAMPION_SOURCES

CTC_RUN_FN = "speechpipe.components.ctc_trainer.run_fn"
EMBEDDER_RUN_FN = "speechpipe.components.embedder_trainer.run_fn"

# Each branch's nodes are named with its prefix: "CTC" for the phone recogniser's (and for the
# per-span nodes of its feature set), "Speaker" for the embedder's.
CTC_PREFIX, SPEAKER_PREFIX = "CTC", "Speaker"
# The node ids of the trainers: the only nodes a cluster deployment gives GPUs to
# (pipeline/kubeflow_v2_runner.py). Each exists when its branch is on.
CTC_TRAINER_ID = f"{CTC_PREFIX}Trainer"
SPEAKER_TRAINER_ID = f"{SPEAKER_PREFIX}Trainer"
TRAINER_NODE_IDS = (CTC_TRAINER_ID, SPEAKER_TRAINER_ID)
# The node that joins every span's Examples into one artifact (2+ spans only), per feature set.
_UNION = "ExamplesUnion"
UNION_ID = f"{CTC_PREFIX}{_UNION}"
SPEAKER_UNION_ID = f"{SPEAKER_PREFIX}{_UNION}"


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
    max_per: float = MAX_PER,
    min_per_improvement: float = 0.0,
    max_dead_letter_fraction: float = 0.2,
    min_train_examples: int = 1,
    warm_start: bool = True,
    beam_args: Sequence[str] = IN_MEMORY_ARGS,
    split_fractions: Sequence[float] = SPLIT_FRACTIONS,
    ctc_spans: Optional[Sequence[int]] = None,
    speaker_spans: Sequence[int] = (),
    speaker_feature_config: FeatureConfig = None,
    embedder_config: Dict[str, object] = None,
    embedder_model_name: str = EMBEDDER_MODEL_NAME,
    speaker_data_key: str = "",
    trials_file: str = "",
    max_eer: float = MAX_EER,
    min_eer_improvement: float = 0.0,
    target_far: float = 0.01,
    enable_cache: bool = True,
    champion_from: str = "resolver",
    language: str = "",
    speaker_augment: Optional[Dict[str, object]] = None,
    span_options: Sequence[Dict[str, str]] = (),
) -> tfx.dsl.Pipeline:
    """spans: (input path, content fingerprint) per span, span number = position. ctc_spans and
    speaker_spans: the numbers of each branch's spans, oldest first (None: every span for the CTC
    branch; empty: the branch is off); `test_span` indexes each branch's own list. data_key and
    speaker_data_key name each branch's training data (pipeline/run_config.py).
    trials_file: an official VoxCeleb trial list for the speaker evaluator ("" = the test span's
    own). language: the corpus language, for transcripts given as text ("" = IPA only).
    speaker_augment: AugmentConfig json for the speaker branch's training splits (None = clean).
    span_options: per span, FeatureGen parameters beyond the defaults (`data_root`, the
    preflight's `split_overrides`; pipeline/preflight.py, span_options); () = none.
    champion_from: "resolver" (the champion through ML Metadata, ChampionStrategy) or "registry"
    (a container step reads the MLflow registry's `champion` alias: for orchestrators without
    resolver tasks, open-source KFP; components/registry_champion.py)."""
    if champion_from not in CHAMPION_SOURCES:
        raise ValueError(f"champion_from={champion_from!r}: one of {', '.join(CHAMPION_SOURCES)}")
    ctc_spans = list(range(len(spans))) if ctc_spans is None else list(ctc_spans)
    speaker_spans = list(speaker_spans)
    if not ctc_spans and not speaker_spans:
        raise ValueError("no branch has a span: give ctc_spans, speaker_spans or both")

    components: List = []
    # The TFMD schema is part of the code (schemas/features.pbtxt), not inferred from whatever data
    # arrived: a span that drifts from it must fail, not redefine it.
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    components.append(schema_gen)
    checked = _SpanFeatures(
        spans,
        schema_gen,
        beam_args,
        split_fractions,
        max_dead_letter_fraction,
        min_train_examples,
        language,
        components,
        span_options,
    )

    if ctc_spans:
        components += _ctc_branch(
            checked,
            ctc_spans,
            feature_config,
            ctc_config,
            test_span,
            warm_start,
            data_key,
            max_per,
            min_per_improvement,
            tracking_uri,
            artifact_root,
            model_name,
            pipeline_name,
            champion_from,
        )
    if speaker_spans:
        speaker_feature_config = speaker_feature_config or feature_config
        components += _speaker_branch(
            checked,
            speaker_spans,
            ctc_spans,
            feature_config,
            speaker_feature_config,
            test_span=test_span,
            embedder_config=embedder_config or {},
            warm_start=warm_start,
            beam_args=beam_args,
            data_key=speaker_data_key or data_key,
            max_eer=max_eer,
            min_eer_improvement=min_eer_improvement,
            target_far=target_far,
            tracking_uri=tracking_uri,
            artifact_root=artifact_root,
            model_name=embedder_model_name,
            pipeline_name=pipeline_name,
            champion_from=champion_from,
            trials_file=trials_file,
            augment_config=speaker_augment,
        )

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_args),
    )


class _SpanFeatures:
    """The feature nodes of every span, made once per (span, feature set) and shared by the
    branches that read them. The first feature set made for a span is checked (statistics,
    validator, gate); a second feature set of the same audio runs after that gate, which stands
    for it too (same audio, same dead letters)."""

    def __init__(
        self,
        spans,
        schema_gen,
        beam_args,
        split_fractions,
        max_dead_letter_fraction,
        min_train_examples,
        language,
        components: List,
        span_options: Sequence[Dict[str, str]] = (),
    ) -> None:
        self.spans, self.schema_gen, self.components = spans, schema_gen, components
        self.span_options = list(span_options)
        self.beam_args, self.split_fractions = json.dumps(list(beam_args)), ",".join(str(f) for f in split_fractions)
        self.max_dead_letter_fraction, self.min_train_examples = max_dead_letter_fraction, min_train_examples
        self.language = language
        self._made: Dict[Tuple[int, str], Tuple[object, object]] = {}  # (span, features) -> (examples, gate)
        self._gates: Dict[int, object] = {}
        self._unions: Dict[Tuple[Tuple[int, ...], str], object] = {}

    def get(self, span: int, config: FeatureConfig, prefix: str, augment: str = "") -> Tuple[object, object]:
        """(examples channel, gate node) of `span` computed with `config` (and the training
        split's augmentation, AugmentConfig json, "" = none); `prefix` names new nodes
        (CTC_PREFIX for the CTC branch's feature set, SPEAKER_PREFIX for the embedder's)."""
        from speechpipe.components.feature_gen import FeatureGen
        from speechpipe.components.statistics_gen import StatisticsGen, statistics_options
        from speechpipe.components.validation_gate import ValidationGate

        feature_json = json.dumps(config.to_json(), sort_keys=True) + augment
        if (span, feature_json) in self._made:
            return self._made[(span, feature_json)]
        path, fingerprint = self.spans[span]
        # One feature job per span: an unchanged span is an ML Metadata cache hit; only new audio
        # pays for decoding and spectrograms.
        features = FeatureGen(
            input_path=path,
            span=span,
            feature_config=json.dumps(config.to_json(), sort_keys=True),
            input_fingerprint=fingerprint,
            beam_args=self.beam_args,
            split_fractions=self.split_fractions,
            language=self.language,
            augment_config=augment,
            # Given only when set, so that a span without them keeps its execution properties.
            **(self.span_options[span] if span < len(self.span_options) else {}),
        ).with_id(f"{prefix}FeatureGen_span{span}")
        self.components.append(features)
        if span in self._gates:
            gate = self._gates[span]
            features.add_upstream_node(gate)
        else:
            # Statistics of every split, for the validator and the report.
            statistics = StatisticsGen(
                examples=features.outputs["examples"], stats_options=statistics_options()
            ).with_id(f"{prefix}StatisticsGen_span{span}")
            # Checks the span against the imported schema; it only reports.
            validator = tfx.components.ExampleValidator(
                statistics=statistics.outputs["statistics"],
                schema=self.schema_gen.outputs["schema"],
            ).with_id(f"{prefix}ExampleValidator_span{span}")
            # The explicit gate: anomalies or too many dead letters stop this span's branches before training.
            gate = ValidationGate(
                examples=features.outputs["examples"],
                anomalies=validator.outputs["anomalies"],
                max_dead_letter_fraction=self.max_dead_letter_fraction,
                min_train_examples=self.min_train_examples,
            ).with_id(f"{prefix}ValidationGate_span{span}")
            self.components += [statistics, validator, gate]
            self._gates[span] = gate
        self._made[(span, feature_json)] = (features.outputs["examples"], gate)
        return self._made[(span, feature_json)]

    def union(
        self, span_numbers: Sequence[int], config: FeatureConfig, prefix: str, augment: str = ""
    ) -> Tuple[object, List]:
        """(the one Examples channel holding every listed span, their gates): the span's own
        channel for one span, else an ExamplesUnion node (`<prefix>ExamplesUnion`), made once per
        (spans, feature set), so two branches on the same spans and features share it."""
        made = [self.get(span, config, prefix, augment) for span in span_numbers]
        examples, gates = [m[0] for m in made], [m[1] for m in made]
        key = (tuple(span_numbers), json.dumps(config.to_json(), sort_keys=True) + augment)
        if key not in self._unions:
            channel, node = examples_of_all_spans(examples, gates, f"{prefix}{_UNION}")
            if node is not None:
                self.components.append(node)
            self._unions[key] = channel
        return self._unions[key], gates


def _ctc_branch(
    checked: _SpanFeatures,
    span_numbers: List[int],
    feature_config: FeatureConfig,
    ctc_config: Dict[str, object],
    test_span: int,
    warm_start: bool,
    data_key: str,
    max_per: float,
    min_per_improvement: float,
    tracking_uri: str,
    artifact_root: str,
    model_name: str,
    pipeline_name: str,
    champion_from: str,
) -> List:
    """The CTC phone recogniser's nodes, on its own spans' Examples and gates."""
    from speechpipe.components.ctc_evaluator import CTCEvaluator
    from speechpipe.components.registry_pusher import RegistryPusher

    # The trainers and pushers read ONE channel holding every span (KubeflowV2DagRunner compiles no
    # channel union): the span's own Examples for one span, else an ExamplesUnion node's copy.
    all_examples, gates = checked.union(span_numbers, feature_config, CTC_PREFIX)
    test_examples = checked.get(span_numbers[test_span], feature_config, CTC_PREFIX)[0]
    components: List = []
    # The current champion, resolved through ML Metadata: the latest blessed model trained on
    # other data than this run's (so a re-run with nothing new resolves what the last run did).
    # (Or, with champion_from="registry", the version holding the registry's `champion` alias.)
    champion = champion_node(champion_from, data_key, "ctc", tracking_uri, model_name)
    components.append(champion)
    # The CTC phone recogniser on every span's train split, stopping on the validation splits'
    # PER; warm-started from the champion when there is one.
    trainer = gated_trainer(
        CTC_RUN_FN,
        all_examples,
        champion,
        gates,
        {"features": feature_config.to_json(), "ctc": ctc_config, "warm_start": warm_start},
    ).with_id(CTC_TRAINER_ID)
    # PER on the fixed test split (the branch's span `test_span`) against the threshold and the champion.
    evaluator = CTCEvaluator(
        model=trainer.outputs["model"],
        examples=test_examples,
        champion=champion.outputs["model"],
        max_per=max_per,
        min_per_improvement=min_per_improvement,
        data_key=data_key,
    ).with_id(f"{CTC_PREFIX}Evaluator")
    # Registers, loads back, smoke-tests and crowns the model, only when it is blessed.
    pusher = RegistryPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        examples=all_examples,
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
        model_name=model_name,
        pipeline_name=pipeline_name,
        data_key=data_key,
        feature_config=json.dumps(feature_config.to_json(), sort_keys=True),
    ).with_id(f"{CTC_PREFIX}RegistryPusher")
    return components + [trainer, evaluator, pusher]


def examples_of_all_spans(span_examples: List, gates: List, node_id: str):
    """(channel, node or None): the one Examples channel that holds every span's splits. One span:
    its FeatureGen's channel, no node. More: an ExamplesUnion node (components/examples_union.py)
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
    (`CTCChampionResolver`, `SpeakerChampionResolver`), or the registry step (`CTCRegistryChampion`,
    `SpeakerRegistryChampion`)."""
    prefix = SPEAKER_PREFIX if model_kind == "speaker" else CTC_PREFIX
    if champion_from == "registry":
        from speechpipe.components.registry_champion import RegistryChampion

        return RegistryChampion(
            tracking_uri=tracking_uri, model_name=model_name, data_key=data_key, model_kind=model_kind
        ).with_id(f"{prefix}RegistryChampion")
    from speechpipe.components.champion_resolver import champion_resolver

    return champion_resolver(data_key, model_kind).with_id(f"{prefix}ChampionResolver")


def _speaker_branch(
    checked: _SpanFeatures,
    span_numbers: List[int],
    ctc_span_numbers: List[int],
    ctc_feature_config: FeatureConfig,
    feature_config: FeatureConfig,
    test_span: int,
    embedder_config: Dict[str, object],
    warm_start: bool,
    beam_args: Sequence[str],
    data_key: str,
    max_eer: float,
    min_eer_improvement: float,
    tracking_uri: str,
    artifact_root: str,
    model_name: str,
    pipeline_name: str,
    champion_from: str = "resolver",
    trials_file: str = "",
    target_far: float = 0.01,
    augment_config: Optional[Dict[str, object]] = None,
) -> List:
    """The speaker embedder's nodes, on its own spans' Examples and gates. On a span the CTC
    branch also reads, the embedder's features (by default globally normalised: a per-utterance
    normalisation removes the long-term spectrum, which carries the speaker) run after that span's
    gate; the two branches share one union when they read the same spans with the same features."""
    from speechpipe.components.pair_gen import PairGen
    from speechpipe.components.registry_pusher import RegistryPusher
    from speechpipe.components.speaker_block_gen import SpeakerBlockGen
    from speechpipe.components.speaker_evaluator import SpeakerEvaluator
    from speechpipe.speakers.embedder.config import EmbedderTrainConfig

    for span in span_numbers:
        if span in ctc_span_numbers:  # the CTC features and their gate come first on a shared span
            checked.get(span, ctc_feature_config, CTC_PREFIX)
    # Augmented copies go to the training splits only, so the test span's test split is clean.
    augment = json.dumps(augment_config, sort_keys=True) if augment_config else ""
    all_examples, gates = checked.union(span_numbers, feature_config, SPEAKER_PREFIX, augment)
    test_examples, test_gate = checked.get(span_numbers[test_span], feature_config, SPEAKER_PREFIX, augment)
    # The trial list of the fixed test span (VoxCeleb format), after its gate passed, or the
    # official list it is given, checked against that split. The trainer's default in-batch form
    # draws its own pairs, so no other span needs pairs.
    pairs = PairGen(examples=test_examples, beam_args=json.dumps(list(beam_args)), trials_file=trials_file).with_id(
        "PairGen"
    )
    pairs.add_upstream_node(test_gate)
    # The trainer's input, from every span's training speakers: speaker blocks it streams, the
    # validation shards, and the back end's capped sample of training utterances.
    train_config = EmbedderTrainConfig.from_json(dict(embedder_config))
    blocks = SpeakerBlockGen(
        examples=all_examples,
        beam_args=json.dumps(list(beam_args)),
        segments_per_speaker=train_config.segments_per_speaker,
        blocks_per_speaker=train_config.blocks_per_speaker,
        segment_frames=train_config.model.segment_frames,
        backend_utterances=train_config.backend_max_utterances,
    ).with_id(f"{SPEAKER_PREFIX}BlockGen")
    for gate in gates:
        blocks.add_upstream_node(gate)  # nothing is cut unless every span passed its gate
    # The speaker champion: the same rule as the CTC one, among the speaker blessings.
    champion = champion_node(champion_from, data_key, "speaker", tracking_uri, model_name)
    # The siamese embedder on every span's training speakers, best weights by validation EER.
    trainer = gated_trainer(
        EMBEDDER_RUN_FN,
        blocks.outputs["training_input"],
        champion,
        gates,
        {"features": feature_config.to_json(), "embedder": dict(embedder_config), "warm_start": warm_start},
    ).with_id(SPEAKER_TRAINER_ID)
    # EER on the test span's trial list (speakers never seen), against the threshold and the champion,
    # under the caps the trainer's validation keeps (the run's embedder section).
    bounds = train_config
    evaluator = SpeakerEvaluator(
        model=trainer.outputs["model"],
        examples=test_examples,
        pairs=pairs.outputs["pairs"],
        champion=champion.outputs["model"],
        max_eer=max_eer,
        min_eer_improvement=min_eer_improvement,
        data_key=data_key,
        target_far=target_far,
        max_trials=bounds.max_trials,
        cluster_max_speakers=bounds.cluster_max_speakers,
        cluster_max_utterances=bounds.cluster_max_utterances,
    ).with_id(f"{SPEAKER_PREFIX}Evaluator")
    # Registers, loads back, smoke-tests `embed` and crowns the embedder, only when blessed.
    pusher = RegistryPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        examples=all_examples,
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
        model_name=model_name,
        pipeline_name=pipeline_name,
        data_key=data_key,
        feature_config=json.dumps(feature_config.to_json(), sort_keys=True),
        model_kind="speaker",
    ).with_id(f"{SPEAKER_PREFIX}RegistryPusher")
    return [pairs, blocks, champion, trainer, evaluator, pusher]
