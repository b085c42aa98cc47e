"""End to end: the TFX pipeline on the tiny corpus, in one home folder, run after run.

run 1 (span 0)               -> v1 registered, loaded back, smoke-tested, alias champion
run 1 again (nothing new)    -> every node from the ML Metadata cache, nothing registered
run 2 (span 0 + a new span)  -> span 0 cached, the new span processed, warm start from the
                                champion, compared with it on span 0's test split, and refused
                                (this run asks for an impossible improvement) with the reason
run 3 (span 0 + a bad span)  -> the validation gate stops the run: no training, no push

Tiny budgets: one BLSTM of 16 units, one epoch; Beam in_memory.
"""

import json
import os
from dataclasses import replace

import pytest

from speechpipe.pipeline.local_runner import run_pipeline
from speechpipe.pipeline.run_config import DEMO_CTC, RunConfig, validate_run_config
from speechpipe.results.registry import CHAMPION, Registry
from speechpipe.results.report import run_nodes
from speechpipe.validation import ConfigError
from tests.helpers import make_tiny_corpus, read_jsonl

pytestmark = pytest.mark.e2e  # LocalDagRunner runs of the whole pipeline

TINY_CTC = replace(
    DEMO_CTC, model=replace(DEMO_CTC.model, lstm_units=(16,)), max_epochs=1, max_minutes=1.0, batch_size=8, patience=1
)


def tiny_config(home, spans, **changes) -> RunConfig:
    # The tiny corpus has one validation and one test speaker: the CTC branch only
    # (tests/test_tfx_pipeline_speaker.py runs both).
    base = RunConfig(
        home=str(home),
        spans=tuple(spans),
        ctc=TINY_CTC,
        beam_args=("--direct_running_mode=in_memory",),
        max_per=10.0,
        branches=("ctc",),
    )  # an untrained tiny model must still be blessed on run 1
    return replace(base, **changes)


def _bad_span(corpus: str, out: str) -> str:
    """A span whose audio is all corrupt: the feature job dead-letters everything."""
    os.makedirs(out, exist_ok=True)
    lines = read_jsonl(os.path.join(corpus, "manifest.jsonl"))[:6]
    for i, line in enumerate(lines):
        name = f"bad{i}.wav"
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 3)
        line.update({"audio": name, "utterance": f"bad-{i}"})
    with open(os.path.join(out, "manifest.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return os.path.join(out, "manifest.jsonl")


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory):
    """The four runs, in order, sharing one home (ML Metadata, registry)."""
    home = tmp_path_factory.mktemp("home")
    extra = tmp_path_factory.mktemp("spans")
    new_span = make_tiny_corpus(str(extra / "new"), seed=1, speakers=3, utterances=3, sessions=1)
    span0 = os.path.join(tiny_corpus, "manifest.jsonl")
    out = {"home": str(home)}
    out["first"] = run_pipeline(tiny_config(home, [span0]))
    out["again"] = run_pipeline(tiny_config(home, [span0]))
    out["second"] = run_pipeline(
        tiny_config(home, [span0, os.path.join(new_span, "manifest.jsonl")], min_per_improvement=0.99)
    )
    out["bad"] = run_pipeline(tiny_config(home, [span0, _bad_span(tiny_corpus, str(extra / "bad"))]))
    out["registry"] = Registry(tiny_config(home, [span0]).registry_uri).list()
    return out


def test_first_run_pushes_v1_as_champion(runs):
    first = runs["first"]
    assert first["status"] == "succeeded", first["error"]
    assert first["push"]["pushed"] is True, first["outcome"]
    assert first["push"]["version"] == "1"
    assert "CTCTrainer" in first["executed"] and "CTCRegistryPusher" in first["executed"]
    assert "CTCExamplesUnion" not in first["nodes"]  # one span: its Examples go to the trainer as they are
    assert first["evaluation"]["champion"] is None
    assert os.path.exists(first["report"])


def test_registry_version_carries_lineage(runs):
    (model,) = [m for m in runs["registry"] if m["name"] == "speechpipe-ctc"]
    assert model["aliases"] == {CHAMPION: "1"}
    v1 = [v for v in model["versions"] if v["version"] == "1"][0]
    tags = v1["tags"]
    assert tags["data_spans"] == "0"
    assert tags["pipeline_run_id"] == runs["first"]["run_id"]
    assert tags["mlmd_model_id"] == str(runs["first"]["model_id"])
    assert tags["mlmd_examples_ids"] and tags["git_commit"]
    assert json.loads(tags["feature_config"])["normalization"] == "cmvn"
    assert tags["smoke_test"] == "passed"
    assert "test_per" in v1["metrics"]


def test_rerun_with_nothing_new_is_all_cache(runs):
    again = runs["again"]
    assert again["status"] == "succeeded", again["error"]
    assert again["executed"] == [], again["nodes"]
    # Every node the first run executed is a cache hit now, serving the first run's artifacts.
    assert set(again["cached"]) == set(runs["first"]["executed"]), again["nodes"]
    config = tiny_config(runs["home"], [])
    first, cached = run_nodes(config, runs["first"]["run_id"]), run_nodes(config, again["run_id"])
    for node in ("CTCFeatureGen_span0", "CTCTrainer"):
        assert cached[node]["outputs"] == first[node]["outputs"], node
    assert "CTCTrainer" in again["cached"] and "CTCRegistryPusher" in again["cached"]
    assert again["outcome"].startswith("nothing new, nothing pushed")


def test_new_span_warm_starts_and_is_refused_with_a_reason(runs):
    second = runs["second"]
    assert second["status"] == "succeeded", second["error"]
    assert "CTCFeatureGen_span0" in second["cached"] and "CTCFeatureGen_span1" in second["executed"]
    # Both spans reach the trainer through one ExamplesUnion artifact, as on a cluster.
    assert "CTCExamplesUnion" in second["executed"]
    assert second["warm_start"]["warm_start"] is True, second["warm_start"]
    evaluation = second["evaluation"]
    assert evaluation["champion"]["model_id"] == runs["first"]["model_id"]
    assert evaluation["test_examples"]["span"] == 0  # the fixed test split
    assert not evaluation["blessed"]
    assert "does not beat the champion" in evaluation["why"]
    assert second["push"]["pushed"] is False
    assert "not blessed" in second["outcome"] and "champion" in second["outcome"]


def test_bad_span_stops_at_the_gate_and_pushes_nothing(runs):
    bad = runs["bad"]
    assert bad["status"] == "failed"
    assert "CTCValidationGate_span1" in bad["nodes"] and bad["nodes"]["CTCValidationGate_span1"]["state"] == "failed"
    assert "CTCTrainer" not in bad["nodes"] and "CTCRegistryPusher" not in bad["nodes"]
    assert "CTCExamplesUnion" not in bad["nodes"]  # nothing is copied unless every gate passed
    assert "dead-lettered" in bad["gate"]
    assert "validation gate" in bad["outcome"]
    assert os.path.exists(bad["report"])
    (model,) = [m for m in runs["registry"] if m["name"] == "speechpipe-ctc"]
    assert [v["version"] for v in model["versions"]] == ["1"]  # neither the refused nor the bad run pushed


def test_config_validation_names_the_bad_value(tmp_path):
    with pytest.raises(ConfigError, match="spans"):
        validate_run_config(RunConfig(home=str(tmp_path)))
    with pytest.raises(ConfigError, match="max_per"):
        validate_run_config(RunConfig(home=str(tmp_path), spans=(str(tmp_path),), max_per=0.0))
    with pytest.raises(ConfigError, match="test_span"):
        validate_run_config(RunConfig(home=str(tmp_path), spans=(str(tmp_path),), test_span=1))


def test_registry_list_command_shows_versions_aliases_and_metrics(runs, capsys):
    from speechpipe.cli import main

    assert main(["registry", "list", "--home", runs["home"]]) == 0
    out = capsys.readouterr().out
    assert "speechpipe-ctc" in out and "champion=v1" in out and "test_per=" in out and "smoke_test=passed" in out
