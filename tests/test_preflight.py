"""The preflight (pipeline/preflight.py, speechpipe.jobs.corpus_inventory) on corpora of every
shape, without running the pipeline: each failure a new user met late (issue #26) stops in
seconds with the option that fixes it, the split rule gives evaluation splits their speakers, and
what the preflight counts is what the feature job's readers give.

The audio files are empty: the preflight lists and parses, it never decodes."""

import json
import os
import time

from speechpipe.audio.sources import OUTSIDE_ROOT, SourceRecord, assign_split, expand_input, make_spec, parse_input
from speechpipe.cli import main
from speechpipe.jobs.corpus_inventory import count_split, list_span, plan_split_overrides
from speechpipe.pipeline.preflight import check, run_preflight, span_options
from speechpipe.pipeline.run_config import RunConfig, validate_run_config

# Seconds within which a stopped run must have said why (the issue asks for "in seconds").
STOP_SECONDS = 30


def _touch(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return path


def librispeech(root: str, speakers: int, utterances: int = 3, chapters: int = 1, flat: bool = False) -> str:
    """LibriSpeech's layout, <speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac, or flattened as
    the LibriSpeech sample clips ship (`flat`): <speaker>/<speaker>-<chapter>-<nnnn>.flac."""
    for s in range(speakers):
        speaker = str(1000 + 37 * s)
        for u in range(utterances):
            chapter = str(5000 + u % chapters)
            name = f"{speaker}-{chapter}-{u:04d}.flac"
            _touch(os.path.join(root, speaker, name) if flat else os.path.join(root, speaker, chapter, name))
    return root


def cnceleb(root: str, speakers: int, utterances: int = 4) -> str:
    """CN-Celeb's layout: id<nnnnn>/<genre>-<nn>-<nnn>.flac, no session folder."""
    genres = ("speech", "singing")
    for s in range(speakers):
        for u in range(utterances):
            _touch(os.path.join(root, f"id{800 + s:05d}", f"{genres[u % 2]}-01-{u:03d}.flac"))
    return root


def kaldi_absolute(root: str, speakers: int, utterances: int = 3) -> tuple:
    """A Kaldi dir whose wav.scp names absolute paths in a folder beside it: (dir, audio folder)."""
    audio, kaldi = os.path.join(root, "audio"), os.path.join(root, "kaldi")
    os.makedirs(kaldi)
    scp, utt2spk = [], []
    for s in range(speakers):
        for u in range(utterances):
            utt = f"spk{s:02d}/{u}"
            scp.append(f"{utt} {_touch(os.path.join(audio, f'spk{s:02d}', f'{u}.wav'))}")
            utt2spk.append(f"{utt} spk{s:02d}")
    for name, rows in (("wav.scp", scp), ("utt2spk", utt2spk)):
        with open(os.path.join(kaldi, name), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return kaldi, audio


def manifest(root: str, speakers: int, utterances: int = 3, splits: dict = None) -> str:
    """A manifest without sessions; `splits` gives some speakers a split of their own."""
    lines = []
    for s in range(speakers):
        speaker = f"spk{s:02d}"
        for u in range(utterances):
            line = {
                "utterance": f"{speaker}/{u}",
                "audio": _touch(os.path.join(root, "a", f"{speaker}-{u}.wav")),
                "speaker": speaker,
            }
            line["audio"] = os.path.relpath(line["audio"], root)
            if splits and speaker in splits:
                line["split"] = splits[speaker]
            lines.append(line)
    path = os.path.join(root, "manifest.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return path


def voxceleb1(root: str, speakers: int, test: int = 2, utterances: int = 3) -> str:
    """VoxCeleb1 as it ships: wav/<id>/<video>/<nnnnn>.wav and a tab-separated vox1_meta.csv."""
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    for s in range(speakers):
        speaker = f"id{10001 + s}"
        for u in range(utterances):
            _touch(os.path.join(root, "wav", speaker, f"video{u % 2:06d}x", f"{u + 1:05d}.wav"))
        rows.append(f"{speaker}\tP{s}\tm\tDE\t{'test' if s >= speakers - test else 'dev'}")
    with open(os.path.join(root, "vox1_meta.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    return root


def _config(tmp_path, span, **changes) -> RunConfig:
    return validate_run_config(
        RunConfig(home=str(tmp_path / "home"), spans=(str(span),), branches=("speaker",), **changes)
    )


def _stops(argv, capsys, *needles):
    """`speechpipe run ARGV` stops before any node, in seconds, naming every needle."""
    started = time.time()
    assert main(["run", *argv]) == 2
    seconds = time.time() - started
    captured = capsys.readouterr()
    assert seconds < STOP_SECONDS, seconds
    assert "the preflight stopped the run before any node ran" in captured.err, captured.err
    for needle in needles:
        assert needle in captured.err, (needle, captured.err)
    assert "[preflight]" in captured.out
    return captured


# ------------------------------------------------------------------------------------------ layouts


def test_librispeech_layout_is_read_with_chapters_as_sessions(tmp_path):
    root = librispeech(str(tmp_path / "ls"), speakers=3, utterances=4, chapters=2)
    records = [parse_input(i, make_spec(root)) for i in expand_input(make_spec(root))]
    assert all(isinstance(r, SourceRecord) for r in records), records
    first = records[0]
    assert first.utterance == "1000/5000/1000-5000-0000" and first.session == "5000"
    assert {r.session for r in records if r.speaker == "1000"} == {"5000", "5001"}


def test_two_level_layouts_take_the_session_from_the_file_name(tmp_path):
    cn = cnceleb(str(tmp_path / "cn"), speakers=2)
    records = [parse_input(i, make_spec(cn)) for i in expand_input(make_spec(cn))]
    assert all(isinstance(r, SourceRecord) for r in records), records
    assert records[0].utterance == "id00800/singing-01-001" and records[0].session == "singing-01"
    assert {r.session for r in records if r.speaker == "id00800"} == {"singing-01", "speech-01"}
    flat = librispeech(str(tmp_path / "flat"), speakers=1, utterances=2, flat=True)
    (a, b) = [parse_input(i, make_spec(flat)) for i in expand_input(make_spec(flat))]
    assert a.utterance == "1000/1000-5000-0000" and a.session == b.session == "1000-5000"
    _touch(str(tmp_path / "plain" / "spk" / "hello.wav"))
    (plain,) = [
        parse_input(i, make_spec(str(tmp_path / "plain"))) for i in expand_input(make_spec(str(tmp_path / "plain")))
    ]
    assert plain.session == "spk"  # no '-' in the name: the speaker is one session


# ----------------------------------------------------------------------------------- the split rule


def test_the_split_rule_gives_each_evaluation_split_two_speakers_with_two_utterances(tmp_path):
    # 16 speakers at the default fractions: the hash alone gave the validation split 1 speaker.
    root = librispeech(str(tmp_path / "ls"), speakers=16, utterances=3, chapters=2)
    spec = make_spec(root)
    hashed = {s: assign_split(s, spec.split_fractions, 0) for s in {str(1000 + 37 * i) for i in range(16)}}
    inventory = list_span(spec)
    moves = plan_split_overrides(inventory)
    counts = inventory.counts(moves)
    for split in ("validation", "test"):
        assert counts[split].evaluable_speakers >= 2 and counts[split].same_cross_session > 0, (split, counts)
    assert moves and all(hashed[s] == "train" for s in moves), (moves, hashed)
    assert counts["train"].speakers == 16 - counts["validation"].speakers - counts["test"].speakers
    assert plan_split_overrides(list_span(spec)) == moves  # deterministic
    # The feature job's parse applies the moves it is handed, and records them in its split rule.
    moved = make_spec(root, split_overrides=moves)
    splits = {r.speaker: r.split for r in (parse_input(i, moved) for i in expand_input(moved))}
    assert {s: splits[s] for s in moves} == moves
    assert f"{len(moves)} speaker(s) moved" in moved.split_rule()


def test_one_utterance_speakers_never_count_towards_an_evaluation_split(tmp_path):
    # Single-utterance speakers: whatever the hash draws, the moved speakers have two utterances.
    root = str(tmp_path / "m")
    path = manifest(root, speakers=12, utterances=1)
    with open(path, "a", encoding="utf-8") as f:
        for s in range(12, 20):
            for u in range(2):
                audio = os.path.relpath(_touch(os.path.join(root, "a", f"two{s}-{u}.wav")), root)
                f.write(json.dumps({"utterance": f"two{s}/{u}", "audio": audio, "speaker": f"two{s}"}) + "\n")
    inventory = list_span(make_spec(path))
    moves = plan_split_overrides(inventory)
    assert all(s.startswith("two") for s in moves), moves
    counts = inventory.counts(moves)
    assert counts["validation"].evaluable_speakers >= 2 and counts["test"].evaluable_speakers >= 2


def test_splits_the_corpus_names_are_checked_never_moved(tmp_path, capsys):
    splits = {f"spk{s:02d}": "train" for s in range(10)}
    splits.update({"spk10": "validation", "spk11": "test", "spk12": "test"})
    path = manifest(str(tmp_path / "m"), speakers=13, splits=splits)
    preflight = run_preflight(_config(tmp_path, path, embedder=_p(4)))
    assert preflight.spans[0].overrides == {}
    assert [p.where for p in preflight.problems] == ["speaker branch, validation split"]
    _stops(
        ["--home", str(tmp_path / "h"), "--span", path, "--branches", "speaker", "--speakers-per-batch", "4"],
        capsys,
        "--split-fractions",
        "validation split",
    )


def test_the_demo_corpus_shape_is_unchanged(tmp_path):
    """Named splits (the demo corpus's manifest): no move, no new FeatureGen parameter, the same
    data key as before the preflight existed."""
    splits = {f"spk{s:02d}": "train" for s in range(16)}
    splits.update({f"spk{s:02d}": "validation" for s in range(16, 18)})
    splits.update({f"spk{s:02d}": "test" for s in range(18, 20)})
    path = manifest(str(tmp_path / "m"), speakers=20, splits=splits)
    config = _config(tmp_path, path)
    preflight = check(config)
    assert span_options(config, preflight) == [{}]
    assert preflight.branches["speaker"]["validation"].speakers == 2


# ------------------------------------------------------------------------------- issue #26's failures


def test_single_session_speakers_give_same_session_trials_counted_apart(tmp_path):
    # The LibriSpeech sample clips: one chapter per speaker.
    root = librispeech(str(tmp_path / "ls"), speakers=10, utterances=10, flat=True)
    preflight = run_preflight(_config(tmp_path, root, embedder=_p(4)))
    assert not preflight.problems, preflight.problems
    test = preflight.branches["speaker"]["test"]
    assert test.same_cross_session == 0 and test.same_within_session > 0 and test.different > 0
    assert any("within one session" in n for n in preflight.notes)


def test_a_kaldi_dir_with_absolute_paths_stops_naming_data_root(tmp_path, capsys):
    kaldi, audio = kaldi_absolute(str(tmp_path), speakers=12)
    argv = ["--home", str(tmp_path / "h"), "--span", kaldi, "--branches", "speaker", "--speakers-per-batch", "4"]
    captured = _stops(argv, capsys, "--data-root", "outside the data root", OUTSIDE_ROOT)
    assert "12 training speakers" not in captured.err
    config = _config(tmp_path, kaldi, data_root=audio, embedder=_p(4))
    preflight = check(config)
    assert preflight.spans[0].data_root == audio and span_options(config, preflight)[0]["data_root"] == audio


def test_sixteen_speakers_at_default_fractions_stop_on_the_batch_size_not_the_validation_split(tmp_path, capsys):
    root = librispeech(str(tmp_path / "ls"), speakers=16, utterances=3, chapters=2)
    captured = _stops(
        ["--home", str(tmp_path / "h"), "--span", root, "--branches", "speaker"],
        capsys,
        "--speakers-per-batch",
        "speakers_per_batch=16",
    )
    assert "validation split" not in captured.err


def test_twelve_speakers_with_the_default_batch_stop_naming_speakers_per_batch(tmp_path, capsys):
    root = librispeech(str(tmp_path / "ls"), speakers=12, utterances=3, flat=True)
    _stops(
        ["--home", str(tmp_path / "h"), "--span", root, "--branches", "speaker"],
        capsys,
        "--speakers-per-batch N with N <= 7",
    )
    assert not run_preflight(_config(tmp_path, root, embedder=_p(4))).problems


def test_voxceleb1_meta_splits_at_default_fractions_stop_naming_split_fractions(tmp_path, capsys):
    root = voxceleb1(str(tmp_path / "vox1"), speakers=12)
    _stops(
        ["--home", str(tmp_path / "h"), "--span", root, "--branches", "speaker", "--speakers-per-batch", "4"],
        capsys,
        "--split-fractions",
        "validation split",
    )
    preflight = run_preflight(_config(tmp_path, root, embedder=_p(4), split_fractions=(0.6, 0.2, 0.2)))
    assert not preflight.problems and preflight.spans[0].overrides == {}


def test_an_official_trial_list_naming_missing_utterances_stops_naming_trials(tmp_path, capsys):
    root = voxceleb1(str(tmp_path / "vox1"), speakers=12)
    trials = tmp_path / "veri_test2.txt"
    trials.write_text(
        "1 id10011/video000000x/00001.wav id10011/video000001x/00002.wav\n"
        "0 id10011/video000000x/00001.wav id19999/abcdefghijk/00001.wav\n"
    )
    argv = [
        "--home",
        str(tmp_path / "h"),
        "--span",
        root,
        "--branches",
        "speaker",
        "--speakers-per-batch",
        "4",
        "--split-fractions",
        "0.6,0.2,0.2",
        "--trials",
        str(trials),
    ]
    _stops(argv, capsys, "--trials", "id19999/abcdefghijk/00001", "1 of 2 trials")


def test_an_unlistable_span_is_skipped_not_failed(tmp_path, monkeypatch):
    from speechpipe.pipeline import preflight as module

    root = librispeech(str(tmp_path / "ls"), speakers=12, utterances=3)

    def refuse(*_, **__):
        raise PermissionError("403: no access to the bucket")

    monkeypatch.setattr(module, "list_span", refuse)
    result = check(_config(tmp_path, root))
    assert "not listed (PermissionError" in result.lines()[0] and "split checks are skipped" in result.lines()[1]
    assert span_options(_config(tmp_path, root), result) == [{}]


def test_inspect_reports_what_a_run_would_make_of_a_corpus(tmp_path, capsys):
    root = cnceleb(str(tmp_path / "cn"), speakers=12)
    assert main(["inspect", root, "--speakers-per-batch", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    validation = report["branches"]["speaker"]["validation"]
    assert validation["speakers_with_2_utterances"] >= 2 and validation["trials"]["same_cross_session"] > 0
    assert main(["inspect", root]) == 1
    assert "--speakers-per-batch" in capsys.readouterr().out


def test_the_preflight_of_the_demo_corpus_size_takes_seconds(tmp_path):
    """2,400 utterances (the demo corpus's count) in a VoxCeleb-layout folder."""
    root = str(tmp_path / "vox")
    for s in range(240):
        for u in range(10):
            _touch(os.path.join(root, f"id{10001 + s}", f"sess{u % 4}", f"{u:05d}.wav"))
    started = time.time()
    preflight = run_preflight(_config(tmp_path, root))
    assert time.time() - started < 10
    assert sum(c.utterances for c in preflight.branches["speaker"].values()) == 2400


def test_count_split_follows_the_pair_rule():
    from collections import Counter

    from speechpipe.jobs.corpus_inventory import SpeakerTally

    counts = count_split(
        [
            SpeakerTally("test", Counter({"a": 2, "b": 1})),  # 2 cross-session pairs
            SpeakerTally("test", Counter({"c": 3})),  # one session: 3 same-session pairs
            SpeakerTally("test", Counter({"d": 1})),  # one utterance: none
        ]
    )
    assert (counts.same_cross_session, counts.same_within_session) == (2, 3)
    assert counts.different == 3 * 3 + 3 * 1 + 3 * 1 and counts.evaluable_speakers == 2


def _p(p: int):
    from dataclasses import replace

    from speechpipe.pipeline.run_config import DEMO_EMBEDDER

    return replace(DEMO_EMBEDDER, speakers_per_batch=p)


def test_the_gate_names_data_root_for_audio_outside_it():
    from speechpipe.components.validation_gate import gate_reasons

    props = {"inputs": 3, "dead_letter": {"total": 3, "by_reason": {OUTSIDE_ROOT: 3}}, "good": {"train": 0}}
    (dead, _) = gate_reasons({}, props, 0.2, 1)
    assert "3 of 3 inputs dead-lettered" in dead and "--data-root" in dead


def test_utterance_ids_need_not_start_with_their_speaker(tmp_path):
    """The pair builder groups a speaker's utterances by the `speaker` field, not an id prefix: a
    manifest's free-form ids and Kaldi's `spk-utt` ids pass, counted by their speakers."""
    path = manifest(str(tmp_path / "m"), speakers=12)
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({**line, "utterance": f"clip{n:03d}"}) + "\n" for n, line in enumerate(lines))
    kaldi, audio = kaldi_absolute(str(tmp_path / "k"), speakers=12)
    for name in ("wav.scp", "utt2spk"):
        table = os.path.join(kaldi, name)
        with open(table, encoding="utf-8") as f:
            rows = [row.split(" ", 1) for row in f.read().splitlines()]
        with open(table, "w", encoding="utf-8") as f:
            f.writelines(f"{utt.replace('/', '-')} {rest}\n" for utt, rest in rows)
    for span, changes in ((path, {}), (kaldi, {"data_root": audio})):
        preflight = run_preflight(_config(tmp_path, span, embedder=_p(4), **changes))
        assert not preflight.problems, preflight.problems
        assert sum(c.speakers for c in preflight.branches["speaker"].values()) == 12
        assert sum(c.utterances for c in preflight.branches["speaker"].values()) == 36


def test_compile_stops_on_the_spans_it_can_list(tmp_path, capsys):
    root = librispeech(str(tmp_path / "ls"), speakers=12, utterances=3, flat=True)
    argv = ["compile", "--target", "vertex", "--out", str(tmp_path / "p.json"), "--image", "r/s:1"]
    argv += ["--home", "gs://b/h", "--tracking-uri", "http://mlflow:5000", "--span", root, "--branches", "speaker"]
    started = time.time()
    assert main(argv) == 2
    assert time.time() - started < STOP_SECONDS
    assert "--speakers-per-batch" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p.json")
