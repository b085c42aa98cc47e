"""Starting a run of a compiled pipeline: on Kubeflow Pipelines through `kfp.Client`, on Vertex AI
through `aiplatform.PipelineJob`.

`speechpipe compile --submit` calls `submit`; the scheduled launcher (pipeline/schedules.py) runs
exactly that command inside the cluster, so a schedule compiles against the spans published by
then and starts the run. The client factories are parameters so that the requests can be checked
without a cluster.
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any, Callable, Optional

from speechpipe.io.storage import is_uri
from speechpipe.pipeline.run_config import RunConfig
from speechpipe.validation import ConfigError


def _run_name(pipeline_name: str) -> str:
    return f"{pipeline_name}-{datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def submit_kubeflow(
    spec_path: str,
    experiment: str,
    run_name: str,
    host: Optional[str] = None,
    namespace: Optional[str] = None,
    service_account: Optional[str] = None,
    client_factory: Optional[Callable[..., Any]] = None,
) -> str:
    """Starts a run of the YAML at `spec_path` (a local file: kfp.Client reads it from disk) in
    `experiment`; returns the run id. Without a host, kfp.Client uses $KF_PIPELINES_ENDPOINT or,
    inside the cluster, the in-cluster API service."""
    if is_uri(spec_path):
        raise ConfigError(f"--out {spec_path!r}: kfp.Client uploads a local file; write the spec locally to --submit")
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    client = client_factory(host=host, namespace=namespace)
    result = client.create_run_from_pipeline_package(
        spec_path,
        arguments={},
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        service_account=service_account,
    )
    return str(result.run_id)


def submit_vertex(
    spec_path: str,
    project: str,
    region: str,
    pipeline_root: str,
    display_name: str,
    service_account: Optional[str] = None,
    job_factory: Optional[Callable[..., Any]] = None,
) -> str:
    """Starts a Vertex AI pipeline job from `spec_path` (local or gs://, JSON or YAML); returns its
    resource name."""
    if not project or not region:
        raise ConfigError("--project and --region: Vertex AI needs both")
    if job_factory is None:
        from google.cloud import aiplatform

        job_factory = aiplatform.PipelineJob
    job = job_factory(
        display_name=display_name,
        template_path=spec_path,
        pipeline_root=pipeline_root,
        project=project,
        location=region,
    )
    job.submit(service_account=service_account)
    return str(job.resource_name)


def submit(compiled, spec_path: str, config: RunConfig, args: argparse.Namespace) -> str:
    """Submits a `CompiledPipeline` written to `spec_path` as `speechpipe compile`'s options say."""
    name = _run_name(config.pipeline_name)
    if compiled.target == "kubeflow":
        return submit_kubeflow(
            spec_path,
            experiment=args.experiment or config.pipeline_name,
            run_name=name,
            host=args.kfp_host,
            namespace=args.kfp_namespace,
            service_account=args.service_account,
        )
    return submit_vertex(
        spec_path,
        project=args.project,
        region=args.region,
        pipeline_root=config.pipeline_root,
        display_name=name,
        service_account=args.service_account,
    )
