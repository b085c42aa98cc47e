"""The pair builder: sampling rules (speechpipe.speakers.pairs) and the Beam job (src/speechpipe/jobs/pairs_job.py).

Index files are generated here (`write_index`) in the feature job's layout, so these tests do
not depend on the feature job."""

from __future__ import annotations

import glob
import itertools
import json
import os
import random
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from speechpipe.cli import main as cli_main
from speechpipe.config import FeatureConfig
from speechpipe.jobs import pairs_job
from speechpipe.speakers.pairs import (
    DIFFERENT,
    SAME,
    PairConfig,
    PairsInputError,
    SpeakerUtterances,
    SplitPlan,
    decode_pair_block,
    decode_pair_example,
    encode_pair_block,
    frames_for_duration,
    parse_index_record,
    parse_ratio,
    read_pair_file,
    sample_distinct,
    sample_negatives,
    sample_positives,
)
from speechpipe.speakers.trials import Trial, read_trials, write_trials
from tests.helpers import read_manifest

IN_MEMORY = "--direct_running_mode=in_memory"


# ----------------------------------------------------------------------------------------------
# Generated inputs


def index_records(
    splits: Dict[str, int] = None,
    utterances: int = 12,
    sessions: int = 3,
    short_every: int = 0,
    seed: int = 0,
    heavy: Optional[Dict[str, int]] = None,
) -> List[Dict]:
    """Index lines for speakers id10001.. per split, VoxCeleb-shaped ids. `short_every` makes
    every k-th utterance shorter than a segment; `heavy` gives some speakers more utterances."""
    splits = splits or {"train": 6, "validation": 3, "test": 3}
    rng = random.Random(seed)
    records = []
    number = 10001
    for split, count in splits.items():
        for _ in range(count):
            speaker = f"id{number}"
            number += 1
            n = (heavy or {}).get(speaker, utterances)
            session_ids = [
                "".join(rng.choice("abcdefghijkABCDEFGHIJK0123456789-_") for _ in range(11)) for _ in range(sessions)
            ]
            for k in range(n):
                session = session_ids[k % sessions]
                frames = rng.randint(41, 900)
                if short_every and (len(records) % short_every == short_every - 1):
                    frames = rng.randint(0, 39)
                records.append(
                    {
                        "utterance": f"{speaker}/{session}/{k + 1:05d}",
                        "speaker": speaker,
                        "session": session,
                        "split": split,
                        "num_frames": frames,
                        "duration": round((frames - 1) * 0.01 + 0.025, 4),
                    }
                )
    return records


def write_index(root: str, records: Sequence[Dict], shards: int = 3) -> str:
    """Writes root/index/utterances-SSSSS-of-NNNNN.jsonl as the feature job does; returns root."""
    folder = os.path.join(root, "index")
    os.makedirs(folder, exist_ok=True)
    for k in range(shards):
        with open(os.path.join(folder, f"utterances-{k:05d}-of-{shards:05d}.jsonl"), "w") as f:
            for record in records[k::shards]:
                f.write(json.dumps(record) + "\n")
    return root


def run_job(features: str, out: str, *extra: str) -> Dict:
    assert pairs_job.run(["--features", features, "--out", out, IN_MEMORY, *extra]) == 0
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def job_pairs(out: str, split: str) -> List[Tuple[int, str, str]]:
    files = sorted(glob.glob(os.path.join(out, "pairs", split, "pairs-*.tfrecord.gz")))
    assert files, f"no pair files for {split}"
    return [p for path in files for p in read_pair_file(path)]


def key(a: str, b: str) -> Tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def group(speaker: str, sessions: Sequence[int], split: str = "train") -> SpeakerUtterances:
    """A speaker with len(sessions) sessions of the given sizes."""
    items = [(f"{speaker}/s{s:010d}/{k + 1:05d}", f"s{s:010d}") for s, size in enumerate(sessions) for k in range(size)]
    return SpeakerUtterances.build(split, speaker, items)


def speaker_of(utterance: str) -> str:
    return utterance.split("/", 1)[0]


def session_of(utterance: str) -> str:
    return utterance.split("/")[1]


# ----------------------------------------------------------------------------------------------
# Sampling rules


def test_sample_distinct_draws_distinct_values_in_range():
    rng = random.Random(1)
    for population, k in ((10, 10), (10, 3), (10**12, 1000), (1, 1), (5, 0)):
        drawn = sample_distinct(rng, population, k)
        assert len(drawn) == len(set(drawn)) == k
        assert all(0 <= x < population for x in drawn)
    with pytest.raises(ValueError):
        sample_distinct(rng, 3, 4)


@pytest.mark.parametrize("cross_session", [True, False])
def test_positive_index_decoding_covers_exactly_the_candidates(cross_session):
    g = group("id10001", [3, 1, 4, 2])
    config = PairConfig(speaker_cap=10**6, cross_session=cross_session)
    pairs, available = sample_positives(g, config)
    brute = {
        key(a, b)
        for a, b in itertools.combinations(g.utterances, 2)
        if not cross_session or session_of(a) != session_of(b)
    }
    assert available == len(brute) == g.positives_available(cross_session)
    assert len(pairs) == len(brute) and {key(a, b) for a, b in pairs} == brute


def test_positives_are_capped_without_self_or_duplicate_pairs():
    g = group("id10001", [30, 25, 40])
    pairs, available = sample_positives(g, PairConfig(speaker_cap=500))
    assert available > 500 and len(pairs) == 500
    assert all(a != b for a, b in pairs)
    assert len({key(a, b) for a, b in pairs}) == 500


def test_session_rule():
    g = group("id10001", [10, 10])
    cross, _ = sample_positives(g, PairConfig(speaker_cap=80))
    assert all(session_of(a) != session_of(b) for a, b in cross)
    anywhere, _ = sample_positives(g, PairConfig(speaker_cap=150, cross_session=False))
    assert any(session_of(a) == session_of(b) for a, b in anywhere)
    # One session: no cross-session pair exists, so its positives pair utterances of that
    # session (tests/test_pairs_sessions.py has the rule).
    single = group("id10002", [12])
    within, available = sample_positives(single, PairConfig())
    assert available == 66 and len(within) == 66 and single.same_session(within) == 66


@pytest.mark.parametrize("speakers", range(1, 10))
def test_links_visit_every_speaker_pair_once(speakers):
    groups = [group(f"id{10001 + k}", [3, 3]) for k in range(speakers)]
    plan = SplitPlan.build("train", groups, PairConfig())
    links = Counter()
    for rank in range(speakers):
        for partner, _quota in plan.links_from(rank):
            assert partner != rank
            links[frozenset((rank, partner))] += 1
    assert len(links) == speakers * (speakers - 1) // 2 == plan.links
    assert set(links.values()) <= {1}


def test_negatives_are_balanced_over_speakers_distinct_and_exact():
    # A heavy speaker has 10x the utterances of the others: it must not dominate.
    groups = [group(f"id{10001 + k}", [60, 60] if k == 0 else [6, 6]) for k in range(25)]
    config = PairConfig(speaker_cap=40)
    plan = SplitPlan.build("train", groups, config)
    negatives, shortfall = [], 0
    for g in groups:
        pairs, missing = sample_negatives(g, plan, config)
        negatives += pairs
        shortfall += missing
    assert shortfall == 0 and len(negatives) == plan.negatives == plan.positives  # 1:1
    assert all(speaker_of(a) != speaker_of(b) for a, b in negatives)
    assert len({key(a, b) for a, b in negatives}) == len(negatives)
    share = Counter(s for a, b in negatives for s in (speaker_of(a), speaker_of(b)))
    assert max(share.values()) - min(share.values()) <= 2, share


def test_ratio_sets_the_number_of_negatives():
    groups = [group(f"id{10001 + k}", [5, 5]) for k in range(10)]
    for same, different in ((1, 1), (1, 3), (2, 1)):
        config = PairConfig(same=same, different=different, speaker_cap=20)
        plan = SplitPlan.build("train", groups, config)
        drawn = sum(len(sample_negatives(g, plan, config)[0]) for g in groups)
        assert plan.positives == 200
        assert drawn == plan.negatives == 200 * different // same


def test_shortfall_is_counted_when_speakers_run_out_of_combinations():
    groups = [group("id10001", [1, 1]), group("id10002", [1])]
    config = PairConfig(same=1, different=5)
    plan = SplitPlan.build("train", groups, config)
    assert plan.positives == 1 and plan.negatives == 5
    results = [sample_negatives(g, plan, config) for g in groups]
    assert sum(len(p) for p, _ in results) == 2  # a 2 x 1 grid holds two pairs
    assert sum(s for _, s in results) == 3


def test_sampling_is_deterministic_for_a_seed():
    groups = [group(f"id{10001 + k}", [7, 5, 3]) for k in range(8)]

    def draw(seed):
        config = PairConfig(seed=seed, speaker_cap=15)
        plan = SplitPlan.build("train", groups, config)
        return [(sample_positives(g, config)[0], sample_negatives(g, plan, config)[0]) for g in groups]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_ratio_and_config_errors():
    assert parse_ratio("1:1") == (1, 1) and parse_ratio("2:3") == (2, 3)
    for bad in ("1", "a:b", "0:1", "1:-1", "1:1:1"):
        with pytest.raises(PairsInputError, match="ratio"):
            parse_ratio(bad)
    assert PairConfig(same=2, different=1).negatives_for(3) == 2  # 1.5 rounds half up
    with pytest.raises(PairsInputError, match="speaker_cap"):
        PairConfig(speaker_cap=0).validate()
    with pytest.raises(PairsInputError, match="eval_hop"):
        PairConfig(eval_hop=41).validate()


def test_index_record_checks_and_frames_from_duration():
    features = FeatureConfig()
    good = {
        "utterance": "id10001/abcdefghijk/00001",
        "speaker": "id10001",
        "session": "abcdefghijk",
        "split": "train",
        "num_frames": 312,
        "duration": 3.14,
    }
    assert parse_index_record(good, features, "f:1").num_frames == 312
    manifest_line = {k: v for k, v in good.items() if k != "num_frames"}
    assert parse_index_record(manifest_line, features, "f:1").num_frames == 1 + (50240 - 400) // 160
    assert frames_for_duration(0.02, features) == 0  # 320 samples < one 400-sample window
    assert frames_for_duration(400 / 16000, features) == 1
    for change, message in (
        ({"split": "dev"}, "split 'dev'"),
        ({"num_frames": -1}, "num_frames"),
        ({"utterance": "id10001/abc def/1"}, "whitespace"),
        ({"utterance": "id10001/abcdefghijk/00001.wav"}, ".wav"),
        ({"session": None}, "'session'"),
    ):
        with pytest.raises(PairsInputError, match=message) as error:
            parse_index_record({**good, **change}, features, "index.jsonl:7")
        assert "index.jsonl:7" in str(error.value)
    with pytest.raises(PairsInputError, match="neither num_frames nor duration"):
        parse_index_record({k: v for k, v in manifest_line.items() if k != "duration"}, features, "f:2")
    # An id need not start with its speaker: Kaldi's `<speaker>-<chapter>-<nnnn>`, a free-form id,
    # or one naming another speaker's prefix; the speaker is the record's field.
    for utterance in ("10001-134686-0000", "clip_0007", "id10002/abcdefghijk/00001"):
        assert parse_index_record({**good, "utterance": utterance}, features, "f:3").speaker == "id10001"


def test_repeated_utterance_is_an_error():
    with pytest.raises(PairsInputError, match="listed twice"):
        SpeakerUtterances.build("train", "id10001", [("id10001/a/1", "a"), ("id10001/a/1", "a")])


def test_pair_records_round_trip_without_tensorflow():
    pairs = [
        (SAME, "id10001/abcdefghijk/00001", "id10001/bcdefghijkl/00002"),
        (DIFFERENT, "id10001/abcdefghijk/00001", "id10002/cdefghijklm/00003"),
    ]
    records = decode_pair_block(encode_pair_block(pairs))
    assert [decode_pair_example(r) for r in records] == pairs
    with pytest.raises(ValueError, match="corrupt"):
        decode_pair_block(encode_pair_block(pairs)[:-1])


# ----------------------------------------------------------------------------------------------
# The Beam transform, with TestPipeline


def test_transform_in_a_test_pipeline():
    records = index_records({"train": 4, "validation": 2, "test": 2}, utterances=6, sessions=2, short_every=9)
    elements = [(r["speaker"], (r["utterance"], r["session"], r["split"], r["num_frames"])) for r in records]
    config = PairConfig(speaker_cap=5)
    split_of = {r["speaker"]: r["split"] for r in records}
    short = sorted(r["utterance"] for r in records if r["num_frames"] < config.segment_frames)
    assert short, "the generated index must hold short utterances"

    def check_blocks(split):
        def check(blocks):
            pairs = [p for _, block in blocks for p in block]
            labels = Counter(label for label, _, _ in pairs)
            assert labels[SAME] == labels[DIFFERENT] > 0, labels
            assert all(split_of[speaker_of(u)] == split for _, a, b in pairs for u in (a, b))
            assert all(u not in short for _, a, b in pairs for u in (a, b))
            assert len({key(a, b) for _, a, b in pairs}) == len(pairs)
            per_speaker = Counter(speaker_of(a) for label, a, _ in pairs if label == SAME)
            assert max(per_speaker.values()) <= config.speaker_cap

        return check

    with BeamTestPipeline(options=beam.options.pipeline_options.PipelineOptions([IN_MEMORY])) as p:
        result = p | beam.Create(elements) | pairs_job.PairsFromUtterances(config)
        for split in ("train", "validation", "test"):
            assert_that(result[pairs_job.PAIRS_TAG[split]], check_blocks(split), label=f"Check[{split}]")
        assert_that(
            result[pairs_job.SHORT] | beam.Map(lambda line: json.loads(line)["utterance"]),
            equal_to(short),
            label="CheckShort",
        )
        totals = (
            result[pairs_job.SPEAKER_STATS] | beam.Map(lambda kv: kv[1]["excluded_short"]) | beam.CombineGlobally(sum)
        )
        assert_that(totals, equal_to([len(short)]), label="CheckShortCount")


# ----------------------------------------------------------------------------------------------
# The job, end to end


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One run on a generated index: 3 splits, a heavy speaker, short utterances."""
    root = tmp_path_factory.mktemp("pairs_job")
    records = index_records(
        {"train": 8, "validation": 4, "test": 4}, utterances=14, sessions=3, short_every=11, heavy={"id10001": 80}
    )
    features = write_index(str(root / "features"), records)
    out = str(root / "out")
    summary = run_job(features, out, "--speaker_cap", "30", "--seed", "7")
    return {"records": records, "features": features, "out": out, "summary": summary}


def test_job_writes_balanced_capped_pairs_per_split(job):
    summary, out = job["summary"], job["out"]
    split_of = {r["speaker"]: r["split"] for r in job["records"]}
    for split in ("train", "validation", "test"):
        pairs = job_pairs(out, split)
        labels = Counter(label for label, _, _ in pairs)
        assert labels[SAME] == labels[DIFFERENT] == summary["splits"][split]["pairs"]["same"] > 0
        assert summary["splits"][split]["different_shortfall"] == 0
        # Caps: no speaker has more than 30 positives; the heavy one is capped and counted.
        positives = Counter(speaker_of(a) for label, a, _ in pairs if label == SAME)
        assert max(positives.values()) <= 30
        # No self-pairs, no duplicates (either order), never across splits.
        assert all(a != b for _, a, b in pairs)
        assert len({key(a, b) for _, a, b in pairs}) == len(pairs)
        assert {split_of[speaker_of(u)] for _, a, b in pairs for u in (a, b)} == {split}
        # Labels agree with speakers; positives pair different sessions (the default).
        for label, a, b in pairs:
            assert (label == SAME) == (speaker_of(a) == speaker_of(b))
            if label == SAME:
                assert session_of(a) != session_of(b)
    heavy = Counter(speaker_of(a) for label, a, _ in job_pairs(out, "train") if label == SAME)["id10001"]
    assert heavy == 30
    assert summary["splits"]["train"]["speakers_capped"] >= 1


def test_job_trial_lists_match_the_pair_records(job):
    for split in ("train", "validation", "test"):
        trials = read_trials(os.path.join(job["out"], f"trials_{split}.txt"))
        assert sorted(trials) == sorted(Trial(*p) for p in job_pairs(job["out"], split))
        assert job["summary"]["splits"][split]["trials_lines"] == len(trials)
    assert not os.path.exists(os.path.join(job["out"], pairs_job.TRIAL_PARTS_DIR))


def test_job_reports_every_excluded_utterance(job):
    short = {r["utterance"] for r in job["records"] if r["num_frames"] < 40}
    assert short
    listed = set()
    for path in glob.glob(os.path.join(job["out"], "excluded", "*.jsonl")):
        with open(path) as f:
            listed |= {json.loads(line)["utterance"] for line in f}
    assert listed == short
    assert job["summary"]["excluded_short"] == len(short)
    used = {u for split in ("train", "validation", "test") for _, a, b in job_pairs(job["out"], split) for u in (a, b)}
    assert not used & short
    per_split = Counter(r["split"] for r in job["records"])
    for split, count in per_split.items():
        s = job["summary"]["splits"][split]
        assert s["utterances"] == count
        assert s["eligible_utterances"] + s["excluded_short"] == count


def test_job_is_deterministic_for_a_seed(job, tmp_path):
    again = str(tmp_path / "again")
    run_job(job["features"], again, "--speaker_cap", "30", "--seed", "7")
    other = str(tmp_path / "other")
    run_job(job["features"], other, "--speaker_cap", "30", "--seed", "8")
    for split in ("train", "validation", "test"):
        ours = sorted(job_pairs(job["out"], split))
        assert sorted(job_pairs(again, split)) == ours
        assert sorted(job_pairs(other, split)) != ours
        with (
            open(os.path.join(job["out"], f"trials_{split}.txt")) as a,
            open(os.path.join(again, f"trials_{split}.txt")) as b,
        ):
            assert sorted(a) == sorted(b)


def test_job_ratio_and_same_session_options(tmp_path):
    records = index_records({"train": 6, "validation": 3, "test": 3}, utterances=10, sessions=2)
    features = write_index(str(tmp_path / "features"), records)
    out = str(tmp_path / "out")
    summary = run_job(
        features, out, "--ratio", "1:2", "--same_session_positives", "--speaker_cap", "12", "--trial_splits", "test"
    )
    train = job_pairs(out, "train")
    labels = Counter(label for label, _, _ in train)
    assert labels[DIFFERENT] == 2 * labels[SAME]
    assert any(session_of(a) == session_of(b) for label, a, b in train if label == SAME)
    assert summary["config"]["ratio"] == "1:2" and summary["config"]["cross_session"] is False
    assert os.path.exists(os.path.join(out, "trials_test.txt"))
    assert not os.path.exists(os.path.join(out, "trials_train.txt"))


def test_job_reads_a_demo_corpus_manifest(tiny_corpus, tmp_path):
    out = str(tmp_path / "out")
    summary = run_job(tiny_corpus, out, "--speaker_cap", "3")
    manifest = read_manifest(tiny_corpus)
    assert summary["input"]["kind"] == "manifest"
    assert sum(s["utterances"] for s in summary["splits"].values()) == len(manifest)
    features = FeatureConfig()
    eligible = {r["utterance"] for r in manifest if frames_for_duration(r["duration"], features) >= 40}
    train = job_pairs(out, "train")
    assert train and all(a in eligible and b in eligible for _, a, b in train)
    # 4 training speakers with 2 sessions of 2 utterances: 4 cross-session candidates each.
    assert Counter(label for label, _, _ in train) == {SAME: 12, DIFFERENT: 12}


def test_official_trial_list_is_checked_and_copied(job, tmp_path):
    records = [r for r in job["records"] if r["num_frames"] >= 40]
    test_utts = [r["utterance"] for r in records if r["split"] == "test"]
    trials = [
        Trial(SAME if speaker_of(a) == speaker_of(b) else DIFFERENT, a, b)
        for a, b in zip(test_utts[::2], test_utts[1::2])
    ]
    trials.append(Trial(DIFFERENT, test_utts[0], "id19999/zzzzzzzzzzz/00001"))  # not in the index
    official = str(tmp_path / "veri_test2.txt")
    write_trials(official, trials)
    out = str(tmp_path / "out")
    summary = run_job(job["features"], out, "--speaker_cap", "30", "--official_trials", official)
    (coverage,) = summary["official_trials"]
    assert coverage["list"] == "veri_test2.txt" and coverage["trials"] == len(trials)
    assert coverage["covered"] == len(trials) - 1 and coverage["missing_utterances"] == 1
    assert coverage["covered_per_split"] == {"test": len(trials) - 1}
    assert read_trials(os.path.join(out, "official", "veri_test2.txt")) == trials[:-1]


def test_job_pairs_ids_that_do_not_name_their_speaker(tmp_path):
    """Kaldi-convention ids (`<speaker>-<session>-<nnnn>`, the speaker without its `id`) and
    free-form ones: the job groups by the `speaker` field, and an --any_ids trial list of such ids
    is covered and counted by the index's speakers."""
    records = index_records({"train": 4, "validation": 2, "test": 3}, utterances=6, sessions=2)
    for n, r in enumerate(records):
        kaldi = f"{r['speaker'][2:]}-{r['session'][:4]}-{n:04d}"
        r["utterance"] = kaldi if n % 2 else f"clip_{n:04d}"
    speaker = {r["utterance"]: r["speaker"] for r in records}
    features = write_index(str(tmp_path / "features"), records)
    test_utts = [r["utterance"] for r in records if r["split"] == "test"]
    trials = [Trial(SAME if speaker[a] == speaker[b] else DIFFERENT, a, b) for a, b in zip(test_utts, test_utts[1:])]
    own = str(tmp_path / "own_trials.txt")
    write_trials(own, trials)
    out = str(tmp_path / "out")
    summary = run_job(features, out, "--speaker_cap", "5", "--official_trials", own, "--any_ids")
    for split, speakers in (("train", 4), ("validation", 2), ("test", 3)):
        pairs = job_pairs(out, split)
        assert all((speaker[a] == speaker[b]) == (label == SAME) for label, a, b in pairs)
        # 6 utterances in 2 sessions: 9 cross-session candidates each, capped at 5.
        positives = Counter(speaker[a] for label, a, _ in pairs if label == SAME)
        assert len(positives) == speakers and set(positives.values()) == {5}
        assert Counter(label for label, _, _ in pairs)[DIFFERENT] == 5 * speakers
    (coverage,) = summary["official_trials"]
    assert coverage["covered"] == len(trials) and coverage["missing_utterances"] == 0
    assert coverage["speakers"] == 3 and coverage["covered_per_split"] == {"test": len(trials)}


def test_manifest_id_repeated_under_two_speakers_is_an_error(tmp_path):
    """A manifest is checked whole as it is read: an id given to two speakers would otherwise
    reach two speakers' groups, each looking clean."""
    lines = [
        {"utterance": f"utt{n}", "speaker": f"spk{n % 3}", "session": "s", "split": "train", "duration": 2.0}
        for n in range(6)
    ]
    lines.append({**lines[0], "speaker": "spk1"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(
        PairsInputError, match=r"manifest\.jsonl:7: utterance 'utt0' is listed twice \(first on line 1\)"
    ):
        run_job(str(manifest), str(tmp_path / "out"))


def test_malformed_index_line_names_file_and_line(tmp_path):
    features = write_index(str(tmp_path / "features"), index_records(), shards=1)
    path = os.path.join(features, "index", "utterances-00000-of-00001.jsonl")
    with open(path, "a") as f:
        f.write('{"utterance": "id10001/x/1", "speaker": "id10001"\n')
    with pytest.raises(PairsInputError, match=r"utterances-00000-of-00001\.jsonl:\d+: not a JSON object"):
        run_job(features, str(tmp_path / "out"))


def test_speaker_in_two_splits_is_an_error(tmp_path):
    records = index_records()
    records[0] = {**records[0], "split": "test"}
    features = write_index(str(tmp_path / "features"), records)
    with pytest.raises(PairsInputError, match="id10001.*speaker-disjoint"):
        run_job(features, str(tmp_path / "out"))


def test_command_line_errors(tmp_path, capsys, job):
    assert cli_main(["pairs", "--features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["pairs", "--features", job["features"], "--out", job["out"]]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["pairs", "--features", job["features"], "--out", str(tmp_path / "o"), "--ratio", "x"]) == 2
    bad = tmp_path / "list_test_hard2.txt"
    bad.write_text("1 id10001/abcdefghijk/00001.wav id10002/abcdefghijk/00001.wav\n2 a b\n")
    assert (
        cli_main(["pairs", "--features", job["features"], "--out", str(tmp_path / "o"), "--official_trials", str(bad)])
        == 2
    )
    assert "list_test_hard2.txt:2" in capsys.readouterr().err


def test_default_running_mode_follows_the_input_size():
    from apache_beam.options.pipeline_options import DirectOptions

    assert pairs_job.default_running_mode(10 << 20, cpus=2) == "in_memory"
    assert pairs_job.default_running_mode(200 << 20, cpus=2) == "multi_processing"
    assert pairs_job.default_running_mode(200 << 20, cpus=1) == "in_memory"
    chosen = pairs_job.pipeline_options([], 200 << 20).view_as(DirectOptions)
    assert chosen.direct_running_mode == ("multi_processing" if (os.cpu_count() or 1) > 1 else "in_memory")
    given = pairs_job.pipeline_options([IN_MEMORY], 200 << 20).view_as(DirectOptions)
    assert given.direct_running_mode == "in_memory"
