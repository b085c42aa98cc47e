"""bench/bench_union.py at a tiny size: it runs, and reports both ways for every union size."""

import json

from bench import bench_union


def test_bench_union_reports_both_ways_for_each_union_size(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert (
        bench_union.main(
            [
                "--span-mb",
                "0.3",
                "--spans",
                "2,3",
                "--shards",
                "2",
                "--repeat",
                "1",
                "--work",
                str(tmp_path / "work"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert [run["spans"] for run in results["runs"]] == [2, 3]
    for run in results["runs"]:
        assert run["shards"] == run["spans"] * 3 * 2  # spans x splits x shards
        for way in ("copy", "manifest"):
            assert set(run[way]) == {"seconds", "files", "bytes_written", "resolve_train_seconds"}
            assert run[way]["seconds"] > 0 and run[way]["resolve_train_seconds"] > 0
        # The copy writes every span's features; the manifest union a few KB, three manifests,
        # union.json and global_stats.json.
        assert run["copy"]["bytes_written"] >= run["span_bytes"] - 4096 * run["spans"]
        assert run["manifest"]["files"] == 5 and run["manifest"]["bytes_written"] < run["span_bytes"] / 10
        assert set(run["ratios"]) == {"seconds", "bytes_written", "resolve_train_seconds"}
        assert f"{run['spans']} spans: the manifest union is" in printed
