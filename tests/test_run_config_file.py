"""The run file (pipeline/run_config_file.py): `speechpipe run --print-config` and `--config`, the
same for `speechpipe compile`; the demo budgets as named overrides of the trainers' configs; the
renamed CTC flags and their deprecated aliases. Fast: no TensorFlow, no TFX."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from speechpipe.audio.augment import AugmentConfig
from speechpipe.phones.ctc_config import CTCModelConfig, CTCTrainConfig
from speechpipe.pipeline import kubeflow_v2_runner, local_runner
from speechpipe.pipeline.run_config import DEMO_CTC, DEMO_EMBEDDER, RunConfig, validate_run_config
from speechpipe.pipeline.run_config_file import from_yaml, read_config_file, to_yaml
from speechpipe.speakers.embedder.config import EmbedderTrainConfig
from speechpipe.validation import ConfigError

COMPILE_REQUIRED = ["--target", "kubeflow", "--out", "p.yaml", "--image", "r/s:1"]


def _printed(run, argv, capsys) -> str:
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# speechpipe run configuration") and "\nctc:\n" in out
    return out


def test_the_defaults_round_trip_exactly():
    text = to_yaml(RunConfig())
    assert from_yaml(text) == RunConfig()
    assert to_yaml(from_yaml(text)) == text
    assert from_yaml("") == RunConfig() and from_yaml("# nothing set\n") == RunConfig()


def test_a_changed_config_round_trips_exactly():
    config = replace(
        RunConfig(),
        home="gs://b/home",
        spans=("a b/manifest.jsonl", "gs://b/s:1", "it's"),
        branches=("ctc",),
        ctc=replace(DEMO_CTC, model=CTCModelConfig(lstm_units=(8, 8), frame_stack=3), max_minutes=None),
        embedder=replace(DEMO_EMBEDDER, max_steps=5, model=replace(DEMO_EMBEDDER.model, dense_units=(64, 32))),
        speaker_augment=AugmentConfig(copies=2, kinds=("noise", "speed")).to_json(),
        max_per=1.0,
        tracking_uri="http://mlflow:5000",
        beam_args=("--direct_running_mode=in_memory",),
        split_fractions=(0.7, 0.2, 0.1),
    )
    text = to_yaml(config)
    assert from_yaml(text) == config
    assert to_yaml(from_yaml(text)) == text


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("hom: x\n", "hom"),
        ("features:\n  normalisation: cmvn\n", "features.normalisation"),
        ("ctc:\n  max_minute: 3\n", "ctc.max_minute"),
        ("ctc:\n  model:\n    lstm_unit: [4]\n", "ctc.model.lstm_unit"),
        ("embedder:\n  model:\n    pooling_: mean\n", "embedder.model.pooling_"),
        ("speaker_augment:\n  copies: 1\n  kind: [noise]\n", "speaker_augment.kind"),
    ],
)
def test_an_unknown_key_anywhere_is_an_error_that_names_it(text, named):
    with pytest.raises(ConfigError, match=rf"unknown setting\(s\) in the run file: {named} "):
        from_yaml(text)


def test_wrong_types_and_derived_settings_are_errors():
    with pytest.raises(ConfigError, match="ctc.batch_size: need an integer"):
        from_yaml("ctc:\n  batch_size: 3.5\n")
    with pytest.raises(ConfigError, match="spans: need a list"):
        from_yaml("spans: corpus/manifest.jsonl\n")
    with pytest.raises(ConfigError, match="ctc.inventory: not a run file setting.*language"):
        from_yaml("ctc:\n  inventory: phones_en.json\n")
    with pytest.raises(ConfigError, match="need a mapping"):
        from_yaml("- a\n- b\n")
    # An integer where a number is asked for reads as the number it is.
    assert from_yaml("max_per: 1\n").max_per == 1.0 and isinstance(from_yaml("max_per: 1\n").max_per, float)


def test_run_prints_and_reads_its_config(tmp_path, capsys):
    printed = _printed(local_runner.run, ["--print-config"], capsys)
    assert from_yaml(printed) == RunConfig()  # no span: the demo corpus, added at run time
    path = tmp_path / "run.yaml"
    path.write_text(printed)
    assert _printed(local_runner.run, ["--config", str(path), "--print-config"], capsys) == printed
    assert read_config_file(str(path)) == RunConfig()
    with pytest.raises(ConfigError, match="no such file|No such file"):
        read_config_file(str(tmp_path / "missing.yaml"))


def test_flags_override_the_file_and_the_rest_of_the_file_stays(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "home: h\nspans: [s0]\nbranches: [ctc]\nmax_per: 0.5\nctc:\n  max_minutes: 3.0\n  batch_size: 4\n"
        "  model:\n    lstm_units: [8]\nembedder:\n  max_seconds: 60.0\n"
    )
    parse = local_runner.build_parser().parse_args
    from_file = local_runner.config_from_args(parse(["--config", str(path)]))
    assert (from_file.home, from_file.spans, from_file.branches, from_file.max_per) == ("h", ("s0",), ("ctc",), 0.5)
    assert from_file.ctc == replace(
        DEMO_CTC, max_minutes=3.0, batch_size=4, model=replace(DEMO_CTC.model, lstm_units=(8,))
    )
    assert from_file.embedder == replace(DEMO_EMBEDDER, max_seconds=60.0)
    overridden = local_runner.config_from_args(
        parse(
            ["--config", str(path), "--ctc-minutes", "5", "--span", "s1", "--max-per", "0.7", "--embedder-minutes", "2"]
        )
    )
    assert overridden.ctc.max_minutes == 5.0 and overridden.ctc.batch_size == 4  # the file's, not the default
    assert overridden.ctc.model.lstm_units == (8,)
    assert (overridden.spans, overridden.branches, overridden.max_per) == (("s1",), ("ctc",), 0.7)
    assert overridden.embedder.max_seconds == 120.0
    assert overridden.home == "h"


def test_speechpipe_run_without_flags_trains_as_the_demo_always_did():
    """The demo budgets are named overrides of the trainers' own configs; the pipeline hands the
    trainers what they were handed before those configs were merged (their json, read the way the
    Trainer reads it)."""
    assert DEMO_CTC == replace(CTCTrainConfig(), max_minutes=8.0)
    assert DEMO_EMBEDDER == replace(EmbedderTrainConfig(), max_seconds=240.0, eval_every_steps=100)
    config = local_runner.config_from_args(local_runner.build_parser().parse_args([]))
    assert config.ctc == DEMO_CTC and config.embedder == DEMO_EMBEDDER
    arguments = local_runner.pipeline_arguments(replace(config, beam_args=("--x",)), ["f"], {"ctc": "k"})
    before = {
        "model": {"lstm_units": [100, 100, 150], "frame_stack": 2, "dropout": 0.3},  # 2 since the phone LM
        "batch_size": 32,
        "learning_rate": 1e-3,
        "max_epochs": 200,
        "max_minutes": 8.0,
        "patience": 6,
        "seed": 0,
        "inventory": "phones_de.json",
    }
    assert CTCTrainConfig.from_json(arguments["ctc_config"]) == CTCTrainConfig.from_json(before)
    embedder_before = {
        "max_seconds": 240.0,
        "max_steps": 0,
        "eval_every_steps": 100,
        "speakers_per_batch": 16,
        "segments_per_speaker": 8,
        "seed": 0,
    }
    assert EmbedderTrainConfig.from_json(arguments["embedder_config"]) == EmbedderTrainConfig.from_json(embedder_before)
    assert arguments["model_name"] == "speechpipe-ctc" and arguments["embedder_model_name"] == "speechpipe-embedder"
    assert arguments["split_fractions"] == (0.8, 0.1, 0.1) and arguments["max_per"] == 0.95


def test_the_language_sets_the_ctc_inventory_not_the_config(tmp_path):
    config = replace(RunConfig(), language="en-us")
    arguments = local_runner.pipeline_arguments(replace(config, beam_args=("--x",)), ["f"], {"ctc": "k"})
    assert arguments["ctc_config"]["inventory"] == "phones_en.json"
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("")
    with pytest.raises(ConfigError, match="ctc.inventory.*language"):
        validate_run_config(replace(config, spans=(str(manifest),), ctc=replace(DEMO_CTC, inventory="phones_en.json")))
    with pytest.raises(ConfigError, match="ctc: lstm_units"):
        validate_run_config(replace(config, spans=(str(manifest),), ctc=replace(DEMO_CTC, model=CTCModelConfig(()))))


OLD_FLAGS = [
    ("--model-name", "--ctc-model-name", "ctc_model_name", "m", "m"),
    ("--max-minutes", "--ctc-minutes", "ctc_minutes", "3", 3.0),
    ("--lstm-units", "--ctc-lstm-units", "ctc_lstm_units", "8,8", "8,8"),
    ("--max-epochs", "--ctc-max-epochs", "ctc_max_epochs", "2", 2),
    ("--batch-size", "--ctc-batch-size", "ctc_batch_size", "4", 4),
    ("--patience", "--ctc-patience", "ctc_patience", "1", 1),
]


@pytest.mark.parametrize(("old", "new", "dest", "value", "parsed"), OLD_FLAGS)
@pytest.mark.parametrize("command", ["run", "compile"])
def test_an_old_flag_still_works_and_names_its_new_name(old, new, dest, value, parsed, command, capsys):
    parser = local_runner.build_parser() if command == "run" else kubeflow_v2_runner.build_parser()
    extra = [] if command == "run" else COMPILE_REQUIRED
    args = parser.parse_args([old, value] + extra)
    assert getattr(args, dest) == parsed
    assert capsys.readouterr().err.splitlines() == [f"speechpipe: {old} is deprecated, use {new}"]
    assert getattr(parser.parse_args([new, value] + extra), dest) == parsed
    assert capsys.readouterr().err == ""  # the new name says nothing
    assert old not in parser.format_help()  # aliases are not advertised


def test_the_old_flags_reach_the_config(capsys):
    args = local_runner.build_parser().parse_args(
        ["--max-minutes", "3", "--lstm-units", "8", "--max-epochs", "2", "--batch-size", "4", "--patience", "1"]
        + ["--model-name", "m"]
    )
    config = local_runner.config_from_args(args)
    assert config.ctc == replace(
        DEMO_CTC,
        model=replace(DEMO_CTC.model, lstm_units=(8,)),
        max_minutes=3.0,
        max_epochs=2,
        batch_size=4,
        patience=1,
    )
    assert config.ctc_model_name == "m"
    assert len(capsys.readouterr().err.splitlines()) == 6


def test_compile_reads_the_run_file_and_its_flags_override_it(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(
        "home: gs://b/home\nspans: [gs://b/s0/manifest.jsonl]\ntracking_uri: http://mlflow:5000\n"
        "champion_from: registry\nctc:\n  max_minutes: 30.0\n"
    )
    args = kubeflow_v2_runner.build_parser().parse_args(["--config", str(path)] + COMPILE_REQUIRED)
    config, cluster = kubeflow_v2_runner.configs_from_args(args)
    assert config.home == "gs://b/home" and config.spans == ("gs://b/s0/manifest.jsonl",)
    assert config.champion_from == "registry" and config.ctc.max_minutes == 30.0
    assert cluster.tracking_uri == "http://mlflow:5000"
    assert config.beam_args  # the Beam options' flags, as without a file
    args = kubeflow_v2_runner.build_parser().parse_args(
        ["--config", str(path), "--champion-from", "resolver", "--ctc-minutes", "20", "--home", "gs://b/other"]
        + COMPILE_REQUIRED
    )
    config, _ = kubeflow_v2_runner.configs_from_args(args)
    assert (config.champion_from, config.ctc.max_minutes, config.home) == ("resolver", 20.0, "gs://b/other")
    # --print-config needs none of the cluster's options, and its output reads back to itself.
    printed = _printed(kubeflow_v2_runner.run, ["--print-config", "--config", str(path)], capsys)
    again = tmp_path / "again.yaml"
    again.write_text(printed)
    assert _printed(kubeflow_v2_runner.run, ["--print-config", "--config", str(again)], capsys) == printed
    assert from_yaml(printed).champion_from == "registry"


def test_compile_without_spans_anywhere_is_an_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("home: gs://b/home\n")
    args = kubeflow_v2_runner.build_parser().parse_args(["--config", str(path)] + COMPILE_REQUIRED)
    with pytest.raises(ConfigError, match="a cluster has no demo corpus"):
        kubeflow_v2_runner.configs_from_args(args)


def test_a_scheduled_compile_needs_its_run_file_on_object_storage(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("home: gs://b/home\n")
    argv = ["--config", str(path), "--schedule", "0 3 * * *", "--schedule-out", "s.json", "--spans-from", "gs://b/s"]
    with pytest.raises(ConfigError, match="object storage"):
        kubeflow_v2_runner.run(argv + COMPILE_REQUIRED)


def test_printing_and_reading_a_run_file_loads_no_tensorflow(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(to_yaml(RunConfig()))
    code = (
        "import sys; from speechpipe.pipeline import local_runner; "
        f"assert local_runner.run(['--config', {str(path)!r}, '--print-config']) == 0; "
        "from speechpipe.speakers.embedder import EmbedderTrainConfig; "
        "loaded = [m for m in ('tensorflow', 'tfx', 'tf_keras') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
