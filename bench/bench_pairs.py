"""Pair builder at VoxCeleb2 size, and the pair-to-trainer design comparison.

    .venv/bin/python -m bench bench_pairs                   # the full run (about 15 minutes)
    .venv/bin/python -m bench.bench_pairs --scale 0.1       # a tenth of it, for a quick look

1. A metadata-only synthetic index shaped like VoxCeleb2's development set (6,000 speakers,
   1.1 million utterances, ~24 videos a speaker, 4-20 s utterances, a few too short for a
   segment) is written in the feature job's index layout.
2. `speechpipe pairs` runs on it on the DirectRunner (the job's default running mode), with the
   per-speaker cap chosen so that the output is 10 million pairs at 1:1. Wall time, and peak
   memory of the whole process tree (sampled RSS, and getrusage of the children), are printed.
3. Baseline, same run: a naive in-memory builder that lists every candidate pair (numpy) and
   samples from them, against speechpipe.speakers.pairs on the same subset of speakers: time and peak
   heap (tracemalloc, which sees numpy's buffers) as ratios, and what the naive approach would
   need at full size.
4. Design: the same pairs stored as joined segment pairs (two 40 x 80 float32 segments in each
   record) or as utterance references resolved by speechpipe.speakers.pair_dataset, in bytes per pair
   and pairs per second through tf.data on this machine.

Nothing is asserted about time: the figures are printed (and saved as JSON next to the data).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from speechpipe.config import SPLITS
from speechpipe.speakers.pairs import PairConfig, SpeakerUtterances, SplitPlan, sample_negatives, sample_positives

SPEAKERS = 6000
UTTERANCES = 1_100_000
TARGET_PAIRS = 10_000_000
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# ----------------------------------------------------------------------------------------------
# The synthetic index


def synth_speakers(speakers: int, utterances: int, seed: int = 0) -> List[Tuple[str, str, List[Tuple[str, int]]]]:
    """[(speaker, split, [(session, utterances in it), ...])], VoxCeleb2-shaped: utterance counts
    log-normal around the mean (clipped 20..1,200), ~7.5 utterances a video."""
    rng = np.random.default_rng([seed, 0xB2])
    mean = utterances / speakers
    counts = np.clip(rng.lognormal(math.log(mean) - 0.18, 0.6, speakers), 20, 1200).astype(np.int64)
    # Make the total exact, a few utterances at a time, on speakers drawn by seed.
    while counts.sum() != utterances:
        diff = utterances - int(counts.sum())
        chosen = rng.integers(0, speakers, min(abs(diff), speakers))
        counts[chosen] += np.sign(diff)
        counts = np.clip(counts, 20, 1200)
    order = rng.permutation(speakers)
    n_val = n_test = round(speakers * 0.15)
    split_of = np.empty(speakers, dtype=object)
    split_of[order[:n_test]] = "test"
    split_of[order[n_test : n_test + n_val]] = "validation"
    split_of[order[n_test + n_val :]] = "train"
    result = []
    for index in range(speakers):
        n = int(counts[index])
        videos = max(1, int(round(n / rng.uniform(4.0, 11.0))))
        if rng.random() < 0.005:
            videos = 1  # a few single-video speakers: no cross-session positive, reported
        sizes = np.bincount(rng.integers(0, videos, n), minlength=videos)
        sizes = sizes[sizes > 0]
        sessions = []
        for size in sizes:
            session = "".join(_ALPHABET[b] for b in rng.integers(0, 64, 11))
            sessions.append((session, int(size)))
        result.append((f"id{index + 1:05d}", str(split_of[index]), sessions))
    return result


def write_index(root: str, speakers: int, utterances: int, shards: int = 16, seed: int = 0) -> Dict[str, int]:
    """Writes root/index/utterances-SSSSS-of-NNNNN.jsonl in the feature job's index format."""
    index_dir = os.path.join(root, "index")
    os.makedirs(index_dir, exist_ok=True)
    rng = np.random.default_rng([seed, 0x1D])
    files = [open(os.path.join(index_dir, f"utterances-{k:05d}-of-{shards:05d}.jsonl"), "w") for k in range(shards)]
    short = written = 0
    try:
        for speaker, split, sessions in synth_speakers(speakers, utterances, seed):
            for session, size in sessions:
                # VoxCeleb2 utterances are 4 s and longer; 1 in 2,000 is made too short here, to
                # exercise the exclusion rule at scale.
                seconds = 4.0 + rng.exponential(3.8, size)
                too_short = rng.random(size) < 0.0005
                for k in range(size):
                    frames = int(rng.integers(0, 40)) if too_short[k] else min(int(seconds[k] * 100) - 2, 2000)
                    short += bool(too_short[k])
                    line = (
                        f'{{"utterance": "{speaker}/{session}/{k + 1:05d}", "speaker": "{speaker}", '
                        f'"session": "{session}", "split": "{split}", "num_frames": {frames}, '
                        f'"duration": {frames / 100 + 0.015:.3f}}}\n'
                    )
                    files[written % shards].write(line)
                    written += 1
    finally:
        for f in files:
            f.close()
    return {"utterances": written, "short": short}


def cap_for_target(speakers, target_pairs: int, config: PairConfig) -> Tuple[int, int]:
    """The smallest per-speaker cap giving at least `target_pairs` pairs at the configured ratio
    (the job's own rule; the few utterances excluded as too short make the job's count a
    little lower)."""
    available = []
    for _speaker, _split, sessions in speakers:
        n = sum(size for _, size in sessions)
        available.append((n * n - sum(size * size for _, size in sessions)) // 2)
    available = np.asarray(available)

    def pairs(cap: int) -> int:
        positives = int(np.minimum(available, cap).sum())
        return positives + config.negatives_for(positives)

    low, high = 1, int(available.max())
    while low < high:
        mid = (low + high) // 2
        if pairs(mid) >= target_pairs:
            high = mid
        else:
            low = mid + 1
    return low, pairs(low)


# ----------------------------------------------------------------------------------------------
# Running the job with its memory watched


class TreeMemory:
    """Peak RSS of a process and all its descendants, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self._root] + self._root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_job(features: str, out: str, cap: int, extra: Sequence[str] = ()) -> Dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "speechpipe.cli",
        "pairs",
        "--features",
        features,
        "--out",
        out,
        "--speaker_cap",
        str(cap),
        "--overwrite",
        *extra,
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = TreeMemory(process.pid)
    chunks: List[str] = []
    reader = threading.Thread(target=lambda: chunks.append(process.stdout.read()), daemon=True)
    reader.start()
    # wait4 gives this child's own resource use (with that of the workers it reaped): CPU time
    # and the largest single process's peak RSS of this run, not of every run so far.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    reader.join()
    output = "".join(chunks)
    peak_tree = watch.stop()
    if process.returncode != 0:
        raise RuntimeError(f"pairs job failed ({process.returncode}):\n{output[-4000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return {
        "command": " ".join(command[1:]),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_tree_bytes": peak_tree,
        "peak_rss_largest_process_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
        # The 1-minute load average before and after: other work on the machine slows the wall
        # time (not the CPU time); above the core count, read the wall figure with care.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "summary": summary,
        "log_tail": output[-1500:],
    }


def folder_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


# ----------------------------------------------------------------------------------------------
# Baseline: naive quadratic builder on a subset


def _subset_groups(speakers, count: int, config: PairConfig) -> List[SpeakerUtterances]:
    groups = []
    for speaker, _split, sessions in speakers[:count]:
        items = [(f"{speaker}/{session}/{k + 1:05d}", session) for session, size in sessions for k in range(size)]
        groups.append(SpeakerUtterances.build("train", speaker, items))
    return groups


def naive_pairs(groups: List[SpeakerUtterances], config: PairConfig) -> Tuple[int, int]:
    """Lists every candidate pair of the subset (i < j over all utterances), labels them and
    draws the same numbers of positives per speaker and of negatives as the job: what a
    straightforward builder does. Returns (pairs drawn, candidates listed)."""
    ids = [u for g in groups for u in g.utterances]
    speaker_of = np.concatenate([np.full(len(g.utterances), k) for k, g in enumerate(groups)])
    session_of = np.concatenate(
        [
            np.repeat(
                np.arange(len(g.session_starts)) + 1000 * k, np.diff(list(g.session_starts) + [len(g.utterances)])
            )
            for k, g in enumerate(groups)
        ]
    )
    i, j = np.triu_indices(len(ids), k=1)
    same = speaker_of[i] == speaker_of[j]
    if config.cross_session:
        same &= session_of[i] != session_of[j]
    different = speaker_of[i] != speaker_of[j]
    rng = np.random.default_rng(config.seed)
    drawn = 0
    positives = 0
    for k in range(len(groups)):
        candidates = np.flatnonzero(same & (speaker_of[i] == k))
        take = min(config.speaker_cap, candidates.size)
        drawn += rng.choice(candidates, take, replace=False).size
        positives += take
    negatives = np.flatnonzero(different)
    drawn += rng.choice(negatives, min(config.negatives_for(positives), negatives.size), replace=False).size
    return drawn, int(i.size)


def ours_pairs(groups: List[SpeakerUtterances], config: PairConfig) -> int:
    plan = SplitPlan.build("train", groups, config)
    drawn = 0
    for g in groups:
        drawn += len(sample_positives(g, config)[0]) + len(sample_negatives(g, plan, config)[0])
    return drawn


def measure(fn, *args) -> Tuple[object, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def baseline(speakers, cap: int, subset: int) -> Dict[str, object]:
    config = PairConfig(speaker_cap=cap)
    groups = _subset_groups(speakers, subset, config)
    (naive_drawn, candidates), naive_s, naive_peak = measure(naive_pairs, groups, config)
    ours_drawn, ours_s, ours_peak = measure(ours_pairs, groups, config)
    utterances = sum(len(g.utterances) for g in groups)
    full_candidates = UTTERANCES * (UTTERANCES - 1) // 2
    return {
        "subset_speakers": subset,
        "subset_utterances": utterances,
        "naive": {"pairs": naive_drawn, "candidates": candidates, "seconds": naive_s, "peak_heap_bytes": naive_peak},
        "ours": {"pairs": ours_drawn, "seconds": ours_s, "peak_heap_bytes": ours_peak},
        "time_ratio_naive_over_ours": naive_s / ours_s,
        "memory_ratio_naive_over_ours": naive_peak / max(ours_peak, 1),
        "naive_candidates_at_full_size": full_candidates,
        # i, j as int64 plus three boolean masks: 19 bytes per candidate.
        "naive_bytes_at_full_size": full_candidates * 19,
    }


# ----------------------------------------------------------------------------------------------
# Design: joined segment pairs vs references


def design_comparison(
    work: str, pairs: int = 200_000, joined_pairs: int = 12_000, utterances: int = 4_000, seed: int = 0
) -> Dict[str, object]:
    """Bytes per pair and tf.data pairs/s for the two ways a pair can reach the trainer.

    Both produce the same batches: ((B, 40, 80), (B, 40, 80)) float32 and B labels. Joined
    records are read sequentially, without the shuffle buffer training would add, so their
    figure is the optimistic one."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from speechpipe.speakers.pair_dataset import PairReferences, SegmentTable, pair_dataset
    from speechpipe.speakers.pairs import encode_pair_block

    frames_per_segment, bins, batch = 40, 80, 256
    rng = np.random.default_rng(seed)
    lengths = np.clip((rng.exponential(3.8, utterances) + 4.0) * 100, 400, 2000).astype(np.int64)

    # Smooth, CMVN-like features: what a log-mel looks like to a compressor (no long runs).
    def utterance_features(n: int) -> np.ndarray:
        base = rng.standard_normal((n, bins)).astype(np.float32)
        return (0.6 * base + 0.4 * np.roll(base, 1, axis=0)).astype(np.float32)

    names = [f"id{k // 40 + 1:05d}/{'s' * 11}/{k % 40 + 1:05d}" for k in range(utterances)]
    table = SegmentTable.from_arrays((name, utterance_features(int(n))) for name, n in zip(names, lengths))
    refs = [(int(rng.integers(0, 2)), int(a), int(b)) for a, b in rng.integers(0, utterances, (pairs, 2))]

    # (a) references: the pair job's own records.
    ref_path = os.path.join(work, "refs.tfrecord.gz")
    with open(ref_path, "wb") as raw:  # as the job writes them: blocks of framed records, GZIP
        import gzip

        with gzip.GzipFile(fileobj=raw, mode="wb") as w:
            w.write(encode_pair_block((label, names[a], names[b]) for label, a, b in refs))
    # (b) joined: the same pairs with their two segments inside (offsets drawn once, in "Beam").
    joined_path = os.path.join(work, "joined.tfrecord.gz")
    joined_raw_path = os.path.join(work, "joined.tfrecord")
    with tf.io.TFRecordWriter(joined_path, options="GZIP") as wz, tf.io.TFRecordWriter(joined_raw_path) as wr:
        for label, a, b in refs[:joined_pairs]:
            segs = []
            for u in (a, b):
                offset = int(rng.integers(0, lengths[u] - frames_per_segment + 1))
                start = int(table.starts[u]) + offset
                segs.append(table.frames[start : start + frames_per_segment].ravel())
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                        "segment_a": tf.train.Feature(float_list=tf.train.FloatList(value=segs[0])),
                        "segment_b": tf.train.Feature(float_list=tf.train.FloatList(value=segs[1])),
                    }
                )
            ).SerializeToString()
            wz.write(example)
            wr.write(example)

    spec = {
        "label": tf.io.FixedLenFeature([], tf.int64),
        "segment_a": tf.io.FixedLenFeature([frames_per_segment * bins], tf.float32),
        "segment_b": tf.io.FixedLenFeature([frames_per_segment * bins], tf.float32),
    }

    def joined_dataset(path: str, compression: str) -> tf.data.Dataset:
        @tf.autograph.experimental.do_not_convert
        def parse(records):
            parsed = tf.io.parse_example(records, spec)
            shape = [-1, frames_per_segment, bins]
            return (tf.reshape(parsed["segment_a"], shape), tf.reshape(parsed["segment_b"], shape)), parsed["label"]

        return (
            tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=8 << 20)
            .batch(batch)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )

    def throughput(make, repeats: int = 3) -> float:
        """Best of `repeats` full passes over one dataset (built once: building the in-memory
        table's variable copies the table, a start-up cost, not a per-pair one)."""
        dataset = make()
        best = 0.0
        for _ in range(repeats):
            count = 0
            started = time.perf_counter()
            for (seg_a, _), _ in dataset:
                count += int(seg_a.shape[0])
            best = max(best, count / (time.perf_counter() - started))
        return best

    started = time.perf_counter()
    references = PairReferences.read([ref_path], table)
    load_s = time.perf_counter() - started
    results = {
        "pairs": pairs,
        "joined_pairs": joined_pairs,
        "batch": batch,
        "segment": [frames_per_segment, bins],
        "table_utterances": utterances,
        "table_frames": int(lengths.sum()),
        "references": {
            "bytes_per_pair": os.path.getsize(ref_path) / pairs,
            "resolved_bytes_per_pair": (references.rows_a.nbytes + references.rows_b.nbytes + references.labels.nbytes)
            / pairs,
            "load_pairs_per_s": pairs / load_s,
            "pairs_per_s_in_memory": throughput(lambda: pair_dataset(references, table, batch_size=batch, seed=seed)),
            "table_bytes": int(table.frames.nbytes),
        },
        "joined_gzip": {
            "bytes_per_pair": os.path.getsize(joined_path) / joined_pairs,
            "pairs_per_s": throughput(lambda: joined_dataset(joined_path, "GZIP")),
        },
        "joined_uncompressed": {
            "bytes_per_pair": os.path.getsize(joined_raw_path) / joined_pairs,
            "pairs_per_s": throughput(lambda: joined_dataset(joined_raw_path, "")),
        },
    }
    # The scale path of the references design: the table on disk, memory-mapped.
    table_dir = os.path.join(work, "table")
    table.save(table_dir)
    mapped = SegmentTable.load(table_dir, mmap=True)
    results["references"]["pairs_per_s_memory_mapped"] = throughput(
        lambda: pair_dataset(references, mapped, batch_size=batch, seed=seed)
    )
    return results


# ----------------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _job_line(name: str, job: Dict[str, object]) -> str:
    return (
        f"{name:<34} {job['pairs']:>11,} pairs {job['wall_s']:7.0f} s wall {job['cpu_s']:6.0f} s CPU "
        f"{job['pairs_per_s']:9,.0f} pairs/s   peak {_mb(job['peak_rss_tree_bytes']):>10} "
        f"(largest process {_mb(job['peak_rss_largest_process_bytes'])}); load {job['load_average'][0]:.1f}"
        f"->{job['load_average'][1]:.1f}"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VoxCeleb2 size, default 1")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and the outputs")
    parser.add_argument(
        "--quick", action="store_true", help="only the default run (no in_memory comparison or pair-count sweep)"
    )
    parser.add_argument("--skip-design", action="store_true", help="skip the storage/throughput comparison")
    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] if __name__ == "__main__" else []))

    speakers = max(30, round(SPEAKERS * args.scale))
    utterances = round(UTTERANCES * args.scale)
    target = round(TARGET_PAIRS * args.scale)
    work = args.work or tempfile.mkdtemp(prefix="bench_pairs_")
    os.makedirs(work, exist_ok=True)
    results: Dict[str, object] = {
        "scale": args.scale,
        "speakers": speakers,
        "utterances": utterances,
        "target_pairs": target,
        "cpus": os.cpu_count(),
    }
    try:
        started = time.perf_counter()
        features = os.path.join(work, "features")
        if os.path.exists(features):
            shutil.rmtree(features)
        index = write_index(features, speakers, utterances)
        results["index"] = {
            **index,
            "seconds": time.perf_counter() - started,
            "bytes": folder_bytes(os.path.join(features, "index")),
        }
        print(
            f"index: {index['utterances']:,} utterances of {speakers:,} speakers "
            f"({index['short']} too short), {_mb(results['index']['bytes'])}, "
            f"written in {results['index']['seconds']:.0f} s",
            flush=True,
        )

        config = PairConfig()
        synth = synth_speakers(speakers, utterances)
        cap, predicted = cap_for_target(synth, target, config)
        small_cap, small_predicted = cap_for_target(synth, target // 10, config)
        results["speaker_cap"] = cap
        print(
            f"speaker cap {cap} -> ~{predicted:,} pairs (target {target:,}); cap {small_cap} -> ~{small_predicted:,}",
            flush=True,
        )

        from speechpipe.jobs.pairs_job import default_running_mode

        default = default_running_mode(results["index"]["bytes"])
        other = "in_memory" if default == "multi_processing" else "multi_processing"
        runs = [(f"default ({default})", cap, [])]
        if not args.quick:
            # The other running mode, and the same index to a tenth of the pairs: memory that
            # does not depend on the pair count stays the same.
            other_args = [f"--direct_running_mode={other}"] + (
                ["--direct_num_workers=0"] if other == "multi_processing" else []
            )
            runs += [
                (other, cap, other_args),
                ("in_memory, a tenth of the pairs", small_cap, ["--direct_running_mode=in_memory"]),
            ]
        results["jobs"] = {}
        out = os.path.join(work, "pairs")
        for name, run_cap, extra in runs:
            job = run_job(features, out, run_cap, extra)
            summary = job.pop("summary")
            total = summary["pairs_per_label"]["same"] + summary["pairs_per_label"]["different"]
            job.update(
                {
                    "speaker_cap": run_cap,
                    "pairs": total,
                    "pairs_per_label": summary["pairs_per_label"],
                    "excluded_short": summary["excluded_short"],
                    "speakers_capped": summary["speakers_capped"],
                    "pairs_bytes": folder_bytes(os.path.join(out, "pairs")),
                    "trials_bytes": sum(os.path.getsize(os.path.join(out, f"trials_{s}.txt")) for s in SPLITS),
                    "pairs_per_s": total / job["wall_s"],
                }
            )
            results["jobs"][name] = job
            print(_job_line(name, job), flush=True)
            if len(results["jobs"]) == 1:
                print(
                    f"     {summary['pairs_per_label']}; pair references {_mb(job['pairs_bytes'])} "
                    f"({job['pairs_bytes'] / total:.1f} B/pair), trial lists {_mb(job['trials_bytes'])} "
                    f"({job['trials_bytes'] / total:.1f} B/pair); {job['excluded_short']} short utterances "
                    f"excluded, {job['speakers_capped']} speakers capped",
                    flush=True,
                )
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)

        base = baseline(synth, cap, subset=40)
        results["baseline"] = base
        print(
            f"baseline on {base['subset_speakers']} speakers / {base['subset_utterances']:,} utterances, "
            f"{base['ours']['pairs']:,} pairs: naive lists {base['naive']['candidates']:,} candidates in "
            f"{base['naive']['seconds']:.2f} s, peak heap {_mb(base['naive']['peak_heap_bytes'])}; ours "
            f"{base['ours']['seconds']:.2f} s, {base['ours']['peak_heap_bytes'] / 1024:,.0f} KiB: naive/ours "
            f"time x{base['time_ratio_naive_over_ours']:.1f}, memory x{base['memory_ratio_naive_over_ours']:,.0f}",
            flush=True,
        )
        print(
            f"     naive at full size: {base['naive_candidates_at_full_size']:.2e} candidates, "
            f"~{base['naive_bytes_at_full_size'] / 2**40:,.0f} TiB",
            flush=True,
        )
        if not args.skip_design:
            design_dir = os.path.join(work, "design")
            os.makedirs(design_dir, exist_ok=True)
            design = design_comparison(design_dir)
            results["design"] = design
            r, jz, jr = design["references"], design["joined_gzip"], design["joined_uncompressed"]
            first_job = next(iter(results["jobs"].values()))
            total = first_job["pairs"]
            print(
                f"design: pairs of {design['segment'][0]}x{design['segment'][1]} float32 segments in batches of "
                f"{design['batch']}, tf.data on {os.cpu_count()} cores ({design['pairs']:,} references, "
                f"{design['joined_pairs']:,} joined pairs):",
                flush=True,
            )
            print(
                f"     references:   {r['bytes_per_pair']:8.1f} B/pair on disk ({r['resolved_bytes_per_pair']:.0f} in memory), "
                f"{r['pairs_per_s_in_memory']:9,.0f} pairs/s (table in memory), "
                f"{r['pairs_per_s_memory_mapped']:9,.0f} pairs/s (table memory-mapped); "
                f"loaded at {r['load_pairs_per_s']:,.0f} pairs/s",
                flush=True,
            )
            print(
                f"     joined, GZIP: {jz['bytes_per_pair']:8.1f} B/pair, {jz['pairs_per_s']:9,.0f} pairs/s", flush=True
            )
            print(
                f"     joined, raw:  {jr['bytes_per_pair']:8.1f} B/pair, {jr['pairs_per_s']:9,.0f} pairs/s", flush=True
            )
            print(
                f"     for {total:,} pairs: references {_mb(first_job['pairs_bytes'])} (the job's files), joined GZIP "
                f"{jz['bytes_per_pair'] * total / 2**30:,.0f} GiB, joined raw {jr['bytes_per_pair'] * total / 2**30:,.0f} GiB",
                flush=True,
            )
        path = os.path.join(work, "bench_pairs.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        if args.keep or args.work:
            print(f"figures saved to {path}", flush=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
