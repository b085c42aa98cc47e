import os
import subprocess
import sys

import pytest

from tests.helpers import make_tiny_corpus
from tests.services import free_port, wait_for

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pyproject.toml gives every test 900 s (pytest-timeout, fixtures included). A LocalDagRunner run
# of the whole pipeline took up to about 10 min on a 2-core machine, and a test's module fixture
# may hold one: an e2e test gets this unless it names its own @pytest.mark.timeout.
E2E_TIMEOUT_S = 1800


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("e2e") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
    """The tiny demo corpus, synthesised once per test session."""
    return make_tiny_corpus(str(tmp_path_factory.mktemp("tiny_corpus")))


@pytest.fixture(scope="session")
def tiny_features(tiny_corpus, tmp_path_factory) -> str:
    """The feature job's output (defaults, in_memory) for the tiny corpus, once per session."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.audio.sources import make_spec
    from speechpipe.config import FeatureConfig
    from speechpipe.jobs import features_job

    out = str(tmp_path_factory.mktemp("tiny_features"))
    features_job.run_job(
        make_spec(os.path.join(tiny_corpus, "manifest.jsonl")),
        FeatureConfig(),
        out,
        PipelineOptions(["--direct_running_mode=in_memory"]),
    )
    return out


@pytest.fixture(scope="session")
def tiny_training_input(tiny_features, tmp_path_factory) -> str:
    """The embedder's training input for the tiny corpus (the pair job's speaker blocks of the
    training split, K = 2 of 4 stored segments, and its back-end sample), once per session: the
    folder `embedder_trainer.train` takes as `blocks`."""
    from speechpipe.components.embedder_trainer import write_training_input
    from speechpipe.speakers.embedder.config import EmbedderTrainConfig

    out = str(tmp_path_factory.mktemp("tiny_training_input"))
    config = EmbedderTrainConfig(segments_per_speaker=2, blocks_per_speaker=8)
    write_training_input(tiny_features, out, config, ["--direct_running_mode=in_memory"])
    return out


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    """Beam's job service and an external worker pool, each its own process: (job port, pool port)."""
    job_port, pool_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("services")
    # The worker pool starts SDK workers as plain `python`: the venv's must come first on PATH,
    # as a cluster's worker image has the project installed.
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    job_service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            f"--port={job_port}",
            f"--staging_dir={logs / 'staging'}",
        ],
        stdout=open(logs / "job.log", "w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    worker_pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
        stdout=open(logs / "pool.log", "w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for(job_port, job_service)
        wait_for(pool_port, worker_pool)
        yield job_port, pool_port
    finally:
        for process in (job_service, worker_pool):
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def stand_in_embedder(tmp_path_factory) -> str:
    """A tiny random embedder's SavedModel (no training: for tests of serving paths, not of
    learning), made input-sensitive as tests/test_embedder_export.py does."""
    import tf_keras as keras

    from speechpipe.config import FeatureConfig
    from speechpipe.speakers import embedder
    from speechpipe.speakers.embedder import EmbedderConfig

    keras.utils.set_random_seed(0)
    config = EmbedderConfig(
        lstm_units=8, dense_units=(16,), output_dim=8, dropout=0.1, backend="none", embedding="output"
    )
    base = embedder.build_base_network(config)
    layer = base.get_layer("output_dense")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 30.0, bias])
    return embedder.export_embedder(str(tmp_path_factory.mktemp("embedder") / "model"), base, config, FeatureConfig())
