"""Throughput of `speechpipe transcribe` and `speechpipe embed`, against a floor measured in the
same run.

    python -m bench bench_serving [--home speechpipe_home] [--input CORPUS] [--limit N]
                                  [--ctc-model REF] [--embedder-model REF]

Rows, in seconds of audio per wall-clock second (x real time) and per core:
- floor: the SavedModel's signature on already-decoded waveforms, batches of 16, in this process:
  no decoding, no files, no pipeline.
- files: `speechpipe transcribe FILE...` in its own process (start-up included): decode each
  file, resample, batch, call the signature.
- beam: `speechpipe transcribe|embed --input CORPUS --out DIR`: the batch-inference Beam job
  (listing, parsing, decoding, RunInference, writing), DirectRunner in_memory, in its own process.
The models default to the home's registry champions; the corpus to the home's demo corpus
(--limit utterances of it). Nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

CORES = os.cpu_count() or 1


def _corpus_files(corpus: str, limit: int) -> Tuple[str, List[str]]:
    """A manifest of the corpus's first `limit` utterances (next to the corpus, so its paths stay
    inside the data root) and their audio files."""
    with open(os.path.join(corpus, "manifest.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f][:limit]
    manifest = os.path.join(corpus, f"bench_serving_{limit}.jsonl")
    with open(manifest, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return manifest, [os.path.join(corpus, line["audio"]) for line in lines]


def _floor(saved_model_dir: str, signature: str, files: List[str], rate: int) -> Tuple[float, float]:
    """(audio seconds, wall seconds) of the signature alone on decoded waveforms."""
    import tensorflow as tf

    from speechpipe.audio.batching import pad_waveforms
    from speechpipe.audio.decode import decode

    model = tf.saved_model.load(saved_model_dir)
    waves = [decode(path, rate).samples for path in files]
    call = model.signatures[signature]
    padded, lengths = pad_waveforms(waves[:2])
    call(waveforms=tf.constant(padded), lengths=tf.constant(lengths))  # traced once, outside the timing
    started = time.perf_counter()
    for i in range(0, len(waves), 16):
        padded, lengths = pad_waveforms(waves[i : i + 16])
        call(waveforms=tf.constant(padded), lengths=tf.constant(lengths))
    return sum(w.shape[0] for w in waves) / rate, time.perf_counter() - started


def _files(model_ref: str, home: str, command: str, files: List[str]) -> float:
    """Wall seconds of the command on a file list, in its own process (start-up included)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "speechpipe.cli", command, *files, "--model", model_ref, "--home", home],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def _beam(model_ref: str, home: str, command: str, manifest: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "speechpipe.cli",
                command,
                "--input",
                manifest,
                "--out",
                out,
                "--model",
                model_ref,
                "--home",
                home,
                "--direct_running_mode=in_memory",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command} --input failed: {done.stderr[-2000:]}")
        return time.perf_counter() - started


def measure(home: str, corpus: str, limit: int, models: Dict[str, str]) -> List[Dict[str, object]]:
    from speechpipe.results.resolve import default_cache, model_sample_rate, resolve
    from speechpipe.results.tracking import tracking_uri_for

    manifest, files = _corpus_files(corpus, limit)
    rows = []
    for kind, ref in models.items():
        resolved = resolve(ref, tracking_uri_for(None, home), default_cache(home))
        rate = model_sample_rate(resolved.saved_model_dir)
        signature, command = ("transcribe", "transcribe") if kind == "ctc" else ("embed", "embed")
        audio, floor_wall = _floor(resolved.saved_model_dir, signature, files, rate)
        entries = [("floor: signature on decoded audio", floor_wall)]
        if kind == "ctc":  # `embed` takes corpora only; `verify` is two files at a time
            entries.append(("files: speechpipe transcribe FILE...", _files(ref, home, "transcribe", files)))
        entries.append((f"beam: speechpipe {command} --input", _beam(ref, home, command, manifest)))
        for label, wall in entries:
            rows.append(
                {
                    "model": f"{kind} ({resolved.describe()})",
                    "row": label,
                    "audio_seconds": round(audio, 1),
                    "wall_seconds": round(wall, 2),
                    "x_real_time": round(audio / wall, 1),
                    "per_core": round(audio / wall / CORES, 1),
                    "vs_floor": round(floor_wall / wall, 3),
                }
            )
    return rows


def main(argv=None) -> int:
    from speechpipe.serving.commands import CTC_MODEL, EMBEDDER_MODEL

    parser = argparse.ArgumentParser(prog="python -m bench bench_serving", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="speechpipe_home")
    parser.add_argument("--input", default=None, help="a synthesised corpus folder (default HOME/corpus)")
    parser.add_argument("--limit", type=int, default=200, help="utterances (default %(default)s)")
    parser.add_argument("--ctc-model", default=CTC_MODEL)
    parser.add_argument("--embedder-model", default=EMBEDDER_MODEL)
    args = parser.parse_args(argv)
    corpus = args.input or os.path.join(args.home, "corpus")
    if not os.path.isfile(os.path.join(corpus, "manifest.jsonl")):
        print(f"bench_serving: skipped: no corpus at {corpus} (run `make demo`, or give --input)")
        return 0
    rows = measure(args.home, corpus, args.limit, {"ctc": args.ctc_model, "speaker": args.embedder_model})
    print(f"{'model':44} {'row':44} {'audio s':>8} {'wall s':>7} {'x RT':>7} {'/core':>7} {'vs floor':>8}")
    for r in rows:
        print(
            f"{r['model'][:44]:44} {r['row'][:44]:44} {r['audio_seconds']:8.1f} {r['wall_seconds']:7.2f} "
            f"{r['x_real_time']:7.1f} {r['per_core']:7.1f} {r['vs_floor']:8.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
