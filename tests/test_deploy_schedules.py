"""Scheduled retraining (pipeline/schedules.py) and run submission (pipeline/submit.py), without a
cluster: the launcher is a valid KFP pipeline that runs `speechpipe compile` with the schedule's
options, the KFP recurring-run body is the one kfp.Client itself sends, the Vertex schedule parses
as aiplatform's Schedule, and submissions make the calls the clients expect."""

import json
from types import SimpleNamespace

import kfp
import kfp_server_api
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from speechpipe.pipeline import kubeflow_v2_runner, schedules, submit
from speechpipe.pipeline.run_config import RunConfig
from speechpipe.validation import ConfigError

IMAGE = "europe-docker.pkg.dev/p/speechpipe/speechpipe:1.0"
COMPILE_ARGV = [
    "--target",
    "kubeflow",
    "--out",
    "pipeline.yaml",
    "--image",
    IMAGE,
    "--home",
    "gs://b/home",
    "--spans-from",
    "gs://b/spans",
    "--span-marker",
    "_SUCCESS",
    "--tracking-uri",
    "http://mlflow:5000",
    "--accelerator-type=H100",
    "--schedule",
    "0 3 * * *",
    "--schedule-out=schedule.json",
    "--create-schedule",
    "--kfp-host",
    "http://localhost:8080",
    "--submit",
]


@pytest.fixture(scope="module")
def launcher():
    return schedules.launcher_pipeline_spec(
        IMAGE, schedules.launcher_argv(COMPILE_ARGV, "kubeflow"), "speechpipe-retrain"
    )


class _Recorder:
    def __init__(self, result=None):
        self.calls, self.result = [], result

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self.result

        return call


def test_cron_expressions():
    assert schedules.check_cron(" 0  3 * * 1-5 ") == "0 3 * * 1-5"
    assert schedules.kfp_cron("*/30 * * * *") == "0 */30 * * * *"  # KFP's cron counts seconds first
    for bad in ("0 3 * *", "0 0 3 * * *", "daily", "0 3 * * ; rm"):
        with pytest.raises(ConfigError, match="five cron fields"):
            schedules.check_cron(bad)


def test_the_launcher_runs_compile_with_the_schedules_options():
    argv = schedules.launcher_argv(COMPILE_ARGV, "kubeflow")
    assert argv[-3:] == ["--out", schedules.LAUNCHER_OUT["kubeflow"], "--submit"]
    kept = argv[:-3]
    for dropped in (
        "--schedule",
        "--schedule-out=schedule.json",
        "--create-schedule",
        "--kfp-host",
        "pipeline.yaml",
        "0 3 * * *",
        "http://localhost:8080",
    ):
        assert dropped not in kept
    assert kept == [
        "--target",
        "kubeflow",
        "--image",
        IMAGE,
        "--home",
        "gs://b/home",
        "--spans-from",
        "gs://b/spans",
        "--span-marker",
        "_SUCCESS",
        "--tracking-uri",
        "http://mlflow:5000",
        "--accelerator-type=H100",
    ]
    # What the launcher runs is a valid `speechpipe compile` command line.
    args = kubeflow_v2_runner.build_parser().parse_args(argv)
    assert (args.submit, args.spans_from, args.schedule, args.out) == (
        True,
        "gs://b/spans",
        None,
        schedules.LAUNCHER_OUT["kubeflow"],
    )


def test_the_launcher_pipeline(launcher):
    json_format.ParseDict(launcher, pipeline_spec_pb2.PipelineSpec())
    (task,) = launcher["root"]["dag"]["tasks"].values()
    assert task["cachingOptions"].get("enableCache", False) is False  # every tick lists the spans again
    (executor,) = launcher["deploymentSpec"]["executors"].values()
    container = executor["container"]
    assert container["image"] == IMAGE and container["command"] == ["speechpipe", "compile"]
    assert container["args"] == schedules.launcher_argv(COMPILE_ARGV, "kubeflow")
    assert "accelerator" not in container["resources"]


def test_the_kfp_recurring_run_is_what_kfp_client_sends(launcher, tmp_path):
    package = tmp_path / "launcher.yaml"
    package.write_text(yaml.safe_dump(launcher))
    # kfp.Client's own create_recurring_run, without a server: only its API stub is replaced.
    client = kfp.Client.__new__(kfp.Client)
    client._recurring_run_api = _Recorder(result="created")
    experiments = _Recorder(result=SimpleNamespace(experiment_id="exp-1"))
    client.create_experiment = experiments.create_experiment
    created = schedules.create_kfp_recurring_run(
        client,
        str(package),
        "0 3 * * *",
        "speechpipe-retrain",
        "speechpipe",
        namespace="team",
        service_account="pipeline-runner",
    )
    assert created == "created"
    assert experiments.calls == [("create_experiment", ("speechpipe",), {"namespace": "team"})]
    ((name, _, kwargs),) = client._recurring_run_api.calls
    sent = kfp_server_api.ApiClient().sanitize_for_serialization(kwargs["body"])

    ours = schedules.kfp_recurring_run(
        launcher, "0 3 * * *", "speechpipe-retrain", experiment_id="exp-1", service_account="pipeline-runner"
    )
    written = kfp_server_api.ApiClient().sanitize_for_serialization(ours)
    sent.pop("description", None), written.pop("description")
    assert written == sent
    assert written["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert (written["max_concurrency"], written["no_catchup"], written["mode"]) == (1, True, "ENABLE")


def test_the_vertex_schedule_is_an_aiplatform_schedule(launcher):
    from google.cloud import aiplatform_v1

    schedule = schedules.vertex_schedule(
        launcher,
        "0 3 * * *",
        "speechpipe-retrain",
        "p",
        "europe-west4",
        "gs://b/home/pipeline_root/speechpipe",
        "runner@p.iam.gserviceaccount.com",
    )
    message = aiplatform_v1.Schedule.from_json(json.dumps(schedule))  # unknown fields are errors
    assert message.cron == "TZ=Etc/UTC 0 3 * * *"
    assert message.max_concurrent_run_count == 1 and not message.allow_queueing
    request = message.create_pipeline_job_request
    assert request.parent == "projects/p/locations/europe-west4"
    assert request.pipeline_job.service_account == "runner@p.iam.gserviceaccount.com"
    assert request.pipeline_job.runtime_config.gcs_output_directory == "gs://b/home/pipeline_root/speechpipe/launcher"
    assert json.loads(type(message).to_json(message))["createPipelineJobRequest"]["pipelineJob"][
        "pipelineSpec"
    ] == json.loads(json.dumps(launcher))
    client = _Recorder(result=SimpleNamespace(name="projects/p/locations/europe-west4/schedules/1"))
    assert schedules.create_vertex_schedule(schedule, "europe-west4", client=client).endswith("/schedules/1")
    ((_, _, kwargs),) = client.calls
    assert kwargs["parent"] == "projects/p/locations/europe-west4" and kwargs["schedule"] == message
    with pytest.raises(ConfigError, match="--project and --region"):
        schedules.vertex_schedule(launcher, "0 3 * * *", "n", "", "", "gs://b")


def test_write_schedule(tmp_path):
    argv = [
        "--target",
        "vertex",
        "--out",
        "p.json",
        "--image",
        IMAGE,
        "--home",
        "gs://b/home",
        "--spans-from",
        "gs://b/spans",
        "--project",
        "p",
        "--region",
        "europe-west4",
        "--schedule",
        "0 3 * * *",
        "--schedule-out",
        str(tmp_path / "schedule.json"),
    ]
    args = kubeflow_v2_runner.build_parser().parse_args(argv)
    config = RunConfig(home="gs://b/home", spans=("gs://b/spans/a",))
    assert schedules.write_schedule(args, argv, config) == str(tmp_path / "schedule.json")
    written = json.loads((tmp_path / "schedule.json").read_text())
    container = next(
        iter(written["createPipelineJobRequest"]["pipelineJob"]["pipelineSpec"]["deploymentSpec"]["executors"].values())
    )["container"]
    assert container["args"][-3:] == ["--out", schedules.LAUNCHER_OUT["vertex"], "--submit"]
    args.spans_from = None
    with pytest.raises(ConfigError, match="--spans-from"):
        schedules.write_schedule(args, argv, config)


def test_submit_to_kubeflow(tmp_path):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("pipelineInfo: {name: speechpipe}\n")
    client = _Recorder(result=SimpleNamespace(run_id="run-1"))
    made = []

    def factory(**kwargs):
        made.append(kwargs)
        return client

    run_id = submit.submit_kubeflow(
        str(spec),
        experiment="speechpipe",
        run_name="speechpipe-1",
        host="http://kfp",
        namespace="team",
        service_account="runner",
        client_factory=factory,
    )
    assert run_id == "run-1" and made == [{"host": "http://kfp", "namespace": "team"}]
    ((name, args, kwargs),) = client.calls
    assert name == "create_run_from_pipeline_package" and args == (str(spec),)
    assert kwargs == {
        "arguments": {},
        "run_name": "speechpipe-1",
        "experiment_name": "speechpipe",
        "namespace": "team",
        "service_account": "runner",
    }
    with pytest.raises(ConfigError, match="local file"):
        submit.submit_kubeflow("gs://b/pipeline.yaml", "e", "r", client_factory=factory)


def test_submit_to_vertex():
    jobs = []

    class Job:
        def __init__(self, **kwargs):
            self.kwargs, self.submitted, self.resource_name = kwargs, None, "projects/p/locations/r/pipelineJobs/1"
            jobs.append(self)

        def submit(self, service_account=None):
            self.submitted = service_account

    name = submit.submit_vertex(
        "gs://b/pipeline.json",
        project="p",
        region="r",
        pipeline_root="gs://b/root",
        display_name="speechpipe-1",
        service_account="sa@p",
        job_factory=Job,
    )
    assert name.endswith("/pipelineJobs/1")
    (job,) = jobs
    assert job.kwargs == {
        "display_name": "speechpipe-1",
        "template_path": "gs://b/pipeline.json",
        "pipeline_root": "gs://b/root",
        "project": "p",
        "location": "r",
    }
    assert job.submitted == "sa@p"
    with pytest.raises(ConfigError, match="--project and --region"):
        submit.submit_vertex("x.json", "", "", "gs://b", "n", job_factory=Job)
