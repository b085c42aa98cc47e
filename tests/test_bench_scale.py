"""bench/bench_scale.py's pure parts, at a tiny size (no stage is run): the generated corpus is
the feature job's output layout as its readers see it (speechpipe.io.records, the pair job's
input resolvers), speaker-disjoint and VoxCeleb-shaped; the process-tree RSS sampler; the ratios,
verdicts and table; the options."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from bench import bench_scale as bs

TINY = dict(per_speaker=4, min_sessions=2, max_sessions=3, min_frames=40, max_frames=60, bins=8, shard_mb=0.01)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(folder, corpus.json, shape) of a 20-speaker corpus: 16 training speakers, the fewest a
    batch of P = 16 allows."""
    shape = bs.CorpusShape(speakers=20, **TINY)
    folder, info = bs.ensure_corpus(str(tmp_path_factory.mktemp("cache")), shape)
    return folder, info, shape


def _index_lines(folder):
    lines = []
    for name in sorted(os.listdir(os.path.join(folder, "index"))):
        assert re.fullmatch(r"utterances-\d{5}-of-\d{5}\.jsonl", name)
        with open(os.path.join(folder, "index", name), encoding="utf-8") as f:
            lines += [json.loads(line) for line in f]
    return lines


def test_the_corpus_reads_back_through_the_feature_records_reader(corpus):
    from speechpipe.io import records

    folder, info, shape = corpus
    index = {line["utterance"]: line for line in _index_lines(folder)}
    assert len(index) == shape.utterances == 80
    speakers_of = defaultdict(set)
    for split in bs.SPLITS:
        shards = records.shard_paths(folder, split)
        assert len(shards) >= 2 and len(shards) == info["shards"][split]
        read = list(records.read_split(folder, split))
        assert len(read) == info["utterances"][split]
        for u in read:
            line = index[u.utterance]
            assert (line["speaker"], line["session"], line["split"]) == (u.speaker, u.session, split)
            assert u.features.shape == (line["num_frames"], shape.bins) and u.features.dtype.name == "float32"
            assert shape.min_frames <= line["num_frames"] <= shape.max_frames
            assert (
                line["duration"] == pytest.approx(u.duration) == pytest.approx((line["num_frames"] - 1) / 100 + 0.025)
            )
            speakers_of[split].add(u.speaker)
    assert {s: len(v) for s, v in speakers_of.items()} == {"train": 16, "validation": 2, "test": 2}
    assert not (speakers_of["train"] & speakers_of["validation"] or speakers_of["train"] & speakers_of["test"])
    with open(os.path.join(folder, "global_stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    assert len(stats["mean"]) == len(stats["std"]) == shape.bins and stats["frames"] > 0


def test_the_pair_job_resolves_the_corpus_as_a_feature_job_output(corpus):
    from speechpipe.jobs import pairs_job
    from speechpipe.speakers.block_records import BlockConfig

    folder, info, shape = corpus
    source = pairs_job.resolve_input(folder)
    assert source.kind == "index" and len(source.paths) == sum(info["shards"].values())
    assert source.features.n_bins == shape.bins and source.features.normalization == "global"
    assert source.features_from.endswith("summary.json")
    blocks = pairs_job.resolve_blocks_input(folder, ["train"], BlockConfig(segment_frames=40, stored_frames=40))
    assert len(blocks.shards["train"]) == info["shards"]["train"] and blocks.n_bins == shape.bins


def test_the_plan_is_voxceleb_shaped_seeded_and_speaker_disjoint():
    shape = bs.CorpusShape(speakers=30, seed=3)
    plan = bs.plan_corpus(shape)
    assert plan == bs.plan_corpus(shape)
    assert plan != bs.plan_corpus(bs.CorpusShape(speakers=30, seed=4))
    every = [u for items in plan.values() for u in items]
    assert len(every) == 300 and len({u.utterance for u in every}) == 300
    assert sorted(u.number for u in every) == list(range(300))
    sessions = defaultdict(set)
    for u in every:
        assert re.fullmatch(r"id1\d{4}/[A-Za-z0-9_-]{11}/\d{5}", u.utterance)
        assert u.utterance.startswith(f"{u.speaker}/{u.session}/")
        assert shape.min_frames <= u.frames <= shape.max_frames
        sessions[u.speaker].add(u.session)
    assert all(2 <= len(s) <= 4 for s in sessions.values())
    assert set(Counter(u.speaker for u in every).values()) == {10}
    split_of = {u.speaker: u.split for u in every}
    assert all(split_of[u.speaker] == u.split for u in every)
    assert Counter(split_of.values()) == {"train": 24, "validation": 3, "test": 3}


def test_features_depend_on_the_utterance_not_the_order_and_carry_the_speaker():
    import numpy as np

    shape = bs.CorpusShape(speakers=20, **TINY)
    plan = bs.plan_corpus(shape)["train"]
    a, b = plan[0], next(u for u in plan if u.speaker != plan[0].speaker)
    np.testing.assert_array_equal(bs.features_of(a, shape), bs.features_of(a, shape))
    same = [u for u in plan if u.speaker == a.speaker and u is not a][0]
    mean = lambda u: bs.features_of(u, shape).mean(axis=0)  # noqa: E731
    assert np.linalg.norm(mean(a) - mean(same)) < np.linalg.norm(mean(a) - mean(b))


def test_sizes_scale_by_whole_speakers_and_a_too_small_corpus_is_refused():
    assert bs.shape_at(1, 2000).speakers == 200 and bs.shape_at(16, 2000).utterances == 32_000
    assert bs.shape_at(4, 2000, 0.1).speakers == 80
    assert bs.split_counts(200) == {"train": 160, "validation": 20, "test": 20}
    assert bs.split_counts(20) == {"train": 16, "validation": 2, "test": 2}
    with pytest.raises(ValueError, match="P = 16"):
        bs.check_shape(bs.shape_at(1, 2000, 0.05))
    assert bs.shape_at(1, 2000).name() != bs.shape_at(1, 2000, seed=1).name()


def test_a_cached_corpus_is_reused(corpus, tmp_path):
    folder, info, shape = corpus
    stamp = os.path.getmtime(os.path.join(folder, bs.CORPUS_FILE))
    again, again_info = bs.ensure_corpus(os.path.dirname(folder), shape)
    assert again == folder and again_info == info
    assert os.path.getmtime(os.path.join(folder, bs.CORPUS_FILE)) == stamp


def test_the_tree_sampler_counts_children_with_psutil_and_from_proc():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"])
    try:
        total, own, count = bs.tree_rss(os.getpid())
        proc_total, proc_own, proc_count = bs._proc_tree_rss(os.getpid())
        assert count == proc_count >= 2 and total > own > 0
        assert abs(proc_total - total) < 0.2 * total
    finally:
        child.kill()
        child.wait()


def test_watch_sees_the_peak_of_a_child_and_kills_past_the_limit(tmp_path):
    grow = "import time; x = bytearray(200 << 20); x[::4096] = b'1' * len(x[::4096]); time.sleep(1.0)"
    watched = bs.watch([sys.executable, "-c", grow], str(tmp_path / "a.log"), 0.05, 0, 60)
    assert watched.returncode == 0 and not watched.killed
    assert watched.peak_tree_bytes >= 200 << 20 and watched.samples >= 3
    watched = bs.watch([sys.executable, "-c", grow + "; time.sleep(30)"], str(tmp_path / "b.log"), 0.05, 100, 60)
    assert "max-rss-mb" in watched.killed and watched.seconds < 20
    done = tmp_path / "done.json"
    report = f"import time; open({str(done)!r}, 'w').close(); time.sleep(30)"
    watched = bs.watch([sys.executable, "-c", report], str(tmp_path / "c.log"), 0.05, 0, 60, str(done), 0.5)
    assert "after reporting" in watched.killed and watched.seconds < 20


def _fake_results():
    def stage(rss, seconds, before=500.0, **extra):
        return {"peak_rss_mb": rss, "seconds": seconds, "cpu_seconds": seconds / 2, "rss_before_mb": before, **extra}

    return {
        "1x": {
            "trials": stage(1000, 10),
            "training_input": stage(2000, 10),
            "input_pipeline": stage(700, 25, segments_per_s=40_000),
        },
        "4x": {
            "trials": stage(1050, 35),
            "training_input": stage(6000, 40),
            "input_pipeline": stage(710, 25, segments_per_s=38_000),
        },
        "16x": {
            "trials": stage(1100, 150),
            "training_input": {"error": "killed: its processes held 14000 MB", "peak_rss_mb": 14000},
            "input_pipeline": stage(720, 25, segments_per_s=9_000),
        },
    }


def test_ratios_are_over_the_smallest_size_and_skip_failures():
    rel = bs.ratios(_fake_results(), [1, 4, 16])
    assert rel["trials"] == {
        "4x/1x": {"rss": 1.05, "seconds": 3.5, "cpu_seconds": 3.5},
        "16x/1x": {"rss": 1.1, "seconds": 15.0, "cpu_seconds": 15.0},
    }
    assert rel["training_input"] == {"4x/1x": {"rss": 3.0, "seconds": 4.0, "cpu_seconds": 4.0}}
    assert rel["input_pipeline"]["16x/1x"]["segments_per_s"] == 0.225


def test_verdicts_say_within_or_not_and_why_none():
    lines = bs.verdicts(_fake_results(), [1, 4, 16])
    assert "x1.10" in lines["trials"] and lines["trials"].endswith("within 1.3x")
    assert "NOT" not in lines["trials"]
    assert lines["training_input"].startswith("training_input: no verdict (killed")
    assert (
        "9,000 to 40,000" in lines["input_pipeline_throughput"]
        and "does NOT meet" in lines["input_pipeline_throughput"]
    )
    grown = _fake_results()
    grown["16x"]["training_input"] = {"peak_rss_mb": 9000, "seconds": 150, "rss_before_mb": 500}
    assert "NOT within 1.3x" in bs.verdicts(grown, [1, 4, 16])["training_input"]


def test_a_stage_whose_code_changed_between_sizes_is_named():
    results = _fake_results()
    assert bs.code_changes(results, [1, 4, 16]) == []
    for label, code in (("1x", "a"), ("4x", "a"), ("16x", "b")):
        results[label]["trials"]["code"] = code
        results[label]["input_pipeline"]["code"] = "a"
    (line,) = bs.code_changes(results, [1, 4, 16])
    assert line.startswith("trials: ") and "'16x': 'b'" in line


def test_the_table_has_a_row_per_stage_and_the_ratio_columns():
    table = bs.format_table(_fake_results(), [1, 4, 16]).splitlines()
    assert table[0].split() == (
        "stage 1x MB 1x s 4x MB 4x s 16x MB 16x s RSS 4x/1x s 4x/1x cpu 4x/1x RSS 16x/1x s 16x/1x cpu 16x/1x".split()
    )
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert list(rows) == ["training_input", "trials", "input_pipeline", "segments/s"]  # STAGES order
    assert rows["trials"] == [
        "trials",
        "1000",
        "10.0",
        "1050",
        "35.0",
        "1100",
        "150.0",
        "x1.05",
        "x3.50",
        "x3.50",
        "x1.10",
        "x15.00",
        "x15.00",
    ]
    assert rows["training_input"][5:8] == ["killed", "-", "x3.00"] and rows["training_input"][-3:] == ["-"] * 3
    assert rows["segments/s"][1:4] == ["40,000", "38,000", "9,000"]


def test_options():
    args = bs.build_parser().parse_args([])
    assert args.scales == [1, 4, 16] and args.stages == list(bs.STAGES) and args.base_utterances == 2000
    args = bs.build_parser().parse_args(
        ["--scales", "1,4", "--stages", "trials,training_input", "--scale-factor", "0.1", "--out", "x.json"]
    )
    assert args.scales == [1, 4] and args.stages == ["training_input", "trials"] and args.scale_factor == 0.1
    for bad in (["--scales", "4,1"], ["--scales", "1,1"], ["--scales", "0,1"], ["--stages", "nope"]):
        with pytest.raises(SystemExit):
            bs.build_parser().parse_args(bad)
    # What a stage process is given parses back to the same stage options.
    args = bs.build_parser().parse_args(["--max-steps", "7", "--beam-arg=--direct_running_mode=in_memory"])
    child = bs.build_parser().parse_args(["--child", "trainer"] + bs.child_options(args))
    assert (child.max_steps, child.eval_every, child.beam_arg) == (7, args.eval_every, args.beam_arg)
