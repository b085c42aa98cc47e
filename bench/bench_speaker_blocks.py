"""The speaker-block reader's throughput and memory, the model stubbed (batches are only iterated).

    .venv/bin/python -m bench.bench_speaker_blocks                      # demo-shaped blocks
    .venv/bin/python -m bench.bench_speaker_blocks --speakers 5994 --blocks 2 --segments 16

1. Synthetic blocks (speechpipe.speakers.block_records, float16 log-spectrum-like values) are
   written in the pair job's layout: `--speakers` x `--blocks` blocks of `--segments` stored
   segments of 60 x 80, scattered at random over shards of `--shard_mb`.
2. A fresh process per variant (uncompressed, GZIP) reads them with speechpipe.speakers.speaker_blocks.block_dataset (P = 16,
   K = 8, 40 frames, the default buffers) for `--seconds`, after a warm-up, and prints segments
   per second, the RSS of that process before it reads a block and at its peak, and how many
   speakers per batch were drawn twice (two blocks of one speaker).

Nothing is asserted: the figures are printed (and saved as JSON next to the data).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

from speechpipe.speakers import block_records as fmt


def write_blocks(
    out: str, speakers: int, blocks: int, segments: int, shard_mb: float, compress: bool, seed: int = 0
) -> Dict:
    """Synthetic block shards under `out`; returns their counts and sizes."""
    import gzip

    from speechpipe.io.example_proto import frame_record

    config = fmt.BlockConfig(stored_segments=segments, blocks_per_speaker=blocks, shard_mb=shard_mb, seed=seed)
    block_bytes = config.block_bytes(segments, 80)
    shards = config.shard_count(speakers * blocks * block_bytes)
    rng = np.random.default_rng(seed)
    # One pool of segments, drawn once: values like globally normalised log-mel frames, which
    # compress about as badly as real ones (float16 mantissas are noise).
    pool = rng.standard_normal((64, 60, 80)).astype(np.float16)
    per_shard: List[List[bytes]] = [[] for _ in range(shards)]
    for s in range(speakers):
        for b in range(blocks):
            picks = rng.integers(0, len(pool), segments)
            block = fmt.SpeakerBlock(
                speaker=f"id{s:05d}",
                label=s,
                block=b,
                utterances=[f"id{s:05d}/v{j % 7}/{j:05d}" for j in picks],
                sessions=[f"v{j % 7}" for j in picks],
                lengths=np.full(segments, 60, np.int64),
                segments=pool[picks],
                max_segments=segments,
            )
            per_shard[fmt.shard_of(seed, block.speaker, b, shards)].append(fmt.encode_block(block))
    raw = disk = 0
    for index, payloads in enumerate(per_shard):
        path = fmt.shard_name(os.path.join(out, fmt.BLOCKS_PREFIX), index, shards, compress)
        rng.shuffle(payloads)
        # Beam's GZIP sink writes level 6 too.
        with gzip.open(path, "wb", compresslevel=6) if compress else open(path, "wb") as f:
            for payload in payloads:
                f.write(frame_record(payload))
                raw += len(payload)
        disk += os.path.getsize(path)
    return {
        "speakers": speakers,
        "blocks": speakers * blocks,
        "segments_per_block": segments,
        "gzip": compress,
        "shards": shards,
        "bytes_raw": raw,
        "bytes_on_disk": disk,
        "block_bytes": raw / (speakers * blocks),
    }


def rss_mb() -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def read(folder: str, seconds: float, warmup: float) -> Dict:
    """Iterates the reader; this process's figures."""
    from speechpipe.speakers.speaker_blocks import SHUFFLE_BLOCKS, block_dataset

    p, k = 16, 8
    dataset = block_dataset(folder, 40, p, k, seed=0)
    iterator = iter(dataset.as_numpy_iterator())
    before = rss_mb()  # TensorFlow and the graph, no block read yet
    started = time.time()
    while time.time() - started < warmup:
        next(iterator)
    batches = repeats = 0
    started = time.time()
    while time.time() - started < seconds:
        _, labels = next(iterator)
        batches += 1
        repeats += len(labels) // k - len(set(labels.tolist()))
    elapsed = time.time() - started
    return {
        "segments_per_s": round(batches * p * k / elapsed),
        "batches_per_s": round(batches / elapsed, 1),
        "speakers_repeated_per_batch": round(repeats / max(batches, 1), 3),
        "rss_before_reading_mb": before,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "shuffle_blocks": SHUFFLE_BLOCKS,
        "cpus": os.cpu_count(),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=168, help="default: the demo's training speakers")
    parser.add_argument("--blocks", type=int, default=16, help="blocks per speaker, default %(default)s")
    parser.add_argument("--segments", type=int, default=10, help="stored segments per block (the demo: 10)")
    parser.add_argument("--shard_mb", type=float, default=32.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--compression", choices=("both", "none", "gzip"), default="both", help="shards written, default %(default)s"
    )
    parser.add_argument("--out", default="", help="keep the blocks here (default: a temporary folder)")
    parser.add_argument("--read", default="", help=argparse.SUPPRESS)  # the reading child process
    args = parser.parse_args(argv)
    if args.read:
        print(json.dumps(read(args.read, args.seconds, args.warmup)))
        return 0
    root = args.out or tempfile.mkdtemp(prefix="bench-blocks-")
    results = []
    try:
        for compress in {"both": (False, True), "none": (False,), "gzip": (True,)}[args.compression]:
            folder = os.path.join(root, "gzip" if compress else "none")
            os.makedirs(folder, exist_ok=True)
            started = time.time()
            written = write_blocks(folder, args.speakers, args.blocks, args.segments, args.shard_mb, compress)
            written["write_seconds"] = round(time.time() - started, 1)
            child = subprocess.run(
                [sys.executable, "-m", "bench.bench_speaker_blocks", "--read", folder]
                + ["--seconds", str(args.seconds), "--warmup", str(args.warmup)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            results.append({**written, **json.loads(child.stdout.strip().splitlines()[-1])})
            print(json.dumps(results[-1]), flush=True)
        with open(os.path.join(root, "bench_speaker_blocks.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
