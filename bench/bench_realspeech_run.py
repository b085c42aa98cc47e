"""The speaker branch of `speechpipe run` on real speech, as a user runs it: LibriSpeech's
train-clean-100 trains and validates, test-other tests, through the whole pipeline (features,
blocks and trials, StatisticsGen, Trainer, Evaluator, gate, push) in its default budget.

    .venv/bin/python -m bench bench_realspeech_run [--data DIR] [--out DIR] [--config run.yaml]
        [--name NAME] [--chunk-seconds 3.5] [--validation-speakers 30] [--seed 0]

Data (`--data`, default ../shared/realspeech next to the checkout, or BENCH_REALSPEECH_DATA):
bench_realspeech_training's real corpus, made once under --out (default
bench/.cache/realspeech_run): each train-clean-100 recording cut into pieces of 3.5 s or a little
more (one chapter, the session, per speaker), `--validation-speakers` of its 251 speakers
validating and the rest training; test-other's 10 speakers x 10 clips whole, the test split.
Its manifest names every split, so the run's preflight and the pair job take the splits as
they are.

Each run gets a fresh home (<out>/home-<name>) and `speechpipe run --branches speaker
--speaker-span <manifest>` with `--config` when given (e.g. another embedder section). The
figures printed are the pushed (or refused) model's: the Evaluator's test EER, minDCF and
clustering error on test-other, and the trainer's steps, evaluations and best step from its
training_result.json. Without the data it says so and skips. Nothing about time is asserted.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import time
from typing import Dict, Optional, Sequence

from bench import bench_realspeech as rs
from bench.bench_realspeech_training import MANIFEST, read_manifest, split_counts, write_real_corpus
from bench.corpus import CACHE

OUT = os.path.join(CACHE, "realspeech_run")
GOAL_EER = 0.03  # issue #27's bar for test-other through `speechpipe run` (goal 1.5 %)


def real_corpus(data: str, out: str, chunk_seconds: float, n_validation: int, seed: int) -> str:
    """The manifest of the real corpus, written once."""
    folder = os.path.join(out, f"real-chunk{chunk_seconds:g}s-val{n_validation}-seed{seed}")
    manifest = os.path.join(folder, MANIFEST)
    if not os.path.exists(manifest):
        clips = rs.find_clips(data)
        started = time.time()
        write_real_corpus(clips, rs.read_waves(clips), folder, chunk_seconds, n_validation, seed)
        print(f"real corpus written to {folder} ({time.time() - started:.0f} s)", flush=True)
    return manifest


def embedder_result(home: str) -> Dict[str, object]:
    """The newest embedder training_result.json under the run's home ({} when there is none)."""
    paths = glob.glob(os.path.join(home, "**", "training_result.json"), recursive=True)
    for path in sorted(paths, key=os.path.getmtime, reverse=True):
        with open(path) as f:
            result = json.load(f)
        if "val_eer" in (result.get("history") or [{}])[0]:
            return result
    return {}


def run_once(manifest: str, home: str, config: Optional[str]) -> Dict[str, object]:
    """`speechpipe run` on the manifest's speaker branch; the pushed version's figures."""
    from speechpipe.cli import main as cli
    from speechpipe.pipeline.run_config import RunConfig
    from speechpipe.results.registry import Registry

    if os.path.exists(home):
        shutil.rmtree(home)
    argv = ["run", "--home", home, "--speaker-span", manifest, "--branches", "speaker"]
    if config:
        argv += ["--config", config]
    started = time.time()
    code = cli(argv)
    minutes = (time.time() - started) / 60
    models = {m["name"]: m for m in Registry(RunConfig(home=home).registry_uri).list()}
    versions = models.get("speechpipe-embedder", {}).get("versions", [])
    trained = embedder_result(home)
    return {
        "exit_code": code,
        "run_minutes": round(minutes, 1),
        "pushed": bool(versions),
        "metrics": versions[0]["metrics"] if versions else {},
        "training": {
            k: trained[k]
            for k in ("steps", "epochs", "best_step", "budget_reached", "stopped_early", "validation_seconds")
            if k in trained
        },
        "history": [
            {k: h.get(k) for k in ("step", "seconds", "val_eer", "val_min_dcf")} for h in trained.get("history", [])
        ],
    }


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_realspeech_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("BENCH_REALSPEECH_DATA"))
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--config", help="a run file (speechpipe run --config) for this run")
    parser.add_argument("--name", default="default", help="names the run's home and its results")
    parser.add_argument("--chunk-seconds", type=float, default=3.5)
    parser.add_argument("--validation-speakers", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = args.data or rs.DEFAULT_DATA
    if not os.path.isdir(data):
        if args.data:
            raise SystemExit(f"--data {data}: no such folder")
        print(f"real-speech data not found at {data}: skipped (see ../shared/realspeech/README.md)")
        return
    os.makedirs(args.out, exist_ok=True)
    manifest = real_corpus(data, args.out, args.chunk_seconds, args.validation_speakers, args.seed)
    print(f"corpus {manifest}: {json.dumps(split_counts(read_manifest(manifest)))}", flush=True)
    result = run_once(manifest, os.path.join(args.out, f"home-{args.name}"), args.config)
    result["name"], result["config"] = args.name, args.config
    with open(os.path.join(args.out, f"results-{args.name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    metrics = result["metrics"]
    print(json.dumps(result["training"]))
    for row in result["history"]:
        print(f"  step {row['step']:>5}  {row['seconds']:>6} s  val EER {100 * row['val_eer']:5.2f} %")
    if metrics:
        print(
            f"{args.name}: test-other EER {100 * metrics.get('test_eer', float('nan')):.2f} % (goal <= "
            f"{100 * GOAL_EER:g} %), minDCF {metrics.get('test_min_dcf', float('nan')):.3f}, "
            f"MR {metrics.get('test_mr', float('nan')):.3f}; run {result['run_minutes']} min, "
            f"exit {result['exit_code']}, pushed {result['pushed']}"
        )
    else:
        print(f"{args.name}: no embedder version in the registry (exit {result['exit_code']})")


if __name__ == "__main__":
    main()
