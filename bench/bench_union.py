"""ExamplesUnion: listing the spans' shards (a manifest per split) against copying them.

    .venv/bin/python -m bench bench_union                        # 2 and 10 spans of 8 MB each
    .venv/bin/python -m bench bench_union --span-mb 32 --spans 2,10,20

1. Synthetic span artifacts in the feature job's layout: `Split-{train,validation,test}/`
   (80 / 10 / 10 % of the records) with `data_tfrecord-SSSSS-of-NNNNN` shards of real records
   (`speechpipe.io.records.encode_example`: 80 log-mel bins x 200-500 frames, float32, about
   100 KB each, as a 2-5 s utterance), a `summary.json` with the per-shard counts and a
   `global_stats.json`, each published as an Examples artifact as FeatureGen publishes it.
2. For 2 and for 10 spans, in the same run: the baseline, the copying union (every span's
   split files copied into the union artifact under span-prefixed names, 16 copies at a time
   through TFX's fileio, then counted; the way the node worked before it listed shards, kept
   here only as the baseline), against `speechpipe.components.examples_union.union_examples`,
   which writes one manifest per split. Wall time and bytes written (files under the union
   artifact) of each, best of `--repeat` runs, and their ratios.
3. What the manifest costs the reader: `speechpipe.training.expand_files` on a union split
   (reads the manifest, checks every listed shard's size) against a glob of the copied folder.

On a local disk the copy runs at page-cache speed, which flatters it: on object storage every
copied byte goes through the union's pod, where the manifest union still writes a few KB.
Nothing is asserted about time: the figures are printed (and saved as JSON with --out).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SPLIT_FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
BINS = 80
COPY_THREADS = 16


# ----------------------------------------------------------------------------------------------
# Synthetic spans


def make_span(root: str, span: int, span_bytes: int, shards: int, seed: int = 0) -> Dict[str, object]:
    """One span's feature output under `root`, about `span_bytes` of records; returns its summary."""
    from speechpipe.io import records
    from speechpipe.io.example_proto import frame_record

    rng = np.random.default_rng([seed, span])
    good: Dict[str, int] = {}
    counts: Dict[str, Dict[str, int]] = {}
    for split, fraction in SPLIT_FRACTIONS:
        folder = records.split_dir(root, split)
        os.makedirs(folder, exist_ok=True)
        budget, written, n = span_bytes * fraction, 0, 0
        frames_out = [
            open(os.path.join(folder, f"{records.SHARD_PREFIX}-{i:05d}-of-{shards:05d}"), "wb") for i in range(shards)
        ]
        per_shard = [0] * shards
        try:
            while written < budget or n == 0:
                frames = int(rng.integers(200, 501))
                example = records.UtteranceFeatures(
                    utterance=f"id{span:03d}{n % 50:02d}/s{span}/{n:06d}",
                    speaker=f"id{span:03d}{n % 50:02d}",
                    session=f"s{span}",
                    split=split,
                    features=rng.standard_normal((frames, BINS), dtype=np.float32),
                    duration=frames / 100,
                )
                framed = frame_record(records.encode_example(example))
                frames_out[n % shards].write(framed)
                per_shard[n % shards] += 1
                written += len(framed)
                n += 1
        finally:
            for f in frames_out:
                f.close()
        good[split] = n
        counts[split] = {f"{records.SHARD_PREFIX}-{i:05d}-of-{shards:05d}": c for i, c in enumerate(per_shard)}
    summary = {
        "good": good,
        "shards": counts,
        "inputs": sum(good.values()),
        "dead_letter": {"total": 0, "by_reason": {}},
        "features": {"kind": "logmel", "n_mels": BINS},
    }
    with open(os.path.join(root, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f)
    with open(os.path.join(root, "global_stats.json"), "w", encoding="utf-8") as f:
        json.dump({"mean": [0.0] * BINS, "std": [1.0] * BINS, "frames": 1}, f)
    return summary


def span_artifact(uri: str, span: int, summary: Dict[str, object]):
    """The span as FeatureGen publishes it (components/feature_gen.py)."""
    from tfx.types import artifact_utils, standard_artifacts

    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    artifact.id = 1000 + span
    artifact.span = span
    artifact.version = 0
    artifact.split_names = artifact_utils.encode_split_names([s for s, _ in SPLIT_FRACTIONS])
    artifact.set_string_custom_property("feature_config", json.dumps(summary["features"], sort_keys=True))
    artifact.set_string_custom_property("good", json.dumps(summary["good"], sort_keys=True))
    artifact.set_string_custom_property("dead_letter", json.dumps(summary["dead_letter"], sort_keys=True))
    artifact.set_int_custom_property("inputs", int(summary["inputs"]))
    return artifact


def _output(uri: str):
    from tfx.types import standard_artifacts

    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    return artifact


def tree_bytes(root: str) -> Tuple[int, int]:
    """(files, bytes) of the plain files under a folder."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    return len(files), sum(os.path.getsize(f) for f in files)


# ----------------------------------------------------------------------------------------------
# The baseline: the copying union


def copying_union(members: Sequence[Tuple[int, object]], out: str) -> Dict[str, object]:
    """Every member's split files copied into `out/Split-<split>/` as
    `data_tfrecord-span<i>-...`, 16 at a time through TFX's fileio, counted and checked; the first
    span's global_stats.json and a union.json beside them."""
    from tfx.dsl.io import fileio

    from speechpipe.io import storage

    def files(folder: str) -> List[Tuple[str, int]]:
        found = []
        for path in sorted(fileio.glob(storage.join(folder, "*"))):
            stat = fileio.stat(path)
            if not stat.is_directory:
                found.append((storage.basename(path), int(stat.length)))
        return found

    splits = [s for s, _ in SPLIT_FRACTIONS]
    copies, expected = [], {split: [0, 0] for split in splits}
    record: Dict[str, object] = {"splits": splits, "members": []}
    for index, member in members:
        for split in splits:
            source, target = storage.join(member.uri, f"Split-{split}"), storage.join(out, f"Split-{split}")
            for name, size in files(source):
                new = f"data_tfrecord-span{index}-{name[len('data_tfrecord-') :]}"
                copies.append((storage.join(source, name), storage.join(target, new)))
                expected[split][0] += 1
                expected[split][1] += size
        record["members"].append({"span": member.span, "uri": member.uri})
    for split in splits:
        storage.makedirs(storage.join(out, f"Split-{split}"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:
        list(pool.map(lambda c: fileio.copy(c[0], c[1], overwrite=False), copies))
    for split in splits:
        found = files(storage.join(out, f"Split-{split}"))
        if [len(found), sum(size for _, size in found)] != expected[split]:
            raise RuntimeError(f"split {split}: the copy came out short")
    fileio.copy(storage.join(members[0][1].uri, "global_stats.json"), storage.join(out, "global_stats.json"))
    storage.write_json(storage.join(out, "union.json"), record, indent=1, sort_keys=True)
    return record


# ----------------------------------------------------------------------------------------------
# The measurement


def _best(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(
    work: str, spans: int, span_paths: List[str], summaries: List[Dict[str, object]], repeat: int
) -> Dict[str, object]:
    from speechpipe.components.examples_union import union_examples
    from speechpipe.training import expand_files

    members = [(i, span_artifact(span_paths[i], i, summaries[i])) for i in range(spans)]
    copy_dir, list_dir = os.path.join(work, f"copy{spans}"), os.path.join(work, f"list{spans}")

    def fresh(folder: str) -> str:
        if os.path.exists(folder):
            shutil.rmtree(folder)
        return folder

    copy_s = _best(repeat, lambda: copying_union(members, fresh(copy_dir)))
    list_s = _best(repeat, lambda: union_examples(members, _output(fresh(list_dir))))
    copy_files, copy_bytes = tree_bytes(copy_dir)
    list_files, list_bytes = tree_bytes(list_dir)
    train_copy, train_list = os.path.join(copy_dir, "Split-train"), os.path.join(list_dir, "Split-train")
    if sorted(map(os.path.getsize, expand_files(train_copy))) != sorted(map(os.path.getsize, expand_files(train_list))):
        raise RuntimeError("the two unions do not hold the same training shards")
    resolve_copy_s = _best(max(repeat, 3), lambda: expand_files(train_copy + "/*"))
    resolve_list_s = _best(max(repeat, 3), lambda: expand_files(train_list + "/*"))
    span_bytes = sum(tree_bytes(os.path.join(p))[1] for p in span_paths[:spans])
    return {
        "spans": spans,
        "span_bytes": span_bytes,
        "shards": sum(len(expand_files(os.path.join(list_dir, f"Split-{s}"))) for s, _ in SPLIT_FRACTIONS),
        "copy": {
            "seconds": copy_s,
            "files": copy_files,
            "bytes_written": copy_bytes,
            "resolve_train_seconds": resolve_copy_s,
        },
        "manifest": {
            "seconds": list_s,
            "files": list_files,
            "bytes_written": list_bytes,
            "resolve_train_seconds": resolve_list_s,
        },
        "ratios": {
            "seconds": copy_s / list_s if list_s else None,
            "bytes_written": copy_bytes / list_bytes if list_bytes else None,
            "resolve_train_seconds": resolve_list_s / resolve_copy_s if resolve_copy_s else None,
        },
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} KB"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_union", description=__doc__.split("\n\n")[0])
    parser.add_argument("--span-mb", type=float, default=8.0, help="records per span, MB (default 8)")
    parser.add_argument("--spans", default="2,10", help="union sizes to measure, comma-separated (default 2,10)")
    parser.add_argument("--shards", type=int, default=4, help="shards per split and span (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each union; the best is kept (default 3)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] if __name__ == "__main__" else []))
    sizes = sorted({int(n) for n in args.spans.split(",")})
    if sizes[0] < 2:
        raise SystemExit("--spans: a union joins 2 or more spans")

    work = args.work or tempfile.mkdtemp(prefix="bench_union_")
    os.makedirs(work, exist_ok=True)
    results: Dict[str, object] = {
        "span_mb": args.span_mb,
        "shards_per_split": args.shards,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    try:
        started = time.perf_counter()
        span_paths, summaries = [], []
        for span in range(sizes[-1]):
            path = os.path.join(work, "spans", f"span{span}")
            span_paths.append(path)
            summaries.append(make_span(path, span, int(args.span_mb * 1e6), args.shards))
        print(
            f"{sizes[-1]} synthetic spans of {_mb(tree_bytes(span_paths[0])[1])} "
            f"({sum(summaries[0]['good'].values())} records, {args.shards} shards a split) "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        print(
            f"{'spans':>5} {'features':>11} {'way':>9} {'seconds':>9} {'files':>6} {'written':>11} "
            f"{'train resolve':>14}"
        )
        for spans in sizes:
            run = measure(work, spans, span_paths, summaries, args.repeat)
            results["runs"].append(run)
            for way in ("copy", "manifest"):
                r = run[way]
                print(
                    f"{spans:5d} {_mb(run['span_bytes']):>11} {way:>9} {r['seconds']:9.4f} {r['files']:6d} "
                    f"{_mb(r['bytes_written']):>11} {1000 * r['resolve_train_seconds']:11.2f} ms",
                    flush=True,
                )
            ratios = run["ratios"]
            print(
                f"{spans:5d} spans: the manifest union is {ratios['seconds']:,.0f}x faster and writes "
                f"{ratios['bytes_written']:,.0f}x fewer bytes ({_mb(run['manifest']['bytes_written'])} for "
                f"{run['shards']} shards); resolving the train split costs {ratios['resolve_train_seconds']:.1f}x "
                "a glob of the copied folder",
                flush=True,
            )
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
            print(f"results in {args.out}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
