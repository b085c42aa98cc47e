import os
import subprocess
import sys

from speechpipe.cli import main


def test_help_lists_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "speechpipe.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("corpus", "phones"):
        assert command in out


def test_corpus_synth_command(tmp_path, capsys):
    out = str(tmp_path / "c")
    code = main(
        [
            "corpus",
            "synth",
            "--out",
            out,
            "--speakers",
            "3",
            "--utterances",
            "2",
            "--sessions",
            "1",
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    assert os.path.exists(os.path.join(out, "manifest.jsonl"))
    assert "corpus written" in capsys.readouterr().out


def test_bad_argument_is_a_clear_error(tmp_path, capsys):
    code = main(["corpus", "synth", "--out", str(tmp_path), "--speakers", "1"])
    assert code == 2
    assert "speakers=1" in capsys.readouterr().err


def test_corpus_synth_sessions_follow_fewer_utterances(tmp_path):
    """The default sessions (4) never ask for more sessions than a speaker has utterances."""
    from tests.helpers import read_manifest

    out = str(tmp_path / "c")
    assert (
        main(
            ["corpus", "synth", "--out", out, "--speakers", "3", "--utterances", "3", "--workers", "2", "--no-progress"]
        )
        == 0
    )
    sessions = {}
    for line in read_manifest(out):
        sessions.setdefault(line["speaker"], set()).add(line["session"])
    assert {len(s) for s in sessions.values()} == {3}


def test_compile_checks_its_output_name_before_any_work(tmp_path, monkeypatch, capsys):
    from speechpipe.pipeline import kubeflow_v2_runner

    def reached(*_):
        raise AssertionError("the pipeline was built before the arguments were checked")

    monkeypatch.setattr(kubeflow_v2_runner, "configs_from_args", reached)
    argv = [
        "compile",
        "--target",
        "kubeflow",
        "--out",
        str(tmp_path / "pipeline.txt"),
        "--image",
        "r/s:1",
        "--home",
        "gs://b/h",
        "--span",
        "gs://b/s0",
    ]
    assert main(argv) == 2
    assert "name a .yaml" in capsys.readouterr().err
    assert main(argv[:4] + [str(tmp_path / "pipeline.json")] + argv[5:]) == 2
    assert "takes the pipeline as YAML" in capsys.readouterr().err


def test_run_without_any_span_of_a_chosen_branch_is_a_clear_error(tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("")
    assert main(["run", "--home", str(tmp_path / "h"), "--branches", "speaker", "--ctc-span", str(manifest)]) == 2
    assert "ctc_spans: given, but the ctc branch is off" in capsys.readouterr().err
