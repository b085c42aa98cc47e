"""The back-end sample: the rule (speechpipe.speakers.backend_sample), the Beam writer
(speechpipe.jobs.speaker_blocks.WriteBackendSample) and the pair job's `backend/<split>/`.

Feature records come from tests.test_speaker_blocks.write_features (the feature job's layout,
every frame tracing its utterance), with speakers shaped for each branch of the rule."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections import Counter
from typing import Dict, List, Tuple

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to

from speechpipe.config import FeatureConfig
from speechpipe.io import records
from speechpipe.io.example_proto import read_tfrecord_file
from speechpipe.jobs import pairs_job
from speechpipe.jobs.speaker_blocks import WriteBackendSample, check_written
from speechpipe.speakers import backend_sample as bs
from speechpipe.speakers.embedder.config import EmbedderTrainConfig
from speechpipe.speakers.pairs import PairsInputError
from speechpipe.speakers.speaker_eval import balanced_utterances
from speechpipe.validation import ConfigError
from tests.test_speaker_blocks import SPEAKERS, write_features

IN_MEMORY = "--direct_running_mode=in_memory"

# 8 speakers, 58 utterances (short ones included: 20 and 39 frames), sizes 1 to 20.
SAMPLE_SPEAKERS = {
    **SPEAKERS,
    "id10006": [("s0", 150)],
    "id10007": [("s0", 100), ("s1", 100)],
    "id10008": [(f"s{i % 4}", 300 - 9 * i) for i in range(8)],
}


def utterance_ids(speakers: Dict[str, List[Tuple[str, int]]] = SAMPLE_SPEAKERS) -> Dict[str, List[str]]:
    """speaker -> its utterance ids, as write_features names them."""
    return {s: [f"{s}/{session}/{i:05d}" for i, (session, _) in enumerate(u)] for s, u in speakers.items()}


def expected_sample(max_utterances: int, seed: int) -> Dict[str, List[str]]:
    ids = utterance_ids()
    quotas = bs.speaker_quotas({s: len(u) for s, u in ids.items()}, max_utterances, seed)
    return {s: bs.pick_utterances(s, ids[s], q, seed) for s, q in quotas.items()}


# ----------------------------------------------------------------------------------------------
# The rule


def balanced_sizes(sizes: Dict[str, int], cap: int) -> Counter:
    """Utterances per speaker that speaker_eval.balanced_utterances takes."""
    speakers = [s for s, n in sizes.items() for _ in range(n)]
    return Counter(speakers[i] for i in balanced_utterances(speakers, cap))


@pytest.mark.parametrize(
    ("sizes", "cap"),
    [
        ({"a": 3, "b": 5, "c": 1}, 9),  # under the cap: everything
        ({"a": 3, "b": 5, "c": 1}, 100),
        ({"a": 20, "b": 8, "c": 3, "d": 10, "e": 6}, 20),  # equal quota 4: 4+4+3+4+4
        ({"a": 20, "b": 8, "c": 3, "d": 10, "e": 6}, 40),  # quota 9
        ({"a": 200, "b": 7, "c": 1, "d": 90, "e": 2, "f": 40}, 100),
        ({f"s{i}": 2 + i % 5 for i in range(30)}, 60),  # exactly 2 each
    ],
)
def test_quotas_are_balanced_utterances_sizes(sizes, cap):
    quotas = bs.speaker_quotas(sizes, cap, seed=0)
    assert quotas == dict(balanced_sizes(sizes, cap))
    assert sum(quotas.values()) <= cap


@pytest.mark.parametrize(("sizes", "cap"), [({f"s{i}": 1 + i % 4 for i in range(30)}, 21), ({"a": 5, "b": 5}, 3)])
def test_too_many_speakers_for_two_each_gives_cap_over_two_speakers(sizes, cap):
    quotas = bs.speaker_quotas(sizes, cap, seed=0)
    reference = balanced_sizes(sizes, cap)
    assert len(quotas) == len(reference) == cap // 2
    assert all(q == min(2, sizes[s]) for s, q in quotas.items())
    assert sum(quotas.values()) <= cap


def test_equal_quota_is_the_largest_that_fits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(1, 60, rng.integers(1, 40))
        cap = int(rng.integers(2 * sizes.size, sizes.sum())) if sizes.sum() > 2 * sizes.size else None
        if cap is None:
            continue
        q = bs.equal_quota(sizes, cap)
        assert np.minimum(sizes, q).sum() <= cap < np.minimum(sizes, q + 1).sum()


def test_choice_is_seeded_and_independent_of_order():
    ids = [f"spk/s{i % 3}/{i:05d}" for i in range(50)]
    picked = bs.pick_utterances("spk", ids, 10, seed=7)
    assert len(picked) == 10 and picked == sorted(picked) and set(picked) <= set(ids)
    assert bs.pick_utterances("spk", ids[::-1], 10, seed=7) == picked
    assert set(picked) < set(bs.pick_utterances("spk", ids, 11, seed=7))  # a larger quota adds to the choice
    assert bs.pick_utterances("spk", ids, 10, seed=8) != picked
    assert bs.pick_utterances("spk", ids, 80, seed=7) == sorted(ids)
    sizes = {f"s{i:03d}": 5 for i in range(100)}
    chosen = bs.speaker_quotas(sizes, 40, seed=1)
    assert chosen == bs.speaker_quotas(dict(reversed(list(sizes.items()))), 40, seed=1)
    assert len(chosen) == 20 and set(bs.speaker_quotas(sizes, 40, seed=2)) != set(chosen)


def test_cap_is_checked_and_defaults_to_the_trainers():
    assert pairs_job.BACKEND_UTTERANCES == EmbedderTrainConfig().backend_max_utterances == 10_000
    assert bs.check_max_utterances(0) == 0 and bs.check_max_utterances(4) == 4
    with pytest.raises(ConfigError, match="need 0"):
        bs.check_max_utterances(3)


def test_rule_imports_neither_tensorflow_nor_beam():
    code = (
        "import sys, speechpipe.speakers.backend_sample\n"
        "assert not {'tensorflow', 'apache_beam'} & set(sys.modules), 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# The writer, on a TestPipeline


def index_elements(speakers: Dict[str, List[Tuple[str, int]]] = SAMPLE_SPEAKERS) -> List[tuple]:
    return [
        (s, (f"{s}/{session}/{i:05d}", session, "train", frames))
        for s, u in speakers.items()
        for i, (session, frames) in enumerate(u)
    ]


def run_sample(features: str, out: str, cap: int, index: List[tuple], seed: int = 0) -> Dict[str, object]:
    shards = sorted(glob.glob(os.path.join(features, "Split-train", "data_tfrecord-*")))
    report = os.path.join(out, "counts.json")  # the DoFns run on copies: the counts come back in a file
    with BeamTestPipeline(options=PipelineOptions([IN_MEMORY])) as p:
        inputs = {"index": p | "Index" >> beam.Create(index), "shards": p | "Shards" >> beam.Create(shards)}
        counts = inputs | WriteBackendSample("train", cap, seed, out)
        saved = counts | beam.Map(lambda c: open(report, "w", encoding="utf-8").write(json.dumps(c)) > 0)
        assert_that(saved, equal_to([True]))
    with open(report, encoding="utf-8") as f:
        return json.load(f)


def sample_ids(folder: str) -> List[str]:
    return sorted(
        records.decode_example(r).utterance for path in records.resolve_shards(folder) for r in read_tfrecord_file(path)
    )


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> str:
    root = write_features(str(tmp_path_factory.mktemp("features")), SAMPLE_SPEAKERS)
    # The feature settings as the feature job records them, so that the pair job reads 4 bins.
    with open(os.path.join(root, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"features": FeatureConfig(n_mels=4).to_json()}, f)
    return root


def test_writer_takes_everything_under_the_cap_short_ones_too(features, tmp_path):
    counts = run_sample(features, str(tmp_path), 100, index_elements())
    everything = sorted(u for ids in utterance_ids().values() for u in ids)
    assert sample_ids(str(tmp_path)) == everything
    assert counts["utterances"] == counts["of_utterances"] == 58 and counts["bound"] is False


def test_writer_with_too_many_speakers_for_two_each(features, tmp_path):
    counts = run_sample(features, str(tmp_path), 6, index_elements(), seed=5)
    picked = sample_ids(str(tmp_path))
    assert picked == sorted(u for ids in expected_sample(6, 5).values() for u in ids)
    assert len({u.split("/")[0] for u in picked}) == counts["speakers"] == 3
    assert counts["of_speakers"] == 8 and counts["bound"] is True


def test_writer_fails_when_an_indexed_utterance_is_not_written(features, tmp_path):
    # The index names an utterance the records lack: the sample would be one short.
    index = index_elements() + [("id10006", ("id10006/s9/00009", "s9", "train", 100))]
    with pytest.raises(Exception, match="1 missing, e.g. id10006/s9/00009"):
        run_sample(features, str(tmp_path), 100, index)


def test_check_written_names_lost_and_repeated_records():
    plan = {"quotas": {"a": 2}, "counts": {}}
    chosen = {"a/1": ("a", 10), "a/2": ("a", 10)}
    assert check_written([("f0", ["a/1"], 5), ("f1", ["a/2"], 5)], plan, chosen, "train") == {"shards": 2, "bytes": 10}
    with pytest.raises(PairsInputError, match="1 missing, e.g. a/2"):
        check_written([("f0", ["a/1"], 5)], plan, chosen, "train")
    with pytest.raises(PairsInputError, match="1 written twice, e.g. a/1"):
        check_written([("f0", ["a/1", "a/2"], 5), ("f1", ["a/1"], 5)], plan, chosen, "train")


# ----------------------------------------------------------------------------------------------
# The pair job


def run_job(features: str, out: str, *extra: str) -> Dict[str, object]:
    argv = ["--features", features, "--out", out, "--block_splits", "train", "--blocks_per_speaker", "1"]
    assert pairs_job.run([*argv, *extra, IN_MEMORY]) == 0
    with open(os.path.join(out, pairs_job.SUMMARY), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def job(features, tmp_path_factory) -> Tuple[str, Dict[str, object]]:
    out = str(tmp_path_factory.mktemp("pairs"))
    return out, run_job(features, out, "--backend_utterances", "20", "--seed", "3", "--block_shard_mb", "0.005")


def test_job_writes_the_chosen_utterances_byte_for_byte(features, job):
    out, summary = job
    folder = os.path.join(out, bs.BACKEND_DIR, "train")
    expected = expected_sample(20, 3)
    # 8 speakers under a cap of 20: the equal quota 2 (3 would take 3+3+3+3+3+1+2+3 = 21)
    assert {s: len(u) for s, u in expected.items()} == {s: min(2, len(u)) for s, u in SAMPLE_SPEAKERS.items()}
    files = records.resolve_shards(folder)
    assert files == sorted(glob.glob(os.path.join(folder, bs.BACKEND_PATTERN))) and len(files) > 1
    written = {records.decode_example(r).utterance: r for path in files for r in read_tfrecord_file(path)}
    assert sorted(written) == sorted(u for ids in expected.values() for u in ids)
    assert len(written) <= 20 and {u.split("/")[0] for u in written} == set(SAMPLE_SPEAKERS)
    originals = {
        records.decode_example(r).utterance: r
        for path in records.resolve_shards(os.path.join(features, "Split-train"))
        for r in read_tfrecord_file(path)
    }
    assert all(written[u] == originals[u] for u in written)  # whole records, unchanged


def test_job_sample_reads_with_the_trainers_reader(job):
    from speechpipe.training import record_dataset

    out, _ = job
    folder = os.path.join(out, bs.BACKEND_DIR, "train")
    expected = {u for ids in expected_sample(20, 3).values() for u in ids}
    seen = set()
    for example in record_dataset(records.resolve_shards(folder)).as_numpy_iterator():
        utterance = example["utterance"].decode()
        speaker, _, index = utterance.split("/")
        frames = SAMPLE_SPEAKERS[speaker][int(index)][1]
        assert example["features"].shape == (frames, 4) and example["speaker"].decode() == speaker
        assert np.all(example["features"][:, 1] == np.arange(frames))
        seen.add(utterance)
    assert seen == expected


def test_job_summary_counts_the_sample(job):
    out, summary = job
    backend = summary["backend"]
    assert backend["max_utterances"] == 20 and backend["seed"] == 3
    train = backend["splits"]["train"]
    files = records.resolve_shards(os.path.join(out, bs.BACKEND_DIR, "train"))
    assert {k: train[k] for k in ("utterances", "speakers", "of_utterances", "of_speakers", "bound")} == {
        "utterances": 15,
        "speakers": 8,
        "of_utterances": 58,
        "of_speakers": 8,
        "bound": True,
    }
    assert train["shards"] == len(files) and train["bytes"] == sum(os.path.getsize(f) for f in files)
    assert list(backend["splits"]) == ["train"]


def test_job_without_a_sample(features, tmp_path, capsys):
    summary = run_job(features, str(tmp_path), "--backend-utterances", "0")
    assert not os.path.exists(os.path.join(str(tmp_path), bs.BACKEND_DIR))
    assert summary["backend"]["max_utterances"] == 0 and summary["backend"]["splits"] == {}
    assert "back-end sample" not in capsys.readouterr().out
    with pytest.raises(PairsInputError, match="--backend_utterances"):
        run_job(features, str(tmp_path / "bad"), "--backend_utterances", "3")
