"""`--data-root` for inputs whose format names absolute paths (a Kaldi wav.scp), and the
confinement that stays the default: without it such inputs are dead-lettered `outside_root` with
a detail that names the root and the remedy; with it, paths must still stay in the chosen root
(traversal, symlinks out), and a wav.scp command is never run. `transcribe`, `embed` and
`cluster --input` pass the flag to the inference job (src/speechpipe/serving/commands.py)."""

import json
import os

import pytest

from speechpipe.audio.sources import (
    COMMAND_NOT_SUPPORTED,
    OUTSIDE_ROOT,
    DeadLetter,
    SourceRecord,
    expand_input,
    make_spec,
    parse_input,
)
from tests.audio_inputs import write_wav


@pytest.fixture
def absolute_kaldi(tmp_path):
    """A Kaldi dir whose wav.scp names its audio by absolute paths, in a folder beside it."""
    audio = tmp_path / "audio"
    for i, speaker in enumerate(("spk1", "spk1", "spk2")):
        write_wav(str(audio / speaker / f"u{i}.wav"), seconds=0.5, seed=i)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    ids = [("utt0", "spk1"), ("utt1", "spk1"), ("utt2", "spk2")]
    (kaldi / "wav.scp").write_text("".join(f"{u} {audio / s / f'u{i}.wav'}\n" for i, (u, s) in enumerate(ids)))
    (kaldi / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in ids))
    return kaldi, audio


def _parsed(spec):
    return [parse_input(item, spec) for item in expand_input(spec)]


def _add_lines(kaldi, lines):
    with open(kaldi / "wav.scp", "a", encoding="utf-8") as f:
        f.writelines(f"{utterance} {audio}\n" for utterance, audio in lines)
    with open(kaldi / "utt2spk", "a", encoding="utf-8") as f:
        f.writelines(f"{utterance} spk9\n" for utterance, _ in lines)


def test_absolute_paths_outside_the_default_root_say_which_root_and_the_remedy(absolute_kaldi):
    kaldi, _ = absolute_kaldi
    parsed = _parsed(make_spec(str(kaldi)))
    assert len(parsed) == 3 and all(isinstance(p, DeadLetter) and p.reason == OUTSIDE_ROOT for p in parsed)
    for dead in parsed:
        assert repr(str(kaldi)) in dead.detail and "--data-root" in dead.detail, dead.detail


def test_data_root_admits_absolute_paths_inside_it(absolute_kaldi):
    kaldi, audio = absolute_kaldi
    parsed = _parsed(make_spec(str(kaldi), data_root=str(audio)))
    assert all(isinstance(p, SourceRecord) for p in parsed), parsed
    assert sorted(p.utterance for p in parsed) == ["utt0", "utt1", "utt2"]
    assert all(p.audio_path.startswith(os.path.realpath(audio) + os.sep) for p in parsed)


def test_with_a_data_root_traversal_is_still_outside_it(absolute_kaldi, tmp_path):
    kaldi, audio = absolute_kaldi
    write_wav(str(tmp_path / "elsewhere" / "x.wav"), seconds=0.5)
    _add_lines(kaldi, [("up", "../elsewhere/x.wav"), ("upabs", f"{audio}/spk1/../../elsewhere/x.wav")])
    by_utterance = {p.utterance: p for p in _parsed(make_spec(str(kaldi), data_root=str(audio)))}
    for utterance in ("up", "upabs"):
        dead = by_utterance[utterance]
        assert isinstance(dead, DeadLetter) and dead.reason == OUTSIDE_ROOT, dead
        assert repr(str(audio)) in dead.detail and "--data-root" in dead.detail
    assert isinstance(by_utterance["utt0"], SourceRecord)


def test_with_a_data_root_a_symlink_out_of_it_is_still_outside_it(absolute_kaldi, tmp_path):
    kaldi, audio = absolute_kaldi
    target = write_wav(str(tmp_path / "secret" / "s.wav"), seconds=0.5)
    os.symlink(target, audio / "spk1" / "link.wav")
    os.symlink(tmp_path / "secret", audio / "linked_dir")
    _add_lines(kaldi, [("link", str(audio / "spk1" / "link.wav")), ("dirlink", "linked_dir/s.wav")])
    by_utterance = {p.utterance: p for p in _parsed(make_spec(str(kaldi), data_root=str(audio)))}
    for utterance in ("link", "dirlink"):
        dead = by_utterance[utterance]
        assert isinstance(dead, DeadLetter) and dead.reason == OUTSIDE_ROOT, dead
        assert "a symlink leads outside" in dead.detail


def test_with_a_data_root_a_wav_scp_command_is_never_run(absolute_kaldi, tmp_path):
    kaldi, audio = absolute_kaldi
    marker = tmp_path / "ran"
    _add_lines(
        kaldi,
        [
            ("piped", f"sox {audio}/spk1/u0.wav -t wav - | touch {marker} |"),
            ("leading", f"| touch {marker}"),
        ],
    )
    by_utterance = {p.utterance: p for p in _parsed(make_spec(str(kaldi), data_root=str(audio)))}
    for utterance in ("piped", "leading"):
        dead = by_utterance[utterance]
        assert isinstance(dead, DeadLetter) and dead.reason == COMMAND_NOT_SUPPORTED, dead
    assert not marker.exists()


# ---------------------------------------------------------------- the commands


def _stand_in_transcriber(folder: str) -> str:
    """A SavedModel with a `transcribe` signature that 'transcribes' a waveform as its length."""
    import tensorflow as tf

    class Transcriber(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.float32, name="waveforms"),
                tf.TensorSpec([None], tf.int32, name="lengths"),
            ]
        )
        def transcribe(self, waveforms, lengths):
            return {"phones": tf.strings.as_string(lengths)}

    model = Transcriber()
    tf.saved_model.save(model, folder, signatures={"transcribe": model.transcribe})
    return folder


def test_transcribe_input_with_data_root(absolute_kaldi, tmp_path, capsys):
    from speechpipe.cli import main
    from speechpipe.jobs.inference_job import DEAD_LETTER_PREFIX, RESULTS_PREFIX, read_lines

    kaldi, audio = absolute_kaldi
    model = _stand_in_transcriber(str(tmp_path / "model"))
    refused, read = str(tmp_path / "refused"), str(tmp_path / "read")
    # Without --data-root: every input is outside the Kaldi dir, and stderr says what to do.
    assert main(["transcribe", "--input", str(kaldi), "--out", refused, "--model", model]) == 1
    err = capsys.readouterr().err
    assert err.count(f"{OUTSIDE_ROOT}:") == 3 and "--data-root" in err
    assert read_lines(refused, RESULTS_PREFIX) == []
    # With it, all three are read, and the summary records the root.
    code = main(["transcribe", "--input", str(kaldi), "--out", read, "--model", model, "--data-root", str(audio)])
    assert code == 0, capsys.readouterr()
    rows = read_lines(read, RESULTS_PREFIX)
    assert sorted(r["utterance"] for r in rows) == ["utt0", "utt1", "utt2"]
    assert all(r["phones"] == "8000" for r in rows)  # 0.5 s at 16 kHz
    assert read_lines(read, DEAD_LETTER_PREFIX) == []
    with open(os.path.join(read, "summary.json"), encoding="utf-8") as f:
        assert json.load(f)["data_root"] == str(audio)


@pytest.mark.parametrize("command", ["embed", "cluster"])
def test_embed_and_cluster_pass_data_root_to_the_job(command, absolute_kaldi, tmp_path, monkeypatch):
    from speechpipe.cli import main
    from speechpipe.jobs import inference_job

    kaldi, audio = absolute_kaldi
    seen = []

    class Stop(Exception):
        pass

    def run_job(spec, *args, **kwargs):
        seen.append(spec)
        raise Stop

    monkeypatch.setattr(inference_job, "run_job", run_job)
    model = _stand_in_transcriber(str(tmp_path / "model"))  # never called: the job is stubbed
    with pytest.raises(Stop):
        main(
            [command, "--input", str(kaldi), "--out", str(tmp_path / "o"), "--model", model, "--data-root", str(audio)]
        )
    assert seen[0].data_root == str(audio) and seen[0].kind == "kaldi"


def test_data_root_without_input_is_a_usage_error(tmp_path, capsys):
    from speechpipe.cli import main

    wav = write_wav(str(tmp_path / "a.wav"), seconds=0.5)
    assert main(["transcribe", wav, "--data-root", str(tmp_path)]) == 2
    assert "--data-root goes with --input" in capsys.readouterr().err
