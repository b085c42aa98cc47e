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

Long recordings (`--minutes 1 10 60 180`, run first, whatever the corpus): LibriSpeech clips from
../shared/realspeech (CC BY 4.0; BENCH_REALSPEECH_DATA) end to end, as 16 kHz 16-bit WAV files of each length, through
each serving path in its own process, chunked (the defaults, ChunkConfig) and, up to
`--whole-up-to` minutes, whole-file (`--chunk-seconds 0`, the path before chunking) as the
baseline:
- transcribe: `speechpipe transcribe FILE --timestamps`
- verify: `speechpipe verify FILE ONE_MINUTE_FILE`
- embed: `speechpipe embed --input MANIFEST --out DIR` (the Beam job: scan, RunInference)
Each row: the process's peak RSS (its VmHWM) and x real time (audio seconds per wall
second, start-up included), and per path the ratio of the longest recording's peak to the
10-minute one's. Without champions in the home, models of the demo champions' architecture with
random weights stand in (memory and speed depend on the architecture, not the weights).
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


# ------------------------------------------------------------------------------ long recordings


def _realspeech() -> str:
    """LibriSpeech under the real-speech data the benches share (bench_realspeech's default, or
    BENCH_REALSPEECH_DATA)."""
    from bench.bench_realspeech import DEFAULT_DATA

    return os.path.join(os.environ.get("BENCH_REALSPEECH_DATA") or DEFAULT_DATA, "librispeech")


def _clips() -> List[str]:
    import glob

    return sorted(glob.glob(os.path.join(_realspeech(), "**", "*.flac"), recursive=True))


def write_recording(path: str, minutes: float, clips: List[str]) -> float:
    """The clips end to end, cycling, up to `minutes`, written block by block (never held whole);
    returns its seconds."""
    import soundfile as sf

    target, written, i = int(minutes * 60 * 16000), 0, 0
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as out:
        while written < target:
            data, rate = sf.read(clips[i % len(clips)], dtype="float32")
            if rate != 16000:
                raise ValueError(f"{clips[i % len(clips)]}: {rate} Hz, expected 16 kHz")
            data = data[: target - written]
            out.write(data)
            written += data.shape[0]
            i += 1
    return written / 16000


def bench_models(folder: str) -> Dict[str, str]:
    """SavedModels of the demo champions' architectures (CTCModelConfig(), EmbedderConfig() but
    without a fitted back end), random weights, default features."""
    import json as _json

    import tf_keras as keras

    from speechpipe.audio.tf_features import GraphFeatures
    from speechpipe.config import FeatureConfig
    from speechpipe.phones.ctc_config import CTCModelConfig
    from speechpipe.phones.ctc_model import build_acoustic_model, export_transcriber
    from speechpipe.phones.inventory import default_inventory
    from speechpipe.speakers import embedder
    from speechpipe.speakers.embedder import EmbedderConfig

    keras.utils.set_random_seed(0)
    inventory = default_inventory()
    ctc = os.path.join(folder, "ctc")
    acoustic = build_acoustic_model(80, len(inventory.phones) + 1, CTCModelConfig())
    export_transcriber(ctc, acoustic, GraphFeatures(FeatureConfig()), inventory.phones, CTCModelConfig().frame_stack)
    with open(os.path.join(ctc, "training_result.json"), "w") as f:
        _json.dump({"features": FeatureConfig().to_json(), "config": {"inventory": inventory_name()}}, f)
    config = EmbedderConfig(backend="none", embedding="hidden")
    emb = embedder.export_embedder(
        os.path.join(folder, "embedder"), embedder.build_base_network(config), config, FeatureConfig()
    )
    return {"ctc": ctc, "speaker": emb}


def inventory_name() -> str:
    from speechpipe.phones.inventory import DEFAULT_INVENTORY

    return DEFAULT_INVENTORY


def _high_water_mb(pid: int) -> float:
    """VmHWM (the peak resident set) of a live process, MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _run_measured(command: List[str], stdout_path: str = os.devnull) -> Tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a command in its own process. The peak is the process's
    own VmHWM, read every 50 ms until it exits (a high-water mark, so a read after the peak holds
    it): wait4's ru_maxrss would count the bench's own size at fork, which exec does not reset."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err, open(stdout_path, "w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _high_water_mb(process.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(command[:4])}... failed: {err.read()[-2000:]}")
    return wall, peak


def measure_long(
    minutes: List[float], whole_up_to: float, models: Dict[str, str], home: str, work: str
) -> List[Dict[str, object]]:
    clips = _clips()
    if not clips:
        print(f"long recordings: skipped: no LibriSpeech clips under {_realspeech()}")
        return []
    one_minute = os.path.join(work, "reference_1min.wav")
    write_recording(one_minute, 1.0, clips[::-1])
    cli = [sys.executable, "-m", "speechpipe.cli"]
    rows = []
    for m in minutes:
        path = os.path.join(work, f"recording_{m:g}min.wav")
        seconds = write_recording(path, m, clips)
        manifest = os.path.join(work, f"recording_{m:g}min.jsonl")
        with open(manifest, "w", encoding="utf-8") as f:
            f.write(json.dumps({"utterance": f"r{m:g}", "speaker": "s", "audio": os.path.basename(path)}) + "\n")
        modes = [("chunked", [])] + ([("whole", ["--chunk-seconds", "0"])] if m <= whole_up_to else [])
        for mode, flags in modes:
            commands = {
                "transcribe": cli
                + ["transcribe", path, "--model", models["ctc"], "--home", home]
                + (["--timestamps"] if mode == "chunked" else [])
                + flags,
                "verify": cli
                + ["verify", path, one_minute, "--model", models["speaker"], "--home", home, "--threshold", "0"]
                + flags,
                "embed (Beam)": cli
                + ["embed", "--input", manifest, "--out", os.path.join(work, f"embed_{m:g}_{mode}")]
                + ["--model", models["speaker"], "--home", home, "--direct_running_mode=in_memory"]
                + flags,
            }
            for path_name, command in commands.items():
                wall, rss = _run_measured(command, os.path.join(work, f"{path_name.split()[0]}_{m:g}_{mode}.out"))
                audio = seconds + (60.0 if path_name == "verify" else 0.0)
                rows.append(
                    {
                        "path": path_name,
                        "mode": mode,
                        "minutes": m,
                        "peak_rss_mb": round(rss),
                        "wall_seconds": round(wall, 1),
                        "x_real_time": round(audio / wall, 1),
                    }
                )
                print(
                    f"{path_name:14} {mode:8} {m:6g} min  peak {rss:7.0f} MB  {wall:7.1f} s  {audio / wall:7.1f}x RT",
                    flush=True,
                )
        if m <= whole_up_to:
            rows.append(_agreement(work, m))
        os.remove(path)
    return rows


def _agreement(work: str, m: float) -> Dict[str, object]:
    """Chunked against whole-file outputs of one recording: phones that differ (edit distance),
    the verify score's difference, the embedding's largest difference."""
    import numpy as np

    from speechpipe.phones.ctc_model import edit_distance

    def lines(name: str) -> List[dict]:
        with open(os.path.join(work, name), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    chunked = lines(f"transcribe_{m:g}_chunked.out")[-1]["phones"].split()
    whole = lines(f"transcribe_{m:g}_whole.out")[-1]["phones"].split()
    scores = [lines(f"verify_{m:g}_{mode}.out")[-1]["score"] for mode in ("chunked", "whole")]
    embeddings = [np.load(os.path.join(work, f"embed_{m:g}_{mode}", "embeddings.npy")) for mode in ("chunked", "whole")]
    out = {
        "agreement": m,
        "phones_whole": len(whole),
        "phones_chunked": len(chunked),
        "phone_edits": edit_distance(whole, chunked) if len(whole) * len(chunked) < 4e8 else None,
        "score_difference": abs(scores[0] - scores[1]),
        "embedding_max_difference": float(np.abs(embeddings[0] - embeddings[1]).max()),
    }
    print(f"agreement at {m:g} min: {out}", flush=True)
    return out


def long_summary(rows: List[Dict[str, object]], longest: float) -> None:
    agreements = [r for r in rows if "agreement" in r]
    rows = [r for r in rows if "agreement" not in r]
    for a in agreements:
        print(
            f"chunked vs whole-file, {a['agreement']:g} min: {a['phone_edits']} phone edits in {a['phones_whole']} "
            f"phones; verify score differs by {a['score_difference']:.2e}; embedding by at most "
            f"{a['embedding_max_difference']:.2e}"
        )
    print(f"{'path':14} {'mode':8} {'min':>6} {'peak MB':>8} {'wall s':>8} {'x RT':>7}")
    for r in rows:
        print(
            f"{r['path']:14} {r['mode']:8} {r['minutes']:6g} {r['peak_rss_mb']:8} {r['wall_seconds']:8.1f} "
            f"{r['x_real_time']:7.1f}"
        )
    by = {(r["path"], r["mode"], r["minutes"]): r for r in rows}
    for path in sorted({r["path"] for r in rows}):
        ten, top = by.get((path, "chunked", 10)), by.get((path, "chunked", longest))
        if ten and top:
            print(
                f"{path}: peak RSS {longest:g} min / 10 min = {top['peak_rss_mb'] / ten['peak_rss_mb']:.2f}x (chunked)"
            )
        for m in (1, 10):
            chunked, whole = by.get((path, "chunked", m)), by.get((path, "whole", m))
            if chunked and whole:
                print(
                    f"{path}: {m:g} min chunked / whole-file: peak RSS {chunked['peak_rss_mb'] / whole['peak_rss_mb']:.2f}x, "
                    f"speed {chunked['x_real_time'] / whole['x_real_time']:.2f}x"
                )


def main(argv=None) -> int:
    from speechpipe.serving.commands import CTC_MODEL, EMBEDDER_MODEL

    parser = argparse.ArgumentParser(prog="python -m bench bench_serving", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="speechpipe_home")
    parser.add_argument("--input", default=None, help="a synthesised corpus folder (default HOME/corpus)")
    parser.add_argument("--limit", type=int, default=200, help="utterances (default %(default)s)")
    parser.add_argument("--ctc-model", default=CTC_MODEL)
    parser.add_argument("--embedder-model", default=EMBEDDER_MODEL)
    parser.add_argument(
        "--minutes", type=float, nargs="*", default=[1, 10, 60, 180], help="long recordings (default %(default)s)"
    )
    parser.add_argument("--whole-up-to", type=float, default=10, help="whole-file baseline up to these minutes")
    args = parser.parse_args(argv)
    if args.minutes:
        from speechpipe.results.resolve import default_cache, resolve
        from speechpipe.results.tracking import tracking_uri_for

        with tempfile.TemporaryDirectory() as work:
            try:
                models = {
                    kind: resolve(ref, tracking_uri_for(None, args.home), default_cache(args.home)).saved_model_dir
                    for kind, ref in (("ctc", args.ctc_model), ("speaker", args.embedder_model))
                }
                print(f"long recordings: models {models}")
            except Exception as error:  # no registry, no champion: the architecture stands in
                print(f"long recordings: no champions ({str(error)[:120]}): demo architectures, random weights")
                models = bench_models(os.path.join(work, "models"))
            rows = measure_long(sorted(args.minutes), args.whole_up_to, models, args.home, work)
        long_summary(rows, max(args.minutes))
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
