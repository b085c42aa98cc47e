"""The pipeline's decisions without running it: blessing, the gate, the champion resolver, fingerprints."""

import json
import os

from tfx.types import standard_artifacts

from speechpipe.components.blessing import decide
from speechpipe.components.champion_resolver import ChampionStrategy
from speechpipe.components.validation_gate import gate_reasons
from speechpipe.pipeline.run_config import RunConfig, data_key, span_fingerprint


def test_blessing_needs_the_threshold_and_a_better_per_than_the_champion():
    assert decide({"per": 0.3}, None, {"per": 0.5}, {"per": 0.0}) == []
    assert "above the threshold" in decide({"per": 0.6}, None, {"per": 0.5}, {"per": 0.0})[0]
    assert decide({"per": 0.3}, {"per": 0.4}, {"per": 0.5}, {"per": 0.0}) == []
    assert "does not beat the champion" in decide({"per": 0.4}, {"per": 0.4}, {"per": 0.5}, {"per": 0.0})[0]
    assert "by more than" in decide({"per": 0.35}, {"per": 0.4}, {"per": 0.5}, {"per": 0.1})[0]
    assert "not a number" in decide({"per": float("nan")}, None, {"per": 0.5}, {})[0]


def test_gate_reasons():
    good = {"inputs": 10, "dead_letter": {"total": 1, "by_reason": {"silent": 1}}, "good": {"train": 7}}
    assert gate_reasons({}, good, 0.2, 1) == []
    reasons = gate_reasons({"train": ["num_frames: Out-of-range values (...)"]}, good, 0.2, 1)
    assert reasons == ["train: num_frames: Out-of-range values (...)"]
    bad = {"inputs": 10, "dead_letter": {"total": 5, "by_reason": {"unreadable": 5}}, "good": {"train": 0}}
    reasons = gate_reasons({}, bad, 0.2, 1)
    assert "5 of 10 inputs dead-lettered" in reasons[0] and "0 training examples" in reasons[1]


def _model(i):
    m = standard_artifacts.Model()
    m.id = i
    return m


def _blessing(i, model_id, blessed, key):
    b = standard_artifacts.ModelBlessing()
    b.id = i
    b.set_int_custom_property("blessed", blessed)
    b.set_int_custom_property("current_model_id", model_id)
    b.set_string_custom_property("data_key", key)
    return b


def test_champion_is_the_latest_blessed_model_on_other_data():
    models = [_model(1), _model(2), _model(3)]
    blessings = [_blessing(10, 1, 1, "a"), _blessing(11, 2, 1, "b"), _blessing(12, 3, 0, "c")]

    def resolve(key):
        return ChampionStrategy(key).resolve_artifacts(None, {"model": list(models), "model_blessing": list(blessings)})

    assert [m.id for m in resolve("c")["model"]] == [2]  # 3 is not blessed
    assert [m.id for m in resolve("b")["model"]] == [1]  # a re-run on b's data resolves what b's run did
    assert [m.id for m in resolve("a")["model"]] == [2]
    only = ChampionStrategy("a").resolve_artifacts(None, {"model": [models[0]], "model_blessing": [blessings[0]]})
    assert only == {"model": [], "model_blessing": []}


def test_each_branch_resolves_its_own_champion():
    models = [_model(1), _model(2)]
    ctc, speaker = _blessing(10, 1, 1, "a"), _blessing(11, 2, 1, "a")
    speaker.set_string_custom_property("model_kind", "speaker")  # the CTC blessing has none: "ctc"
    inputs = {"model": models, "model_blessing": [ctc, speaker]}
    assert [m.id for m in ChampionStrategy("z", "ctc").resolve_artifacts(None, dict(inputs))["model"]] == [1]
    assert [m.id for m in ChampionStrategy("z", "speaker").resolve_artifacts(None, dict(inputs))["model"]] == [2]


def test_fingerprint_changes_with_new_audio(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x" * 10)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"utterance": "u", "audio": "a.wav"}) + "\n")
    before = span_fingerprint(str(manifest))
    assert span_fingerprint(str(manifest)) == before
    (tmp_path / "a.wav").write_bytes(b"x" * 11)
    assert span_fingerprint(str(manifest)) != before
    folder = tmp_path / "vox"
    os.makedirs(folder / "id1" / "s1")
    (folder / "id1" / "s1" / "1.wav").write_bytes(b"y")
    first = span_fingerprint(str(folder))
    (folder / "id1" / "s1" / "2.wav").write_bytes(b"y")
    assert span_fingerprint(str(folder)) != first
    config = RunConfig(spans=(str(manifest),), ctc_spans=(str(folder),))
    assert data_key(config, ["a", "b"]) != data_key(config, ["a", "c"])  # the CTC branch's own span changed
    # ... which is no data of the speaker branch's: its key stays.
    assert data_key(config, ["a", "b"], "speaker") == data_key(config, ["a", "c"], "speaker")
    assert data_key(config, ["a", "b"], "speaker") != data_key(config, ["z", "b"], "speaker")


def test_an_older_demo_corpus_is_used_as_it_is_with_a_notice(tmp_path):
    """A home folder whose demo corpus an older default synthesised (60 x 40) keeps it: its
    features, models and registry entries may build on it. The run says what differs."""
    import io

    from speechpipe.config import DEMO_CORPUS
    from speechpipe.pipeline import local_runner

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "manifest.jsonl").write_text("")
    old = {**{k: v for k, v in DEMO_CORPUS.to_json().items() if k != "workers"}, "speakers": 60, "utterances": 40}
    (folder / "corpus.json").write_text(json.dumps({"config": old}))
    config = RunConfig(home=str(tmp_path), spans=(str(folder / "manifest.jsonl"),))
    out = io.StringIO()
    local_runner._ensure_demo_corpus(config, out)
    said = out.getvalue()
    assert "speakers=60, utterances=40" in said
    assert f"speakers={DEMO_CORPUS.speakers}, utterances={DEMO_CORPUS.utterances}" in said
    assert sorted(os.listdir(folder)) == ["corpus.json", "manifest.jsonl"]  # nothing synthesised or removed
    (folder / "corpus.json").write_text(json.dumps({"config": dict(DEMO_CORPUS.to_json().items())}))
    quiet = io.StringIO()
    local_runner._ensure_demo_corpus(config, quiet)
    assert quiet.getvalue() == ""
