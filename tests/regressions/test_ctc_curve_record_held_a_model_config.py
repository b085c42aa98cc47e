"""bench_ctc's learning curve wrote its figures with BASELINE as given, and BASELINE names a
`CTCModelConfig` (frame_stack 2), which JSON cannot write: the curve's last step raised after
every run of it had trained. The record now writes each configuration by its `to_json`."""

import json
from dataclasses import replace

from bench import bench_ctc
from speechpipe.phones.ctc_config import CTCTrainConfig


def test_the_curve_record_of_the_real_baseline_is_json():
    current = CTCTrainConfig()
    settings = {"current": current, "baseline": replace(current, **bench_ctc.BASELINE)}
    record = json.loads(json.dumps(bench_ctc._curve_record([{"settings": "current", "test_per": 0.1}], settings)))
    assert record["rows"] == [{"settings": "current", "test_per": 0.1}]
    assert record["current"] == json.loads(json.dumps(current.to_json()))
    assert record["baseline"]["model"] == json.loads(json.dumps(settings["baseline"].model.to_json()))
