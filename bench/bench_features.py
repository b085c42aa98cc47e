"""Feature job throughput and memory, against baselines measured in the same run.

    python -m bench bench_features          (BENCH_CORPUS=DIR to use an existing corpus)

Rows, all in seconds of audio per wall-clock second (x real time), and per core:
- naive: the script a user writes: librosa.load with its defaults (22.05 kHz), melspectrogram
  with its defaults, a tf.io.TFRecordWriter loop of FloatList examples; on a subset.
- floor: our features + normalisation on already-decoded arrays: no I/O, no pipeline.
- job in_memory / multi_processing: `speechpipe features` end to end (start-up, listing,
  decoding, features, writing, reading every shard back), each in its own process.
Peak memory: the in_memory job's peak RSS (its process's VmHWM, plus its worker processes'
ru_maxrss in multi_processing, which for a worker includes what it inherited at fork) at 1x and
2x the corpus (the 2x manifest lists every utterance twice under new ids): flat means the ratio
stays near 1.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

from bench.corpus import bench_corpus

NAIVE_SUBSET = 300


def _manifest(corpus: str) -> List[Dict]:
    with open(os.path.join(corpus, "manifest.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def naive(corpus: str, items: List[Dict], out: str) -> Tuple[float, float, float]:
    """What a librosa-and-Keras user writes; returns (audio seconds, wall seconds, CPU seconds)."""
    import librosa
    import numpy as np
    import tensorflow as tf

    started, cpu = time.perf_counter(), time.process_time()
    seconds = 0.0
    with tf.io.TFRecordWriter(os.path.join(out, "naive.tfrecord")) as writer:
        for item in items:
            y, sr = librosa.load(os.path.join(corpus, item["audio"]))
            seconds += len(y) / sr
            mel = np.log(librosa.feature.melspectrogram(y=y, sr=sr) + 1e-6).T
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "features": tf.train.Feature(float_list=tf.train.FloatList(value=mel.ravel())),
                        "utterance": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[item["utterance"].encode()])
                        ),
                    }
                )
            )
            writer.write(example.SerializeToString())
    return seconds, time.perf_counter() - started, time.process_time() - cpu


def floor(corpus: str, items: List[Dict]) -> Tuple[float, float, float]:
    """Features + normalisation on already-decoded arrays; (audio seconds, wall, CPU seconds)."""
    from speechpipe.audio.decode import decode
    from speechpipe.audio.features import compute_features, normalise
    from speechpipe.config import FeatureConfig

    config = FeatureConfig()
    decoded = [decode(os.path.join(corpus, i["audio"]), config.sample_rate).samples for i in items]
    compute_features(decoded[0], config)  # warm-up, as the job's setup() does
    started, cpu = time.perf_counter(), time.process_time()
    for samples in decoded:
        normalise(compute_features(samples, config), config)
    return (sum(len(s) for s in decoded) / config.sample_rate, time.perf_counter() - started, time.process_time() - cpu)


def _job(manifest: str, out: str, mode: str, workers: int) -> Dict[str, float]:
    """Runs the job in a child process; returns its wall time and peak RSS."""
    args = [sys.executable, "-m", "bench.bench_features", "--child", manifest, out, mode, str(workers)]
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise RuntimeError(f"feature job failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _own_peak_kb() -> int:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over from the forked parent into the executed child, so the child reported the bench
    process's peak (about 1.3 GB with TensorFlow and the decoded corpus loaded), not its own."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: an upper bound


def _child(manifest: str, out: str, mode: str, workers: str) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.audio.sources import make_spec
    from speechpipe.config import FeatureConfig
    from speechpipe.jobs.features_job import run_job

    def cpu_seconds() -> float:
        # in_memory runs in this process; multi_processing's workers are its children
        return sum(
            u.ru_utime + u.ru_stime
            for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        )

    cpu_before, started = cpu_seconds(), time.perf_counter()
    summary = run_job(
        make_spec(manifest),
        FeatureConfig(),
        out,
        PipelineOptions([f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]),
    )
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    peak_kb = _own_peak_kb() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "peak_mb": peak_kb / 1024,
                "seconds": sum(summary["audio_seconds"].values()),
                "good": sum(summary["good"].values()),
            }
        )
    )


def main() -> None:
    corpus = bench_corpus()
    items = _manifest(corpus)
    total_seconds = sum(i["duration"] for i in items)
    cores = os.cpu_count() or 1
    print(f"corpus: {corpus}: {len(items)} utterances, {total_seconds / 3600:.2f} h; {cores} cores")
    # (name, input, audio seconds, wall seconds, cores it may use, CPU seconds, peak MB)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        audio, wall, cpu = naive(corpus, items[:NAIVE_SUBSET], tmp)
        rows.append(("naive script (librosa defaults, FloatList)", f"{NAIVE_SUBSET} utt", audio, wall, 1, cpu, None))
        audio, wall, cpu = floor(corpus, items)
        rows.append(("floor: features on decoded arrays", "all", audio, wall, 1, cpu, None))
        single = _job(os.path.join(corpus, "manifest.jsonl"), os.path.join(tmp, "in_memory"), "in_memory", 1)
        rows.append(
            (
                "job, DirectRunner in_memory",
                "all",
                single["seconds"],
                single["wall"],
                1,
                single["cpu"],
                single["peak_mb"],
            )
        )
        multi = _job(os.path.join(corpus, "manifest.jsonl"), os.path.join(tmp, "multi"), "multi_processing", cores)
        rows.append(
            (
                f"job, DirectRunner multi_processing x{cores}",
                "all",
                multi["seconds"],
                multi["wall"],
                cores,
                multi["cpu"],
                multi["peak_mb"],
            )
        )

        doubled = os.path.join(corpus, "manifest_x2.jsonl")
        with open(doubled, "w", encoding="utf-8") as f:
            for copy in ("", "-copy"):
                for item in items:
                    f.write(json.dumps({**item, "utterance": item["utterance"] + copy}, ensure_ascii=False) + "\n")
        double = _job(doubled, os.path.join(tmp, "x2"), "in_memory", 1)
        rows.append(
            (
                "job, in_memory, corpus x2",
                "all x2",
                double["seconds"],
                double["wall"],
                1,
                double["cpu"],
                double["peak_mb"],
            )
        )

    # "per core": audio seconds per wall second per core the run may use; "per CPU s": audio
    # seconds per CPU second it did use (user + system, every thread and worker process), which
    # other jobs on the machine disturb far less than the wall clock.
    print(f"\n{'':46} {'input':>8} {'x real time':>12} {'per core':>10} {'per CPU s':>10} {'peak MB':>9}")
    for name, subset, audio, wall, used, cpu, peak in rows:
        per_cpu = f"{audio / cpu:10.0f}" if cpu else f"{'':10}"
        print(
            f"{name:46} {subset:>8} {audio / wall:12.0f} {audio / wall / used:10.0f} {per_cpu} "
            f"{'' if peak is None else f'{peak:9.0f}'}"
        )
    naive_rate = rows[0][2] / rows[0][3]
    floor_rate = rows[1][2] / rows[1][3]
    best = max(r[2] / r[3] / r[4] for r in rows[2:4])
    print(f"\njob / naive (per core, best mode): {best / naive_rate:.1f}x   job / floor: {best / floor_rate:.2f}")
    # Start-up (imports, DoFn introspection per bundle, pipeline translation) does not grow with
    # the corpus; the difference between the two in_memory runs is the steady-state rate.
    marginal = (double["seconds"] - single["seconds"]) / max(double["wall"] - single["wall"], 1e-9)
    marginal_cpu = (double["seconds"] - single["seconds"]) / max(double["cpu"] - single["cpu"], 1e-9)
    print(
        f"steady state (x2 run minus x1 run, in_memory, one core): {marginal:.0f} x real time, "
        f"{marginal_cpu:.0f} per CPU second"
    )
    print(f"peak memory x2 corpus / x1 corpus (in_memory): {double['peak_mb'] / single['peak_mb']:.2f}")
    print(
        f"job wall: in_memory {single['wall']:.1f} s, multi_processing {multi['wall']:.1f} s, x2 {double['wall']:.1f} s; "
        f"CPU: {single['cpu']:.1f} s, {multi['cpu']:.1f} s, {double['cpu']:.1f} s"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
    else:
        main()
