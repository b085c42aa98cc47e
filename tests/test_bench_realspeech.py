"""bench/bench_realspeech.py on a fake real-speech folder the tests write (the LibriSpeech layout,
synthetic voices with speaker-dependent spectra): the clip finder, the three protocols' trials,
the speaker bootstrap, the model-free floor, the missing-data errors, and the bench end to end
on an exported embedder, from a folder and from the registry."""

import json
import os
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf

from bench import bench_realspeech as rs

RATE = 16000
OTHER_SPEAKERS, OTHER_UTTERANCES, CLEAN_SPEAKERS = 4, 3, 5


def _voice(speaker: int, utterance: int, seconds: float = 1.0) -> np.ndarray:
    """A speaker's "voice": harmonics of its own f0 and noise through its own resonance, both
    moved a little per utterance, so that utterances of one speaker differ but stay alike."""
    rng = np.random.default_rng(1000 * speaker + utterance)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = (90.0 + 35.0 * speaker) * (1 + 0.03 * rng.standard_normal())
    harmonics = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 12))
    noise = rng.standard_normal(t.size)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(t.size, 1 / RATE)
    centre = 400.0 * (speaker + 1) * (1 + 0.02 * rng.standard_normal())
    spectrum *= np.exp(-0.5 * ((freqs - centre) / 150.0) ** 2)
    resonance = np.fft.irfft(spectrum, t.size)
    wave = 0.5 * harmonics / np.abs(harmonics).max() + resonance / np.abs(resonance).max()
    return (0.4 * rng.uniform(0.6, 1.0) * wave / np.abs(wave).max()).astype(np.float32)


def make_fake_realspeech(root: str) -> str:
    """root/README.md and root/librispeech/{test-other,train-clean-100} as in the shared folder,
    with the non-audio files test-other ships (they must be ignored)."""
    base = os.path.join(root, "librispeech")
    for s in range(OTHER_SPEAKERS):
        speaker = str(100 + s)
        os.makedirs(os.path.join(base, rs.TEST_OTHER, speaker))
        for u in range(OTHER_UTTERANCES):
            sf.write(
                os.path.join(base, rs.TEST_OTHER, speaker, f"{speaker}-7{s}-{u:04d}.flac"),
                _voice(s, u),
                RATE,
                subtype="PCM_16",
            )
    for s in range(CLEAN_SPEAKERS):
        speaker, chapter = str(200 + s), str(900 + s)
        os.makedirs(os.path.join(base, rs.TRAIN_CLEAN, speaker, chapter))
        sf.write(
            os.path.join(base, rs.TRAIN_CLEAN, speaker, chapter, f"{speaker}-{chapter}-0000.flac"),
            _voice(OTHER_SPEAKERS + s, 0),
            RATE,
            subtype="PCM_16",
        )
    for name in ("LICENSE.TXT", "SPEAKERS.TXT"):
        with open(os.path.join(base, rs.TEST_OTHER, name), "w", encoding="utf-8") as f:
            f.write("; not audio\n")
    with open(os.path.join(root, "README.md"), "w", encoding="utf-8") as f:
        f.write("# fake real speech\n")
    return root


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> str:
    return make_fake_realspeech(str(tmp_path_factory.mktemp("realspeech")))


@pytest.fixture(scope="module")
def clips(fake_data) -> List[rs.Clip]:
    return rs.find_clips(fake_data)


def test_the_clip_finder_reads_the_layout_and_names_speakers_by_file(fake_data, clips):
    other = [c for c in clips if c.subset == rs.TEST_OTHER]
    clean = [c for c in clips if c.subset == rs.TRAIN_CLEAN]
    assert (len(other), len(clean)) == (OTHER_SPEAKERS * OTHER_UTTERANCES, CLEAN_SPEAKERS)
    assert len({c.speaker for c in other}) == OTHER_SPEAKERS and len({c.speaker for c in clean}) == CLEAN_SPEAKERS
    assert all(c.utterance.startswith(c.speaker + "-") and c.path.endswith(".flac") for c in clips)
    assert clips[: len(other)] == other  # test-other first, a fixed order
    # The librispeech folder itself is accepted too.
    assert rs.find_clips(os.path.join(fake_data, "librispeech")) == clips


def test_the_protocols_hold_exactly_the_pairs_they_promise(clips):
    n_other, n_clean = OTHER_SPEAKERS * OTHER_UTTERANCES, CLEAN_SPEAKERS
    n = n_other + n_clean
    targets = OTHER_SPEAKERS * OTHER_UTTERANCES * (OTHER_UTTERANCES - 1) // 2
    trials = rs.protocols(clips)
    counts = {name: (len(t), sum(label for label, _, _ in t)) for name, t in trials.items()}
    assert counts == {
        "a_all": (n * (n - 1) // 2, targets),
        "b_test_other": (n_other * (n_other - 1) // 2, targets),
        "c_impostors": (targets + n_other * n_clean, targets),
    }
    subset = {c.utterance: c.subset for c in clips}
    speaker = {c.utterance: c.speaker for c in clips}
    for name, t in trials.items():
        pairs = [frozenset((a, b)) for _, a, b in t]
        assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs), name  # distinct, no self-pairs
        assert all(label == int(speaker[a] == speaker[b]) for label, a, b in t), name
    assert all(subset[a] == subset[b] == rs.TEST_OTHER for _, a, b in trials["b_test_other"])
    for label, a, b in trials["c_impostors"]:
        sides = sorted((subset[a], subset[b]))
        assert sides != [rs.TRAIN_CLEAN, rs.TRAIN_CLEAN]
        assert sides == ([rs.TEST_OTHER, rs.TEST_OTHER] if label else [rs.TEST_OTHER, rs.TRAIN_CLEAN])


def test_a_bootstrap_draw_weighs_trials_by_the_copies_of_their_speakers():
    labels = np.array([1, 1, 0, 0])
    ia, ib = np.array([0, 1, 0, 1]), np.array([0, 1, 1, 2])
    np.testing.assert_array_equal(rs.bootstrap_weights(np.array([1, 1, 1]), labels, ia, ib), [1, 1, 1, 1])
    # Speaker 0 twice, 1 never: 0's targets twice, every trial of 1's gone, (0, 2) twice.
    np.testing.assert_array_equal(rs.bootstrap_weights(np.array([2, 0, 1]), labels, ia, ib), [2, 0, 0, 0])
    np.testing.assert_array_equal(
        rs.bootstrap_weights(np.array([2, 1, 1]), np.array([0]), np.array([0]), np.array([2])), [2]
    )


def _overlapping_speakers(speakers: int = 10, utterances: int = 10) -> Dict[str, object]:
    """Embeddings of speakers whose clusters overlap (an EER near 0.1-0.3), all pairs scored."""
    from speechpipe.speakers.speaker_eval import all_pairs_trials

    rng = np.random.default_rng(5)
    centres = rng.standard_normal((speakers, 16))
    names = [f"s{s}" for s in range(speakers) for _ in range(utterances)]
    ids = [f"s{s}-{u}" for s in range(speakers) for u in range(utterances)]
    e = np.repeat(centres, utterances, 0) + 1.1 * rng.standard_normal((speakers * utterances, 16))
    trials = all_pairs_trials(ids, names)
    scores, labels = rs.score_protocol(dict(zip(ids, e)), trials, rs.cosine)
    speaker = dict(zip(ids, names))
    return {
        "scores": scores,
        "labels": labels,
        "a": [speaker[t[1]] for t in trials],
        "b": [speaker[t[2]] for t in trials],
    }


def test_the_speaker_bootstrap_is_seeded_and_brackets_the_estimate():
    from speechpipe.speakers.speaker_eval import equal_error_rate

    t = _overlapping_speakers()
    point = equal_error_rate(t["scores"], t["labels"]).eer
    assert 0.05 < point < 0.4
    first = rs.speaker_bootstrap(t["scores"], t["labels"], t["a"], t["b"], draws=300, seed=3)
    again = rs.speaker_bootstrap(t["scores"], t["labels"], t["a"], t["b"], draws=300, seed=3)
    other = rs.speaker_bootstrap(t["scores"], t["labels"], t["a"], t["b"], draws=300, seed=4)
    assert first == again and first["eer_ci95"] != other["eer_ci95"]
    low, high = first["eer_ci95"]
    assert low < point < high
    assert (first["speakers"], first["draws"], first["draws_used"]) == (10, 300, 300)


def test_the_floor_separates_clearly_different_speakers(fake_data, clips):
    waves = rs.read_waves(clips)
    e = rs.statistics_embeddings(waves)
    assert e.shape == (len(clips), 2 * 80)
    np.testing.assert_allclose(e.mean(0), 0.0, atol=1e-4)  # centred over the clips
    figures = rs.evaluate(dict(zip([c.utterance for c in clips], e)), clips, rs.cosine, draws=200, seed=0)
    for name in rs.PROTOCOLS:
        assert figures[name]["eer"] < 0.15, (name, figures[name])
    low, high = figures["b_test_other"]["eer_ci95"]
    assert 0.0 <= low <= figures["b_test_other"]["eer"] <= high < 0.5


def test_a_missing_data_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as error:
        rs.main(["--data", missing])
    assert missing in str(error.value) and "--data" in str(error.value) and rs.TEST_OTHER in str(error.value)
    # A folder without the clips: the message names the subset that is missing.
    (tmp_path / "empty" / "librispeech" / rs.TEST_OTHER).mkdir(parents=True)
    with pytest.raises(SystemExit, match=f"no {rs.TEST_OTHER} clips"):
        rs.main(["--data", str(tmp_path / "empty")])
    # Only the default missing (no shared folder on this machine): said, and skipped.
    monkeypatch.delenv("BENCH_REALSPEECH_DATA", raising=False)
    monkeypatch.setattr(rs, "DEFAULT_DATA", missing)
    rs.main([])
    assert f"skipped: no real-speech folder at {missing}" in capsys.readouterr().out


def test_a_model_that_is_not_there_is_a_clear_error(fake_data, tmp_path):
    missing = str(tmp_path / "no_model")
    with pytest.raises(SystemExit, match=f"--model {missing}: .*no such folder"):
        rs.main(["--data", fake_data, "--model", missing])
    with pytest.raises(SystemExit, match="--model models:/x@champion: .*no registry at"):
        rs.main(["--data", fake_data, "--model", "models:/x@champion", "--home", str(tmp_path / "home")])


def test_the_floor_alone_end_to_end(fake_data, tmp_path, capsys):
    out = tmp_path / "figures.json"
    rs.main(["--data", fake_data, "--json", str(out), "--draws", "100"])
    printed = capsys.readouterr().out
    assert "no learning: logmel 80 bins mean+std" in printed and "(b) test-other EER" in printed
    figures = json.loads(out.read_text())
    assert figures["clips"][rs.TEST_OTHER] == {"clips": 12, "speakers": 4}
    (floor,) = figures["systems"]
    assert floor["kind"] == "floor" and set(floor["figures"]) == set(rs.PROTOCOLS)


@pytest.mark.slow  # ~50 s: TensorFlow, the export, MLflow
@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's advice on logging a pyfunc model
def test_an_stand_in_embedder_from_a_folder_and_from_the_registry(fake_data, stand_in_embedder, tmp_path, capsys):
    """The same SavedModel as a folder, as a registry version that is the SavedModel itself (v1),
    and as one that is an MLflow model holding it (v2, what the pusher registers): the same figures."""
    from speechpipe.results.pyfunc import save_flavor
    from speechpipe.results.registry import Registry

    uri = "sqlite:///" + str(tmp_path / "mlflow" / "mlflow.db")
    registry = Registry(uri)
    bare = registry.register("tiny-speaker", stand_in_embedder, {"eer": 0.5}, {"smoke_test": "passed"})
    flavor = save_flavor(stand_in_embedder, "speaker", str(tmp_path / "flavor"))
    wrapped = registry.register("tiny-speaker", flavor, {"eer": 0.5}, {"smoke_test": "passed"})
    registry.set_champion("tiny-speaker", wrapped.version)
    out = tmp_path / "figures.json"
    rs.main(
        [
            "--data",
            fake_data,
            "--model",
            stand_in_embedder,
            "--model",
            "models:/tiny-speaker@champion",
            "--model",
            f"models:/tiny-speaker/{bare.version}",
            "--tracking-uri",
            uri,
            "--json",
            str(out),
            "--draws",
            "50",
        ]
    )
    printed = capsys.readouterr().out
    assert "models:/tiny-speaker@champion against the floor: (a) all pairs" in printed
    systems = json.loads(out.read_text())["systems"]
    assert [s["kind"] for s in systems] == ["floor", "model", "model", "model"]  # one floor: one feature config
    folder, champion, version = systems[1:]
    assert folder["model_dir"] == stand_in_embedder
    assert (champion["version"], version["version"]) == (wrapped.version, bare.version)
    assert folder["floor"] == systems[0]["system"] and folder["dimension"] == 8 and folder["scoring"] == "cosine"
    for name in rs.PROTOCOLS:
        assert 0.0 <= folder["figures"][name]["eer"] <= 1.0
        assert folder["figures"][name] == champion["figures"][name] == version["figures"][name]
