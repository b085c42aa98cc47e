"""`speechpipe compile`: the TFX pipeline as a KFP v2 pipeline spec, for Kubeflow Pipelines or
Vertex AI Pipelines.

    speechpipe compile --target kubeflow --out pipeline.yaml --image REGISTRY/speechpipe:TAG \\
        --home gs://BUCKET/speechpipe --spans-from gs://BUCKET/spans --tracking-uri http://mlflow:5000 \\
        [--accelerator-type L4 --accelerator-count 1] [--beam-runner dataflow --project P --region R ...] \\
        [--submit] [--schedule "0 3 * * *" --schedule-out schedule.json]

The DAG is `create_pipeline`'s, built from the same RunConfig as `speechpipe run` (every `speechpipe
run` option applies), compiled by TFX's KubeflowV2DagRunner. What changes for a cluster:

- every node runs the one image (deploy/Dockerfile), which holds the project at IMAGE_ROOT;
- the home is on object storage (gs://, s3://): the pipeline root lies under it, and ML Metadata
  is the cluster's own store;
- the trainers (TRAINER_NODE_IDS), and only they, request GPUs (src/speechpipe/jobs/cluster_resources.py);
- the Beam stages get the runner options of src/speechpipe/jobs/beam_options.py (Dataflow, Flink, ...);
- the registry is an MLflow server the pods reach (`--tracking-uri`), not SQLite under the home;
- KFP's resolver queries stand in for the ML Metadata champion strategy (`_champion_queries`), or,
  with `--champion-from registry` (open-source KFP runs no resolver tasks), a container step reads
  the MLflow registry's `champion` alias (components/registry_champion.py);
- several spans compile as they run locally: KFP v2 compiles no channel union, so the trainers
  read one ExamplesUnion node's output (components/examples_union.py), in both DAGs.

Output: `--target kubeflow` writes YAML, the PipelineSpec followed by its Kubernetes PlatformSpec
(GPU node selectors), as `kfp.Client` and the KFP UI upload it. `--target vertex` writes the
PipelineJob JSON (`.json`) or the PipelineSpec YAML (`.yaml`), as `aiplatform.PipelineJob` takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from speechpipe.io.storage import is_uri
from speechpipe.jobs import beam_options
from speechpipe.jobs.cluster_resources import (
    ACCELERATORS,
    TARGETS,
    NodeResources,
    ResourceError,
    apply_resources,
    kubernetes_platform_spec,
)
from speechpipe.pipeline import spans as span_discovery
from speechpipe.pipeline.run_config import (
    CHAMPION_SOURCES,
    RunConfig,
    data_keys,
    span_fingerprint,
    validate_run_config,
)
from speechpipe.results.tracking import tracking_uri_for
from speechpipe.validation import ConfigError

# Where deploy/Dockerfile puts the project's source inside the image: the nodes read the TFMD
# schema from there (a path that does not depend on the venv's Python version), and Beam workers
# build setup.py from there.
IMAGE_ROOT = "/opt/speechpipe"
IMAGE_SCHEMA_FILE = f"{IMAGE_ROOT}/schemas/features.pbtxt"
IMAGE_SETUP_FILE = f"{IMAGE_ROOT}/setup.py"

# KubeflowV2DagRunner compiles a latest-blessed-model resolver into two tasks; the first queries
# the blessings, and its filter is where ChampionStrategy's rules go (`_add_champion_clauses`).
_BLESSING_RESOLVER_SUFFIX = "-model-blessing-resolver"


class CompileError(RuntimeError):
    """The pipeline cannot be compiled for a cluster as it stands."""


@dataclass(frozen=True)
class ClusterConfig:
    """What a cluster deployment adds to a RunConfig."""

    target: str
    image: str
    tracking_uri: str
    trainer: NodeResources = field(
        default_factory=lambda: NodeResources(cpu=8.0, memory_gb=32.0, accelerator="L4", accelerator_count=1)
    )
    others: Optional[NodeResources] = None
    schema_file: str = IMAGE_SCHEMA_FILE
    display_name: Optional[str] = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"target={self.target!r}: one of {', '.join(TARGETS)}")
        if not self.image:
            raise ConfigError("image: the pipeline's container image is required (build it from deploy/Dockerfile)")
        if not self.tracking_uri or self.tracking_uri.startswith(("sqlite:", "file:", "/", ".")):
            raise ConfigError(
                f"tracking_uri={self.tracking_uri!r}: a cluster run needs an MLflow tracking server "
                "its pods reach (http(s)://...); a SQLite file or local folder is not shared"
            )


@dataclass
class CompiledPipeline:
    """A compiled pipeline: the PipelineJob (its `pipelineSpec` is the DAG) and, for Kubeflow, the
    Kubernetes platform spec."""

    target: str
    job: Dict
    platform_spec: Dict
    trainer_tasks: List[str]
    data_keys: Dict[str, str]  # per branch (pipeline/run_config.py, data_key)
    fingerprints: List[str]

    @property
    def pipeline_spec(self) -> Dict:
        return self.job["pipelineSpec"]


# --------------------------------------------------------------------------------- building


def build_pipeline(config: RunConfig, cluster: ClusterConfig, preflight=None):
    """The pipeline for a cluster, from `create_pipeline` with the arguments of
    `local_runner.pipeline_arguments`, plus the cluster's own: no SQLite metadata connection (the orchestrator
    records into its own store), spans passed as the pods see them, the image's schema file, the
    MLflow server, and the registry's own artifact store. Returns (pipeline, data key,
    fingerprints). tests/test_deploy_compile.py holds every node's execution properties to
    local_runner.build's, so the two argument lists cannot drift apart unnoticed."""
    from speechpipe.pipeline.local_runner import pipeline_arguments
    from speechpipe.pipeline.tfx_pipeline import create_pipeline

    if not is_uri(config.home):
        raise ConfigError(
            f"home={config.home!r}: a cluster pipeline needs its home on object storage (gs://, s3://), "
            "which every pod reaches"
        )
    fingerprints = [span_fingerprint(s) for s in config.all_spans]
    keys = data_keys(config, fingerprints)
    pipeline = create_pipeline(
        **pipeline_arguments(config, fingerprints, keys, preflight),
        schema_path=cluster.schema_file,
        tracking_uri=cluster.tracking_uri,
        # The MLflow server's default artifact root (e.g. gs://BUCKET/mlflow) holds the models.
        artifact_root="",
        metadata_connection_config=None,
    )
    return pipeline, keys, fingerprints


def _champion_queries(champions) -> Dict[str, str]:
    """Per champion resolver built for KubeflowV2DagRunner (components/champion_resolver.py,
    `kubeflow_champions`: TFX's LatestBlessedModelStrategy, compiled into two KFP resolver tasks
    that query the orchestrator's metadata store), the filter clauses that keep ChampionStrategy's
    rules in those queries: the blessing's model kind, and "not blessed on this run's data key" (so
    a re-run on the same data resolves what the run before it did)."""
    return {
        champion.node.id: (
            f' AND metadata.model_kind.string_value="{_quoted(champion.model_kind)}"'
            f' AND metadata.data_key.string_value!="{_quoted(champion.data_key)}"'
        )
        for champion in champions
    }


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _add_champion_clauses(pipeline_spec: Dict, clauses: Dict[str, str]) -> None:
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    executors = pipeline_spec["deploymentSpec"]["executors"]
    for node_id, clause in clauses.items():
        task = tasks.get(node_id + _BLESSING_RESOLVER_SUFFIX)
        if task is None:
            raise CompileError(f"{node_id}: the compiled spec has no {node_id}{_BLESSING_RESOLVER_SUFFIX} task")
        label = pipeline_spec["components"][task["componentRef"]["name"]]["executorLabel"]
        for query in executors[label]["resolver"]["outputArtifactQueries"].values():
            query["filter"] += clause


def trainer_task_names(pipeline_spec: Dict, trainer_ids: Sequence[str]) -> List[str]:
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    return [t for t in trainer_ids if t in tasks]


def _explain(error: Exception) -> str:
    """KubeflowV2DagRunner's errors, with what they mean for this pipeline."""
    text = str(error)
    if "Only single Channel is supported" in text:
        return (
            f"{text}: KubeflowV2DagRunner compiles no union of channels; every node input must be one "
            "upstream output (several spans reach the trainers through an ExamplesUnion node, "
            "components/examples_union.py)"
        )
    if "Invalid custom artifact type name" in text:
        return (
            f"{text}: KFP v2 needs custom artifact type names shaped <namespace>.<Name> "
            "(e.g. speechpipe.ValidationResult); docs/deploy.md, 'Limits'"
        )
    if "not expected in artifact type schema" in text:
        return (
            f"{text}: KFP v2 custom artifact types take no PROPERTIES (use custom properties); docs/deploy.md, 'Limits'"
        )
    return text


def compile_pipeline(config: RunConfig, cluster: ClusterConfig, preflight=None) -> CompiledPipeline:
    """Builds and compiles the pipeline; nothing is written. `preflight` (pipeline/preflight.py)
    hands each span's split moves to its FeatureGen."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from speechpipe.components.champion_resolver import kubeflow_champions
    from speechpipe.pipeline.tfx_pipeline import TRAINER_NODE_IDS

    config = validate_run_config(config)
    # The champion resolvers in the form KubeflowV2DagRunner compiles; their rules go into the
    # compiled queries below.
    with kubeflow_champions() as champions:
        pipeline, keys, fingerprints = build_pipeline(config, cluster, preflight)
    trainer_ids = apply_resources(pipeline, cluster.target, cluster.trainer, TRAINER_NODE_IDS, cluster.others)
    clauses = _champion_queries(champions)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            display_name=cluster.display_name or config.pipeline_name, default_image=cluster.image
        )
    )
    try:
        job = runner.run(pipeline, write_out=False)
    except (TypeError, ValueError, KeyError) as error:
        raise CompileError(f"KubeflowV2DagRunner cannot compile the pipeline: {_explain(error)}") from error
    spec = job["pipelineSpec"]
    _add_champion_clauses(spec, clauses)
    spec["defaultPipelineRoot"] = config.pipeline_root
    trainers = trainer_task_names(spec, trainer_ids)
    platform = (
        kubernetes_platform_spec(spec, trainers, cluster.trainer.gpu_node_selector())
        if cluster.target == "kubeflow"
        else {}
    )
    return CompiledPipeline(
        target=cluster.target,
        job=job,
        platform_spec=platform,
        trainer_tasks=trainers,
        data_keys=keys,
        fingerprints=fingerprints,
    )


def check_out(out: str, target: str) -> None:
    """The compiled file's name must say its format, and the target must take that format: checked
    before anything is built, so a wrong name fails at once rather than after compiling."""
    if out.endswith(".json"):
        if target == "kubeflow":
            raise ConfigError(f"--out {out!r}: Kubeflow Pipelines takes the pipeline as YAML (.yaml)")
    elif not out.endswith((".yaml", ".yml")):
        raise ConfigError(f"--out {out!r}: name a .yaml (or, for Vertex, .json) file")


def write_compiled(compiled: CompiledPipeline, out: str) -> str:
    """Writes the spec (local path or object-storage URI): YAML documents for `.yaml`/`.yml`
    (PipelineSpec, then the PlatformSpec when there is one), the PipelineJob JSON for `.json`."""
    import yaml
    from tfx.dsl.io import fileio

    check_out(out, compiled.target)
    if out.endswith(".json"):
        text = json.dumps(compiled.job, indent=1, sort_keys=True) + "\n"
    else:
        documents = [compiled.pipeline_spec] + ([compiled.platform_spec] if compiled.platform_spec else [])
        text = yaml.safe_dump_all(documents, sort_keys=True)
    folder = os.path.dirname(out)
    if folder and not fileio.exists(folder):
        fileio.makedirs(folder)
    with fileio.open(out, "w") as f:
        f.write(text)
    return out


# --------------------------------------------------------------------------------- CLI


def build_parser(print_only: bool = False) -> argparse.ArgumentParser:
    """Every `speechpipe run` option (the same RunConfig, the run file included), the span
    discovery options, and the cluster's: target, image, resources, Beam runner, submission and
    schedule. `print_only` (--print-config) asks for none of the cluster's required options."""
    from speechpipe.pipeline import local_runner

    parser = argparse.ArgumentParser(
        prog="speechpipe compile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[local_runner.build_parser()],
        add_help=False,
        conflict_handler="resolve",
        # No abbreviations: the scheduled launcher drops options by their full names.
        allow_abbrev=False,
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        required=not print_only,
        help="kubeflow: Kubeflow Pipelines (YAML + Kubernetes platform spec); vertex: Vertex AI",
    )
    parser.add_argument(
        "--out", required=not print_only, help="the compiled pipeline: .yaml (both targets) or .json (vertex)"
    )
    parser.add_argument(
        "--image", required=not print_only, help="the image built from deploy/Dockerfile, as the cluster pulls it"
    )
    parser.add_argument(
        "--home",
        default=None,
        help="gs://BUCKET/PATH or s3://BUCKET/PATH: the pipeline root's parent (here or in the run file)",
    )
    span_discovery.add_arguments(parser)
    resources = parser.add_argument_group("trainer resources (src/speechpipe/jobs/cluster_resources.py)")
    resources.add_argument(
        "--accelerator-type",
        default="L4",
        help=f"the trainers' GPU: {', '.join(ACCELERATORS)}, a Vertex type (NVIDIA_...) or a "
        "Kubernetes resource (nvidia.com/gpu); 'none' for CPU-only trainers",
    )
    resources.add_argument("--accelerator-count", type=int, default=1, help="GPUs per trainer (MirroredStrategy)")
    resources.add_argument("--trainer-cpu", type=float, default=8.0, help="vCPUs per trainer")
    resources.add_argument("--trainer-memory", type=float, default=32.0, help="GB of memory per trainer")
    resources.add_argument(
        "--gpu-node-label",
        default=None,
        metavar="KEY=VALUE",
        help="kubeflow: the node label that selects the GPU (default on GKE: "
        "cloud.google.com/gke-accelerator=<gpu>; 'none' for no selector)",
    )
    resources.add_argument("--component-cpu", type=float, default=None, help="vCPUs for every other node")
    resources.add_argument("--component-memory", type=float, default=None, help="GB of memory for every other node")
    champion = parser.add_argument_group("champion (components/registry_champion.py)")
    champion.add_argument(
        "--champion-from",
        choices=CHAMPION_SOURCES,
        default=None,
        help="resolver: KFP resolver tasks query ML Metadata (Vertex AI runs them); registry: a "
        "container step reads the MLflow registry's `champion` alias (open-source KFP, "
        "whose backend runs no resolver tasks); default resolver",
    )
    beam_options.add_arguments(parser)
    submit = parser.add_argument_group("submission and schedule (pipeline/submit.py, pipeline/schedules.py)")
    submit.add_argument("--schema-file", default=IMAGE_SCHEMA_FILE, help="the TFMD schema as the pods see it")
    submit.add_argument("--submit", action="store_true", help="start a run of the compiled pipeline")
    submit.add_argument(
        "--kfp-host", default=None, help="kubeflow: the KFP API (default: in-cluster / $KF_PIPELINES_ENDPOINT)"
    )
    submit.add_argument("--kfp-namespace", default=None, help="kubeflow: the profile namespace (multi-user KFP)")
    submit.add_argument("--experiment", default=None, help="kubeflow: the experiment (default: the pipeline name)")
    submit.add_argument(
        "--service-account", default=None, help="the runs' service account (Kubernetes for kubeflow, GCP for vertex)"
    )
    submit.add_argument(
        "--schedule",
        default=None,
        metavar="CRON",
        help='retrain on a schedule, standard 5-field cron in UTC ("0 3 * * *"): each run lists '
        "--spans-from again, compiles and submits",
    )
    submit.add_argument("--schedule-out", default=None, help="where to write the schedule (JSON)")
    submit.add_argument("--create-schedule", action="store_true", help="also create the schedule on the cluster")
    return parser


def _node_selector(value: Optional[str]) -> Optional[Tuple[str, str]]:
    if value is None:
        return None
    if value.lower() == "none":
        return ("", "")
    key, sep, label = value.partition("=")
    if not sep or not key or not label:
        raise ConfigError(f"--gpu-node-label {value!r}: need KEY=VALUE (or none)")
    return (key, label)


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of a `speechpipe compile` command line: `speechpipe run`'s (the run file with
    the flags given applied), without the demo corpus (a cluster has none), with the Beam flags of
    the Beam options (the run file's `beam_args` when no Beam option is given) and the champion
    source."""
    from speechpipe.pipeline import local_runner

    config = local_runner.config_from_args(args, demo_corpus=False)
    beam = beam_options.beam_args(args, default_image=args.image, default_setup_file=IMAGE_SETUP_FILE)
    unset = argparse.ArgumentParser(add_help=False)
    beam_options.add_arguments(unset)
    no_options = beam_options.beam_args(
        unset.parse_args([]), default_image=args.image, default_setup_file=IMAGE_SETUP_FILE
    )
    if config.beam_args and beam == no_options:
        beam = list(config.beam_args)
    champion_from = args.champion_from if args.champion_from is not None else config.champion_from
    return replace(config, beam_args=tuple(beam), champion_from=champion_from)


def configs_from_args(args: argparse.Namespace) -> Tuple[RunConfig, ClusterConfig]:
    config = run_config_from_args(args)
    if not (config.spans or config.ctc_spans or config.speaker_spans):
        raise ConfigError(
            "spans: give --span URI (repeat), --spans-from ROOT, --ctc-span or --speaker-span (or "
            "spans in the run file); a cluster has no demo corpus"
        )
    if args.accelerator_type.lower() == "none":
        trainer = NodeResources(cpu=args.trainer_cpu, memory_gb=args.trainer_memory)
    else:
        trainer = NodeResources(
            cpu=args.trainer_cpu,
            memory_gb=args.trainer_memory,
            accelerator=args.accelerator_type,
            accelerator_count=args.accelerator_count,
            node_selector=_node_selector(args.gpu_node_label),
        )
    others = None
    if args.component_cpu is not None or args.component_memory is not None:
        others = NodeResources(cpu=args.component_cpu, memory_gb=args.component_memory)
    cluster = ClusterConfig(
        target=args.target,
        image=args.image,
        tracking_uri=tracking_uri_for(config.tracking_uri, home=None),
        trainer=trainer,
        others=others,
        schema_file=args.schema_file,
    )
    return config, cluster


def run(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(print_only="--print-config" in argv).parse_args(argv)
    if args.print_config:
        from speechpipe.pipeline.local_runner import print_config

        print_config(run_config_from_args(args))
        return 0
    # What the arguments alone can tell is checked before spans are listed or anything is built.
    check_out(args.out, args.target)
    if args.schedule and args.config and not is_uri(args.config):
        raise ConfigError(
            f"--config {args.config!r}: each scheduled run reads the run file again in its own "
            "container; put it on object storage (gs://, s3://)"
        )
    if args.schedule and not args.schedule_out:
        raise ConfigError("--schedule needs --schedule-out FILE")
    if args.schedule and not args.spans_from:
        raise ConfigError("--schedule picks up new spans through --spans-from ROOT; give it")
    try:
        config, cluster = configs_from_args(args)
        from speechpipe.pipeline.preflight import check

        # The spans this machine can list are checked before compiling (the others are reported
        # as skipped): a branch that could not train or be evaluated stops here, not on the cluster.
        preflight = None if args.skip_preflight else check(validate_run_config(config), sys.stdout)
        compiled = compile_pipeline(config, cluster, preflight)
    except (ResourceError, beam_options.BeamOptionsError) as error:
        raise ConfigError(str(error)) from error
    except CompileError as error:
        raise ValueError(str(error)) from error
    write_compiled(compiled, args.out)
    print(
        f"[compile] {args.target}: {len(compiled.pipeline_spec['root']['dag']['tasks'])} tasks, "
        f"{len(config.spans)} span(s), GPUs on {', '.join(compiled.trainer_tasks)}: {args.out}"
    )
    if args.submit:
        from speechpipe.pipeline import submit

        run_id = submit.submit(compiled, args.out, config, args)
        print(f"[compile] submitted: {run_id}")
    if args.schedule:
        from speechpipe.pipeline import schedules

        written = schedules.write_schedule(args, argv, config)
        print(f"[compile] schedule {args.schedule!r} (UTC): {written}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
