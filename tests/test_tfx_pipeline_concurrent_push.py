"""End to end: two speaker-only runs on two different corpora, started together on one home.

Both resolve "no champion yet" and both are blessed against nothing; both push. The first to
claim the alias gets it; the other finds a champion made while it evaluated, measures it on its
own test split, and replaces it only if it beats it (components/registry_pusher.py). Whatever
the order, the alias's final holder was compared with the version it replaced.

Two `speechpipe run` processes (the registry's lock is a file lock between processes); tiny
budgets, Beam in_memory. About 2 minutes on two cores.
"""

import os
import subprocess
import sys
import time

import pytest

from speechpipe.results.registry import CHAMPION, Registry
from speechpipe.results.tracking import embedded_tracking_uri
from tests.helpers import make_tiny_corpus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "speechpipe-embedder"
RUN_FILE = """\
branches: [speaker]
max_eer: 1.0
embedder:
  max_seconds: 60.0
  max_steps: 20
  eval_every_steps: 10
  speakers_per_batch: 4
  segments_per_speaker: 2
"""


@pytest.mark.timeout(1500)
def test_two_runs_at_once_crown_only_a_model_that_beat_the_champion_it_replaced(tmp_path):
    # 14 speakers: 10 train, 2 validation, 2 test (EER needs two speakers on each side).
    corpora = [
        make_tiny_corpus(str(tmp_path / f"corpus{seed}"), seed=seed, speakers=14, utterances=3, sessions=2)
        for seed in (0, 1)
    ]
    home = tmp_path / "home"
    run_file = tmp_path / "run.yaml"
    run_file.write_text(RUN_FILE)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the home's SQLite registry
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.time()
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "speechpipe.cli", "run", "--config", str(run_file), "--home", str(home)]
            + ["--speaker-span", os.path.join(corpus, "manifest.jsonl"), "--in-memory"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for corpus in corpora
    ]
    outputs = [run.communicate(timeout=1400)[0] for run in runs]
    seconds = time.time() - started
    for run, out in zip(runs, outputs):
        assert run.returncode == 0, out[-8000:]

    model = {m["name"]: m for m in Registry(embedded_tracking_uri(str(home))).list()}[MODEL]
    versions = {v["version"]: v for v in model["versions"]}
    assert sorted(versions) == ["1", "2"], (outputs, seconds)
    first, second = sorted(versions.values(), key=lambda v: v["tags"]["champion_replaced"] != "none")
    # The first to claim found no champion; the second was compared with the first's version,
    # by its evaluator or, when the first was crowned while it evaluated, by its pusher.
    assert first["tags"]["champion_replaced"] == "none" == first["tags"]["champion_compared_with"]
    assert second["tags"]["champion_compared_with"] == first["version"] == second["tags"]["champion_replaced"], second
    raced = all("(no champion yet)" in v["tags"]["blessed_why"] for v in versions.values())
    if raced:  # both evaluated while there was no champion: the race the lock has to settle
        assert "while this run evaluated" in second["tags"]["champion_decision"], second
    holder = model["aliases"][CHAMPION]
    tags = versions[holder]["tags"]
    assert tags["champion_decision"].startswith("champion: ")
    assert tags["champion_compared_with"] == tags["champion_replaced"]  # compared with what it replaced
    if holder == first["version"]:  # the second lost on its own test split, and says so
        assert second["tags"]["champion_decision"].startswith("not champion: ")
        assert "does not beat the champion's" in second["tags"]["champion_decision"]
    # Each run's outcome line says what happened to its version.
    outcomes = [line for out in outputs for line in out.splitlines() if "speaker" in line and "outcome" in line]
    assert any("made champion" in line for line in outcomes), outputs
    print(f"two concurrent runs: {seconds:.0f} s; raced: {raced}; champion v{holder}")
    for v in (first, second):
        print(f"  v{v['version']}: {v['tags']['champion_decision']}")
