"""Beam options for Dataflow, Flink and portable runners (src/speechpipe/jobs/beam_options.py): each builder's
flags are real Beam options, bad values are refused by name, and the feature and pair jobs run
with the Flink builder's flags through the PortableRunner, against Beam's own job service and an
external worker pool (the services of tests/test_features_portable.py)."""

import json
import os

import pytest
from apache_beam.options.pipeline_options import (
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from speechpipe.io import records
from speechpipe.jobs import beam_options, features_job, pairs_job
from speechpipe.jobs.beam_options import BeamOptionsError, DataflowArgs, DirectArgs, FlinkArgs, PortableArgs
from tests.test_features_portable import REPO

SETUP = os.path.join(REPO, "setup.py")
IMAGE = "europe-docker.pkg.dev/p/speechpipe/speechpipe:1"


def _options(args):
    return PipelineOptions(args)


def test_direct_flags():
    options = _options(DirectArgs().to_args())
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert options.view_as(DirectOptions).direct_num_workers == 0  # one per core, where it runs


def test_dataflow_flags_are_beams():
    args = DataflowArgs(
        project="p",
        region="europe-west4",
        temp_location="gs://b/tmp",
        sdk_container_image=IMAGE,
        setup_file=SETUP,
        machine_type="n2-standard-8",
        num_workers=2,
        max_num_workers=100,
        disk_size_gb=100,
        service_account_email="w@p.iam.gserviceaccount.com",
        subnetwork="regions/europe-west4/subnetworks/s",
        use_public_ips=False,
    ).to_args()
    options = _options(args)
    cloud, worker = options.view_as(GoogleCloudOptions), options.view_as(WorkerOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (cloud.project, cloud.region, cloud.temp_location) == ("p", "europe-west4", "gs://b/tmp")
    assert cloud.service_account_email == "w@p.iam.gserviceaccount.com"
    assert (worker.machine_type, worker.num_workers, worker.max_num_workers, worker.disk_size_gb) == (
        "n2-standard-8",
        2,
        100,
        100,
    )
    assert worker.sdk_container_image == IMAGE and worker.use_public_ips is False
    assert worker.subnetwork == "regions/europe-west4/subnetworks/s"
    assert options.view_as(SetupOptions).setup_file == SETUP


def test_flink_flags_are_beams():
    args = FlinkArgs(
        job_endpoint="flink-jobserver.flink:8099",
        environment_type="DOCKER",
        environment_config=IMAGE,
        artifact_endpoint="flink-jobserver.flink:8098",
        setup_file=SETUP,
        parallelism=16,
        max_parallelism=128,
        sdk_worker_parallelism=2,
    ).to_args()
    options = _options(args)
    portable = options.view_as(PortableOptions)
    assert options.view_as(StandardOptions).runner == "PortableRunner"
    assert (portable.job_endpoint, portable.artifact_endpoint) == (
        "flink-jobserver.flink:8099",
        "flink-jobserver.flink:8098",
    )
    assert (portable.environment_type, portable.environment_config) == ("DOCKER", IMAGE)
    assert int(portable.sdk_worker_parallelism) == 2
    flink = options.view_as(FlinkRunnerOptions)
    assert (flink.parallelism, flink.max_parallelism) == (16, 128)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DirectArgs(running_mode="threads"), "running_mode='threads'"),
        (lambda: DirectArgs(num_workers=-1), "num_workers=-1"),
        (lambda: DataflowArgs(project="", region="r", temp_location="gs://b/t", setup_file=SETUP), "project"),
        (lambda: DataflowArgs(project="p", region="", temp_location="gs://b/t", setup_file=SETUP), "region"),
        (lambda: DataflowArgs(project="p", region="r", temp_location="/tmp", setup_file=SETUP), "temp_location='/tmp'"),
        (lambda: DataflowArgs(project="p", region="r", temp_location="gs://b/t"), "sdk_container_image"),
        (
            lambda: DataflowArgs(
                project="p", region="r", temp_location="gs://b/t", setup_file=SETUP, num_workers=10, max_num_workers=5
            ),
            "num_workers=10 is above max_num_workers=5",
        ),
        (
            lambda: DataflowArgs(project="p", region="r", temp_location="gs://b/t", setup_file=SETUP, disk_size_gb=0),
            "disk_size_gb=0",
        ),
        (lambda: PortableArgs(job_endpoint="localhost"), "job_endpoint='localhost'"),
        (lambda: PortableArgs(job_endpoint="h:1", environment_type="KUBERNETES"), "environment_type='KUBERNETES'"),
        (lambda: PortableArgs(job_endpoint="h:1", environment_type="DOCKER"), "environment_config must name"),
        (
            lambda: PortableArgs(job_endpoint="h:1", environment_type="EXTERNAL", environment_config="pool"),
            "environment_config='pool'",
        ),
        (lambda: PortableArgs(job_endpoint="h:1", environment_type="PROCESS", environment_config="boot"), '"command"'),
        (lambda: FlinkArgs(job_endpoint="h:1", environment_type="LOOPBACK", parallelism=0), "parallelism=0"),
        (
            lambda: FlinkArgs(job_endpoint="h:1", environment_type="LOOPBACK", parallelism=8, max_parallelism=4),
            "parallelism=8 is above max_parallelism=4",
        ),
    ],
)
def test_bad_values_are_refused_by_name(make, message):
    with pytest.raises(BeamOptionsError, match=message.replace("[", r"\[").replace("(", r"\(")):
        make()


def test_the_command_line_prints_the_same_flags(capsys):
    argv = [
        "dataflow",
        "--project",
        "p",
        "--region",
        "r",
        "--temp-location",
        "gs://b/t",
        "--sdk-container-image",
        IMAGE,
        "--max-num-workers",
        "40",
        "--beam-arg=--experiments=shuffle_mode=service",
    ]
    assert beam_options.main(argv) == 0
    expected = DataflowArgs(
        project="p", region="r", temp_location="gs://b/t", sdk_container_image=IMAGE, max_num_workers=40
    ).to_args() + ["--experiments=shuffle_mode=service"]
    assert capsys.readouterr().out.split() == expected
    assert beam_options.main(["flink", "--job-endpoint", "h:8099", "--environment-type", "DOCKER"]) == 2
    assert "environment_config" in capsys.readouterr().err


def _portable_flink_args(job_port: int, pool_port: int):
    """The Flink builder's flags, pointed at Beam's job service and worker pool: what differs
    from a Flink cluster is only the address and the EXTERNAL environment (no Docker here)."""
    return FlinkArgs(
        job_endpoint=f"localhost:{job_port}",
        environment_type="EXTERNAL",
        environment_config=f"localhost:{pool_port}",
        setup_file=SETUP,
        parallelism=2,
    ).to_args()


def _split_records(root: str, split: str):
    return sorted(records.encode_example(e) for e in records.read_split(root, split))


def test_the_feature_and_pair_jobs_run_with_the_cluster_flags(
    portable_services,
    tiny_corpus,
    tiny_features,
    tmp_path,
):
    flags = _portable_flink_args(*portable_services)
    features = str(tmp_path / "features")
    assert features_job.run(["--input", os.path.join(tiny_corpus, "manifest.jsonl"), "--out", features] + flags) == 0
    # The same records as the DirectRunner's (the session's in-memory run of the same corpus).
    with open(os.path.join(features, features_job.SUMMARY_FILE), encoding="utf-8") as f:
        summary = json.load(f)
    assert summary["inputs"] == 24 and sum(summary["good"].values()) == 24
    for split in ("train", "validation", "test"):
        assert _split_records(features, split) == _split_records(tiny_features, split)

    pairs, direct = str(tmp_path / "pairs"), str(tmp_path / "pairs_direct")
    assert pairs_job.run(["--features", features, "--out", pairs] + flags) == 0
    assert pairs_job.run(["--features", tiny_features, "--out", direct, "--direct_running_mode=in_memory"]) == 0
    for split in ("train", "validation", "test"):
        name = pairs_job.TRIALS_FILE.format(split=split)
        with (
            open(os.path.join(pairs, name), encoding="utf-8") as a,
            open(os.path.join(direct, name), encoding="utf-8") as b,
        ):
            assert sorted(a) == sorted(b)
    with open(os.path.join(pairs, pairs_job.SUMMARY), encoding="utf-8") as f:
        assert sum(s["pairs"]["total"] for s in json.load(f)["splits"].values()) > 0
