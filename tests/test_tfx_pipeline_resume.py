"""A `speechpipe run` killed part-way (the process dies inside the Trainer) resumes on the next run:
the nodes that completed are ML Metadata cache hits with the very same artifacts, and the rest run.

The kill is injected, not timed: the run's process is `speechpipe run` (CTC branch only) with the
trainers' input reader (`trainer_contract.read_inputs`, the first thing the CTC run_fn calls)
replaced by one that SIGKILLs its own process, so it always dies at the same point, inside the
Trainer's execution, whatever the machine's speed. (TFX reloads the module its run_fn names, so
that module itself cannot be patched.)"""

import os
import subprocess
import sys

import pytest

from speechpipe.pipeline.local_runner import run_pipeline
from speechpipe.results.report import run_nodes
from tests.test_tfx_pipeline import tiny_config

pytestmark = pytest.mark.e2e

# `speechpipe run` in a process whose CTC trainer kills the process the moment it starts training.
_KILLED_RUN = """
import os, signal, sys
from speechpipe.components import trainer_contract
def read_inputs(fn_args, model_key):
    print("[test] killing the run inside the Trainer", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
trainer_contract.read_inputs = read_inputs
from speechpipe.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_args(home, span):
    return [
        "run",
        "--home",
        str(home),
        "--span",
        span,
        "--in-memory",
        "--no-speaker",
        "--ctc-lstm-units",
        "16",
        "--ctc-max-epochs",
        "1",
        "--ctc-minutes",
        "1",
        "--ctc-batch-size",
        "8",
        "--ctc-patience",
        "1",
        "--max-per",
        "10",
    ]


def test_killed_run_resumes_with_the_same_artifacts(tiny_corpus, tmp_path):
    span = os.path.join(tiny_corpus, "manifest.jsonl")
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, *_cli_args(home, span)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=600,
    )
    lines = done.stdout.splitlines(keepends=True)
    assert done.returncode == -9, (done.returncode, done.stdout[-3000:], done.stderr[-3000:])
    assert "[test] killing the run inside the Trainer" in done.stdout
    assert any("Trainer ..." in line for line in lines), "".join(lines)
    killed_run = lines[0].split()[1].rstrip(":")
    config = tiny_config(home, [span])
    before = run_nodes(config, killed_run)
    assert before["CTCFeatureGen_span0"]["state"] == "complete"
    assert before["CTCTrainer"]["state"] == "running"  # killed: never finished
    assert "CTCRegistryPusher" not in before

    resumed = run_pipeline(config)
    assert resumed["status"] == "succeeded", resumed["error"]
    assert {"CTCFeatureGen_span0", "CTCStatisticsGen_span0", "CTCValidationGate_span0"} <= set(resumed["cached"])
    assert {"CTCTrainer", "CTCEvaluator", "CTCRegistryPusher"} <= set(resumed["executed"])
    after = run_nodes(config, resumed["run_id"])
    for node, key in (("CTCFeatureGen_span0", "examples"), ("CTCStatisticsGen_span0", "statistics")):
        assert [a["id"] for a in after[node]["outputs"][key]] == [a["id"] for a in before[node]["outputs"][key]]
    assert resumed["push"]["pushed"] is True and resumed["push"]["version"] == "1"
