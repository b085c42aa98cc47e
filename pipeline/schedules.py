"""Scheduled retraining on Kubeflow Pipelines (a recurring run) and Vertex AI (a schedule).

A compiled TFX pipeline has its spans fixed at compile time (one FeatureGen node per span, each
with the span's content fingerprint), so re-running the same spec would never see new data. The
schedule therefore runs a one-step *launcher* pipeline instead: a container of the project's image
that runs `speechpipe compile ... --submit` with the options the schedule was made with. Each tick
lists `--spans-from` again, compiles the pipeline for the spans published by then, and submits it;
spans seen before keep their node ids and fingerprints, so their nodes are cache hits and only the
new span's features are computed.

- Kubeflow: `kfp_recurring_run` is the body of KFP's `POST /apis/v2beta1/recurringruns` (cron in
  KFP's six-field form, seconds first; one run at a time, no catch-up);
  `create_kfp_recurring_run` makes it through `kfp.Client.create_recurring_run`.
- Vertex AI: `vertex_schedule` is a `google.cloud.aiplatform.v1.Schedule` (REST JSON), created with
  `POST https://REGION-aiplatform.googleapis.com/v1/projects/P/locations/R/schedules` or
  `create_vertex_schedule`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence

from speechpipe.io.storage import is_uri
from speechpipe.pipeline.run_config import RunConfig
from speechpipe.validation import ConfigError

# The options that describe the schedule itself, or where a run of `speechpipe compile` writes,
# and so are not handed to the launcher's own `speechpipe compile` (value-taking ones first).
_LAUNCHER_DROPS_VALUE = ("--out", "--schedule", "--schedule-out", "--kfp-host")
_LAUNCHER_DROPS_FLAG = ("--create-schedule", "--submit")
LAUNCHER_OUT = {"kubeflow": "/tmp/speechpipe-pipeline.yaml", "vertex": "/tmp/speechpipe-pipeline.json"}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")


def check_cron(cron: str) -> str:
    """A standard five-field cron expression (minute hour day month weekday), in UTC."""
    fields = cron.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ConfigError(
            f"--schedule {cron!r}: need five cron fields, minute hour day month weekday "
            "(e.g. '0 3 * * *', daily at 03:00 UTC)"
        )
    return " ".join(fields)


def kfp_cron(cron: str) -> str:
    """KFP's cron has a seconds field first (robfig/cron): '0 3 * * *' -> '0 0 3 * * *'."""
    return "0 " + check_cron(cron)


def launcher_argv(argv: Sequence[str], target: str) -> List[str]:
    """The `speechpipe compile` arguments the launcher runs: the schedule's own, without the
    schedule and output options, writing inside the launcher's container and submitting."""
    out: List[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _LAUNCHER_DROPS_VALUE:
            skip = "=" not in arg
            continue
        if name in _LAUNCHER_DROPS_FLAG:
            continue
        out.append(arg)
    return out + ["--out", LAUNCHER_OUT[target], "--submit"]


def launcher_pipeline_spec(image: str, argv: Sequence[str], name: str) -> Dict[str, Any]:
    """The launcher, compiled by the KFP SDK: one container task running `speechpipe compile` with
    `argv`, never cached (every tick must list the spans again)."""
    import yaml
    from kfp import compiler, dsl

    @dsl.container_component
    def compile_and_submit():
        return dsl.ContainerSpec(image=image, command=["speechpipe", "compile"], args=list(argv))

    @dsl.pipeline(name=name, description="speechpipe retraining: list the spans, compile the pipeline, submit it")
    def launcher():
        task = compile_and_submit()
        task.set_display_name("compile-and-submit")
        task.set_caching_options(False)
        # compile imports TFX and TensorFlow (about 1.5 GB) and lists the spans; no GPU.
        task.set_cpu_limit("1").set_memory_limit("4G")

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "launcher.yaml")
        compiler.Compiler().compile(launcher, path)
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)


def kfp_recurring_run(
    launcher_spec: Dict[str, Any],
    cron: str,
    display_name: str,
    experiment_id: Optional[str] = None,
    service_account: Optional[str] = None,
):
    """The KFP recurring run (`kfp_server_api.V2beta1RecurringRun`) of the launcher: one run at a
    time (a retraining may outlast the interval) and no catch-up after a pause (one run on the
    latest spans replaces the missed ones)."""
    import kfp_server_api

    return kfp_server_api.V2beta1RecurringRun(
        display_name=display_name,
        description="speechpipe scheduled retraining (pipeline/schedules.py)",
        experiment_id=experiment_id,
        pipeline_spec=launcher_spec,
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters={}),
        trigger=kfp_server_api.V2beta1Trigger(cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=kfp_cron(cron))),
        max_concurrency=1,
        no_catchup=True,
        mode=kfp_server_api.RecurringRunMode.ENABLE,
        service_account=service_account,
    )


def create_kfp_recurring_run(
    client,
    launcher_package: str,
    cron: str,
    display_name: str,
    experiment: str,
    namespace: Optional[str] = None,
    service_account: Optional[str] = None,
):
    """Creates the recurring run through a `kfp.Client`, with the same settings as
    `kfp_recurring_run`; `launcher_package` is the launcher's YAML file."""
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    return client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=display_name,
        cron_expression=kfp_cron(cron),
        pipeline_package_path=launcher_package,
        max_concurrency=1,
        no_catchup=True,
        enabled=True,
        service_account=service_account,
    )


def vertex_schedule(
    launcher_spec: Dict[str, Any],
    cron: str,
    display_name: str,
    project: str,
    region: str,
    pipeline_root: str,
    service_account: Optional[str] = None,
) -> Dict[str, Any]:
    """The Vertex AI Schedule (REST JSON of `aiplatform.v1.Schedule`) that starts the launcher; one
    run at a time, ticks that find one running are skipped."""
    if not project or not region:
        raise ConfigError("--project and --region: a Vertex AI schedule needs both")
    job: Dict[str, Any] = {
        "displayName": display_name,
        "pipelineSpec": launcher_spec,
        "runtimeConfig": {"gcsOutputDirectory": pipeline_root.rstrip("/") + "/launcher"},
    }
    if service_account:
        job["serviceAccount"] = service_account
    return {
        "displayName": display_name,
        "cron": f"TZ=Etc/UTC {check_cron(cron)}",
        "maxConcurrentRunCount": "1",
        "allowQueueing": False,
        "createPipelineJobRequest": {"parent": f"projects/{project}/locations/{region}", "pipelineJob": job},
    }


def create_vertex_schedule(schedule: Dict[str, Any], region: str, client: Any = None) -> str:
    """Creates a `vertex_schedule` through Vertex AI's ScheduleService; returns its name."""
    from google.cloud import aiplatform_v1

    if client is None:
        client = aiplatform_v1.ScheduleServiceClient(
            client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"}
        )
    message = aiplatform_v1.Schedule.from_json(json.dumps(schedule))
    created = client.create_schedule(parent=schedule["createPipelineJobRequest"]["parent"], schedule=message)
    return str(created.name)


def write_schedule(
    args: argparse.Namespace,
    argv: Sequence[str],
    config: RunConfig,
    kfp_client_factory: Optional[Callable[..., Any]] = None,
) -> str:
    """`speechpipe compile --schedule`: writes the schedule to --schedule-out (and creates it with
    --create-schedule); returns what was written or created."""
    if not args.spans_from:
        raise ConfigError("--schedule picks up new spans through --spans-from ROOT; give it")
    name = f"{config.pipeline_name}-retrain"
    spec = launcher_pipeline_spec(args.image, launcher_argv(argv, args.target), name)
    if args.target == "kubeflow":
        import kfp_server_api

        body = kfp_recurring_run(spec, args.schedule, name, service_account=args.service_account)
        document = kfp_server_api.ApiClient().sanitize_for_serialization(body)
    else:
        document = vertex_schedule(
            spec, args.schedule, name, args.project, args.region, config.pipeline_root, args.service_account
        )
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if is_uri(args.schedule_out):
        from tfx.dsl.io import fileio

        with fileio.open(args.schedule_out, "w") as f:
            f.write(text)
    else:
        with open(args.schedule_out, "w", encoding="utf-8") as f:
            f.write(text)
    if not args.create_schedule:
        return args.schedule_out
    if args.target == "vertex":
        return create_vertex_schedule(document, args.region)
    if kfp_client_factory is None:
        import kfp

        kfp_client_factory = kfp.Client
    import yaml

    with tempfile.TemporaryDirectory() as folder:
        package = os.path.join(folder, "launcher.yaml")
        with open(package, "w", encoding="utf-8") as f:
            yaml.safe_dump(spec, f, sort_keys=True)
        client = kfp_client_factory(host=args.kfp_host, namespace=args.kfp_namespace)
        created = create_kfp_recurring_run(
            client,
            package,
            args.schedule,
            name,
            args.experiment or config.pipeline_name,
            args.kfp_namespace,
            args.service_account,
        )
    return f"recurring run {getattr(created, 'recurring_run_id', created)}"
