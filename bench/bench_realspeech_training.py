"""A learning proof on real speakers: the embedder recipe trained on LibriSpeech speakers (alone,
and mixed with synthetic ones) against a synthetic-only model, tested on test-other's 10
speakers, which none of them saw.

    .venv/bin/python -m bench bench_realspeech_training [--minutes 8] [--data DIR] [--runs synthetic,real,mixed]
        [--out DIR] [--chunk-seconds 3.5] [--validation-speakers 30] [--draws 1000] [--seed 0]
        [--steps N] [--augment noise,reverb,speed] [--augment-copies 3] [--augment-seed 0]

Data (`--data`, default ../shared/realspeech next to the checkout, or BENCH_REALSPEECH_DATA;
bench/bench_realspeech.py's layout): train-clean-100's 251 speakers with one ~14 s recording
each are the real training speakers; test-other's 10 speakers x 10 utterances the real test.
A folder named with --data that is missing is an error; when only the default is missing the
bench says so and skips.

1. Corpora (cached under --out, default bench/.cache/realspeech_training):
   * real: each train-clean-100 recording is cut into pseudo-utterances of `--chunk-seconds`
     or a little more (`chunk_bounds`: floor(duration / chunk) equal pieces; a recording
     shorter than one chunk stays whole), written as 16 kHz WAV files, all with the recording's
     chapter as their session. `--validation-speakers` of the 251 speakers (the first in a
     seeded hash of their ids) are the validation split, whose EER picks the best weights; the
     rest train; test-other's clips (whole) are the test split. Same-speaker pairs of the real
     training and validation speakers are different pieces of one recording: one session, one
     channel, which flatters the training signal and the validation EER.
   * synthetic: `speechpipe.corpus.synth.synthesize_corpus(SYNTH_CORPUS)` (German espeak-ng
     voices, 16 kHz), split by speaker as the demo corpus is.
   * mixed: one manifest of both (the real and synthetic train speakers train, both validation
     sets validate together, both test sets are the test split).
   * <run>_aug (real_aug, mixed_aug, synthetic_aug): the same manifest as <run>, with the feature
     job's augmentation (speechpipe.audio.augment: `--augment` kinds, `--augment-copies` copies
     of every training utterance); validation and test stay clean, the global statistics are the
     clean training audio's.
2. Features: the feature job (`speechpipe.jobs.features_job.run_job`) on each manifest with
   globally normalised log-mel (RunConfig.speaker_features); each run has its own global
   statistics, which its model exports, so a model's serving path normalises as it trained.
3. Training: `speechpipe.components.embedder_trainer.train` with EmbedderTrainConfig()'s defaults
   (in-batch P x K sampling, LDA back end) and a wall-clock budget of `--minutes` per model
   (validation included); best weights by validation EER; the exported `embed` SavedModel.
   With `--steps N` every model trains exactly N steps (early stopping off) and `--minutes`
   (default 60 then) is only a safety cap: on shared cores a wall-clock budget gives a run less
   training when another job happens to run beside it, so runs are compared at equal steps.
4. Test, through each SavedModel's `embed` signature on raw 16 kHz audio (bench_realspeech's
   functions): protocol (b), every pair of test-other, with the speaker-bootstrap 95 % interval;
   protocol (c), test-other against train-clean-100 impostors, only for models that never
   trained on train-clean-100 (a real-trained model has seen those impostors: unfair, so "n/a");
   the held-out synthetic test speakers (every pair), so that mixing's effect on the synthetic
   test shows; and the no-learning floor (bench_realspeech.statistics_embeddings) on the same
   trials, measured in the same run.
5. Written to --out: results.json and results.md; runs/<run>/{model,result.json}. A finished run
   whose result.json holds the same settings is reused. Nothing about time is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench import bench_realspeech as rs
from bench.corpus import CACHE, corpus_tag

GOAL_EER = 0.08  # the bar on test-other (protocol b)
SAMPLE_RATE = rs.SAMPLE_RATE
BASE_RUNS = ("synthetic", "real", "mixed")
AUG_SUFFIX = "_aug"  # <run>_aug: <run>'s data with the feature job's augmentation of the train split
RUNS = BASE_RUNS + tuple(r + AUG_SUFFIX for r in BASE_RUNS)
OUT = os.path.join(CACHE, "realspeech_training")
MANIFEST = "manifest.jsonl"
REAL_PREFIX = "ls"  # real speaker ids become ls<LibriSpeech id>: apart from any synthetic id


def synth_corpus_config():
    """The synthetic speakers: 120 German espeak-ng voices x 6 utterances, 3 sessions each (84
    train, 18 validation, 18 test speakers), modest so that it synthesises in about a minute."""
    from speechpipe.config import CorpusConfig

    return CorpusConfig(speakers=120, utterances=6, sessions=3)


# ------------------------------------------------------------------------- manifest planning


@dataclass(frozen=True)
class Item:
    """One manifest line of the real corpus and where its audio comes from."""

    utterance: str
    audio: str  # relative to the corpus folder
    speaker: str
    session: str
    split: str
    source: str  # the clip it is cut from
    start: int  # samples
    end: int

    def manifest_line(self) -> Dict[str, object]:
        return {
            "utterance": self.utterance,
            "audio": self.audio,
            "speaker": self.speaker,
            "session": self.session,
            "split": self.split,
            "duration": round((self.end - self.start) / SAMPLE_RATE, 6),
            "source": os.path.basename(self.source),
        }


def chunk_bounds(n_samples: int, chunk_seconds: float, sample_rate: int = SAMPLE_RATE) -> List[Tuple[int, int]]:
    """[(start, end)] of floor(duration / chunk) equal, contiguous pieces covering the whole
    recording, each at least one chunk long; a recording shorter than one chunk stays whole."""
    if n_samples <= 0:
        return []
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds={chunk_seconds}: need > 0")
    n = max(1, int(n_samples // int(round(chunk_seconds * sample_rate))))
    edges = np.linspace(0, n_samples, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def validation_speakers(speakers: Sequence[str], count: int, seed: int = 0) -> List[str]:
    """The `count` speakers first in a seeded hash of their ids (sorted): a fixed, seeded choice
    that does not depend on the order the speakers come in."""
    unique = sorted(set(speakers))
    if not 0 < count < len(unique):
        raise ValueError(f"validation speakers: {count} of {len(unique)}; need 0 < count < speakers")
    key = lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest()  # noqa: E731
    return sorted(sorted(unique, key=key)[:count])


def plan_real_corpus(
    clips: Sequence["rs.Clip"], lengths: Sequence[int], chunk_seconds: float, n_validation: int, seed: int = 0
) -> List[Item]:
    """The real corpus's manifest: train-clean-100 recordings cut into pseudo-utterances (train
    and validation, by speaker), test-other's clips whole (test). `lengths`: samples per clip."""
    if len(clips) != len(lengths):
        raise ValueError("one length per clip")
    clean = [c.speaker for c in clips if c.subset == rs.TRAIN_CLEAN]
    held = set(validation_speakers(clean, n_validation, seed))
    items: List[Item] = []
    for clip, n in zip(clips, lengths):
        speaker = REAL_PREFIX + clip.speaker
        session = "-".join(clip.utterance.split("-")[:2])  # <speaker>-<chapter>
        if clip.subset == rs.TEST_OTHER:
            items.append(
                Item(
                    f"{speaker}/{session}/{clip.utterance}",
                    f"{rs.TEST_OTHER}/{clip.utterance}.wav",
                    speaker,
                    session,
                    "test",
                    clip.path,
                    0,
                    int(n),
                )
            )
            continue
        split = "validation" if clip.speaker in held else "train"
        for k, (a, b) in enumerate(chunk_bounds(int(n), chunk_seconds)):
            name = f"{clip.utterance}-c{k:02d}"
            items.append(
                Item(
                    f"{speaker}/{session}/{name}",
                    f"{rs.TRAIN_CLEAN}/{clip.speaker}/{name}.wav",
                    speaker,
                    session,
                    split,
                    clip.path,
                    a,
                    b,
                )
            )
    return items


def write_real_corpus(
    clips: Sequence["rs.Clip"],
    waves: Sequence[np.ndarray],
    out_dir: str,
    chunk_seconds: float,
    n_validation: int,
    seed: int = 0,
) -> List[Item]:
    """Writes the real corpus's WAV pieces and manifest.jsonl (last, so that a folder with a
    manifest is complete)."""
    import soundfile as sf

    items = plan_real_corpus(clips, [len(w) for w in waves], chunk_seconds, n_validation, seed)
    wave_of = {c.path: w for c, w in zip(clips, waves)}
    for item in items:
        path = os.path.join(out_dir, item.audio)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, wave_of[item.source][item.start : item.end], SAMPLE_RATE, subtype="PCM_16")
    write_manifest(os.path.join(out_dir, MANIFEST), [i.manifest_line() for i in items])
    return items


def read_manifest(path: str) -> List[Dict[str, object]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_manifest(path: str, lines: Sequence[Dict[str, object]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def mixed_manifest(parts: Sequence[Tuple[str, str]], root: str) -> List[Dict[str, object]]:
    """The lines of several corpora's manifests [(corpus folder, manifest path)], with audio paths
    relative to `root` (the mixed manifest's folder, which must hold every corpus folder: the
    feature job confines audio to the manifest's folder). Speakers and utterances must not clash."""
    lines: List[Dict[str, object]] = []
    root = os.path.abspath(root)
    for folder, manifest in parts:
        relative = os.path.relpath(os.path.abspath(folder), root)
        if relative.startswith(".."):
            raise ValueError(f"{folder} is not inside {root}")
        for line in read_manifest(manifest):
            lines.append({**line, "audio": os.path.join(relative, str(line["audio"]))})
    seen: Dict[str, int] = {}
    for line in lines:
        seen[str(line["utterance"])] = seen.get(str(line["utterance"]), 0) + 1
    twice = sorted(u for u, n in seen.items() if n > 1)
    if twice:
        raise ValueError(f"utterances in more than one corpus: {twice[:5]}")
    speakers = [{str(x["speaker"]) for x in read_manifest(m)} for _, m in parts]
    for i in range(len(speakers)):
        for j in range(i + 1, len(speakers)):
            if speakers[i] & speakers[j]:
                raise ValueError(f"speakers in two corpora: {sorted(speakers[i] & speakers[j])[:5]}")
    return lines


def split_counts(lines: Sequence[Dict[str, object]]) -> Dict[str, Dict[str, int]]:
    """{split: {"utterances": n, "speakers": n}} of manifest lines."""
    out: Dict[str, Dict[str, int]] = {}
    for split in ("train", "validation", "test"):
        mine = [x for x in lines if x.get("split") == split]
        out[split] = {"utterances": len(mine), "speakers": len({x["speaker"] for x in mine})}
    return out


# ---------------------------------------------------------------------------- data and features


def prepare_corpora(data: str, out: str, chunk_seconds: float, n_validation: int, seed: int):
    """(clips, waves, {run: manifest path}, synthetic corpus folder), each made once."""
    from speechpipe.corpus.synth import synthesize_corpus

    clips = rs.find_clips(data)
    waves = rs.read_waves(clips)
    real_dir = os.path.join(out, f"real-chunk{chunk_seconds:g}s-val{n_validation}-seed{seed}")
    if not os.path.exists(os.path.join(real_dir, MANIFEST)):
        started = time.time()
        write_real_corpus(clips, waves, real_dir, chunk_seconds, n_validation, seed)
        print(f"real corpus written to {real_dir} ({time.time() - started:.0f} s)", flush=True)
    synth = synth_corpus_config()
    synth_dir = os.path.join(out, "synth_corpus-" + corpus_tag(synth.content_json()))
    if not os.path.exists(os.path.join(synth_dir, MANIFEST)):
        started = time.time()
        print(f"synthesising {synth.speakers} x {synth.utterances} into {synth_dir}", flush=True)
        synthesize_corpus(synth, synth_dir, progress=False)
        print(f"synthesised in {time.time() - started:.0f} s", flush=True)
    mixed_path = os.path.join(out, f"mixed-{os.path.basename(real_dir)}-{os.path.basename(synth_dir)}.jsonl")
    if not os.path.exists(mixed_path):
        write_manifest(
            mixed_path,
            mixed_manifest(
                [(real_dir, os.path.join(real_dir, MANIFEST)), (synth_dir, os.path.join(synth_dir, MANIFEST))], out
            ),
        )
    manifests = {
        "synthetic": os.path.join(synth_dir, MANIFEST),
        "real": os.path.join(real_dir, MANIFEST),
        "mixed": mixed_path,
    }
    return clips, waves, manifests, synth_dir


def base_run(name: str) -> str:
    """The run whose manifest `name` uses (real_aug -> real)."""
    return name[: -len(AUG_SUFFIX)] if name.endswith(AUG_SUFFIX) else name


def augment_config(kinds: str, copies: int, seed: int):
    """The feature job's augmentation for the *_aug runs (validated)."""
    from speechpipe.audio.augment import AugmentConfig, parse_kinds

    return AugmentConfig(copies=copies, kinds=parse_kinds(kinds), seed=seed).validate()


def feature_folder(out: str, manifest: str, name: str, augment=None) -> str:
    """Where a run's features are cached: named by the manifest and, for an augmented run, by
    its augmentation settings (a changed setting makes new features)."""
    key = os.path.abspath(manifest)
    if augment is not None:
        key += json.dumps(augment.to_json(), sort_keys=True)
    return os.path.join(out, "features", name + "-" + hashlib.sha256(key.encode()).hexdigest()[:8])


def features(manifest: str, folder: str, augment=None) -> str:
    """The feature job's output for `manifest` (global normalisation, `augment` of the train
    split when given), made once."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.audio.sources import make_spec
    from speechpipe.config import FeatureConfig
    from speechpipe.filenames import SUMMARY_FILE
    from speechpipe.jobs.features_job import run_job

    if not os.path.exists(os.path.join(folder, SUMMARY_FILE)):
        started = time.time()
        run_job(
            make_spec(manifest),
            FeatureConfig(normalization="global"),
            folder,
            PipelineOptions(["--direct_running_mode=in_memory"]),
            augment=augment,
        )
        print(
            f"features of {os.path.basename(manifest)}{' (augmented)' if augment else ''}: "
            f"{time.time() - started:.0f} s",
            flush=True,
        )
    return folder


# ------------------------------------------------------------------------------------ training


def train_config(minutes: float, seed: int, steps: int = 0):
    """EmbedderTrainConfig()'s recipe with the bench's budget: `minutes` of wall clock, or with
    `steps` > 0 exactly that many steps (no early stopping, so every run gets the same number;
    `minutes` stays as a cap)."""
    from speechpipe.components.embedder_trainer import EmbedderTrainConfig

    if steps < 0:
        raise ValueError(f"steps={steps}: need >= 0 (0 = the wall-clock budget alone)")
    if steps:
        return EmbedderTrainConfig(max_seconds=60.0 * minutes, max_steps=steps, patience_evals=0, seed=seed)
    return EmbedderTrainConfig(max_seconds=60.0 * minutes, max_steps=0, seed=seed)


def train_run(name: str, feature_dir: str, out: str, minutes: float, seed: int, steps: int = 0) -> Dict[str, object]:
    """Trains one model on a feature run's train split, validated on its validation split (or
    reuses a finished run with the same settings); returns the trainer's summary."""
    import tf_keras as keras

    from bench.training_input import cached_training_input
    from speechpipe.components.embedder_trainer import train
    from speechpipe.config import FeatureConfig

    folder = os.path.join(out, "runs", name)
    result_path = os.path.join(folder, "result.json")
    with open(os.path.join(feature_dir, "summary.json"), encoding="utf-8") as f:
        feature_config = FeatureConfig.from_json(json.load(f)["features"])
    with open(os.path.join(feature_dir, "global_stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    config = train_config(minutes, seed, steps)
    expected = replace(config, model=replace(config.model, n_bins=feature_config.n_bins)).to_json()
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("config") == expected and done.get("feature_dir") == os.path.abspath(feature_dir):
            print(f"[{name}] reusing {result_path}", flush=True)
            return done
    print(
        f"[{name}] training for {f'{steps} steps (cap {minutes:g} min)' if steps else f'{minutes:g} min'} ...",
        flush=True,
    )
    keras.backend.clear_session()
    result = train(
        cached_training_input(feature_dir, out, config),
        [os.path.join(feature_dir, "Split-validation")],
        feature_config,
        os.path.join(folder, "model"),
        None,
        config,
        stats,
    )
    summary = {**result.summary, "feature_dir": os.path.abspath(feature_dir)}
    os.makedirs(folder, exist_ok=True)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(
        f"[{name}] {summary['steps']} steps in {summary['train_seconds']:.0f} s, best validation EER "
        f"{100 * summary['best_val_eer']:.2f} % at step {summary['best_step']}",
        flush=True,
    )
    return summary


# ---------------------------------------------------------------------------------- evaluation


def synthetic_test(synth_dir: str) -> Tuple[List[str], List[str], List[np.ndarray]]:
    """(utterances, speakers, 16 kHz waves) of the synthetic corpus's held-out test speakers."""
    from speechpipe.audio.decode import decode

    items = [x for x in read_manifest(os.path.join(synth_dir, MANIFEST)) if x["split"] == "test"]
    waves = [decode(os.path.join(synth_dir, str(x["audio"])), SAMPLE_RATE).samples for x in items]
    return [str(x["utterance"]) for x in items], [str(x["speaker"]) for x in items], waves


def all_pairs(
    embeddings: np.ndarray, utterances: Sequence[str], speakers: Sequence[str], score_fn
) -> Dict[str, object]:
    from speechpipe.speakers import speaker_eval

    trials = speaker_eval.all_pairs_trials(list(utterances), list(speakers))
    s, y = speaker_eval.trial_scores(dict(zip(utterances, embeddings)), trials, score_fn)
    return speaker_eval.verification(s, y).to_json()


def evaluate_model(model_dir: str, clips, waves, synth, draws: int, seed: int) -> Tuple[Dict[str, object], object]:
    """{protocol: figures} on the real clips (bench_realspeech.evaluate) plus "synthetic_test",
    through the model's embed signature and scoring; and the loaded model."""
    from speechpipe.speakers.embedder import score

    embeddings, loaded = rs.model_embeddings(model_dir, waves)
    c = loaded.config
    score_fn = lambda a, b: score(a, b, c.scoring, c.epsilon)  # noqa: E731
    figures = rs.evaluate(dict(zip([x.utterance for x in clips], embeddings)), clips, score_fn, draws, seed)
    utterances, speakers, synth_waves = synth
    synth_embeddings, _ = rs.model_embeddings(model_dir, synth_waves)
    figures["synthetic_test"] = all_pairs(synth_embeddings, utterances, speakers, score_fn)
    return figures, loaded


def evaluate_floor(feature_config, clips, waves, synth, draws: int, seed: int) -> Dict[str, object]:
    figures = rs.evaluate(
        dict(zip([x.utterance for x in clips], rs.statistics_embeddings(waves, feature_config))),
        clips,
        rs.cosine,
        draws,
        seed,
    )
    utterances, speakers, synth_waves = synth
    figures["synthetic_test"] = all_pairs(
        rs.statistics_embeddings(synth_waves, feature_config), utterances, speakers, rs.cosine
    )
    return figures


# -------------------------------------------------------------------------------------- report

# saw train-clean-100's speakers: protocol (c) is unfair to judge them
TRAINED_ON_CLEAN = {"real", "mixed", "real" + AUG_SUFFIX, "mixed" + AUG_SUFFIX}


def system_name(run: str, augmentation: Optional[Dict[str, object]] = None) -> str:
    base = base_run(run)
    name = f"{base}-only" if base != "mixed" else "mixed"
    if run.endswith(AUG_SUFFIX):
        config = (augmentation or {}).get("config", {})
        kinds = ", ".join(config.get("kinds", ())) or "augmented"
        name += f" + augmentation ({kinds}; {config.get('copies', '?')} copies)"
    return name


def format_table(rows: Sequence[Dict[str, object]]) -> str:
    header = (
        "| system | training speakers | steps (best at) | train time | test-other EER | 95 % CI (speakers) | minDCF "
        "| (c) impostors EER | minDCF | synthetic test EER | minDCF |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        f = r["figures"]
        b, c, s = f["b_test_other"], f["c_impostors"], f["synthetic_test"]
        low, high = b["eer_ci95"]
        if r["run"] in TRAINED_ON_CLEAN:
            impostors = "n/a (trained on them) | n/a"
        else:
            impostors = f"{100 * c['eer']:.2f} % | {c['min_dcf']:.3f}"
        steps = f"{r['steps']} ({r['best_step']})" if r.get("steps") is not None else "-"
        seconds = f"{r['train_seconds'] / 60:.1f} min" if r.get("train_seconds") is not None else "-"
        lines.append(
            f"| {r['system']} | {r.get('speakers', '-')} | {steps} | {seconds} | {100 * b['eer']:.2f} % "
            f"| {100 * low:.1f}-{100 * high:.1f} % | {b['min_dcf']:.3f} | {impostors} "
            f"| {100 * s['eer']:.2f} % | {s['min_dcf']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_realspeech_training", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default=os.environ.get("BENCH_REALSPEECH_DATA"),
        help=f"the real-speech folder (default {rs.DEFAULT_DATA})",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock training budget per model, validation included (default 8; with --steps, a cap, default 60)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train every model exactly this many steps (early stopping off): compare runs at equal "
        "steps, since shared cores make wall-clock budgets unfair (default 0: --minutes decides)",
    )
    parser.add_argument("--augment", default="noise,reverb,speed", help="augmentation kinds of the *_aug runs")
    parser.add_argument(
        "--augment-copies",
        type=int,
        default=3,
        help="augmented copies per training utterance in the *_aug runs (default 3: one of each kind)",
    )
    parser.add_argument("--augment-seed", type=int, default=None, help="augmentation seed (default: --seed)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {RUNS}")
    parser.add_argument("--out", default=os.environ.get("BENCH_REALSPEECH_TRAINING_OUT") or OUT)
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=3.5,
        help="train-clean-100 recordings are cut into pseudo-utterances of this length or a little more",
    )
    parser.add_argument("--validation-speakers", type=int, default=30, help="train-clean-100 speakers that validate")
    parser.add_argument("--draws", type=int, default=1000, help="speaker-bootstrap draws for test-other's interval")
    parser.add_argument("--seed", type=int, default=0, help="training, validation choice and bootstrap seed")
    parser.add_argument("--no-report", action="store_true", help="prepare and train only")
    args = parser.parse_args([] if argv is None else list(argv))
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; choose from {RUNS}")
    if args.steps < 0:
        raise SystemExit(f"--steps {args.steps}: need >= 0")
    if args.minutes is None:
        args.minutes = float(os.environ.get("BENCH_REALSPEECH_TRAINING_MINUTES", "60" if args.steps else "8"))
    augment = None
    if any(n.endswith(AUG_SUFFIX) for n in names):
        from speechpipe.validation import ConfigError

        try:
            augment = augment_config(
                args.augment, args.augment_copies, args.seed if args.augment_seed is None else args.augment_seed
            )
        except ConfigError as error:
            raise SystemExit(f"bench_realspeech_training: {error}") from None
        if not augment.enabled:
            raise SystemExit("bench_realspeech_training: the *_aug runs need --augment-copies >= 1")
    named = args.data is not None
    data = args.data or rs.DEFAULT_DATA
    try:
        rs.find_clips(data)
    except rs.DataMissing as error:
        if named:
            raise SystemExit(f"bench_realspeech_training: {error}") from None
        print(f"bench_realspeech_training: skipped: {error}")
        return
    os.makedirs(args.out, exist_ok=True)
    clips, waves, manifests, synth_dir = prepare_corpora(
        data, args.out, args.chunk_seconds, args.validation_speakers, args.seed
    )
    manifests.update({n: manifests[base_run(n)] for n in names})
    counts = {n: split_counts(read_manifest(manifests[n])) for n in names}
    for n in names:
        print(
            f"{n}: "
            + ", ".join(f"{s} {c['speakers']} speakers / {c['utterances']} utterances" for s, c in counts[n].items()),
            flush=True,
        )
    run_augment = {n: (augment if n.endswith(AUG_SUFFIX) else None) for n in names}
    feature_dirs = {
        n: features(manifests[n], feature_folder(args.out, manifests[n], n, run_augment[n]), run_augment[n])
        for n in names
    }
    augmentation = {}
    for n in names:
        with open(os.path.join(feature_dirs[n], "summary.json"), encoding="utf-8") as f:
            augmentation[n] = json.load(f).get("augmentation")
    summaries = {n: train_run(n, feature_dirs[n], args.out, args.minutes, args.seed, args.steps) for n in names}
    if args.no_report:
        return

    synth = synthetic_test(synth_dir)
    rows: List[Dict[str, object]] = []
    floor_config = None
    for n in names:
        model_dir = os.path.join(args.out, "runs", n, "model")
        figures, loaded = evaluate_model(model_dir, clips, waves, synth, args.draws, args.seed)
        floor_config = floor_config or loaded.feature_config
        s = summaries[n]
        train = counts[n]["train"]
        copies = f" + {augmentation[n]['train']} copies" if augmentation[n] else ""
        # Speed copies are new speakers (AugmentConfig.speed_new_speaker): the trainer's count says how many.
        trained = int(s.get("inputs", {}).get("train_speakers", train["speakers"]))
        extra = f" + {trained - train['speakers']} speed" if trained > train["speakers"] else ""
        rows.append(
            {
                "run": n,
                "system": system_name(n, augmentation[n]),
                "speakers": f"{train['speakers']}{extra} ({train['utterances']} utt.{copies})",
                "augmentation": augmentation[n],
                "steps": s["steps"],
                "best_step": s["best_step"],
                "train_seconds": s["train_seconds"],
                "best_val_eer": s["best_val_eer"],
                "validation_speakers": counts[n]["validation"]["speakers"],
                "model_dir": model_dir,
                "figures": figures,
            }
        )
    if floor_config is not None:
        rows.insert(
            0,
            {
                "run": "floor",
                "system": "no learning (log-mel mean+std)",
                "speakers": "none",
                "figures": evaluate_floor(floor_config, clips, waves, synth, args.draws, args.seed),
            },
        )
    table = format_table(rows)
    if args.steps:
        budget = (
            f"Budget: exactly {args.steps} training steps per model (early stopping off; a {args.minutes:g} min "
            f"cap), compared at equal steps because the {os.cpu_count()} CPU cores are shared with other jobs "
            "and a wall-clock budget would give runs unequal training; train time is wall clock, validation "
            "included, and not comparable between runs."
        )
    else:
        budget = (
            f"Budget: {args.minutes:g} min of wall clock per model (validation included), {os.cpu_count()} CPU cores."
        )
    note = (
        budget + f" train-clean-100 cut into {args.chunk_seconds:g} s pseudo-utterances, "
        f"{args.validation_speakers} of its speakers validate."
    )
    if augment is not None:
        note += (
            f" Augmented runs: {augment.copies} copies of every training utterance, kinds "
            f"{', '.join(augment.kinds)} (speechpipe.audio.augment defaults otherwise, seed {augment.seed}); "
            "validation and test clean; global statistics from the clean training audio."
        )
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(note + "\n\n" + table + "\n")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "data": os.path.abspath(data),
                "minutes": args.minutes,
                "steps": args.steps,
                "augment": augment.to_json() if augment is not None else None,
                "chunk_seconds": args.chunk_seconds,
                "validation_speakers": args.validation_speakers,
                "seed": args.seed,
                "counts": counts,
                "rows": rows,
            },
            f,
            indent=1,
        )
    print("\n" + note + "\n\n" + table)
    for r in rows:
        if r["run"] == "floor":
            continue
        eer = r["figures"]["b_test_other"]["eer"]
        print(
            f"{r['system']}: test-other EER {100 * eer:.2f} % (bar {100 * GOAL_EER:.0f} %: "
            f"{'met' if eer <= GOAL_EER else 'NOT met'})"
        )
    print(f"tables in {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
