"""RegistryChampion (components/registry_champion.py, `speechpipe compile --champion-from registry`):
the champion from a local SQLite MLflow registry's `champion` alias, published as a Model
artifact, or marked absent, which the trainers and evaluators then treat as "no champion"."""

import json
import os
import uuid
from types import SimpleNamespace

import pytest
from tfx.types import standard_artifacts

from speechpipe.components.blessing import champion_origin, present_champion, serving_dir
from speechpipe.components.registry_champion import NO_CHAMPION_FILE, Executor, champion_absent
from speechpipe.results.registry import Registry
from tests import ramfs

NAME = "speechpipe-ctc"


def _saved_model(folder: str, value: float) -> str:
    """A tiny SavedModel whose `f` signature returns `value`: enough to tell versions apart."""
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[])
        def f(self):
            return {"value": tf.constant(value)}

    model = Model()
    tf.saved_model.save(model, folder, signatures={"f": model.f})
    return folder


def _push(registry: Registry, tmp_path, data_key: str, value: float, smoke: str = "passed") -> str:
    """What RegistryPusher does for a blessed model: register, tag, move the alias."""
    folder = _saved_model(str(tmp_path / f"model-{uuid.uuid4().hex[:6]}"), value)
    registered = registry.register(
        NAME,
        folder,
        {"test_per": value},
        {"data_key": data_key, "data_spans": "0", "mlmd_model_id": str(int(value * 10))},
    )
    registry.tag_version(NAME, registered.version, "smoke_test", smoke)
    if smoke == "passed":
        registry.set_champion(NAME, registered.version)
    return registered.version


def _resolve(tracking_uri: str, uri: str, data_key: str, kind: str = "ctc") -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = uri
    Executor().Do(
        {},
        {"model": [model]},
        {"tracking_uri": tracking_uri, "model_name": NAME, "data_key": data_key, "model_kind": kind},
    )
    return model


def _value(model: standard_artifacts.Model) -> float:
    import tensorflow as tf

    return float(tf.saved_model.load(serving_dir(model.uri)).signatures["f"]()["value"].numpy())


@pytest.fixture
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    return uri, Registry(uri)


def test_no_champion_is_published_marked_absent(registry, tmp_path):
    uri, _ = registry
    model = _resolve(uri, str(tmp_path / "champion"), "key1")
    assert model.get_int_custom_property("champion") == 0
    assert "no version of speechpipe-ctc has the alias champion" in model.get_string_custom_property("why")
    serving = os.path.join(model.uri, "Format-Serving")
    assert os.listdir(serving) == [NO_CHAMPION_FILE]  # no SavedModel
    with open(os.path.join(model.uri, "champion.json"), encoding="utf-8") as f:
        assert json.load(f)["champion"] is False
    # The consumers: the evaluators compare with nothing, the trainers get no base model.
    assert present_champion(model) is None and champion_origin(model) == {}
    assert champion_absent(serving) and champion_absent(model.uri)
    from speechpipe.components import trainer_contract

    fn_args = SimpleNamespace(base_model=serving, custom_config={"features": {}}, train_files=[], train_steps=None)
    assert trainer_contract.read_inputs(fn_args, "ctc").champion is None


def test_the_alias_version_is_published_as_a_model(registry, tmp_path):
    uri, reg = registry
    v1 = _push(reg, tmp_path, "key1", 0.5)
    model = _resolve(uri, str(tmp_path / "champion"), "key2")
    assert model.get_int_custom_property("champion") == 1
    assert model.get_string_custom_property("registry_version") == v1 == "1"
    assert model.get_string_custom_property("data_key") == "key1"
    assert model.get_string_custom_property("trained_mlmd_model_id") == "5"
    assert _value(model) == pytest.approx(0.5)  # the registered SavedModel, loaded from the artifact
    serving = os.path.join(model.uri, "Format-Serving")
    assert os.path.exists(os.path.join(serving, "saved_model.pb")) and not champion_absent(serving)
    assert present_champion(model) is model
    assert champion_origin(model) == {"registry_model": NAME, "registry_version": "1"}
    from speechpipe.components import trainer_contract

    fn_args = SimpleNamespace(base_model=serving, custom_config={"features": {}}, train_files=[], train_steps=None)
    assert trainer_contract.read_inputs(fn_args, "embedder").champion == serving  # the trainer warm-starts from it


def test_a_champion_on_this_runs_data_is_skipped_as_the_resolver_does(registry, tmp_path):
    """ChampionStrategy's rule: a model trained on this run's data key is not its champion."""
    uri, reg = registry
    _push(reg, tmp_path, "key1", 0.5)
    alone = _resolve(uri, str(tmp_path / "c1"), "key1")
    assert alone.get_int_custom_property("champion") == 0
    assert "trained on this run's data" in alone.get_string_custom_property("why")
    _push(reg, tmp_path, "key2", 0.25)  # v2, now the champion
    _push(reg, tmp_path, "key3", 0.75, smoke="failed")  # v3 failed its smoke test: never champion
    # A re-run on v2's data compares with the champion before it (v1); other data with v2.
    assert _resolve(uri, str(tmp_path / "c2"), "key2").get_string_custom_property("registry_version") == "1"
    newer = _resolve(uri, str(tmp_path / "c3"), "key4")
    assert newer.get_string_custom_property("registry_version") == "2" and _value(newer) == pytest.approx(0.25)
    # A rolled-back alias (v1) is what the registry says the champion is.
    reg.set_champion(NAME, "1")
    assert _resolve(uri, str(tmp_path / "c4"), "key4").get_string_custom_property("registry_version") == "1"


def test_the_trainers_drop_an_absent_champion(registry, tmp_path):
    """A registry champion step publishes a Model artifact even when the registry has none: both
    trainers read it as no champion (warm start "no champion yet"), as they read the resolver's
    empty answer."""
    from speechpipe.components import trainer_contract

    uri, _ = registry
    absent = os.path.join(_resolve(uri, str(tmp_path / "champion"), "key1").uri, "Format-Serving")
    for model_key in ("ctc", "embedder"):
        for base_model in (absent, None):
            fn_args = SimpleNamespace(
                base_model=base_model, custom_config={"features": {}}, train_files=[], train_steps=None
            )
            assert trainer_contract.read_inputs(fn_args, model_key).champion is None
    present = str(tmp_path / "present")
    os.makedirs(present)
    fn_args = SimpleNamespace(base_model=present, custom_config={"features": {}}, train_files=[], train_steps=None)
    assert trainer_contract.read_inputs(fn_args, "ctc").champion == present


def test_the_champion_on_object_storage(registry, tmp_path):
    """The artifact URI under ram:// (TFX's fileio, as on gs://); the registry stays local."""
    uri, reg = registry
    _push(reg, tmp_path, "key1", 0.5)
    bucket = f"ram://speechpipe-champion-{uuid.uuid4().hex[:8]}"
    try:
        model = _resolve(uri, f"{bucket}/champion", "key2")
        assert _value(model) == pytest.approx(0.5)
        assert f"{bucket}/champion/Format-Serving/saved_model.pb" in ramfs.objects(bucket + "/")
        absent = _resolve(f"sqlite:///{tmp_path}/empty/mlflow.db", f"{bucket}/none", "key2")
        assert present_champion(absent) is None
    finally:
        ramfs.clear(bucket)
    assert not os.path.exists("ram:"), "something wrote a ram:// URI to the local disk"
