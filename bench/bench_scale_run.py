"""A speaker-only `speechpipe run` on a VoxCeleb1-layout corpus five times the demo's size
(1,200 speakers, 12,000 utterances), with the peak memory of the whole process tree.

    python -m bench bench_scale_run [--corpora 5] [--embedder-minutes 4] [--out DIR]

Why: bench_scale measures each stage on generated records; this runs the product as a user runs
it, from audio (decode, features, statistics, schema check, gate, pair job, trainer, evaluator,
pusher), on the embedded defaults (DirectRunner, SQLite metadata and registry), and shows what
one machine needs for it. Goal: completes on this 2-core, 24 GB machine with a peak RSS under
4 GB.

Corpus: `--corpora` demo corpora synthesised with seeds 0, 1, ... (240 speakers x 10 utterances
each; each seed numbers its speakers in its own id block), laid out as VoxCeleb1 ships:
`wav/<speaker>/<session>/<n>.wav` and `vox1_meta.csv`, whose Set column marks each corpus's test
speakers (the run validates on a recorded share of the dev speakers). A voice recurs under
another id in each corpus, so the embedder is trained on labels that split one voice into
several "speakers": this bench measures resources, not accuracy (the demo's figures do that).

Memory: the summed RSS of the run's process and all its children (Beam's workers), sampled
every 0.5 s with psutil; the largest single process is reported too. Stage times come from the
run's log (TFX's "Component X is finished." lines).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

DEFAULT_OUT = os.path.join("bench_out", "scale_run")
DEMO_SPEAKERS = 240
GOAL_GB = 4.0


def build_corpus(root: str, corpora: int, cache: str) -> Dict[str, object]:
    """The VoxCeleb1-layout corpus under `root` from `corpora` synthesised demo corpora (cached
    under `cache`); returns its counts."""
    from speechpipe.config import CorpusConfig
    from speechpipe.corpus.synth import synthesize_corpus

    if os.path.exists(os.path.join(root, "vox1_meta.csv")):
        with open(os.path.join(root, "corpus.json"), encoding="utf-8") as f:
            return json.load(f)
    speakers: Dict[str, str] = {}
    utterances = 0
    for seed in range(corpora):
        source = os.path.join(cache, f"demo_seed{seed}")
        if not os.path.exists(os.path.join(source, "manifest.jsonl")):
            print(f"synthesising demo corpus seed {seed} ...", flush=True)
            synthesize_corpus(CorpusConfig(speakers=DEMO_SPEAKERS, seed=seed), source, progress=False, overwrite=True)
        with open(os.path.join(source, "manifest.jsonl"), encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        for line in lines:
            relative = os.path.relpath(os.path.join(source, line["audio"]), os.path.join(source, "wav"))
            target = os.path.join(root, "wav", relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(source, line["audio"]), target)
            speakers[line["speaker"]] = "test" if line["split"] == "test" else "dev"
            utterances += 1
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    rows += [f"{s}\tPerson_{s}\tf\tGermany\t{speakers[s]}" for s in sorted(speakers)]
    with open(os.path.join(root, "vox1_meta.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    counts = {
        "speakers": len(speakers),
        "test_speakers": sum(v == "test" for v in speakers.values()),
        "utterances": utterances,
    }
    with open(os.path.join(root, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump(counts, f)
    return counts


class TreeMemory:
    """Peak summed RSS of a process and its descendants, sampled on a thread."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self._every = every
        self.peak_total = 0
        self.peak_single = 0
        self.samples = 0
        self.series: List[Tuple[float, int]] = []  # (unix time, summed RSS), for the per-node peaks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                processes = [self._root] + self._root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            sizes = []
            for process in processes:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.Error:
                    continue
            if sizes:
                self.series.append((time.time(), sum(sizes)))
                self.peak_total = max(self.peak_total, sum(sizes))
                self.peak_single = max(self.peak_single, max(sizes))
                self.samples += 1
            self._stop.wait(self._every)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


LAUNCH = re.compile(r"^(\S+ \S+) INFO absl: Running launcher for node_info")
NODE_ID = re.compile(r'^\s*id: "(\w+)"')
SUCCEEDED = re.compile(r"^(\S+ \S+) INFO absl: Execution \d+ succeeded")


def node_intervals(log_text: str) -> List[Tuple[str, float, float]]:
    """(node, start, end) in unix time from the run log (LocalDagRunner runs one node at a time:
    from its launcher's first line to its execution's success)."""
    from datetime import datetime

    def stamp(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    intervals: List[Tuple[str, float, float]] = []
    node, begin, waiting_for_id = None, None, False
    for line in log_text.splitlines():
        launched = LAUNCH.match(line)
        if launched:
            begin, waiting_for_id = stamp(launched.group(1)), True
            continue
        named = NODE_ID.match(line) if waiting_for_id else None
        if named:
            node, waiting_for_id = named.group(1), False
            continue
        done = SUCCEEDED.match(line)
        if done and node and begin is not None:
            intervals.append((node, begin, stamp(done.group(1))))
            node = None
    return intervals


def node_seconds(log_text: str) -> Dict[str, float]:
    """Seconds per node (`node_intervals`)."""
    seconds: Dict[str, float] = {}
    for node, begin, end in node_intervals(log_text):
        seconds[node] = round(seconds.get(node, 0.0) + end - begin, 1)
    return seconds


def node_peaks(intervals: List[Tuple[str, float, float]], series: List[Tuple[float, int]]) -> Dict[str, float]:
    """The peak summed RSS (GB) sampled while each node ran."""
    peaks: Dict[str, float] = {}
    for node, begin, end in intervals:
        inside = [rss for t, rss in series if begin <= t <= end]
        if inside:
            peaks[node] = max(peaks.get(node, 0.0), round(max(inside) / 2**30, 2))
    return peaks


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", type=int, default=5, help="demo corpora of 240 speakers (default 5: 1,200)")
    parser.add_argument("--embedder-minutes", type=float, default=4.0, help="the trainer's budget (the demo's: 4)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    out = os.path.abspath(args.out)
    corpus = os.path.join(out, f"vox1_x{args.corpora}")
    counts = build_corpus(corpus, args.corpora, os.path.join(out, "cache"))
    print(f"corpus: {counts['speakers']} speakers ({counts['test_speakers']} test), {counts['utterances']} utterances")
    home = os.path.join(out, "home")
    shutil.rmtree(home, ignore_errors=True)
    command = [
        os.path.join(os.path.dirname(sys.executable), "speechpipe"),  # the console script beside this Python
        "run",
        "--home",
        home,
        "--branches",
        "speaker",
        "--speaker-span",
        corpus,
        "--embedder-minutes",
        str(args.embedder_minutes),
    ]
    print(" ".join(command), flush=True)
    started = time.time()
    with open(os.path.join(out, "run.out"), "w", encoding="utf-8") as console:
        process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT)
        with TreeMemory(process.pid) as memory:
            code = process.wait()
    seconds = time.time() - started
    logs = (
        sorted((os.path.join(home, "logs", n) for n in os.listdir(os.path.join(home, "logs"))), key=os.path.getmtime)
        if os.path.isdir(os.path.join(home, "logs"))
        else []
    )
    log_text = open(logs[-1], encoding="utf-8", errors="replace").read() if logs else ""
    nodes = node_seconds(log_text)
    peaks = node_peaks(node_intervals(log_text), memory.series)
    result = {
        "corpus": counts,
        "exit_code": code,
        "seconds": round(seconds, 1),
        "peak_rss_gb_tree": round(memory.peak_total / 2**30, 2),
        "peak_rss_gb_largest_process": round(memory.peak_single / 2**30, 2),
        "samples": memory.samples,
        "goal_gb": GOAL_GB,
        "within_goal": memory.peak_total / 2**30 < GOAL_GB,
        "node_seconds": nodes,
        "node_peak_rss_gb": peaks,
        "cpus": os.cpu_count(),
    }
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "run.out"), encoding="utf-8", errors="replace") as f:
        tail = f.read()[-3000:]
    print(tail)
    print(json.dumps(result, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
