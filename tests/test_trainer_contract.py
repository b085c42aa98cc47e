"""The contract both Trainer modules keep (speechpipe.components.trainer_contract): one custom_config
policy, one warm start and its record, one best-weights callback with its budgets, and both
trainers' configs refusing unknown settings."""

import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from speechpipe.components import trainer_contract
from speechpipe.components.ctc_trainer import CTCTrainConfig
from speechpipe.components.embedder_trainer import EmbedderTrainConfig
from speechpipe.validation import ConfigError


def _fn_args(custom, base_model=None, train_steps=None):
    return SimpleNamespace(custom_config=custom, base_model=base_model, train_files=[], train_steps=train_steps)


def test_custom_config_policy_is_the_same_for_both_trainers():
    for key in ("ctc", "embedder"):
        with pytest.raises(ConfigError, match="unknown"):
            trainer_contract.read_inputs(_fn_args({"features": {}, "embeder": {}}), key)
        with pytest.raises(ConfigError, match="features"):
            trainer_contract.read_inputs(_fn_args({key: {}}), key)
        inputs = trainer_contract.read_inputs(_fn_args({"features": {}, key: {"seed": 3}}, train_steps=7), key)
        assert inputs.model_settings == {"seed": 3} and inputs.max_steps == 7 and inputs.warm_start
        assert inputs.champion is None
    # the other trainer's section is an unknown key here
    with pytest.raises(ConfigError, match="unknown"):
        trainer_contract.read_inputs(_fn_args({"features": {}, "embedder": {}}), "ctc")
    for config in (CTCTrainConfig, EmbedderTrainConfig):
        with pytest.raises(ConfigError, match="unknown"):
            config.from_json({"max_stpes": 3})
    with pytest.raises(ConfigError, match="unknown"):
        CTCTrainConfig.from_json({"model": {"lstm_unit": [4]}})


def _tiny(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))


def _restore_from(weights_by_path):
    def restore(model, path):
        if path not in weights_by_path:
            raise ValueError(f"no weights at {path}")
        model.set_weights(weights_by_path[path])

    return restore


def test_warm_start_records_why_for_every_case(caplog):
    champion_weights = [np.full((3, 2), 0.5, np.float32), np.zeros(2, np.float32)]
    restore = _restore_from({"champion": champion_weights})
    model, record = trainer_contract.warm_start(_tiny, None, restore)
    assert record.to_json() == {"warm_start": False, "from": None, "reason": trainer_contract.NO_CHAMPION}
    model, record = trainer_contract.warm_start(_tiny, "champion", restore, enabled=False)
    assert record.to_json() == {"warm_start": False, "from": "champion", "reason": trainer_contract.SWITCHED_OFF}
    assert not np.allclose(model.get_weights()[0], 0.5)
    model, record = trainer_contract.warm_start(_tiny, "champion", restore)
    assert record.warm_start and record.reason == trainer_contract.RESTORED
    np.testing.assert_allclose(model.get_weights()[0], 0.5)
    with caplog.at_level(logging.WARNING, logger="speechpipe.components.trainer_contract"):
        model, record = trainer_contract.warm_start(_tiny, "elsewhere", restore)
    assert not record.warm_start and record.reason.startswith(trainer_contract.DIFFERS)
    assert "no weights at elsewhere" in record.reason and record.source == "elsewhere"
    assert any(trainer_contract.DIFFERS in r.getMessage() for r in caplog.records)


def _fit(callback, epochs=10, steps_per_epoch=5):
    model = callback.network
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensors((x, np.zeros((8, 2), np.float32))).repeat()
    model.fit(data, steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=[callback], verbose=0)


def test_best_weights_are_restored_and_patience_stops(caplog):
    model = _tiny()
    figures = iter([0.5, 0.3, 0.4, 0.45, 0.6, 0.1])
    seen = []

    def evaluate():
        seen.append([w.copy() for w in model.get_weights()])
        return {"val_x": next(figures)}, len(seen)

    callback = trainer_contract.BestWeights(model, evaluate, "val_x", patience=3)
    with caplog.at_level(logging.INFO, logger="speechpipe.components.trainer_contract"):
        _fit(callback)
    # best at the 2nd evaluation; 3 without a better one stop it before the 6th
    assert len(callback.history) == 5 and callback.stopped_early and not callback.budget_reached
    assert callback.best == 0.3 and callback.best_epoch == 2 and callback.best_step == 10 and callback.best_state == 2
    for restored, best in zip(model.get_weights(), seen[1]):
        np.testing.assert_array_equal(restored, best)
    assert [h["step"] for h in callback.history] == [5, 10, 15, 20, 25]
    assert any(r.getMessage().startswith("epoch 1: loss") and "val_x 0.5000" in r.getMessage() for r in caplog.records)


def test_the_step_budget_binds_after_a_batch_not_at_the_epoch_end():
    model = _tiny()
    callback = trainer_contract.BestWeights(model, lambda: ({"val_x": 1.0}, None), "val_x", max_steps=8)
    _fit(callback, epochs=10, steps_per_epoch=5)
    assert callback.steps == 8 and callback.budget_reached and len(callback.history) == 2
    # the run stopped 3 steps into its second epoch (over half an epoch), which was still evaluated
    assert callback.history[-1]["step"] == 8 and not callback.skipped_final_evaluation


def test_a_smoothed_criterion_does_not_stop_on_one_lucky_evaluation():
    """Evaluations 0.30 (lucky), then noisy figures that fall: each alone never beats the lucky
    one, so patience 3 stops at the 4th; the mean of the last 3 keeps improving and training goes
    on, choosing the weights where that mean is best."""
    figures = [0.6, 0.3, 0.5, 0.45, 0.4, 0.32, 0.33, 0.31]

    def run(smoothing):
        model = _tiny()
        values = iter(figures)
        callback = trainer_contract.BestWeights(
            model, lambda: ({"val_x": next(values)}, None), "val_x", patience=3, smoothing=smoothing
        )
        _fit(callback, epochs=len(figures))
        return callback

    raw, smoothed = run(1), run(3)
    assert raw.stopped_early and len(raw.history) == 5 and raw.best_epoch == 2
    assert not smoothed.stopped_early and len(smoothed.history) == len(figures)
    means = [h["val_x_smoothed"] for h in smoothed.history]
    assert means[2] == pytest.approx((0.6 + 0.3 + 0.5) / 3)
    assert smoothed.best_epoch == 1 + int(np.argmin(means)) == 8
    assert smoothed.best == 0.31 and smoothed.best_criterion == pytest.approx((0.32 + 0.33 + 0.31) / 3)
    with pytest.raises(ValueError, match="smoothing"):
        trainer_contract.BestWeights(_tiny(), lambda: ({}, None), "val_x", smoothing=0)


def test_a_budget_cut_epoch_of_a_step_or_two_is_not_evaluated():
    model = _tiny()
    calls = []

    def evaluate():
        calls.append(1)
        return {"val_x": 1.0 / len(calls)}, None

    callback = trainer_contract.BestWeights(model, evaluate, "val_x", max_steps=6)
    _fit(callback, epochs=10, steps_per_epoch=5)
    # 1 step into the second epoch: the weights of the first evaluation are kept, no second pass
    assert callback.steps == 6 and callback.budget_reached and callback.skipped_final_evaluation
    assert len(calls) == 1 and [h["step"] for h in callback.history] == [5]
    assert callback.summary()["skipped_final_evaluation"] is True


def test_a_budget_inside_the_first_epoch_still_evaluates_once():
    model = _tiny()
    callback = trainer_contract.BestWeights(model, lambda: ({"val_x": 1.0}, None), "val_x", max_steps=2)
    _fit(callback, epochs=10, steps_per_epoch=5)
    # no weights chosen yet: the only evaluation there is decides them
    assert len(callback.history) == 1 and not callback.skipped_final_evaluation


def test_the_result_file_holds_the_warm_start_record(tmp_path):
    record = trainer_contract.WarmStart(False, None, trainer_contract.NO_CHAMPION)
    trainer_contract.write_result(str(tmp_path), {"steps": 3, "warm_start": record.to_json()})
    import json

    with open(os.path.join(tmp_path, trainer_contract.RESULT_FILE), encoding="utf-8") as f:
        assert json.load(f)["warm_start"]["reason"] == "no champion yet"
