"""bench/bench_ctc.py's learning-curve guard: one training run per budget for the current
defaults and for the settings before them, each scored on the test split."""

import json
import os
from dataclasses import replace

import pytest

from bench import bench_ctc
from speechpipe.phones.ctc_config import CTCTrainConfig


@pytest.mark.slow
def test_the_curve_scores_both_settings_at_each_budget(tiny_features, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_ctc, "_features", lambda corpus, kind, normalization: tiny_features)
    monkeypatch.setattr(bench_ctc, "BASELINE", {"learning_rate": 3e-3})  # as a change to the defaults would name
    current = replace(CTCTrainConfig(), batch_size=8)
    bench_ctc._learning_curve("unused", current, "cmvn", [0.05], str(tmp_path))
    with open(os.path.join(tmp_path, "results_curve.json"), encoding="utf-8") as f:
        figures = json.load(f)
    assert [(r["settings"], r["minutes"]) for r in figures["rows"]] == [("current", 0.05), ("baseline", 0.05)]
    assert all(0.0 <= r["test_per"] <= 2.0 and r["steps"] > 0 for r in figures["rows"])
    assert figures["baseline"]["learning_rate"] == 3e-3 and figures["current"]["learning_rate"] == 1e-3
    assert "current" in capsys.readouterr().out


@pytest.mark.slow
def test_the_profile_times_every_part_of_a_step(tiny_features, capsys):
    bench_ctc._profile(tiny_features, replace(CTCTrainConfig(), batch_size=2), [2, 3], batches=2)
    out = capsys.readouterr().out
    for part in ("input pipeline", "forward", "fwd+bwd, dense CTC", "fwd+bwd, sparse CTC", "optimiser step"):
        line = next(row for row in out.splitlines() if row.startswith(part))
        assert len(line.split()) >= 2 and all(float(v) > 0 for v in line[24:].split()), line


@pytest.mark.slow
def test_the_lm_part_chooses_the_smallest_order_near_the_best_then_its_weights(tiny_features, tmp_path, capsys):
    config = replace(CTCTrainConfig(), batch_size=8)
    model_dir = str(tmp_path / "model")
    bench_ctc._train(tiny_features, config, 0.05, model_dir)
    bench_ctc._lm_weights(tiny_features, model_dir, config, str(tmp_path))
    with open(os.path.join(tmp_path, "results_lm.json"), encoding="utf-8") as f:
        figures = json.load(f)
    orders = [r for r in figures["grid"] if r["lm_weight"] == 0.3 and r["insertion_bonus"] == 1.5][:3]
    assert [r["order"] for r in orders] == [4, 6, 8]
    lowest = min(r["validation_per"] for r in orders)
    near = [r["order"] for r in orders if r["validation_per"] <= lowest + bench_ctc.ORDER_TOLERANCE]
    assert figures["chosen"]["order"] == min(near)
    weights = [r for r in figures["grid"] if r["order"] == figures["chosen"]["order"]]
    assert figures["chosen"]["validation_per"] == min(r["validation_per"] for r in weights)
    assert len(figures["grid"]) == 3 + 8 and figures["defaults"]["order"] == config.phone_lm.order
    assert "chosen: order" in capsys.readouterr().out


def test_the_training_curve_plot_reads_a_trainers_history(tmp_path):
    """The plot read a "minutes" key that the trainers' histories no longer have (they record
    "seconds"), which failed the main part after its 20-minute training."""
    history = [{"epoch": 1, "step": 57, "seconds": 60.0, "loss": 90.0, "val_per": 0.9}]
    history.append({"epoch": 2, "step": 114, "seconds": 90.0, "loss": 60.0, "val_per": 0.6})
    path = str(tmp_path / "curves.png")
    bench_ctc._plot({"logmel + cmvn": history}, path, "two epochs")
    assert os.path.getsize(path) > 0
