"""StatisticsGen's memory: TFDV's statistics pass over feature records at N and 4N utterances,
with TFDV's defaults (exact top-k counts of every string value) and with the pipeline's options
(`speechpipe.components.statistics_gen.statistics_options`: sketch-based top-k), all in one run.

    python -m bench bench_statistics [--utterances N] [--frames F]

Each pass runs in a process of its own (TFDV's in-process Beam runner, as StatisticsGen runs it
on one machine) and reports its peak RSS (ru_maxrss); flat means the 4N / N ratio stays near 1.
Records are generated: random float32 features of F frames x 80 bins (each `features` blob is
distinct, as real ones are), with the ids, split, counts and phone ids the feature job writes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

SPLITS = ("train", "validation", "test")


def write_records(folder: str, utterances: int, frames: int, seed: int = 0) -> str:
    """`utterances` feature records in one TFRecord file under `folder`; returns its path."""
    import numpy as np
    import tensorflow as tf

    from speechpipe.io import records

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{records.SHARD_PREFIX}-00000-of-00001")
    with tf.io.TFRecordWriter(path) as writer:
        for k in range(utterances):
            features = rng.standard_normal((frames, 80)).astype(np.float32)
            writer.write(
                records.encode_example(
                    records.UtteranceFeatures(
                        f"utt{k:07d}",
                        f"spk{k % max(1, utterances // 10):05d}",
                        f"s{k % 3}",
                        SPLITS[k % 3],
                        features,
                        frames / 100,
                        [int(i) for i in rng.integers(0, 40, 12)],
                    )
                )
            )
    return path


def child(path: str, options: str) -> Dict[str, float]:
    """One statistics pass; its wall time and this process's peak RSS."""
    import tensorflow_data_validation as tfdv

    from speechpipe.components.statistics_gen import statistics_options

    stats_options = statistics_options() if options == "pipeline" else tfdv.StatsOptions()
    started = time.time()
    tfdv.generate_statistics_from_tfrecord(path, stats_options=stats_options)
    return {"seconds": time.time() - started, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(path: str, options: str) -> Dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_statistics", "--child", path, "--options", options],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_statistics")
    parser.add_argument("--utterances", type=int, default=500, help="N (the larger run has 4N)")
    parser.add_argument("--frames", type=int, default=300, help="frames per utterance (80 bins)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="pipeline", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.options)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        sizes = (args.utterances, 4 * args.utterances)
        paths = {n: write_records(os.path.join(tmp, f"n{n}"), n, args.frames) for n in sizes}
        megabytes = {n: os.path.getsize(p) / 2**20 for n, p in paths.items()}
        print(
            f"records: {sizes[0]} and {sizes[1]} utterances, {megabytes[sizes[0]]:.0f} / {megabytes[sizes[1]]:.0f} MB"
        )
        for options in ("tfdv-defaults", "pipeline"):
            rows = {n: run_child(paths[n], options) for n in sizes}
            small, large = rows[sizes[0]], rows[sizes[1]]
            print(
                f"{options:>14}: peak RSS {small['peak_rss_mb']:.0f} MB at N, {large['peak_rss_mb']:.0f} MB at 4N "
                f"(x{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}); {small['seconds']:.1f} s / "
                f"{large['seconds']:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
