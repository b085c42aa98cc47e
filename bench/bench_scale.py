"""The speaker branch at VoxCeleb scale: every stage's peak memory and wall time on VoxCeleb-shaped
feature outputs at 1x, 4x and 16x, measured in one run, with the ratios to 1x.

    .venv/bin/python -m bench bench_scale --scales 1,4,16            # the full run (20-40 min)
    .venv/bin/python -m bench bench_scale --scale-factor 0.1 --scales 1,4 --stages trials,statistics
    .venv/bin/python -m bench.bench_scale --out /tmp/scale.json      # the same, figures as JSON

Why: the pipeline is built for 10^5-10^6 utterances, which no test can hold. A stage whose memory
is bounded shows the same peak at 1x and 16x; a stage that holds something per utterance (or per
speaker, block, trial) shows it growing with the corpus long before a real corpus runs out of
memory. Time should grow at most linearly (x4, x16), or less where a cap binds.

Inputs (generated once per size under --cache, reused when present): the feature job's output
layout exactly (speechpipe.io.records: `Split-<split>/data_tfrecord-SSSSS-of-NNNNN` shards of about
--shard-mb, at least two per split; `index/utterances-SSSSS-of-NNNNN.jsonl`, one line per record
as the feature job writes it; summary.json with "features" (global normalisation, the speaker
branch's); global_stats.json of the training split). 1x is --base-utterances (2,000) utterances
of 200 speakers, 10 each, in 2-4 sessions (VoxCeleb ids: `id10001/<11-character video id>/00001`),
each 200-800 frames (2-8 s at 10 ms) of 80 float32 bins: a per-speaker mean, a per-session offset
and unit Gaussian noise (random mantissas: no compression or deduplication flatters a figure; the
speakers are learnable). Speakers are split
80/10/10 (speaker-disjoint); records are shuffled over a split's shards, as the feature job's are.

Stages (each in a process of its own, so that a peak is that stage's alone):
  training_input  components.embedder_trainer.write_training_input with EmbedderTrainConfig():
                  the pair job's speaker blocks of the training split and its back-end sample,
                  on the job's DirectRunner defaults (or --beam-arg ...).
  trials          the pair job writing the test split's trial list, as PairGen runs it
                  (--trial-splits test --pair-splits "").
  statistics      StatisticsGen's executor (speechpipe.components.statistics_gen) over the training
                  split with the pipeline's StatsOptions, as the pipeline runs it.
  input_pipeline  speechpipe.speakers.speaker_blocks.block_dataset over training_input's blocks
                  (P = 16, K = 8, 40 frames), the model stubbed: segments/s over --seconds after
                  --warmup. Goal: >= 10,000 segments/s on 2 cores.
  trainer         components.embedder_trainer.train on training_input's blocks and the validation
                  split: the default model (EmbedderTrainConfig().model, which the pipeline's
                  DEMO_EMBEDDER shares), --max-steps 20 steps and one evaluation (--eval-every
                  20), then the final validation and the export. That covers the validation
                  embedding (streamed, capped at 5,000 utterances) and the back end's fit (the
                  back-end sample, capped at 10,000); each evaluation embeds up to 15,000
                  utterances on the CPU, so one keeps 16x at about 10 minutes.
  evaluator       components.speaker_evaluator.embedder_metrics on trainer's export: the test
                  split's index, the trials stage's list, the validation split's operating point.

How each figure is measured and how to read it:
  peak RSS MB   the largest of (a) the summed RSS of the stage's process and all its descendants,
                sampled every --interval s (Beam's multi_processing DirectRunner starts worker
                processes; pages shared between processes count once per process) and (b) the
                stage process's own ru_maxrss. It includes the imports (TensorFlow, Beam: several
                hundred MB, the same at every size); `before` in the JSON is the RSS just before
                the stage's work began, so peak - before is what the work added.
  s, cpu        wall time of the stage's call (imports and process start excluded; the JSON has
                the whole process's too; input_pipeline's is its fixed warm-up and measuring
                window), and the CPU time (user + system, Beam's workers included) it took:
                other work on the machine stretches the wall time, hardly the CPU time, so on a
                shared machine read the cpu ratios. Linear time reads x4 / x16; less where a cap
                binds (the trainer's back-end sample reaches its cap, 7,680 utterances here,
                between 4x and 16x; the evaluator's validation trials theirs, 200,000, by 4x).
  seg/s         input_pipeline only: training segments delivered per second.
  ratios        each size over the smallest (4x/1x, 16x/1x), for RSS, wall and CPU time; the verdict line
                says whether each stage's RSS stayed within 1.3x (the goal: bounded memory).
Nothing is asserted; a stage that fails or passes --max-rss-mb (default half the machine's memory;
its processes are then killed) is reported as such, and the next stages run (those that read its
output report that it is missing). The figures go to --out as JSON after each stage, with the
code they measured (git HEAD and the files that differ from it, at the start and at the end, and
per stage a fingerprint of the product modules it imported): a stage whose code changed between
sizes (other work in the same tree) is named in a warning, its ratios being a comparison of two
versions.
Each stage's log and outputs are under <cache>/runs/<corpus>/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

STAGES: Tuple[str, ...] = ("training_input", "trials", "statistics", "input_pipeline", "trainer", "evaluator")
# What each stage reads from an earlier one (of the same size): a stage run without its producer
# in the same invocation takes the producer's output of an earlier invocation, when present.
NEEDS: Dict[str, Tuple[str, ...]] = {
    "input_pipeline": ("training_input",),
    "trainer": ("training_input",),
    "evaluator": ("trainer", "trials"),
}
SPLITS: Tuple[str, ...] = ("train", "validation", "test")
SPLIT_FRACTIONS: Tuple[float, float, float] = (0.8, 0.1, 0.1)
RSS_GOAL = 1.3  # peak RSS at the largest size over the smallest, at most
SEGMENTS_GOAL = 10_000  # the trainer's input pipeline, segments/s on 2 cores, model stubbed
P, K, SEGMENT_FRAMES = 16, 8, 40  # the embedder's batch (EmbedderTrainConfig defaults)
CORPUS_FILE = "corpus.json"  # written last: a cache folder without it is incomplete
CORPUS_FORMAT = "bench_scale/1"  # changes when the generated data would
VIDEO_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MB = 1 << 20


# ---------------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class CorpusShape:
    """One generated corpus. Everything that changes its bytes is here and in its folder's name."""

    speakers: int
    per_speaker: int = 10
    min_sessions: int = 2
    max_sessions: int = 4
    min_frames: int = 200
    max_frames: int = 800
    bins: int = 80
    shard_mb: float = 150.0
    seed: int = 0

    @property
    def utterances(self) -> int:
        return self.speakers * self.per_speaker

    def name(self) -> str:
        return (
            f"voxceleb-shaped_{self.speakers}spk_{self.per_speaker}per_{self.min_sessions}-{self.max_sessions}ses_"
            f"{self.min_frames}-{self.max_frames}fr_{self.bins}b_{self.shard_mb:g}mb_s{self.seed}"
        )

    def to_json(self) -> Dict[str, object]:
        return {**asdict(self), "utterances": self.utterances, "format": CORPUS_FORMAT}


def shape_at(scale: float, base_utterances: int, scale_factor: float = 1.0, **fields) -> CorpusShape:
    """The corpus of `scale` x `base_utterances` (x `scale_factor`, for quick runs): whole
    speakers of `per_speaker` utterances each."""
    per_speaker = int(fields.get("per_speaker", CorpusShape.per_speaker))
    speakers = max(1, round(base_utterances * scale * scale_factor / per_speaker))
    return CorpusShape(speakers=speakers, **fields)


def split_counts(speakers: int) -> Dict[str, int]:
    """Speakers per split, 80/10/10, at least two validation and two test speakers (an EER needs
    same- and different-speaker trials)."""
    held = max(2, round(SPLIT_FRACTIONS[1] * speakers))
    return {"train": speakers - 2 * held, "validation": held, "test": held}


def check_shape(shape: CorpusShape) -> None:
    """A corpus every stage can run on: the trainer takes P different training speakers a batch."""
    train = split_counts(shape.speakers)["train"]
    if train < P:
        raise ValueError(
            f"{shape.speakers} speakers leave {train} training speakers; a batch takes P = {P}: "
            f"give at least {P + 4} speakers ({(P + 4) * shape.per_speaker} utterances at this size)"
        )
    if not 1 <= shape.min_sessions <= shape.max_sessions <= shape.per_speaker:
        raise ValueError(f"sessions {shape.min_sessions}-{shape.max_sessions} for {shape.per_speaker} utterances")
    if not 1 <= shape.min_frames <= shape.max_frames:
        raise ValueError(f"frames {shape.min_frames}-{shape.max_frames}: need 1 <= min <= max")


@dataclass(frozen=True)
class Planned:
    """One utterance to generate: its ids, its length, and what its features are drawn from."""

    utterance: str
    speaker: str
    session: str
    split: str
    frames: int
    speaker_index: int
    session_index: int
    number: int  # its index in the corpus: seeds its noise


def _video_id(rng: np.random.Generator) -> str:
    return "".join(VIDEO_ID_CHARS[i] for i in rng.integers(0, len(VIDEO_ID_CHARS), 11))


def plan_corpus(shape: CorpusShape) -> Dict[str, List[Planned]]:
    """Every utterance of the corpus by split, in record order (shuffled within the split, as
    the feature job's shards are not grouped by speaker). Speakers are assigned to splits at
    random (seeded), 80/10/10, so the splits are speaker-disjoint."""
    rng = np.random.default_rng([shape.seed, 0])
    counts = split_counts(shape.speakers)
    order = rng.permutation(shape.speakers)
    split_of: Dict[int, str] = {}
    start = 0
    for split in SPLITS:
        for s in order[start : start + counts[split]]:
            split_of[int(s)] = split
        start += counts[split]
    planned: Dict[str, List[Planned]] = {split: [] for split in SPLITS}
    number = 0
    for s in range(shape.speakers):
        speaker = f"id{10001 + s:05d}"
        sessions = [_video_id(rng) for _ in range(int(rng.integers(shape.min_sessions, shape.max_sessions + 1)))]
        # Every session gets one utterance, the rest fall at random; numbered within the session.
        owners = list(range(len(sessions))) + list(rng.integers(0, len(sessions), shape.per_speaker - len(sessions)))
        within = [0] * len(sessions)
        for owner in sorted(int(o) for o in owners):
            within[owner] += 1
            frames = int(rng.integers(shape.min_frames, shape.max_frames + 1))
            planned[split_of[s]].append(
                Planned(
                    f"{speaker}/{sessions[owner]}/{within[owner]:05d}",
                    speaker,
                    sessions[owner],
                    split_of[s],
                    frames,
                    s,
                    owner,
                    number,
                )
            )
            number += 1
    for split in SPLITS:
        order = rng.permutation(len(planned[split]))
        planned[split] = [planned[split][i] for i in order]
    return planned


def features_of(item: Planned, shape: CorpusShape) -> np.ndarray:
    """[frames, bins] float32: the speaker's mean, its session's offset, unit noise. Drawn from
    generators seeded by the ids, so an utterance's features do not depend on the order of
    generation."""
    speaker_mean = np.random.default_rng([shape.seed, 1, item.speaker_index]).normal(0.0, 0.6, shape.bins)
    session = np.random.default_rng([shape.seed, 2, item.speaker_index, item.session_index]).normal(
        0.0, 0.2, shape.bins
    )
    noise = np.random.default_rng([shape.seed, 3, item.number]).standard_normal((item.frames, shape.bins), np.float32)
    noise += (speaker_mean + session).astype(np.float32)
    return noise


def shard_count(items: Sequence[Planned], shape: CorpusShape) -> int:
    """Shards of about `shard_mb` for a split, at least two (several files, as the feature job
    writes), never more than its records."""
    size = sum(item.frames for item in items) * shape.bins * 4
    return max(1, min(len(items), max(2, math.ceil(size / (shape.shard_mb * MB)))))


def duration_of(frames: int) -> float:
    """Seconds of audio that give `frames` 25 ms frames at a 10 ms hop (no centring)."""
    return round((frames - 1) * 0.01 + 0.025, 6)


def write_corpus(folder: str, shape: CorpusShape) -> Dict[str, object]:
    """The corpus in the feature job's output layout under `folder` (which must not exist yet:
    it is written beside it and renamed when complete); returns corpus.json's content."""
    from speechpipe.audio.features import GlobalStats
    from speechpipe.config import FeatureConfig
    from speechpipe.filenames import GLOBAL_STATS_FILE, INDEX_PREFIX, SHARD_PREFIX, SUMMARY_FILE, split_dir
    from speechpipe.io import records
    from speechpipe.io.example_proto import frame_record

    check_shape(shape)
    started = time.time()
    partial = folder.rstrip("/") + ".partial"
    if os.path.exists(partial):
        import shutil

        shutil.rmtree(partial)
    plan = plan_corpus(shape)
    stats = GlobalStats.empty(shape.bins)
    files = {split: shard_count(plan[split], shape) for split in SPLITS}
    index_total = sum(files.values())
    index_number = 0
    shards: Dict[str, Dict[str, int]] = {}
    sizes: Dict[str, int] = {}
    os.makedirs(os.path.join(partial, os.path.dirname(INDEX_PREFIX)))
    for split in SPLITS:
        os.makedirs(os.path.join(partial, split_dir(split)))
        shards[split], sizes[split] = {}, 0
        for chunk in np.array_split(np.arange(len(plan[split])), files[split]):
            name = f"{SHARD_PREFIX}-{len(shards[split]):05d}-of-{files[split]:05d}"
            index_path = os.path.join(partial, f"{INDEX_PREFIX}-{index_number:05d}-of-{index_total:05d}.jsonl")
            index_number += 1
            with (
                open(os.path.join(partial, split_dir(split), name), "wb") as out,
                open(index_path, "w", encoding="utf-8") as index,
            ):
                for i in chunk:
                    item = plan[split][int(i)]
                    features = features_of(item, shape)
                    if split == "train":
                        stats = stats.merge(GlobalStats.of(features))
                    example = records.UtteranceFeatures(
                        item.utterance, item.speaker, item.session, split, features, duration_of(item.frames)
                    )
                    out.write(frame_record(records.encode_example(example)))
                    line = {
                        "utterance": item.utterance,
                        "speaker": item.speaker,
                        "session": item.session,
                        "split": split,
                        "num_frames": item.frames,
                        "duration": duration_of(item.frames),
                    }
                    index.write(json.dumps(line, ensure_ascii=False) + "\n")
            shards[split][name] = len(chunk)
            sizes[split] += os.path.getsize(os.path.join(partial, split_dir(split), name))
    feature_config = FeatureConfig(n_mels=shape.bins, normalization="global")
    good = {split: len(plan[split]) for split in SPLITS}
    summary = {
        "input": {"kind": "generated", "path": "bench/bench_scale.py", "data_root": None, "meta_file": None},
        "splits_from": "generated: speaker-disjoint 80/10/10",
        "inputs": shape.utterances,
        "good": good,
        "dead_letter": {"total": 0, "by_reason": {}},
        "audio_seconds": {s: round(sum(duration_of(i.frames) for i in plan[s]), 3) for s in SPLITS},
        "frames": {s: sum(i.frames for i in plan[s]) for s in SPLITS},
        "shards": shards,
        "features": feature_config.to_json(),
        "records": {"features_encoding": "float32 little-endian bytes, frames x bins", "compression": "none"},
        "phone_inventory": None,
        "global_stats": GLOBAL_STATS_FILE,
        "wall_seconds": round(time.time() - started, 2),
    }
    with open(os.path.join(partial, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    with open(os.path.join(partial, GLOBAL_STATS_FILE), "w", encoding="utf-8") as f:
        json.dump(stats.to_json(), f)
    corpus = {
        "shape": shape.to_json(),
        "utterances": good,
        "speakers": split_counts(shape.speakers),
        "shards": files,
        "bytes": sizes,
        "seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(partial, CORPUS_FILE), "w", encoding="utf-8") as f:
        json.dump(corpus, f, indent=1)
    os.rename(partial, folder)
    return corpus


def ensure_corpus(cache: str, shape: CorpusShape) -> Tuple[str, Dict[str, object]]:
    """(folder, corpus.json) of `shape` under `cache`, generated unless a complete one is there."""
    folder = os.path.join(cache, shape.name())
    done = os.path.join(folder, CORPUS_FILE)
    if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
            corpus = json.load(f)
        if corpus.get("shape") == shape.to_json():
            return folder, corpus
        raise RuntimeError(f"{folder} holds another corpus than {shape}: remove it")
    os.makedirs(cache, exist_ok=True)
    return folder, write_corpus(folder, shape)


# ---------------------------------------------------------------------------------- measuring


def _proc_tree_rss(pid: int) -> Tuple[int, int, int]:
    """(bytes of the tree, bytes of `pid` alone, processes) from /proc, where psutil is missing."""
    parents: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total = own = count = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm", encoding="utf-8") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        total += rss
        count += 1
        own = rss if current == pid else own
        todo += parents.get(current, [])
    return total, own, count


def tree_rss(pid: int) -> Tuple[int, int, int]:
    """(summed RSS bytes of `pid` and its descendants, RSS of `pid` alone, processes counted)."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0, 0, 0
    total = own = count = 0
    for process in processes:
        try:
            rss = process.memory_info().rss
        except psutil.Error:  # ended between the listing and the read
            continue
        total += rss
        count += 1
        own = rss if process.pid == pid else own
    return total, own, count


@dataclass
class Watched:
    """What the parent saw of one stage process."""

    returncode: int
    seconds: float
    peak_tree_bytes: int
    peak_own_bytes: int
    max_processes: int
    samples: int
    killed: str  # why the parent killed it, or ""


def watch(
    command: List[str],
    log_path: str,
    interval: float,
    max_rss_mb: float,
    timeout: float,
    done_path: str = "",
    exit_grace: float = 60.0,
    **popen,
) -> Watched:
    """Runs `command` (stdout and stderr to `log_path`, no stdin) in a session of its own,
    sampling its tree's RSS every `interval` s; kills the group when the tree passes `max_rss_mb`
    (0: no limit), the run passes `timeout` s, or `exit_grace` s after `done_path` appeared (the
    stage reported; what is left would only hold the bench up)."""
    started = time.time()
    peak_tree = peak_own = processes = samples = 0
    killed = ""
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
        reported = 0.0
        try:
            while process.poll() is None:
                if done_path and not reported and os.path.exists(done_path):
                    reported = time.time()
                total, own, count = tree_rss(process.pid)
                peak_tree, peak_own = max(peak_tree, total), max(peak_own, own)
                processes, samples = max(processes, count), samples + 1
                if max_rss_mb and total > max_rss_mb * MB:
                    killed = f"its processes held {total / MB:.0f} MB, above --max-rss-mb {max_rss_mb:.0f}"
                elif time.time() - started > timeout:
                    killed = f"ran past --stage-timeout {timeout:.0f} s"
                elif reported and time.time() - reported > exit_grace:
                    killed = f"did not exit {exit_grace:.0f} s after reporting its figures"
                if killed:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    break
                time.sleep(interval)
        finally:
            if process.poll() is None:  # interrupted: leave no stage running
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return Watched(process.returncode, time.time() - started, peak_tree, peak_own, processes, samples, killed)


def rss_mb() -> float:
    """This process's RSS now."""
    with open("/proc/self/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def maxrss_mb() -> Dict[str, float]:
    """ru_maxrss of this process and of its largest waited-for descendant (kilobytes on Linux)."""
    return {
        "ru_maxrss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ru_maxrss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


# ---------------------------------------------------------------------------------- the stages (child side)


@dataclass(frozen=True)
class StagePaths:
    """Where one size's stages read and write: the corpus, and their outputs under `work`."""

    features: str
    work: str

    @property
    def training_input(self) -> str:
        return os.path.join(self.work, "training_input")

    @property
    def blocks(self) -> str:
        return os.path.join(self.training_input, "blocks", "train")

    @property
    def pairs(self) -> str:
        return os.path.join(self.work, "pairs")

    @property
    def serving(self) -> str:
        return os.path.join(self.work, "serving")

    @property
    def statistics(self) -> str:
        return os.path.join(self.work, "statistics")

    def split(self, name: str) -> str:
        from speechpipe.filenames import split_dir

        return os.path.join(self.features, split_dir(name))

    def done(self, stage: str) -> str:
        """A marker a stage writes when it finished, so that a later run's dependent stage knows
        its input is whole."""
        return os.path.join(self.work, f"{stage}.done")


def _feature_config(paths: StagePaths):
    from speechpipe.config import FeatureConfig
    from speechpipe.filenames import GLOBAL_STATS_FILE, SUMMARY_FILE

    with open(os.path.join(paths.features, SUMMARY_FILE), encoding="utf-8") as f:
        features = FeatureConfig.from_json(json.load(f)["features"])
    with open(os.path.join(paths.features, GLOBAL_STATS_FILE), encoding="utf-8") as f:
        return features, json.load(f)


def stage_training_input(paths: StagePaths, args: argparse.Namespace) -> Callable[[], Dict[str, object]]:
    """SpeakerBlockGen's work: it reads every training record, the largest pass of the branch."""
    from speechpipe.components.embedder_trainer import write_training_input
    from speechpipe.speakers.embedder.config import EmbedderTrainConfig

    def work() -> Dict[str, object]:
        write_training_input(paths.features, paths.training_input, EmbedderTrainConfig(), list(args.beam_arg))
        with open(os.path.join(paths.training_input, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        blocks = summary["blocks"]["splits"]["train"]
        backend = summary["backend"]["splits"]["train"]
        return {
            "blocks": blocks["blocks"],
            "block_shards": blocks["shards"],
            "block_mb": round(blocks["bytes"] / 1e6, 1),
            "backend_utterances": backend["utterances"],
            "backend_mb": round(backend["bytes"] / 1e6, 1),
        }

    return work


def stage_trials(paths: StagePaths, args: argparse.Namespace) -> Callable[[], Dict[str, object]]:
    """PairGen's work: the index only, grouped by speaker and split (its pairs grow with them)."""
    from speechpipe.jobs import pairs_job

    def work() -> Dict[str, object]:
        argv = ["--features", paths.features, "--out", paths.pairs, "--seed", "0", "--overwrite"]
        pairs_job.run(argv + ["--trial-splits", "test", "--pair-splits", ""] + list(args.beam_arg))
        with open(os.path.join(paths.pairs, pairs_job.SUMMARY), encoding="utf-8") as f:
            summary = json.load(f)
        return {"trials": int(summary["splits"]["test"].get("trials_lines") or 0)}

    return work


def stage_statistics(paths: StagePaths, args: argparse.Namespace) -> Callable[[], Dict[str, object]]:
    """StatisticsGen's work on the training split: the component's own executor
    (components.statistics_gen, its byte-size batching included) with the pipeline's StatsOptions."""
    import tensorflow_data_validation as tfdv
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.types import standard_component_specs as specs

    from speechpipe.components.statistics_gen import Executor, statistics_options

    def work() -> Dict[str, object]:
        examples = standard_artifacts.Examples()
        examples.uri = paths.features
        examples.split_names = artifact_utils.encode_split_names(["train"])
        statistics = standard_artifacts.ExampleStatistics()
        statistics.uri = paths.statistics
        properties = {specs.STATS_OPTIONS_JSON_KEY: statistics_options().to_json(), specs.EXCLUDE_SPLITS_KEY: "[]"}
        Executor(Executor.Context(beam_pipeline_args=list(args.beam_arg))).Do(
            {specs.EXAMPLES_KEY: [examples]}, {specs.STATISTICS_KEY: [statistics]}, properties
        )
        stats = tfdv.load_stats_binary(os.path.join(statistics.uri, "Split-train", "FeatureStats.pb"))
        return {"examples": int(stats.datasets[0].num_examples)}

    return work


def stage_input_pipeline(paths: StagePaths, args: argparse.Namespace) -> Callable[[], Dict[str, object]]:
    """The trainer's batches without the model: whether reading keeps up with training, and
    whether its buffers depend on the number of blocks."""
    from speechpipe.speakers.speaker_blocks import block_dataset

    def work() -> Dict[str, object]:
        iterator = iter(block_dataset(paths.blocks, SEGMENT_FRAMES, P, K, seed=0).as_numpy_iterator())
        started = time.time()
        while time.time() - started < args.warmup:
            next(iterator)
        batches = 0
        started = time.time()
        while time.time() - started < args.seconds:
            next(iterator)
            batches += 1
        elapsed = time.time() - started
        return {"segments_per_s": round(batches * P * K / elapsed), "batches": batches, "measured_s": round(elapsed, 1)}

    return work


def stage_trainer(paths: StagePaths, args: argparse.Namespace) -> Callable[[], Dict[str, object]]:
    """The Trainer's run_fn work on a small step budget: what grows with the corpus there is the
    evaluation (validation and back-end utterances, up to their caps), not the steps."""
    from speechpipe.components.embedder_trainer import train
    from speechpipe.speakers.embedder.config import EmbedderTrainConfig

    features, global_stats = _feature_config(paths)
    config = EmbedderTrainConfig(max_steps=args.max_steps, eval_every_steps=args.eval_every)

    def work() -> Dict[str, object]:
        result = train(
            paths.training_input, [paths.split("validation")], features, paths.serving, None, config, global_stats
        )
        summary = result.summary
        bounds = summary["inputs"]["evaluation_bounds"]
        return {
            "steps": summary.get("steps"),
            "train_seconds": summary.get("train_seconds"),
            "validation_seconds": summary.get("validation_seconds"),
            "best_val_eer": summary.get("best_val_eer"),
            "validation_utterances": bounds["validation_utterances"]["utterances"],
            "backend_utterances": (bounds.get("backend_utterances") or {}).get("utterances"),
            "load_seconds": summary["inputs"].get("load_seconds"),
        }

    return work


def stage_evaluator(paths: StagePaths, args: argparse.Namespace) -> Callable[[], Dict[str, object]]:
    """The speaker evaluator's measurement of one model (what SpeakerEvaluator calls per model):
    split indexes, never the splits' features."""
    from speechpipe.components.speaker_evaluator import embedder_metrics
    from speechpipe.filenames import TRIALS_FILE
    from speechpipe.speakers.split_stream import read_index
    from speechpipe.speakers.trials import read_trials

    def work() -> Dict[str, object]:
        test = read_index(paths.split("test"), min_speakers=2)
        validation = read_index(paths.split("validation"), min_speakers=2)
        trials = read_trials(os.path.join(paths.pairs, TRIALS_FILE.format(split="test")), voxceleb_ids=False)
        metrics = embedder_metrics(paths.serving, test, trials, None, "candidate", validation)
        return {
            "eer": metrics["eer"],
            "trials": metrics["trials"],
            "test_utterances": metrics["utterances"],
            "validation_trials": (metrics.get("operating_point") or {}).get("validation_trials"),
        }

    return work


STAGE_WORK: Dict[str, Callable[[StagePaths, argparse.Namespace], Callable[[], Dict[str, object]]]] = {
    "training_input": stage_training_input,
    "trials": stage_trials,
    "statistics": stage_statistics,
    "input_pipeline": stage_input_pipeline,
    "trainer": stage_trainer,
    "evaluator": stage_evaluator,
}


def run_child(stage: str, paths: StagePaths, args: argparse.Namespace) -> Dict[str, object]:
    """One stage in this process: imports and set-up first, then the measured call; its figures."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    work = STAGE_WORK[stage](paths, args)
    before = rss_mb()
    cpu = cpu_seconds()
    started = time.time()
    figures = work()
    seconds = time.time() - started
    cpu = cpu_seconds() - cpu
    os.makedirs(paths.work, exist_ok=True)
    open(paths.done(stage), "w").close()
    return {
        "code": imported_code(),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "rss_before_mb": round(before, 1),
        **maxrss_mb(),
        **figures,
    }


def imported_code() -> str:
    """A fingerprint (size, mtime) of the product's modules this process imported: the code this
    stage ran, compared across sizes (another engineer's change between two sizes shows)."""
    import hashlib

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tops = tuple(os.path.join(repo, top) + os.sep for top in ("src", "components", "pipeline"))
    digest = hashlib.sha1()
    for path in sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}):
        if path.startswith(tops) and os.path.exists(path):
            info = os.stat(path)
            digest.update(f"{os.path.relpath(path, repo)}:{info.st_size}:{info.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()[:12]


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its waited-for descendants (Beam's workers):
    unlike wall time, hardly changed by other work sharing the cores."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ---------------------------------------------------------------------------------- running (parent side)


def measure_stage(stage: str, paths: StagePaths, args: argparse.Namespace) -> Dict[str, object]:
    """One stage in a fresh process, watched; its figures (or why it has none)."""
    os.makedirs(os.path.join(paths.work, "logs"), exist_ok=True)
    missing = [need for need in NEEDS.get(stage, ()) if not os.path.exists(paths.done(need))]
    if missing:
        return {"error": f"needs the {', '.join(missing)} stage's output at this size (run it first)"}
    result_path = os.path.join(paths.work, "logs", f"{stage}.json")
    log_path = os.path.join(paths.work, "logs", f"{stage}.log")
    if os.path.exists(result_path):
        os.remove(result_path)
    if os.path.exists(paths.done(stage)):
        os.remove(paths.done(stage))
    command = [sys.executable, "-m", "bench.bench_scale", "--child", stage, "--features", paths.features]
    command += ["--work", paths.work, "--result", result_path] + child_options(args)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    watched = watch(
        command, log_path, args.interval, args.max_rss_mb, args.stage_timeout, result_path, env=env, cwd=repo
    )
    figures: Dict[str, object] = {
        "process_seconds": round(watched.seconds, 1),
        "peak_tree_rss_mb": round(watched.peak_tree_bytes / MB, 1),
        "peak_process_rss_mb": round(watched.peak_own_bytes / MB, 1),
        "max_processes": watched.max_processes,
        "rss_samples": watched.samples,
        "log": log_path,
    }
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as f:
            figures.update(json.load(f))
    if watched.killed and os.path.exists(result_path):
        figures["exit"] = f"killed: {watched.killed}"  # the figures are whole: it had reported them
    elif watched.killed:
        figures["error"] = f"killed: {watched.killed}"
    elif watched.returncode != 0 or not os.path.exists(result_path):
        figures["error"] = f"exit status {watched.returncode}: {last_line(log_path)}"
    figures["peak_rss_mb"] = round(
        max(float(figures["peak_tree_rss_mb"]), float(figures.get("ru_maxrss_self_mb") or 0.0)), 1
    )
    return figures


def last_line(path: str) -> str:
    """The log's last non-empty line (an error's message, usually)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def child_options(args: argparse.Namespace) -> List[str]:
    """The options a stage process needs from the parent's."""
    options = ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    options += ["--max-steps", str(args.max_steps), "--eval-every", str(args.eval_every)]
    return options + [f"--beam-arg={a}" for a in args.beam_arg]


def scale_label(scale: float) -> str:
    return f"{scale:g}x"


def ratios(results: Dict[str, Dict[str, Dict[str, object]]], scales: Sequence[float]) -> Dict[str, Dict[str, object]]:
    """{stage: {"4x/1x": {"rss": r, "seconds": r[, "segments_per_s": r]}, ...}} of each size over
    the smallest, where both were measured without error."""
    base = scale_label(scales[0])
    out: Dict[str, Dict[str, object]] = {}
    for stage in STAGES:
        first = results.get(base, {}).get(stage)
        if not first or first.get("error"):
            continue
        for scale in scales[1:]:
            other = results.get(scale_label(scale), {}).get(stage)
            if not other or other.get("error"):
                continue
            pair: Dict[str, object] = {}
            for key, name in (
                ("peak_rss_mb", "rss"),
                ("seconds", "seconds"),
                ("cpu_seconds", "cpu_seconds"),
                ("segments_per_s", "segments_per_s"),
            ):
                if first.get(key) and other.get(key) is not None:
                    pair[name] = round(float(other[key]) / float(first[key]), 3)
            out.setdefault(stage, {})[f"{scale_label(scale)}/{base}"] = pair
    return out


def verdicts(
    results: Dict[str, Dict[str, Dict[str, object]]], scales: Sequence[float], goal: float = RSS_GOAL
) -> Dict[str, str]:
    """{stage: a line saying whether its peak RSS stayed within `goal` x from the smallest to the
    largest size}; and the input pipeline's throughput against SEGMENTS_GOAL."""
    first, last = scale_label(scales[0]), scale_label(scales[-1])
    lines: Dict[str, str] = {}
    for stage in STAGES:
        a, b = results.get(first, {}).get(stage), results.get(last, {}).get(stage)
        if a is None and b is None:
            continue
        if not a or not b or a.get("error") or b.get("error") or len(scales) < 2:
            why = (b or {}).get("error") or (a or {}).get("error") or "measured at one size only"
            lines[stage] = f"{stage}: no verdict ({why})"
            continue
        ratio = float(b["peak_rss_mb"]) / float(a["peak_rss_mb"])
        work_a = float(a["peak_rss_mb"]) - float(a.get("rss_before_mb") or 0)
        work_b = float(b["peak_rss_mb"]) - float(b.get("rss_before_mb") or 0)
        state = "within" if ratio <= goal else "NOT within"
        lines[stage] = (
            f"{stage}: peak RSS x{ratio:.2f} from {first} to {last} ({a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MB; "
            f"above the RSS before the work: {work_a:.0f} -> {work_b:.0f} MB): {state} {goal:g}x"
        )
    pipeline = [
        results[scale_label(s)]["input_pipeline"]
        for s in scales
        if not results.get(scale_label(s), {}).get("input_pipeline", {}).get("error")
        and "segments_per_s" in results.get(scale_label(s), {}).get("input_pipeline", {})
    ]
    if pipeline:
        rates = [int(p["segments_per_s"]) for p in pipeline]
        state = "meets" if min(rates) >= SEGMENTS_GOAL else "does NOT meet"
        lines["input_pipeline_throughput"] = (
            f"input_pipeline: {min(rates):,} to {max(rates):,} segments/s on {os.cpu_count()} cores: "
            f"{state} the goal of {SEGMENTS_GOAL:,}"
        )
    return lines


def format_table(results: Dict[str, Dict[str, Dict[str, object]]], scales: Sequence[float]) -> str:
    """Stage x size: peak RSS MB and seconds (segments/s for the input pipeline), then each
    size's ratio to the smallest for RSS, wall time and CPU time (which other work sharing the
    cores hardly changes)."""
    labels = [scale_label(s) for s in scales]
    rel = ratios(results, scales)
    header = ["stage"]
    for label in labels:
        header += [f"{label} MB", f"{label} s"]
    ratio_keys = [f"{label}/{labels[0]}" for label in labels[1:]]
    for key in ratio_keys:
        header += [f"RSS {key}", f"s {key}", f"cpu {key}"]
    rows = [header]
    for stage in STAGES:
        if not any(stage in results.get(label, {}) for label in labels):
            continue
        row = [stage]
        for label in labels:
            figures = results.get(label, {}).get(stage)
            if figures is None:
                row += ["-", "-"]
            elif figures.get("error"):
                row += ["failed" if not str(figures["error"]).startswith("killed") else "killed", "-"]
            else:
                row += [f"{float(figures['peak_rss_mb']):.0f}", f"{float(figures['seconds']):.1f}"]
        for key in ratio_keys:
            pair = rel.get(stage, {}).get(key, {})
            row += [_ratio(pair.get("rss")), _ratio(pair.get("seconds")), _ratio(pair.get("cpu_seconds"))]
        rows.append(row)
        if stage == "input_pipeline":
            extra = ["  segments/s"]
            for label in labels:
                figures = results.get(label, {}).get(stage) or {}
                extra += [f"{int(figures['segments_per_s']):,}" if "segments_per_s" in figures else "-", ""]
            for key in ratio_keys:
                extra += [_ratio(rel.get(stage, {}).get(key, {}).get("segments_per_s")), "", ""]
            rows.append(extra)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]
    return "\n".join(lines)


def _ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"x{value:.2f}"


def parse_scales(text: str) -> List[float]:
    """ "1,4,16" -> [1.0, 4.0, 16.0]: positive, ascending, distinct (the first is the baseline)."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales {text!r}: numbers separated by commas") from None
    if not scales or any(s <= 0 for s in scales) or scales != sorted(set(scales)):
        raise argparse.ArgumentTypeError(f"--scales {text!r}: positive, ascending, distinct")
    return scales


def parse_stages(text: str) -> List[str]:
    """ "trials,statistics" (or "all") -> the stages in their run order."""
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    if chosen == ["all"]:
        return list(STAGES)
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--stages {text!r}: among {', '.join(STAGES)} (or all)")
    return [s for s in STAGES if s in chosen]


def default_max_rss_mb() -> float:
    """Most of the machine's memory: a stage that grows past it is stopped, not the machine."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
        return round(0.5 * total_kb / 1024)
    except (OSError, StopIteration):
        return 0.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_scale", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=parse_scales, default=parse_scales("1,4,16"), help="default 1,4,16")
    parser.add_argument("--base-utterances", type=int, default=2000, help="utterances at 1x, default %(default)s")
    parser.add_argument(
        "--scale-factor", type=float, default=1.0, help="multiplies every size, for quick runs (0.1: 200 at 1x)"
    )
    parser.add_argument("--stages", type=parse_stages, default=list(STAGES), help="comma-separated, default all")
    parser.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "speechpipe-bench-scale"),
        help="generated corpora (reused) and, under runs/, the stages' outputs; default %(default)s",
    )
    parser.add_argument("--out", default="", help="write every figure here as JSON (after each stage)")
    parser.add_argument("--shard-mb", type=float, default=150.0, help="feature shard size, default %(default)s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=20.0, help="input_pipeline: measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="input_pipeline: seconds before measuring")
    parser.add_argument("--max-steps", type=int, default=20, help="trainer: step budget, default %(default)s")
    parser.add_argument("--eval-every", type=int, default=20, help="trainer: steps between evaluations")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between RSS samples")
    parser.add_argument(
        "--max-rss-mb",
        type=float,
        default=default_max_rss_mb(),
        help="kill a stage whose processes hold more (0: never), default half the memory: %(default)s",
    )
    parser.add_argument("--stage-timeout", type=float, default=3600.0, help="kill a stage after this many seconds")
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a Beam flag for the Beam stages (repeat; e.g. --beam-arg=--direct_running_mode=multi_processing)",
    )
    parser.add_argument("--child", default="", choices=("",) + STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--features", default="", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    return parser


def code_state(repo: str) -> Dict[str, object]:
    """The code the stages ran: git's HEAD, the files that differ from it, and a fingerprint of
    every product source file (path, size, mtime), so that a run during which the code changed
    (other work in the same tree) says so instead of mixing versions silently."""
    import hashlib

    def git(*command: str) -> str:
        try:
            done = subprocess.run(["git", *command], cwd=repo, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    digest = hashlib.sha1()
    for top in ("src", "components", "pipeline"):
        for folder, _, names in sorted(os.walk(os.path.join(repo, top))):
            for name in sorted(n for n in names if n.endswith(".py")):
                path = os.path.join(folder, name)
                info = os.stat(path)
                digest.update(f"{os.path.relpath(path, repo)}:{info.st_size}:{info.st_mtime_ns}\n".encode("utf-8"))
    return {
        "head": git("rev-parse", "HEAD"),
        "modified": [line[3:] for line in git("status", "--porcelain").splitlines() if line],
        "fingerprint": digest.hexdigest(),
    }


def code_changes(results: Dict[str, Dict[str, Dict[str, object]]], scales: Sequence[float]) -> List[str]:
    """A line for each stage whose sizes ran different product code (the tree changed between
    them): its ratios compare two versions, not two sizes."""
    lines = []
    for stage in STAGES:
        seen = {
            scale_label(s): results.get(scale_label(s), {}).get(stage, {}).get("code")
            for s in scales
            if results.get(scale_label(s), {}).get(stage, {}).get("code")
        }
        if len(set(seen.values())) > 1:
            lines.append(f"{stage}: the product code it imported changed between sizes ({seen}): rerun it")
    return lines


def write_json(path: str, report: Dict[str, object]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def main(argv: Optional[List[str]] = None) -> int:
    # `python -m bench` calls main() with no argv: the defaults, not that command's own arguments.
    args = build_parser().parse_args([] if argv is None else argv)
    if args.child:
        figures = run_child(args.child, StagePaths(args.features, args.work), args)
        with open(args.result + ".tmp", "w", encoding="utf-8") as f:
            json.dump(figures, f, default=str)
        os.replace(args.result + ".tmp", args.result)  # whole when it appears: the parent watches for it
        # Out without the interpreter's teardown: TensorFlow's and Beam's threads (a tf.data
        # iterator's prefetch) can keep a finished stage from exiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    shapes = {
        scale_label(s): shape_at(s, args.base_utterances, args.scale_factor, shard_mb=args.shard_mb, seed=args.seed)
        for s in args.scales
    }
    for shape in shapes.values():
        check_shape(shape)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    report: Dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "max_rss_mb": args.max_rss_mb},
        "code": code_state(repo),
        "options": {k: v for k, v in vars(args).items() if k not in ("child", "features", "work", "result")},
        "corpora": {},
        "results": {},
    }
    results: Dict[str, Dict[str, Dict[str, object]]] = report["results"]  # type: ignore[assignment]
    for label, shape in shapes.items():
        started = time.time()
        print(f"{label}: {shape.utterances:,} utterances of {shape.speakers:,} speakers ...", flush=True)
        features, corpus = ensure_corpus(args.cache, shape)
        mb = sum(corpus["bytes"].values()) / 1e6
        print(
            f"{label}: corpus {features} ({mb:,.0f} MB in {sum(corpus['shards'].values())} shards; "
            f"{time.time() - started:.0f} s)",
            flush=True,
        )
        report["corpora"][label] = {"folder": features, **corpus}  # type: ignore[index]
        paths = StagePaths(features, os.path.join(args.cache, "runs", shape.name()))
        results[label] = {}
        for stage in args.stages:
            figures = measure_stage(stage, paths, args)
            results[label][stage] = figures
            if figures.get("error"):
                where = f" (log: {figures['log']})" if figures.get("log") else ""
                print(f"{label} {stage}: {figures['error']}{where}", flush=True)
            else:
                extra = f", {int(figures['segments_per_s']):,} segments/s" if "segments_per_s" in figures else ""
                print(
                    f"{label} {stage}: peak RSS {figures['peak_rss_mb']:.0f} MB "
                    f"(before the work {figures['rss_before_mb']:.0f} MB, {figures['max_processes']} processes), "
                    f"{figures['seconds']:.1f} s{extra}",
                    flush=True,
                )
            report["ratios"] = ratios(results, args.scales)
            report["verdicts"] = verdicts(results, args.scales)
            report["code_changes"] = code_changes(results, args.scales)
            write_json(args.out, report)
    report["code_after"] = code_state(repo)
    write_json(args.out, report)
    print()
    print(format_table(results, args.scales))
    print()
    for line in verdicts(results, args.scales).values():
        print(line)
    for line in code_changes(results, args.scales):
        print(f"WARNING: {line}")
    if args.out:
        print(f"figures: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
