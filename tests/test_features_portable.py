"""The feature job through Beam's PortableRunner, against Beam's own job service and an external
worker pool in separate processes: the contract Flink and Dataflow runners use."""
import os
import socket
import subprocess
import sys
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from speechpipe.io import records
from speechpipe.config import FeatureConfig
from speechpipe.pipeline import features_job
from speechpipe.audio.sources import make_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service on port {port} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    job_port, pool_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("services")
    # The worker pool starts SDK workers as plain `python`: the venv's must come first on PATH,
    # as a cluster's worker image has the project installed.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    job_service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}",
         f"--staging_dir={logs / 'staging'}"],
        stdout=open(logs / "job.log", "w"), stderr=subprocess.STDOUT, env=env)
    worker_pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
        stdout=open(logs / "pool.log", "w"), stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(job_port, job_service)
        _wait_for(pool_port, worker_pool)
        yield job_port, pool_port
    finally:
        for process in (job_service, worker_pool):
            process.terminate()
            process.wait(timeout=30)


def test_feature_job_on_the_portable_runner(portable_services, tiny_corpus, tmp_path):
    job_port, pool_port = portable_services
    options = PipelineOptions([
        "--runner=PortableRunner",
        f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{pool_port}",
        # what a Flink or Dataflow submission ships to its workers
        f"--setup_file={os.path.join(REPO, 'setup.py')}",
    ])
    spec = make_spec(os.path.join(tiny_corpus, "manifest.jsonl"))
    portable = features_job.run_job(spec, FeatureConfig(), str(tmp_path / "portable"), options)
    direct = features_job.run_job(spec, FeatureConfig(), str(tmp_path / "direct"),
                                  PipelineOptions(["--direct_running_mode=in_memory"]))
    assert portable["good"] == direct["good"] and portable["inputs"] == direct["inputs"] == 24
    for split in ("train", "validation", "test"):
        a = sorted(records.encode_example(e) for e in records.read_split(str(tmp_path / "portable"), split))
        b = sorted(records.encode_example(e) for e in records.read_split(str(tmp_path / "direct"), split))
        assert a == b
