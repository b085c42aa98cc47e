"""The feature job through Beam's PortableRunner, against Beam's own job service and an external
worker pool in separate processes: the contract Flink and Dataflow runners use."""

import os

from apache_beam.options.pipeline_options import PipelineOptions

from speechpipe.audio.sources import make_spec
from speechpipe.config import FeatureConfig
from speechpipe.io import records
from speechpipe.jobs import features_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_feature_job_on_the_portable_runner(portable_services, tiny_corpus, tmp_path):
    job_port, pool_port = portable_services
    options = PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
            # what a Flink or Dataflow submission ships to its workers
            f"--setup_file={os.path.join(REPO, 'setup.py')}",
        ]
    )
    spec = make_spec(os.path.join(tiny_corpus, "manifest.jsonl"))
    portable = features_job.run_job(spec, FeatureConfig(), str(tmp_path / "portable"), options)
    direct = features_job.run_job(
        spec, FeatureConfig(), str(tmp_path / "direct"), PipelineOptions(["--direct_running_mode=in_memory"])
    )
    assert portable["good"] == direct["good"] and portable["inputs"] == direct["inputs"] == 24
    for split in ("train", "validation", "test"):
        a = sorted(records.encode_example(e) for e in records.read_split(str(tmp_path / "portable"), split))
        b = sorted(records.encode_example(e) for e in records.read_split(str(tmp_path / "direct"), split))
        assert a == b
