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
    assert figures["baseline"] == {"learning_rate": 3e-3} and figures["current"]["learning_rate"] == 1e-3
    assert "current" in capsys.readouterr().out
