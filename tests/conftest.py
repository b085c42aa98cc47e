import os

import pytest

from tests.helpers import make_tiny_corpus

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
    """The tiny demo corpus, synthesised once per test session."""
    return make_tiny_corpus(str(tmp_path_factory.mktemp("tiny_corpus")))


@pytest.fixture(scope="session")
def tiny_features(tiny_corpus, tmp_path_factory) -> str:
    """The feature job's output (defaults, in_memory) for the tiny corpus, once per session."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.config import FeatureConfig
    from speechpipe.pipeline import features_job
    from speechpipe.audio.sources import make_spec

    out = str(tmp_path_factory.mktemp("tiny_features"))
    features_job.run_job(make_spec(os.path.join(tiny_corpus, "manifest.jsonl")), FeatureConfig(), out,
                         PipelineOptions(["--direct_running_mode=in_memory"]))
    return out
