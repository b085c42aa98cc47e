"""End to end with LocalDagRunner: the champion from the MLflow registry (champion_from="registry",
what `speechpipe compile --champion-from registry` builds for open-source KFP) instead of the ML
Metadata resolver; the CTC branch on the tiny corpus, in one home.

run 1 (span 0)             -> the registry has no champion: the step publishes one marked absent,
                              the trainer starts from scratch ("no champion yet"), the evaluator
                              compares with nothing; v1 pushed and made champion
run 1 again                -> every node a cache hit, the registry step included
run 2 (span 0 + new span)  -> the step publishes v1 from the registry: warm start from it,
                              comparison with it, refused (an impossible improvement is asked)
"""

import os

import pytest

from speechpipe.pipeline.local_runner import run_pipeline
from tests.helpers import make_tiny_corpus
from tests.test_tfx_pipeline import tiny_config

pytestmark = pytest.mark.e2e  # LocalDagRunner runs of the whole pipeline


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory):
    home = tmp_path_factory.mktemp("registry_home")
    new_span = make_tiny_corpus(
        str(tmp_path_factory.mktemp("spans") / "new"), seed=1, speakers=3, utterances=3, sessions=1
    )
    span0 = os.path.join(tiny_corpus, "manifest.jsonl")
    out = {"first": run_pipeline(tiny_config(home, [span0], champion_from="registry"))}
    out["again"] = run_pipeline(tiny_config(home, [span0], champion_from="registry"))
    out["second"] = run_pipeline(
        tiny_config(
            home, [span0, os.path.join(new_span, "manifest.jsonl")], champion_from="registry", min_per_improvement=0.99
        )
    )
    return out


def test_no_registry_champion_behaves_as_no_resolved_champion(runs):
    first = runs["first"]
    assert first["status"] == "succeeded", first["error"]
    assert "CTCRegistryChampion" in first["executed"] and "CTCChampionResolver" not in first["nodes"]
    assert first["warm_start"] == {"warm_start": False, "from": None, "reason": "no champion yet"}
    assert first["evaluation"]["champion"] is None
    assert first["evaluation"]["why"].endswith("(no champion yet)")
    assert first["push"]["pushed"] is True and first["push"]["version"] == "1"


def test_rerun_is_all_cache(runs):
    again = runs["again"]
    assert again["status"] == "succeeded", again["error"]
    assert again["executed"] == [], again["nodes"]
    assert {"CTCRegistryChampion", "CTCTrainer", "CTCRegistryPusher"} <= set(again["cached"])


def test_new_span_takes_the_registry_champion(runs):
    second = runs["second"]
    assert second["status"] == "succeeded", second["error"]
    assert "CTCRegistryChampion" in second["executed"]
    assert second["warm_start"]["warm_start"] is True, second["warm_start"]
    champion = second["evaluation"]["champion"]
    assert champion["registry_model"] == "speechpipe-ctc" and champion["registry_version"] == "1"
    assert "does not beat the champion" in second["evaluation"]["why"]
    assert second["push"]["pushed"] is False
