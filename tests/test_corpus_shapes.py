"""End to end: the corpus shapes users have, each through `speechpipe run --branches speaker
--in-memory` to a pushed embedder (issue #26): LibriSpeech's layout, CN-Celeb's, VoxCeleb1 and
VoxCeleb2 as they ship (meta files), a Kaldi dir with Kaldi-convention ids naming absolute paths
(with --data-root), a manifest of free-form ids without sessions or splits, and a 12-speaker
corpus of single-session speakers, which the default batch (16 speakers) stops in seconds and
`--speakers-per-batch` runs.

One synthesised corpus (12 speakers x 4 utterances in 2 sessions) is rewritten into each shape.
Tiny budgets (a run file: 5 embedder steps); each run is about a minute or two on 2 cores."""

import os
import shutil
import time
from typing import Dict, List

import pytest

from speechpipe.cli import main
from speechpipe.pipeline.run_config import RunConfig
from speechpipe.results.registry import CHAMPION, Registry
from tests.helpers import make_tiny_corpus, read_manifest, voxceleb_layout

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RUN_FILE = """\
embedder:
  max_seconds: 60.0
  max_steps: 5
  eval_every_steps: 5
max_eer: 1.0
"""
SMALL_BATCH = ["--speakers-per-batch", "4", "--segments-per-speaker", "2"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return make_tiny_corpus(str(tmp_path_factory.mktemp("shapes_source")), speakers=12, utterances=4, sessions=2)


def _lines(source: str) -> List[Dict]:
    return read_manifest(source)


def _session_number(source: str) -> Dict[str, int]:
    """Each session's number within its speaker (0, 1), in name order."""
    by_speaker: Dict[str, set] = {}
    for line in _lines(source):
        by_speaker.setdefault(line["speaker"], set()).add(line["session"])
    return {session: sorted(sessions).index(session) for sessions in by_speaker.values() for session in sessions}


def _flac(source_wav: str, target: str) -> None:
    import soundfile as sf

    os.makedirs(os.path.dirname(target), exist_ok=True)
    samples, rate = sf.read(source_wav, dtype="float32")
    sf.write(target, samples, rate, format="FLAC")


def _run(tmp_path, capsys, span: str, *extra: str):
    """`speechpipe run` on one span, speaker branch only; (exit code, seconds, output, home)."""
    home = str(tmp_path / "home")
    config = tmp_path / "run.yaml"
    config.write_text(RUN_FILE)
    argv = ["run", "--home", home, "--span", span, "--branches", "speaker", "--in-memory", "--config", str(config)]
    started = time.time()
    code = main(argv + list(extra))
    seconds = time.time() - started
    captured = capsys.readouterr()
    return code, seconds, captured.out + captured.err, home


def _assert_pushed(code: int, output: str, home: str) -> None:
    assert code == 0, output[-4000:]
    assert "[preflight]" in output
    models = {m["name"]: m for m in Registry(RunConfig(home=home).registry_uri).list()}
    embedder = models["speechpipe-embedder"]
    assert embedder["aliases"] == {CHAMPION: "1"}, embedder
    assert "No semi_persistent_directory" not in output and "INFO mlflow" not in output


def test_librispeech_layout(source, tmp_path, capsys):
    """<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac: the chapter is the session."""
    root = str(tmp_path / "LibriSpeech" / "train-clean-100")
    number = _session_number(source)
    for n, line in enumerate(_lines(source)):
        speaker, chapter = line["speaker"][2:], str(100 + number[line["session"]])
        _flac(
            os.path.join(source, line["audio"]),
            os.path.join(root, speaker, chapter, f"{speaker}-{chapter}-{n:04d}.flac"),
        )
    code, _, output, home = _run(tmp_path, capsys, root, *SMALL_BATCH)
    _assert_pushed(code, output, home)


def test_cn_celeb_layout(source, tmp_path, capsys):
    """id<nnnnn>/<genre>-<nn>-<nnn>.flac, no session folder: the session is <genre>-<nn>."""
    root = str(tmp_path / "CN-Celeb" / "data")
    genres = ("interview", "singing")
    number = _session_number(source)
    for n, line in enumerate(_lines(source)):
        genre = genres[number[line["session"]]]
        _flac(os.path.join(source, line["audio"]), os.path.join(root, line["speaker"], f"{genre}-01-{n:03d}.flac"))
    code, _, output, home = _run(tmp_path, capsys, root, *SMALL_BATCH)
    _assert_pushed(code, output, home)


@pytest.mark.parametrize("version", [1, 2], ids=["voxceleb1", "voxceleb2"])
def test_voxceleb_with_its_meta_file(version, source, tmp_path, capsys):
    """As VoxCeleb ships (meta file's Set column names the test speakers). At the default fractions
    10 dev speakers give 1 validation speaker: the preflight stops in seconds naming
    --split-fractions, and the run with it pushes."""
    speakers = sorted({line["speaker"] for line in _lines(source)})
    root = voxceleb_layout(source, str(tmp_path / f"vox{version}"), version, speakers[-2:])
    code, seconds, output, _ = _run(tmp_path, capsys, root, *SMALL_BATCH)
    assert code == 2 and seconds < 60 and "--split-fractions" in output, output[-3000:]
    code, _, output, home = _run(tmp_path, capsys, root, *SMALL_BATCH, "--split-fractions", "0.6,0.2,0.2")
    _assert_pushed(code, output, home)


def test_kaldi_dir_with_absolute_paths_and_data_root(source, tmp_path, capsys):
    """Kaldi's own id convention, `<speaker>-<chapter>-<nnnn>` (the speaker prefix joined by '-'),
    with utt2spk naming the speaker: the speaker branch trains on the ids as they are."""
    audio, kaldi = tmp_path / "audio", tmp_path / "kaldi"
    kaldi.mkdir()
    number = _session_number(source)
    scp, utt2spk = [], []
    for n, line in enumerate(_lines(source)):
        speaker, chapter = line["speaker"][2:], str(100 + number[line["session"]])
        utterance = f"{speaker}-{chapter}-{n:04d}"
        target = audio / f"{utterance}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(source, line["audio"]), target)
        scp.append(f"{utterance} {target}")
        utt2spk.append(f"{utterance} {speaker}")
    (kaldi / "wav.scp").write_text("\n".join(sorted(scp)) + "\n")
    (kaldi / "utt2spk").write_text("\n".join(sorted(utt2spk)) + "\n")
    code, seconds, output, _ = _run(tmp_path, capsys, str(kaldi), *SMALL_BATCH)
    assert code == 2 and seconds < 60 and "--data-root" in output, output[-3000:]
    code, _, output, home = _run(tmp_path, capsys, str(kaldi), *SMALL_BATCH, "--data-root", str(audio))
    _assert_pushed(code, output, home)


def test_manifest_without_sessions_or_splits(source, tmp_path, capsys):
    import json

    root = tmp_path / "manifest"
    root.mkdir()
    with open(root / "manifest.jsonl", "w", encoding="utf-8") as f:
        for n, line in enumerate(_lines(source)):
            audio = os.path.join("clips", f"{n:03d}.wav")
            os.makedirs(root / "clips", exist_ok=True)
            shutil.copyfile(os.path.join(source, line["audio"]), root / audio)
            utterance = f"clip{n:03d}"  # free-form, naming no speaker; no session: each is its own
            f.write(json.dumps({"utterance": utterance, "audio": audio, "speaker": line["speaker"]}) + "\n")
    code, _, output, home = _run(tmp_path, capsys, str(root / "manifest.jsonl"), *SMALL_BATCH)
    _assert_pushed(code, output, home)


def test_twelve_single_session_speakers_stop_at_the_default_batch_then_push(source, tmp_path, capsys):
    """The LibriSpeech sample clips' shape (<speaker>/<speaker>-<chapter>-<nnnn>.flac, one chapter
    each): same-session trials only. The default P=16 stops in seconds naming
    --speakers-per-batch; with it, the run pushes."""
    root = str(tmp_path / "clips")
    for n, line in enumerate(_lines(source)):
        speaker = line["speaker"][2:]
        _flac(os.path.join(source, line["audio"]), os.path.join(root, speaker, f"{speaker}-100-{n:04d}.flac"))
    code, seconds, output, _ = _run(tmp_path, capsys, root)
    assert code == 2 and seconds < 60, output[-3000:]
    assert "--speakers-per-batch" in output and "speakers_per_batch=16" in output
    code, _, output, home = _run(tmp_path, capsys, root, *SMALL_BATCH)
    _assert_pushed(code, output, home)
    assert "same-session" in output
