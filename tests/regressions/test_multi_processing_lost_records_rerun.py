"""Regression: Beam's multi-processing DirectRunner dropped a block of elements between its
workers in about 1 run in 50 (make demo: `ReadBackError: split train: counted 1680 examples,
read back 1607`), and the run failed after its other nodes had run. The read-back check still
catches it; the feature job now removes that run's output and runs again in one process, where
the check is made again, and says so in its summary and log."""

import logging

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from speechpipe.audio.sources import make_spec
from speechpipe.config import FeatureConfig
from speechpipe.jobs import features_job

REAL_READ_BACK = features_job.read_back


def _drop_one_record_once(monkeypatch):
    real = features_job.read_back
    calls = []

    def lossy(out_dir):
        found = real(out_dir)
        calls.append(out_dir)
        if len(calls) == 1:  # the first run: one training record "lost" between workers
            name = sorted(found["train"])[0]
            found["train"][name] -= 1
        return found

    monkeypatch.setattr(features_job, "read_back", lossy)
    return calls


def test_records_lost_by_the_multi_processing_runner_are_made_again_in_memory(
    tiny_corpus, tmp_path, monkeypatch, caplog
):
    calls = _drop_one_record_once(monkeypatch)
    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    with caplog.at_level(logging.WARNING):
        summary = features_job.run_job(
            make_spec(f"{tiny_corpus}/manifest.jsonl"), FeatureConfig(), str(tmp_path / "out"), options
        )
    assert len(calls) == 2
    assert summary["rerun"]["direct_running_mode"] == "in_memory"
    assert "read back" in summary["rerun"]["why"]
    assert any("running it again in_memory" in r.getMessage() for r in caplog.records)
    # What is on disk is the second run's alone: every good record once, no shard of the first.
    on_disk = REAL_READ_BACK(str(tmp_path / "out"))
    assert {split: sum(found.values()) for split, found in on_disk.items()} == summary["good"]


def test_in_memory_runs_are_not_run_again(tiny_corpus, tmp_path, monkeypatch):
    _drop_one_record_once(monkeypatch)
    with pytest.raises(features_job.ReadBackError, match="read back"):
        features_job.run_job(
            make_spec(f"{tiny_corpus}/manifest.jsonl"),
            FeatureConfig(),
            str(tmp_path / "out"),
            PipelineOptions(["--direct_running_mode=in_memory"]),
        )
