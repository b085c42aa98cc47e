"""`speechpipe compile` (pipeline/kubeflow_v2_runner.py): the compiled spec parses with KFP's own
pipeline-spec protos, holds every node of the local DAG, requests GPUs for the trainers and for
nothing else, runs every container on the image, roots the pipeline on object storage and passes
the cluster's Beam options to the Beam stages."""

import json
import os
from dataclasses import replace

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from speechpipe.jobs.beam_options import DataflowArgs
from speechpipe.jobs.cluster_resources import (
    ACCELERATORS,
    GKE_ACCELERATOR_LABEL,
    KUBERNETES_GPU_RESOURCE,
    NodeResources,
    ResourceError,
    apply_resources,
)
from speechpipe.pipeline import kubeflow_v2_runner as runner
from speechpipe.pipeline.run_config import RunConfig
from speechpipe.validation import ConfigError
from tests import memfs

IMAGE = "europe-docker.pkg.dev/p/speechpipe/speechpipe:1.0"
HOME = "gs://speechpipe-test/home"
TRACKING = "http://mlflow.mlflow.svc.cluster.local:5000"
TRAINER = NodeResources(cpu=12.0, memory_gb=85.0, accelerator="A100", accelerator_count=2)
DATAFLOW = DataflowArgs(
    project="p",
    region="europe-west4",
    temp_location="gs://speechpipe-test/tmp",
    sdk_container_image=IMAGE,
    setup_file=runner.IMAGE_SETUP_FILE,
    max_num_workers=50,
)


def _span(folder) -> str:
    """A one-line manifest: compiling reads a span's fingerprint, never its audio."""
    os.makedirs(os.path.join(folder, "wav"), exist_ok=True)
    with open(os.path.join(folder, "wav", "a.wav"), "wb") as f:
        f.write(b"RIFF")
    path = os.path.join(folder, "manifest.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"utterance": "id1/s/1", "audio": "wav/a.wav", "speaker": "id1"}) + "\n")
    return path


@pytest.fixture(scope="module")
def span(tmp_path_factory) -> str:
    return _span(str(tmp_path_factory.mktemp("span")))


def _config(spans, include_speaker: bool) -> RunConfig:
    return RunConfig(
        home=HOME,
        spans=tuple(spans),
        branches=("ctc", "speaker") if include_speaker else ("ctc",),
        tracking_uri=TRACKING,
        beam_args=tuple(DATAFLOW.to_args()),
    )


def _cluster(target: str, **changes) -> runner.ClusterConfig:
    return runner.ClusterConfig(
        **{"target": target, "image": IMAGE, "tracking_uri": TRACKING, "trainer": TRAINER, **changes}
    )


def _compile(config: RunConfig, cluster: runner.ClusterConfig) -> runner.CompiledPipeline:
    return runner.compile_pipeline(config, cluster)


def _local_node_ids(config: RunConfig, tmp_path) -> set:
    """The node ids of the DAG `speechpipe run` builds from the same configuration."""
    from speechpipe.pipeline import local_runner

    pipeline, _, _ = local_runner.build(replace(config, home=str(tmp_path / "home"), tracking_uri=None))
    return {node.id for node in pipeline.components}


def _read_back(path: str, target: str):
    """The written spec, parsed by KFP's protos (unknown fields are errors): (PipelineSpec dict,
    PlatformSpec dict or None)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        job = json.loads(text)
        json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
        spec, platform = job["pipelineSpec"], None
        assert job["runtimeConfig"]["gcsOutputDirectory"] == f"{HOME}/pipeline_root/speechpipe"
    else:
        documents = list(yaml.safe_load_all(text))
        spec, platform = documents[0], (documents[1] if len(documents) > 1 else None)
        if platform is not None:
            json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    return spec, platform


def _executor(spec, task: str):
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    return label, spec["deploymentSpec"]["executors"][label]


@pytest.mark.parametrize(("target", "out"), [("kubeflow", "pipeline.yaml"), ("vertex", "pipeline.json")])
@pytest.mark.parametrize("include_speaker", [False, True], ids=["ctc", "ctc+speaker"])
def test_the_compiled_spec(span, tmp_path, target, out, include_speaker):
    from speechpipe.pipeline.tfx_pipeline import TRAINER_NODE_IDS

    config = _config([span], include_speaker)
    compiled = _compile(config, _cluster(target))
    path = runner.write_compiled(compiled, str(tmp_path / out))
    spec, platform = _read_back(path, target)
    tasks = spec["root"]["dag"]["tasks"]

    # Every node of the local DAG is a task (a resolver compiles into tasks named after it).
    local = _local_node_ids(config, tmp_path)
    for node in local:
        assert node in tasks or any(t.startswith(node + "-") for t in tasks), f"{node} is not in the compiled spec"
    trainers = sorted(t for t in TRAINER_NODE_IDS if t in local)
    assert trainers == (["CTCTrainer", "SpeakerTrainer"] if include_speaker else ["CTCTrainer"])
    assert sorted(compiled.trainer_tasks) == trainers

    # GPUs on the trainers, and on nothing else.
    with_gpus = {}
    for task in tasks:
        _, executor = _executor(spec, task)
        accelerator = executor.get("container", {}).get("resources", {}).get("accelerator")
        if accelerator:
            with_gpus[task] = accelerator
    expected_type = ACCELERATORS["A100"].vertex_type if target == "vertex" else KUBERNETES_GPU_RESOURCE
    assert with_gpus == {t: {"type": expected_type, "count": "2"} for t in trainers}
    for task in trainers:
        resources = _executor(spec, task)[1]["container"]["resources"]
        assert (resources["cpuLimit"], resources["memoryLimit"]) == (12.0, 85.0)
        if target == "kubeflow":  # requests = limits on Kubernetes
            assert (resources["cpuRequest"], resources["memoryRequest"]) == (12.0, 85.0)
    if target == "kubeflow":
        selected = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert selected == {
            _executor(spec, t)[0]: {"nodeSelector": {"labels": {GKE_ACCELERATOR_LABEL: ACCELERATORS["A100"].gke_label}}}
            for t in trainers
        }
    else:
        assert platform is None

    # Every container runs the image; the pipeline is rooted in the home on object storage.
    containers = [e["container"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e]
    assert containers and {c["image"] for c in containers} == {IMAGE}
    assert spec["defaultPipelineRoot"] == f"{HOME}/pipeline_root/speechpipe"

    # The Beam stages get the Dataflow options; the schema is read from the image.
    for task in ("CTCFeatureGen_span0", "CTCStatisticsGen_span0"):
        args = _executor(spec, task)[1]["container"]["args"]
        assert all(flag in args for flag in DATAFLOW.to_args()), task
    # StatisticsGen runs the product's executor (byte-size batching), not TFX's stock one.
    assert "speechpipe.components.statistics_gen.Executor" in json.dumps(_executor(spec, "CTCStatisticsGen_span0")[1])
    feature_args = json.dumps(tasks["CTCFeatureGen_span0"]["inputs"]["parameters"])
    assert "DataflowRunner" in feature_args and span in feature_args
    assert runner.IMAGE_SCHEMA_FILE in json.dumps(tasks["ImportSchemaGen"]["inputs"])

    # The champion queries keep ChampionStrategy's rules: its kind, and not this run's data.
    resolver_filters = [
        q["filter"]
        for e in spec["deploymentSpec"]["executors"].values()
        if "resolver" in e
        for q in e["resolver"]["outputArtifactQueries"].values()
        if "tfx.ModelBlessing" in q["filter"]
    ]
    kinds = ["ctc", "speaker"] if include_speaker else ["ctc"]
    assert sorted(resolver_filters) == sorted(
        'schema_title="tfx.ModelBlessing" AND state=LIVE AND metadata.blessed.number_value=1 AND '
        f'metadata.model_kind.string_value="{kind}" AND metadata.data_key.string_value!="{compiled.data_keys[kind]}"'
        for kind in kinds
    )


def test_the_command_line_writes_a_vertex_yaml(span, tmp_path):
    from speechpipe.cli import main

    out = tmp_path / "spec" / "pipeline.yaml"
    argv = [
        "compile",
        "--target",
        "vertex",
        "--out",
        str(out),
        "--image",
        IMAGE,
        "--home",
        HOME,
        "--span",
        span,
        "--tracking-uri",
        TRACKING,
        "--no-speaker",
        "--accelerator-type",
        "L4",
        "--trainer-cpu",
        "8",
        "--trainer-memory",
        "32",
        "--beam-runner",
        "flink",
        "--job-endpoint",
        "flink-jobserver:8099",
    ]
    assert main(argv) == 0
    spec, platform = _read_back(str(out), "vertex")
    trainer = _executor(spec, "CTCTrainer")[1]["container"]["resources"]
    assert trainer["accelerator"] == {"type": "NVIDIA_L4", "count": "1"} and platform is None
    args = _executor(spec, "CTCFeatureGen_span0")[1]["container"]["args"]
    # Flink's DOCKER workers run the pipeline's image unless told otherwise.
    assert {
        "--runner=PortableRunner",
        "--job_endpoint=flink-jobserver:8099",
        "--environment_type=DOCKER",
        f"--environment_config={IMAGE}",
        f"--setup_file={runner.IMAGE_SETUP_FILE}",
    } <= set(args)


@pytest.mark.parametrize("include_speaker", [False, True], ids=["ctc", "ctc+speaker"])
def test_the_cluster_pipeline_is_the_local_one(span, tmp_path, include_speaker):
    """Before compiling: the same nodes as `speechpipe run` builds from the same configuration, with
    the same execution properties, but for the schema file, which the pods read from the image."""
    from speechpipe.pipeline import local_runner

    config = _config([span], include_speaker)
    local, _, _ = local_runner.build(replace(config, home=str(tmp_path / "home")))
    cluster, _, _ = runner.build_pipeline(config, _cluster("vertex"))

    def properties(pipeline):
        return {node.id: {k: str(v) for k, v in node.exec_properties.items()} for node in pipeline.components}

    local_nodes, cluster_nodes = properties(local), properties(cluster)
    assert local_nodes["ImportSchemaGen"].pop("schema_file") != cluster_nodes["ImportSchemaGen"].pop("schema_file")
    assert cluster_nodes == local_nodes
    assert cluster.pipeline_info.pipeline_root == f"{HOME}/pipeline_root/speechpipe"


@pytest.mark.parametrize("target", ["kubeflow", "vertex"])
def test_only_the_trainers_get_gpus_in_the_pipeline(span, target):
    """Before compiling: the ResourceSpecs set on the pipeline's nodes."""
    from speechpipe.pipeline.tfx_pipeline import TRAINER_NODE_IDS

    pipeline, _, _ = runner.build_pipeline(_config([span], include_speaker=False), _cluster(target))
    others = NodeResources(cpu=4.0, memory_gb=16.0)
    found = apply_resources(pipeline, target, TRAINER, TRAINER_NODE_IDS, others)
    assert found == ["CTCTrainer"]
    for node in pipeline.components:
        spec = getattr(node, "platform_config", None)
        if node.id in found:
            assert spec.accelerator.count == 2 and spec.cpu_limit == 12.0
            assert spec.accelerator.type == ("NVIDIA_TESLA_A100" if target == "vertex" else KUBERNETES_GPU_RESOURCE)
        elif spec is not None:
            assert not spec.HasField("accelerator") and spec.cpu_limit == 4.0 and spec.memory_limit == 16.0
    with pytest.raises(ResourceError, match="only the trainers"):
        apply_resources(pipeline, target, TRAINER, TRAINER_NODE_IDS, TRAINER)


def test_the_accelerators_are_vertex_types():
    from google.cloud.aiplatform_v1.types import AcceleratorType

    for accelerator in ACCELERATORS.values():
        assert accelerator.vertex_type in AcceleratorType.__members__, accelerator
    assert (
        NodeResources(accelerator="NVIDIA_H100_80GB", accelerator_count=8).accelerator_type("vertex")
        == "NVIDIA_H100_80GB"
    )
    assert (
        NodeResources(accelerator="NVIDIA_H100_80GB", accelerator_count=8).accelerator_type("kubeflow")
        == KUBERNETES_GPU_RESOURCE
    )
    custom = NodeResources(accelerator="L4", accelerator_count=1, node_selector=("nvidia.com/gpu.product", "NVIDIA-L4"))
    assert custom.gpu_node_selector() == ("nvidia.com/gpu.product", "NVIDIA-L4")
    assert NodeResources(accelerator="L4", accelerator_count=1, node_selector=("", "")).gpu_node_selector() is None
    for bad in (
        dict(accelerator="B300", accelerator_count=1),
        dict(accelerator="L4", accelerator_count=0),
        dict(accelerator_count=1),
        dict(cpu=0.0),
    ):
        with pytest.raises(ResourceError):
            NodeResources(**bad)
    with pytest.raises(ResourceError, match="Kubernetes resource name"):
        NodeResources(accelerator="nvidia.com/gpu", accelerator_count=1).accelerator_type("vertex")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(home="/tmp/home"), "object storage"),
        (dict(tracking_uri="sqlite:////tmp/mlflow.db"), "MLflow tracking server"),
    ],
)
def test_a_cluster_needs_shared_storage_and_a_registry_server(span, change, message):
    config = _config([span], include_speaker=False)
    tracking = change.pop("tracking_uri", TRACKING)
    with pytest.raises(ConfigError, match=message):
        runner.compile_pipeline(replace(config, **change), _cluster("kubeflow", tracking_uri=tracking))


def test_kubeflow_takes_yaml():
    compiled = runner.CompiledPipeline("kubeflow", {"pipelineSpec": {}}, {}, [], "", [])
    with pytest.raises(ConfigError, match=r"\.yaml"):
        runner.write_compiled(compiled, "/tmp/pipeline.json")


def test_spans_on_object_storage(tmp_path):
    """Spans given as URIs reach FeatureGen unchanged (no local path is made of them)."""
    memfs.clear()
    memfs.put("memfs://bucket/spans/s0/wav/a.wav", b"RIFF")
    memfs.put("memfs://bucket/spans/s0/manifest.jsonl", b'{"utterance": "id1/s/1", "audio": "wav/a.wav"}\n')
    config = _config(["memfs://bucket/spans/s0/manifest.jsonl"], include_speaker=False)
    try:
        compiled = _compile(config, _cluster("vertex"))
    finally:
        memfs.clear()
    parameters = json.dumps(compiled.pipeline_spec["root"]["dag"]["tasks"]["CTCFeatureGen_span0"]["inputs"])
    assert "memfs://bucket/spans/s0/manifest.jsonl" in parameters


@pytest.mark.parametrize(
    ("include_speaker", "speaker_normalization"),
    [(False, None), (True, "global"), (True, "cmvn")],
    ids=["ctc", "ctc+speaker", "ctc+speaker-shared-features"],
)
def test_two_spans(span, tmp_path, include_speaker, speaker_normalization):
    """Several spans compile: one FeatureGen / StatisticsGen / ExampleValidator / ValidationGate per
    span, as in the local DAG, and an ExamplesUnion (one single-channel input per span, after every
    gate) that the trainers and pushers read; GPUs still on the trainers alone."""
    from speechpipe.components.examples_union import ExamplesUnion
    from speechpipe.pipeline.tfx_pipeline import SPEAKER_UNION_ID, TRAINER_NODE_IDS, UNION_ID

    spans = [span, _span(str(tmp_path / "span1")), _span(str(tmp_path / "span2"))]
    config = _config(spans, include_speaker)
    if speaker_normalization:
        config = replace(config, speaker_features=replace(config.speaker_features, normalization=speaker_normalization))
    compiled = _compile(config, _cluster("kubeflow"))
    path = runner.write_compiled(compiled, str(tmp_path / "pipeline.yaml"))
    spec, platform = _read_back(path, "kubeflow")
    tasks = spec["root"]["dag"]["tasks"]

    local = _local_node_ids(config, tmp_path)
    for node in local:
        assert node in tasks or any(t.startswith(node + "-") for t in tasks), f"{node} is not in the compiled spec"
    for i in range(len(spans)):
        assert {
            f"CTCFeatureGen_span{i}",
            f"CTCStatisticsGen_span{i}",
            f"CTCExampleValidator_span{i}",
            f"CTCValidationGate_span{i}",
        } <= set(tasks)
    own_speaker_features = include_speaker and speaker_normalization != config.features.normalization
    unions = {UNION_ID: "CTCFeatureGen_span"}
    if own_speaker_features:
        unions[SPEAKER_UNION_ID] = "SpeakerFeatureGen_span"
    assert {t for t in tasks if t.endswith("ExamplesUnion")} == set(unions)
    gates = {f"CTCValidationGate_span{i}" for i in range(len(spans))}
    for union, producer in unions.items():
        task = tasks[union]
        # One artifact input per span, each fed by that span's feature node alone.
        artifacts = task["inputs"]["artifacts"]
        assert sorted(artifacts) == [f"span_{i}" for i in range(len(spans))]
        for i in range(len(spans)):
            assert artifacts[f"span_{i}"]["taskOutputArtifact"] == {
                "producerTask": f"{producer}{i}",
                "outputArtifactKey": "examples",
            }
        assert gates <= set(task["dependentTasks"])  # after every span's gate
        assert _executor(spec, union)[1]["container"]["command"]  # an ordinary container step
        assert f"{ExamplesUnion.__module__}.Executor" in json.dumps(_executor(spec, union)[1]["container"])
    # The trainers and pushers read the union's one output; the evaluators the test span's own.
    readers = {"CTCTrainer": UNION_ID, "CTCRegistryPusher": UNION_ID}
    if include_speaker:
        readers.update(
            {
                "SpeakerBlockGen": SPEAKER_UNION_ID if own_speaker_features else UNION_ID,
                "SpeakerRegistryPusher": SPEAKER_UNION_ID if own_speaker_features else UNION_ID,
            }
        )
        # The speaker trainer reads the training input SpeakerBlockGen cut from the union.
        assert tasks["SpeakerTrainer"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"] == {
            "producerTask": "SpeakerBlockGen",
            "outputArtifactKey": "training_input",
        }
    for reader, union in readers.items():
        assert tasks[reader]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"] == {
            "producerTask": union,
            "outputArtifactKey": "examples",
        }, reader
    assert (
        tasks["CTCEvaluator"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"]["producerTask"]
        == "CTCFeatureGen_span0"
    )

    # GPUs on the trainers alone, the union included among the nodes without one.
    trainers = sorted(t for t in TRAINER_NODE_IDS if t in tasks)
    assert trainers == (["CTCTrainer", "SpeakerTrainer"] if include_speaker else ["CTCTrainer"])
    with_gpus = {t for t in tasks if _executor(spec, t)[1].get("container", {}).get("resources", {}).get("accelerator")}
    assert with_gpus == set(trainers)
    assert set(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) == {
        _executor(spec, t)[0] for t in trainers
    }


def test_one_span_has_no_union_node(span, tmp_path):
    """A single span's Examples go to the trainers directly, as before."""
    pipeline, _, _ = runner.build_pipeline(_config([span], include_speaker=True), _cluster("kubeflow"))
    assert not [n.id for n in pipeline.components if n.id.endswith("ExamplesUnion")]


@pytest.mark.parametrize("target", ["kubeflow", "vertex"])
def test_champion_from_the_registry(span, tmp_path, target):
    """`--champion-from registry` (open-source KFP runs no resolver tasks): a container step per
    branch reads the MLflow registry's `champion` alias and feeds the trainer (base_model) and the
    evaluator (champion); no resolver task is left; GPUs still on the trainers alone."""
    from speechpipe.cli import main
    from speechpipe.pipeline.tfx_pipeline import CTC_RUN_FN, EMBEDDER_RUN_FN

    out = tmp_path / ("pipeline.yaml" if target == "kubeflow" else "pipeline.json")
    second = _span(str(tmp_path / "span1"))
    argv = [
        "compile",
        "--target",
        target,
        "--out",
        str(out),
        "--image",
        IMAGE,
        "--home",
        HOME,
        "--span",
        span,
        "--span",
        second,
        "--tracking-uri",
        TRACKING,
        "--speaker",
        "--accelerator-type",
        "L4",
        "--champion-from",
        "registry",
        # One-line spans: the preflight would stop the speaker branch (one speaker each).
        "--skip-preflight",
    ]
    assert main(argv) == 0
    spec, platform = _read_back(str(out), target)
    tasks = spec["root"]["dag"]["tasks"]
    executors = spec["deploymentSpec"]["executors"]
    assert not [label for label, e in executors.items() if "resolver" in e]
    assert not [t for t in tasks if "Resolver" in t]
    for champion, trainer, evaluator, model_name, kind, run_fn in (
        ("CTCRegistryChampion", "CTCTrainer", "CTCEvaluator", "speechpipe-ctc", "ctc", CTC_RUN_FN),
        (
            "SpeakerRegistryChampion",
            "SpeakerTrainer",
            "SpeakerEvaluator",
            "speechpipe-embedder",
            "speaker",
            EMBEDDER_RUN_FN,
        ),
    ):
        task = tasks[champion]
        assert "artifacts" not in task.get("inputs", {})  # no upstream: it asks the registry
        parameters = json.dumps(task["inputs"]["parameters"])
        assert TRACKING in parameters and model_name in parameters and f'"{kind}"' in parameters
        container = _executor(spec, champion)[1]["container"]
        assert container["image"] == IMAGE and "accelerator" not in container.get("resources", {})
        assert "speechpipe.components.registry_champion.Executor" in container["args"]
        assert tasks[trainer]["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"] == {
            "producerTask": champion,
            "outputArtifactKey": "model",
        }
        assert tasks[evaluator]["inputs"]["artifacts"]["champion"]["taskOutputArtifact"] == {
            "producerTask": champion,
            "outputArtifactKey": "model",
        }
        assert run_fn in json.dumps(tasks[trainer]["inputs"]["parameters"])
    with_gpus = {t for t in tasks if _executor(spec, t)[1].get("container", {}).get("resources", {}).get("accelerator")}
    assert with_gpus == {"CTCTrainer", "SpeakerTrainer"}
    # The default stays the resolver.
    compiled = _compile(_config([span], include_speaker=True), _cluster(target))
    assert "CTCChampionResolver-model-blessing-resolver" in compiled.pipeline_spec["root"]["dag"]["tasks"]
    assert "CTCRegistryChampion" not in compiled.pipeline_spec["root"]["dag"]["tasks"]


def test_champion_from_is_checked(span):
    with pytest.raises(ConfigError, match="champion_from"):
        _compile(replace(_config([span], include_speaker=False), champion_from="mlmd"), _cluster("kubeflow"))


def test_each_branch_on_its_own_span_compiles_with_its_own_gates(tmp_path):
    """`--ctc-span A --speaker-span B` on a cluster: each branch's trainer waits for its own span's
    gate only, so a failed CTC span leaves the embedder's tasks free to run (KFP and Vertex run
    every task whose inputs are ready)."""
    ctc, speaker = _span(str(tmp_path / "ctc")), _span(str(tmp_path / "speaker"))
    config = replace(_config([], True), ctc_spans=(ctc,), speaker_spans=(speaker,))
    compiled = _compile(config, _cluster("kubeflow"))
    tasks = compiled.pipeline_spec["root"]["dag"]["tasks"]
    assert {
        "CTCFeatureGen_span0",
        "CTCValidationGate_span0",
        "SpeakerFeatureGen_span1",
        "SpeakerStatisticsGen_span1",
        "SpeakerExampleValidator_span1",
        "SpeakerValidationGate_span1",
    } <= set(tasks)
    assert "CTCFeatureGen_span1" not in tasks and "SpeakerFeatureGen_span0" not in tasks

    def upstream(task: str) -> set:
        found, todo = set(), [task]
        while todo:
            for parent in tasks[todo.pop()].get("dependentTasks", []):
                if parent not in found:
                    found.add(parent)
                    todo.append(parent)
        return found

    ctc_upstream, speaker_upstream = upstream("CTCTrainer"), upstream("SpeakerTrainer")
    assert "CTCValidationGate_span0" in ctc_upstream and "SpeakerValidationGate_span1" not in ctc_upstream
    assert "SpeakerValidationGate_span1" in speaker_upstream and "CTCValidationGate_span0" not in speaker_upstream
    assert set(compiled.data_keys) == {"ctc", "speaker"} and compiled.data_keys["ctc"] != compiled.data_keys["speaker"]


def test_speaker_augmentation_reaches_the_speaker_feature_job_only(span, tmp_path):
    """`--speaker-augment`: the speaker branch gets its own FeatureGen with the augmentation (the
    CTC branch's stays clean), its data key changes (other training data, so a new champion
    comparison) and the CTC key does not; a config asking for nothing is an error."""
    from speechpipe.cli import main  # noqa: F401 - the parser the flags belong to
    from speechpipe.pipeline import local_runner
    from speechpipe.pipeline.run_config import data_keys, validate_run_config

    args = local_runner.build_parser().parse_args(
        [
            "--home",
            str(tmp_path / "home"),
            "--span",
            span,
            "--speaker-augment",
            "noise,speed",
            "--speaker-augment-copies",
            "2",
        ]
    )
    config = replace(local_runner.config_from_args(args), tracking_uri=None)
    assert config.speaker_augment["kinds"] == ("noise", "speed") and config.speaker_augment["copies"] == 2
    pipeline, _, _ = local_runner.build(config)
    nodes = {c.id: c for c in pipeline.components}
    augment = json.loads(nodes["SpeakerFeatureGen_span0"].exec_properties["augment_config"])
    assert augment["copies"] == 2 and augment["kinds"] == ["noise", "speed"]
    assert nodes["CTCFeatureGen_span0"].exec_properties["augment_config"] == ""
    clean = replace(config, speaker_augment=None)
    fingerprints = ["f0"]
    assert data_keys(config, fingerprints)["ctc"] == data_keys(clean, fingerprints)["ctc"]
    assert data_keys(config, fingerprints)["speaker"] != data_keys(clean, fingerprints)["speaker"]
    with pytest.raises(ConfigError, match="no copies"):
        validate_run_config(replace(config, speaker_augment={**config.speaker_augment, "copies": 0}))
    with pytest.raises(ConfigError, match="unknown"):
        validate_run_config(replace(config, speaker_augment={"copies": 1, "kind": ["noise"]}))
