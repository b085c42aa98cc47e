"""Beam options for each engine the Beam stages run on, as typed, validated builders.

The feature job, the pair job and the pipeline's Beam components (FeatureGen, PairGen,
StatisticsGen) take the same Beam flags, so one builder serves all three:

    speechpipe features --input gs://B/spans/s0/manifest.jsonl --out gs://B/features/s0 \\
        $(python -m speechpipe.jobs.beam_options dataflow --project P --region R \\
              --temp-location gs://B/tmp --sdk-container-image IMAGE)
    speechpipe compile ... --beam-runner dataflow --project P --region R --temp-location gs://B/tmp

| runner | where the work runs | flags |
| --- | --- | --- |
| `direct` | in the process (or one process per core) of whoever runs the stage | DirectArgs |
| `dataflow` | Google Cloud Dataflow workers, autoscaled | DataflowArgs |
| `flink` | a Flink cluster, through Beam's portable job server (`--job_endpoint`) | FlinkArgs |
| `portable` | any Beam job service (Spark, Samza, Beam's own local one) | PortableArgs |

Workers get the project either from the container image (`--sdk_container_image` on Dataflow,
`--environment_config` with `DOCKER` on Flink: the image from deploy/Dockerfile, which has it
installed) or from `--setup_file`, which ships the project's setup.py to be built and installed
on each worker. Each builder checks its values when it is made and names the first bad one.

`python -m speechpipe.jobs.beam_options RUNNER [options]` prints the flags, one per line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

RUNNERS = ("direct", "dataflow", "flink", "portable")
DIRECT_RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
# One process, no worker pool: tests and small jobs, where starting workers costs more than a
# second core gains.
IN_MEMORY_ARGS: Tuple[str, ...] = ("--direct_running_mode=in_memory",)
# Beam's SDK-harness environments: DOCKER starts the image per worker, EXTERNAL connects to an
# already-running worker pool (a sidecar), PROCESS runs a boot command on the worker host,
# LOOPBACK runs the workers in the submitting process (tests only).
ENVIRONMENT_TYPES = ("DOCKER", "EXTERNAL", "PROCESS", "LOOPBACK")
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


# Beam's SDK workers log two warnings on every start that hold for every speechpipe job and ask
# nothing of a user: no staged main session (speechpipe defines no DoFn in __main__), and the
# DirectRunner-only flags a worker does not parse. Those two loggers are set to ERROR on the workers;
# anything else they log still shows. A user's own --sdk_harness_log_level_overrides wins. A worker
# is started as `python -m apache_beam.runners.worker.sdk_worker_main` (the DirectRunner's
# multi_processing, Beam's container boot), so that module's logger is named `__main__` there;
# it logs nothing but the harness's own start-up and failures (CRITICAL, still shown).
WORKER_LOG_OVERRIDES = "--sdk_harness_log_level_overrides=" + json.dumps(
    {
        "__main__": "ERROR",
        "apache_beam.runners.worker.sdk_worker_main": "ERROR",
        "apache_beam.options.pipeline_options": "ERROR",
    },
    separators=(",", ":"),
)


def with_quiet_workers(args: Sequence[str]) -> List[str]:
    """`args` with WORKER_LOG_OVERRIDES, unless they set the overrides themselves."""
    args = list(args)
    if any(a.split("=", 1)[0] == "--sdk_harness_log_level_overrides" for a in args):
        return args
    return args + [WORKER_LOG_OVERRIDES]


class BeamOptionsError(ValueError):
    """A Beam option is missing, out of range or inconsistent with another."""


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise BeamOptionsError(f"{name}={value}: must be >= 1")


def _host_port(name: str, value: str) -> None:
    if not _HOST_PORT.match(value or ""):
        raise BeamOptionsError(f"{name}={value!r}: need HOST:PORT")


def _names(args: Sequence[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)


def direct_runner_defaults(beam_args: Sequence[str], mode: str = "multi_processing") -> List[str]:
    """`beam_args` with the DirectRunner's defaults added where they name none: the running
    `mode` (users get every core unless they ask otherwise) and, for multi_processing, one
    worker per core of the machine the job runs on (`--direct_num_workers=0`). Args for another
    runner come back as they are."""
    args = list(beam_args)
    direct = not _names(args, "--runner") or any("DirectRunner" in a for a in args)
    if direct and not _names(args, "--direct_running_mode"):
        args.append(f"--direct_running_mode={mode}")
        if mode == "multi_processing" and not _names(args, "--direct_num_workers"):
            args.append("--direct_num_workers=0")
    return args


@dataclass(frozen=True)
class DirectArgs:
    """Beam's DirectRunner (FnApiRunner), in the process that runs the stage."""

    running_mode: str = "multi_processing"
    # 0 = one worker per core of the machine the stage runs on, decided there (not where the
    # flags were written: a compiled pipeline runs on other machines than the one compiling it).
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.running_mode not in DIRECT_RUNNING_MODES:
            raise BeamOptionsError(f"running_mode={self.running_mode!r}: one of {', '.join(DIRECT_RUNNING_MODES)}")
        if self.num_workers < 0:
            raise BeamOptionsError(f"num_workers={self.num_workers}: must be >= 0 (0 = one per core)")

    def to_args(self) -> List[str]:
        return with_quiet_workers(
            [
                "--runner=DirectRunner",
                f"--direct_running_mode={self.running_mode}",
                f"--direct_num_workers={self.num_workers}",
            ]
        )


@dataclass(frozen=True)
class DataflowArgs:
    """Google Cloud Dataflow. Paths the job reads and writes must be on GCS: workers see nothing
    else."""

    project: str
    region: str
    temp_location: str
    staging_location: Optional[str] = None
    # The image from deploy/Dockerfile: the project and every locked dependency preinstalled, so
    # workers start without installing anything.
    sdk_container_image: Optional[str] = None
    setup_file: Optional[str] = None
    machine_type: Optional[str] = None
    num_workers: Optional[int] = None
    max_num_workers: Optional[int] = None
    disk_size_gb: Optional[int] = None
    service_account_email: Optional[str] = None
    subnetwork: Optional[str] = None
    use_public_ips: bool = True
    experiments: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.project:
            raise BeamOptionsError("project: required for Dataflow")
        if not self.region:
            raise BeamOptionsError("region: required for Dataflow (e.g. europe-west4)")
        for name in ("temp_location", "staging_location"):
            value = getattr(self, name)
            if value is not None and not value.startswith("gs://"):
                raise BeamOptionsError(f"{name}={value!r}: Dataflow needs a gs:// location")
        for name in ("num_workers", "max_num_workers", "disk_size_gb"):
            _positive(name, getattr(self, name))
        if self.num_workers and self.max_num_workers and self.num_workers > self.max_num_workers:
            raise BeamOptionsError(f"num_workers={self.num_workers} is above max_num_workers={self.max_num_workers}")
        if not self.sdk_container_image and not self.setup_file:
            raise BeamOptionsError(
                "Dataflow workers need the project: give sdk_container_image (the deploy/ image) "
                "or setup_file (setup.py, built and installed on every worker)"
            )

    def to_args(self) -> List[str]:
        args = [
            "--runner=DataflowRunner",
            f"--project={self.project}",
            f"--region={self.region}",
            f"--temp_location={self.temp_location}",
        ]
        optional = {
            "staging_location": self.staging_location,
            "sdk_container_image": self.sdk_container_image,
            "setup_file": self.setup_file,
            "machine_type": self.machine_type,
            "num_workers": self.num_workers,
            "max_num_workers": self.max_num_workers,
            "disk_size_gb": self.disk_size_gb,
            "service_account_email": self.service_account_email,
            "subnetwork": self.subnetwork,
        }
        args += [f"--{name}={value}" for name, value in optional.items() if value is not None]
        if not self.use_public_ips:
            args.append("--no_use_public_ips")
        args += [f"--experiments={e}" for e in self.experiments]
        return args


@dataclass(frozen=True)
class PortableArgs:
    """Beam's PortableRunner against a job service: the contract Flink, Spark and Samza share."""

    job_endpoint: str
    environment_type: str = "DOCKER"
    # DOCKER: the SDK-harness image (deploy/Dockerfile's); EXTERNAL: HOST:PORT of a worker pool;
    # PROCESS: {"command": "/opt/apache/beam/boot"} as JSON.
    environment_config: Optional[str] = None
    artifact_endpoint: Optional[str] = None
    setup_file: Optional[str] = None
    sdk_worker_parallelism: Optional[int] = None

    def __post_init__(self) -> None:
        _host_port("job_endpoint", self.job_endpoint)
        if self.artifact_endpoint is not None:
            _host_port("artifact_endpoint", self.artifact_endpoint)
        if self.environment_type not in ENVIRONMENT_TYPES:
            raise BeamOptionsError(f"environment_type={self.environment_type!r}: one of {', '.join(ENVIRONMENT_TYPES)}")
        config = self.environment_config
        if self.environment_type == "DOCKER" and not config:
            # Beam would fall back to its stock SDK image, which lacks the project.
            raise BeamOptionsError(
                "environment_type=DOCKER: environment_config must name the worker image (deploy/Dockerfile's)"
            )
        if self.environment_type == "EXTERNAL":
            _host_port("environment_config", config or "")
        if self.environment_type == "PROCESS":
            try:
                command = json.loads(config or "").get("command")
            except (ValueError, AttributeError):
                command = None
            if not command:
                raise BeamOptionsError('environment_type=PROCESS: environment_config must be JSON with a "command"')
        _positive("sdk_worker_parallelism", self.sdk_worker_parallelism)

    def to_args(self) -> List[str]:
        args = [
            "--runner=PortableRunner",
            f"--job_endpoint={self.job_endpoint}",
            f"--environment_type={self.environment_type}",
        ]
        optional = {
            "environment_config": self.environment_config,
            "artifact_endpoint": self.artifact_endpoint,
            "setup_file": self.setup_file,
            "sdk_worker_parallelism": self.sdk_worker_parallelism,
        }
        return args + [f"--{name}={value}" for name, value in optional.items() if value is not None]


@dataclass(frozen=True)
class FlinkArgs(PortableArgs):
    """Flink through the portable runner: the Flink job server (Beam's flink-job-server image,
    beside the Flink JobManager) at `job_endpoint`, plus Flink's own parallelism."""

    parallelism: Optional[int] = None
    max_parallelism: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("parallelism", self.parallelism)
        _positive("max_parallelism", self.max_parallelism)
        if self.parallelism and self.max_parallelism and self.parallelism > self.max_parallelism:
            raise BeamOptionsError(f"parallelism={self.parallelism} is above max_parallelism={self.max_parallelism}")

    def to_args(self) -> List[str]:
        optional = {"parallelism": self.parallelism, "max_parallelism": self.max_parallelism}
        return super().to_args() + [f"--{name}={value}" for name, value in optional.items() if value is not None]


RunnerArgs = Union[DirectArgs, DataflowArgs, PortableArgs, FlinkArgs]


# --------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser, runner_flag: str = "--beam-runner") -> None:
    """The options of every builder, as flags (shared by `speechpipe compile` and this module's
    command line). `runner_flag` is omitted (empty) where the runner is a positional argument."""
    group = parser.add_argument_group("Beam stages (src/speechpipe/jobs/beam_options.py)")
    if runner_flag:
        group.add_argument(
            runner_flag,
            dest="beam_runner",
            choices=RUNNERS,
            default="direct",
            help="where the Beam stages run (default: direct, inside each stage's pod)",
        )
    group.add_argument("--direct-running-mode", choices=DIRECT_RUNNING_MODES, default="multi_processing")
    group.add_argument("--direct-num-workers", type=int, default=0, help="0 = one per core where the stage runs")
    group.add_argument("--project", default=None, help="GCP project (Dataflow; Vertex AI)")
    group.add_argument("--region", default=None, help="GCP region (Dataflow; Vertex AI)")
    group.add_argument("--temp-location", default=None, help="Dataflow: gs:// folder for temporary files")
    group.add_argument("--staging-location", default=None, help="Dataflow: gs:// folder for staged files")
    group.add_argument("--sdk-container-image", default=None, help="Dataflow: worker image (deploy/Dockerfile)")
    group.add_argument("--setup-file", default=None, help="setup.py to build and install on every worker")
    group.add_argument("--machine-type", default=None, help="Dataflow: worker machine type (e.g. n2-standard-8)")
    group.add_argument("--num-workers", type=int, default=None, help="Dataflow: workers at start")
    group.add_argument("--max-num-workers", type=int, default=None, help="Dataflow: autoscaling ceiling")
    group.add_argument("--disk-size-gb", type=int, default=None, help="Dataflow: worker disk")
    group.add_argument("--worker-service-account", default=None, help="Dataflow: workers' service account")
    group.add_argument("--subnetwork", default=None, help="Dataflow: regions/R/subnetworks/S")
    group.add_argument("--no-public-ips", action="store_true", help="Dataflow: workers without external IPs")
    group.add_argument("--job-endpoint", default=None, help="flink/portable: HOST:PORT of the Beam job server")
    group.add_argument(
        "--environment-type",
        choices=ENVIRONMENT_TYPES,
        default="DOCKER",
        help="flink/portable: how workers start the Python SDK harness",
    )
    group.add_argument(
        "--environment-config", default=None, help="flink/portable: DOCKER image, EXTERNAL HOST:PORT or PROCESS JSON"
    )
    group.add_argument("--artifact-endpoint", default=None, help="flink/portable: HOST:PORT of the artifact service")
    group.add_argument("--sdk-worker-parallelism", type=int, default=None, help="flink/portable: SDK workers per node")
    group.add_argument("--parallelism", type=int, default=None, help="flink: job parallelism")
    group.add_argument("--max-parallelism", type=int, default=None, help="flink: maximum parallelism (rescaling)")
    group.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        dest="beam_extra",
        metavar="FLAG",
        help="any other Beam flag, passed as is (repeat)",
    )


def from_args(
    args: argparse.Namespace, default_image: Optional[str] = None, default_setup_file: Optional[str] = None
) -> RunnerArgs:
    """The builder `args` describe. `default_image` stands in for --sdk-container-image (Dataflow)
    and a DOCKER --environment-config (Flink, portable) when they are not given."""
    runner = args.beam_runner
    if runner == "direct":
        return DirectArgs(running_mode=args.direct_running_mode, num_workers=args.direct_num_workers)
    if runner == "dataflow":
        return DataflowArgs(
            project=args.project or "",
            region=args.region or "",
            temp_location=args.temp_location or "",
            staging_location=args.staging_location,
            sdk_container_image=args.sdk_container_image or default_image,
            setup_file=args.setup_file or default_setup_file,
            machine_type=args.machine_type,
            num_workers=args.num_workers,
            max_num_workers=args.max_num_workers,
            disk_size_gb=args.disk_size_gb,
            service_account_email=args.worker_service_account,
            subnetwork=args.subnetwork,
            use_public_ips=not args.no_public_ips,
        )
    config = args.environment_config
    if config is None and args.environment_type == "DOCKER":
        config = default_image
    common = dict(
        job_endpoint=args.job_endpoint or "",
        environment_type=args.environment_type,
        environment_config=config,
        artifact_endpoint=args.artifact_endpoint,
        setup_file=args.setup_file or default_setup_file,
        sdk_worker_parallelism=args.sdk_worker_parallelism,
    )
    if runner == "flink":
        return FlinkArgs(**common, parallelism=args.parallelism, max_parallelism=args.max_parallelism)
    if runner == "portable":
        return PortableArgs(**common)
    raise BeamOptionsError(f"runner={runner!r}: one of {', '.join(RUNNERS)}")


def beam_args(
    args: argparse.Namespace, default_image: Optional[str] = None, default_setup_file: Optional[str] = None
) -> List[str]:
    """The Beam flags for parsed `add_arguments` options, with the --beam-arg extras last."""
    return from_args(args, default_image, default_setup_file).to_args() + list(args.beam_extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speechpipe.jobs.beam_options",
        description="Print the Beam flags for a runner, one per line, for "
        "`speechpipe features`, `speechpipe pairs` or any Beam job.",
    )
    parser.add_argument("beam_runner", choices=RUNNERS)
    add_arguments(parser, runner_flag="")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        flags = beam_args(args)
    except BeamOptionsError as error:
        print(f"beam_options: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
