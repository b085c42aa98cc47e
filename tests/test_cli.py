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
    code = main(["corpus", "synth", "--out", out, "--speakers", "3", "--utterances", "2",
                 "--sessions", "1", "--workers", "2", "--no-progress"])
    assert code == 0
    assert os.path.exists(os.path.join(out, "manifest.jsonl"))
    assert "corpus written" in capsys.readouterr().out


def test_bad_argument_is_a_clear_error(tmp_path, capsys):
    code = main(["corpus", "synth", "--out", str(tmp_path), "--speakers", "1"])
    assert code == 2
    assert "speakers=1" in capsys.readouterr().err
