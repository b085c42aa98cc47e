"""A `speechpipe run` killed part-way (SIGKILL while the Trainer runs) resumes on the next run: the
nodes that completed are ML Metadata cache hits with the very same artifacts, and the rest run."""
import os
import signal
import subprocess
import sys
import time

from speechpipe.pipeline.local_runner import run_pipeline
from speechpipe.results.report import run_nodes
from tests.test_tfx_pipeline import tiny_config


def _cli_args(home, span):
    return [sys.executable, "-m", "speechpipe.cli", "run", "--home", str(home), "--span", span, "--in-memory",
            "--lstm-units", "16", "--max-epochs", "1", "--max-minutes", "1", "--batch-size", "8", "--patience", "1",
            "--max-per", "10"]


def test_killed_run_resumes_with_the_same_artifacts(tiny_corpus, tmp_path):
    span = os.path.join(tiny_corpus, "manifest.jsonl")
    home = tmp_path / "home"
    process = subprocess.Popen(_cli_args(home, span), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    lines = []
    deadline = time.time() + 480
    try:
        for line in process.stdout:
            lines.append(line)
            if line.strip().endswith("Trainer ..."):
                time.sleep(3)  # inside training
                os.killpg(process.pid, signal.SIGKILL)
                break
            assert time.time() < deadline, "".join(lines)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert any("Trainer ..." in line for line in lines), "".join(lines)
    killed_run = lines[0].split()[1].rstrip(":")
    config = tiny_config(home, [span])
    before = run_nodes(config, killed_run)
    assert before["FeatureGen_span0"]["state"] == "complete"
    assert before["Trainer"]["state"] == "running"  # killed: never finished
    assert "RegistryPusher" not in before

    resumed = run_pipeline(config)
    assert resumed["status"] == "succeeded", resumed["error"]
    assert {"FeatureGen_span0", "StatisticsGen_span0", "ValidationGate_span0"} <= set(resumed["cached"])
    assert {"Trainer", "SpeechEvaluator", "RegistryPusher"} <= set(resumed["executed"])
    after = run_nodes(config, resumed["run_id"])
    for node, key in (("FeatureGen_span0", "examples"), ("StatisticsGen_span0", "statistics")):
        assert [a["id"] for a in after[node]["outputs"][key]] == [a["id"] for a in before[node]["outputs"][key]]
    assert resumed["push"]["pushed"] is True and resumed["push"]["version"] == "1"
