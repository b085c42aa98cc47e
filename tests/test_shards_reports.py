"""speechpipe.io.shards: only reported temporary files become shards; unreported ones (a failed or
retried bundle's) are deleted, and said so, so that a read-back mismatch can tell a lost report
(files deleted by the finalize step) from records that never reached the sink (nothing deleted)."""

import logging
import os

from speechpipe.io.example_proto import read_tfrecord_file
from speechpipe.io.shards import TFRECORD, ShardedOutput, _finalize, _WriteTempShardsFn


def _bundle(outputs, temp_dir, payloads):
    """One bundle of the write step, as the runner drives it; returns its reports."""
    fn = _WriteTempShardsFn(outputs, temp_dir)
    fn.start_bundle()
    for payload in payloads:
        fn.process((0, payload))
    return [report.value for report in fn.finish_bundle()]


def test_only_reported_files_become_shards_and_unreported_ones_are_deleted_out_loud(tmp_path, caplog):
    root = str(tmp_path)
    outputs = [ShardedOutput(os.path.join(root, "Split-a", "data_tfrecord"), "", TFRECORD)]
    temp_dir = os.path.join(root, ".temp-shards-x")
    reported = _bundle(outputs, temp_dir, [b"a", b"b"]) + _bundle(outputs, temp_dir, [b"c"])
    # a bundle that failed after writing: its file is there, its report never reached the finalize step
    failed = _bundle(outputs, temp_dir, [b"x", b"y", b"z"])
    assert len(os.listdir(temp_dir)) == 3
    with caplog.at_level(logging.WARNING, logger="speechpipe.io.shards"):
        shards = list(_finalize(None, reported, outputs, temp_dir, 0))
    assert sorted(count for _, count in shards) == [1, 2]
    records = sorted(r for path, _ in shards for r in read_tfrecord_file(path))
    assert records == [b"a", b"b", b"c"]
    assert not os.path.exists(temp_dir)
    failed_name = os.path.basename(failed[0][2])
    assert "deleting 1 unreported temporary file(s)" in caplog.text and failed_name in caplog.text


def test_nothing_unreported_nothing_said(tmp_path, caplog):
    root = str(tmp_path)
    outputs = [ShardedOutput(os.path.join(root, "Split-a", "data_tfrecord"), "", TFRECORD)]
    temp_dir = os.path.join(root, ".temp-shards-y")
    reports = _bundle(outputs, temp_dir, [b"a"])
    with caplog.at_level(logging.WARNING, logger="speechpipe.io.shards"):
        shards = list(_finalize(None, reports, outputs, temp_dir, 0))
    assert [count for _, count in shards] == [1]
    assert "unreported" not in caplog.text
