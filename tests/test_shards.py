"""speechpipe.io.shards: the feature job's one sink for its TFRecords, index and dead letter."""

import glob
import gzip
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from speechpipe.io.example_proto import read_tfrecord_file
from speechpipe.io.shards import LINES, TFRECORD, ShardedOutput, WriteShards, _finalize

IN_MEMORY = ["--direct_running_mode=in_memory"]


def _outputs(root: str, gzip_records: bool = False):
    return [
        ShardedOutput(
            os.path.join(root, "Split-a", "data_tfrecord"), ".gz" if gzip_records else "", TFRECORD, gzip_records
        ),
        ShardedOutput(os.path.join(root, "Split-empty", "data_tfrecord"), "", TFRECORD),
        ShardedOutput(os.path.join(root, "index", "lines"), ".jsonl", LINES),
    ]


def _run(root: str, records, lines, num_shards: int = 0, gzip_records: bool = False) -> None:
    with beam.Pipeline(options=PipelineOptions(IN_MEMORY)) as p:
        first = p | "Records" >> beam.Create([(0, r) for r in records])
        second = p | "Lines" >> beam.Create([(2, line) for line in lines])
        _ = (first, second) | WriteShards(_outputs(root, gzip_records), temp_root=root, num_shards=num_shards)


def _read(root: str):
    records = [r for path in sorted(glob.glob(os.path.join(root, "Split-a", "*"))) for r in read_tfrecord_file(path)]
    lines = [
        line
        for path in sorted(glob.glob(os.path.join(root, "index", "*")))
        for line in open(path, encoding="utf-8").read().splitlines()
    ]
    return records, lines


@pytest.mark.parametrize("num_shards", [0, 3])
@pytest.mark.parametrize("gzip_records", [False, True])
def test_every_payload_lands_once_and_empty_outputs_get_a_shard(tmp_path, num_shards, gzip_records):
    root = str(tmp_path)
    records = [f"record {i}".encode() * (i % 5) for i in range(200)]
    lines = [f'{{"u": "ü{i}"}}' for i in range(50)]
    _run(root, records, lines, num_shards, gzip_records)
    got_records, got_lines = _read(root)
    assert sorted(got_records) == sorted(records) and sorted(got_lines) == sorted(lines)
    a = sorted(os.listdir(os.path.join(root, "Split-a")))
    expected_count = num_shards or len(a)
    assert a == [
        f"data_tfrecord-{k:05d}-of-{expected_count:05d}{'.gz' if gzip_records else ''}" for k in range(expected_count)
    ]
    if gzip_records:
        gzip.open(os.path.join(root, "Split-a", a[0])).read()  # a real gzip stream
    # an output without a record still gets its shards (TFX's readers expect a file per split)
    empty = sorted(os.listdir(os.path.join(root, "Split-empty")))
    assert empty == [f"data_tfrecord-{k:05d}-of-{max(num_shards, 1):05d}" for k in range(max(num_shards, 1))]
    assert all(os.path.getsize(os.path.join(root, "Split-empty", name)) == 0 for name in empty)
    assert not glob.glob(os.path.join(root, ".temp-shards-*")), "temporary folder left behind"


def test_fixed_shard_count_assigns_records_by_content(tmp_path):
    """With num_shards the same records land in the same shards, run after run."""
    records = [os.urandom(64) for _ in range(100)]
    contents = []
    for run in ("a", "b"):
        root = str(tmp_path / run)
        _run(root, records, [], num_shards=4)
        contents.append(
            [sorted(read_tfrecord_file(path)) for path in sorted(glob.glob(os.path.join(root, "Split-a", "*")))]
        )
    assert contents[0] == contents[1] and sum(len(s) for s in contents[0]) == 100


def test_finalize_again_after_a_partial_rename_completes_and_a_lost_shard_fails(tmp_path):
    root = str(tmp_path)
    outputs = _outputs(root)
    temp_dir = os.path.join(root, ".temp-shards-x")
    os.makedirs(temp_dir)
    reports = []
    for k in range(2):
        path = os.path.join(temp_dir, f"0-{k}")
        open(path, "wb").close()
        reports.append((0, None, path, 0))
    first = list(_finalize(None, reports, outputs, temp_dir, 0))
    assert not os.path.exists(temp_dir)
    # a retried finalize finds the temporary files renamed already: same shards, no error
    os.makedirs(temp_dir)
    assert list(_finalize(None, reports, outputs, temp_dir, 0)) == first
    # a temporary file that is gone without its shard is an error, never a silently missing shard
    os.remove(first[0][0])
    with pytest.raises(FileNotFoundError, match="never written"):
        list(_finalize(None, reports, outputs, temp_dir, 0))
