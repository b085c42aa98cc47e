"""`speechpipe transcribe | verify | embed | cluster`: the registry's champions (or any version or
SavedModel folder) on a user's recordings.

    speechpipe transcribe FILE...                  JSON Lines: {file, phones, seconds}
    speechpipe transcribe --timestamps FILE...     + a line per chunk, each phone with its times
    speechpipe transcribe --input CORPUS --out DIR batch inference as a Beam job (RunInference)
    speechpipe verify A.wav B.wav                  score, same/different at the model's threshold
    speechpipe verify --trials FILE --root DIR     every trial of a VoxCeleb-format list
    speechpipe embed --input CORPUS --out DIR      embeddings.npy + utterances.jsonl, speaker means
    speechpipe embed --segments 3 --input ...      one embedding per 3 s segment, with its times
    speechpipe cluster --input CORPUS --out FILE   who speaks in which recording (TSV)
    speechpipe cluster --segments 3 ...            who speaks when within each recording

Recordings of any length are served in chunks (`--chunk-seconds`, default 30; `--overlap-seconds`
of context either side, default 2): each file is read in blocks, twice (its normalisation
statistics, then the network), so memory is set by the chunk, not by the recording.
`--chunk-seconds 0` serves each file whole through the SavedModel's waveform signature.

Files may be in any format and at any rate the feature job decodes; each is resampled to the
model's rate. A corpus (--input) is read as the feature job reads it, its audio paths confined to
its folder, or to --data-root (a Kaldi wav.scp with absolute paths needs the folder holding them). A file that cannot be used is reported on stderr with its reason and the others are
still processed; the exit status is 1 when any input failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from speechpipe.config import CTC_MODEL_NAME, EMBEDDER_MODEL_NAME, ChunkConfig

CTC_MODEL = f"models:/{CTC_MODEL_NAME}@champion"
EMBEDDER_MODEL = f"models:/{EMBEDDER_MODEL_NAME}@champion"


def _model_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--model",
        default=default,
        help="models:/NAME@ALIAS, models:/NAME/VERSION or a SavedModel folder (default %(default)s)",
    )
    parser.add_argument("--home", default="speechpipe_home", help="home of the embedded registry (default %(default)s)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite under --home)",
    )


def _resolve(args: argparse.Namespace):
    from speechpipe.results.resolve import default_cache, resolve
    from speechpipe.results.tracking import tracking_uri_for

    return resolve(args.model, tracking_uri_for(args.tracking_uri, args.home), default_cache(args.home))


def _load(args: argparse.Namespace):
    import tensorflow as tf

    from speechpipe.results.resolve import model_sample_rate

    resolved = _resolve(args)
    return resolved, tf.saved_model.load(resolved.saved_model_dir), model_sample_rate(resolved.saved_model_dir)


def chunking_of(args: argparse.Namespace, saved_model_dir: Optional[str] = None, kind: str = "") -> ChunkConfig:
    """The --chunk-seconds / --overlap-seconds settings; with a model, whole files instead (and a
    note on stderr) when that model cannot be served in chunks."""
    from speechpipe.validation import validate_chunk_config

    chunking = validate_chunk_config(
        ChunkConfig(chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds)
    )
    if saved_model_dir is None:
        return chunking
    from speechpipe.results.serving_models import serving_chunking

    chunking, note = serving_chunking(saved_model_dir, kind, chunking)
    if note:
        print(f"speechpipe: note: {note}", file=sys.stderr)
    return chunking


def _serving_model(resolved, model, kind: str, chunking: ChunkConfig):
    from speechpipe.results.serving_models import ServingModel

    return ServingModel(resolved.saved_model_dir, kind, chunking, model=model)


def _scanned_files(serving, paths: Sequence[str], rate: int, bad: List[Dict[str, str]]):
    """(path, source, scan) of each file that reads; the others are added to `bad`."""
    from speechpipe.audio.stream import FileSource
    from speechpipe.results.serving_models import scanned

    failures: list = []
    yield from scanned(serving, ((p, lambda p=p: FileSource(p, rate)) for p in paths), failures)
    bad.extend({"file": k, "reason": r.reason, "detail": r.detail} for k, r in failures)


def decode_files(paths: Sequence[str], rate: int) -> Tuple[List[Tuple[str, np.ndarray]], List[Dict[str, str]]]:
    """([(path, samples at `rate`)], [{file, reason, detail}]) for the files that decode and those that do not."""
    from speechpipe.audio.decode import AudioRejected, check_usable, decode

    good, bad = [], []
    for path in paths:
        try:
            audio = decode(path, rate)
            check_usable(audio, 400, float("inf"))
            good.append((path, audio.samples))
        except AudioRejected as rejected:
            bad.append({"file": path, "reason": rejected.reason, "detail": rejected.detail})
        except OSError as error:
            bad.append({"file": path, "reason": "unreadable", "detail": str(error)})
    return good, bad


def _call(model, signature: str, waveforms: List[np.ndarray], batch_size: int = 16) -> Dict[str, np.ndarray]:
    import tensorflow as tf

    from speechpipe.audio.batching import pad_waveforms as batch

    parts: Dict[str, List[np.ndarray]] = {}
    for start in range(0, len(waveforms), batch_size):
        padded, lengths = batch(waveforms[start : start + batch_size])
        out = model.signatures[signature](waveforms=tf.constant(padded), lengths=tf.constant(lengths))
        for key, value in out.items():
            parts.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}


def _report_failures(bad: List[Dict[str, str]]) -> int:
    for failure in bad:
        print(f"speechpipe: {failure['file']}: {failure['reason']}: {failure['detail']}", file=sys.stderr)
    return 1 if bad else 0


def _corpus_job(args: argparse.Namespace, kind: str) -> Tuple[Dict[str, object], object]:
    from speechpipe.audio.sources import make_spec
    from speechpipe.jobs import inference_job
    from speechpipe.results.resolve import model_sample_rate

    resolved = _resolve(args)
    spec = make_spec(args.input, data_root=args.data_root)
    chunking = chunking_of(args, resolved.saved_model_dir, kind)
    segments = getattr(args, "segments", None)
    if segments is not None and not chunking.chunked:
        raise ValueError("--segments needs chunked serving (--chunk-seconds > 0)")
    if getattr(args, "timestamps", False) and not chunking.chunked:
        raise ValueError("--timestamps needs chunked serving (--chunk-seconds > 0)")
    if segments is not None:
        from speechpipe.results.serving_models import embedder_window_seconds

        window = embedder_window_seconds(resolved.saved_model_dir)
        if segments < window:
            raise ValueError(f"--segments {segments:g}: need at least one embedder window ({window:g} s)")
    summary = inference_job.run_job(
        spec,
        resolved.saved_model_dir,
        kind,
        model_sample_rate(resolved.saved_model_dir),
        args.out,
        args.beam_args,
        chunking=chunking,
        segment_seconds=segments,
        timestamps=bool(getattr(args, "timestamps", False)),
    )
    for line in inference_job.read_lines(args.out, inference_job.DEAD_LETTER_PREFIX):
        print(f"speechpipe: {line['source']}: {line['reason']}: {line['detail']}", file=sys.stderr)
    return summary, resolved


# ------------------------------------------------------------------------------ transcribe


def _lm_decoding(resolved, model, chunked: bool):
    """The model's phone-LM beam search, or a clear error where it cannot decode."""
    from speechpipe.phones.ctc_lm_decoder import load_lm_decoder

    decoder = load_lm_decoder(resolved.saved_model_dir)
    if decoder is None:
        raise ValueError(
            f"--decoder lm: {resolved.describe()} carries no phone LM (trained with phone_lm.order 0, "
            "or exported before models carried one): use --decoder greedy"
        )
    if "frame_logits" not in model.signatures:
        raise ValueError(f"--decoder lm: {resolved.describe()} has no frame_logits signature (exported before it)")
    if chunked:
        raise ValueError("--decoder lm decodes each file whole: add --chunk-seconds 0")
    return decoder


def _lm_transcripts(model, decoder, waveforms: List[np.ndarray], batch_size: int = 16) -> List[str]:
    """Phones of each waveform by the LM-scored beam search over the model's frame logits."""
    import tensorflow as tf

    from speechpipe.audio.batching import pad_waveforms
    from speechpipe.phones.ctc_lm_decoder import log_softmax

    texts: List[str] = []
    for start in range(0, len(waveforms), batch_size):
        padded, lengths = pad_waveforms(waveforms[start : start + batch_size])
        out = model.signatures["frame_logits"](waveforms=tf.constant(padded), lengths=tf.constant(lengths))
        for ids in decoder.decode_batch(log_softmax(out["logits"].numpy()), out["logit_lengths"].numpy()):
            texts.append(" ".join(decoder.phones[k] for k in ids))
    return texts


def transcribe(args: argparse.Namespace) -> int:
    if args.timestamps and not chunking_of(args).chunked:
        raise ValueError("--timestamps needs chunked serving (--chunk-seconds > 0)")
    if args.decoder == "lm" and (args.input or args.timestamps):
        raise ValueError(
            "--decoder lm decodes files given by name, whole, without --timestamps (the --input Beam job "
            "and the phone times use the greedy alignment)"
        )
    if args.input:
        if not args.out:
            raise ValueError("--input needs --out DIR")
        summary, resolved = _corpus_job(args, "ctc")
        print(
            f"transcribed {summary['results']} of {summary['inputs']} utterances with {resolved.describe()}: "
            f"{args.out}/results-*.jsonl ({summary['dead_letter']['total']} dead-lettered)"
        )
        return 1 if summary["dead_letter"]["total"] else 0
    if args.data_root:
        raise ValueError("--data-root goes with --input CORPUS (files given by name are read where they are)")
    if not args.files:
        raise ValueError("give FILE... or --input CORPUS --out DIR")
    resolved, model, rate = _load(args)
    chunking = chunking_of(args, resolved.saved_model_dir, "ctc")
    if args.timestamps and not chunking.chunked:
        raise ValueError(f"--timestamps needs chunked serving, which {resolved.describe()} cannot have")
    lm_decoder = _lm_decoding(resolved, model, chunking.chunked) if args.decoder == "lm" else None
    if chunking.chunked:
        bad: List[Dict[str, str]] = []
        serving = _serving_model(resolved, model, "ctc", chunking)
        for path, transcript in serving.transcribe(_scanned_files(serving, args.files, rate, bad)):
            if args.timestamps:
                for entry in transcript.chunk_entries():
                    print(json.dumps({"file": path, **entry}, ensure_ascii=False))
            line = {"file": path, "phones": transcript.text(), "seconds": round(transcript.seconds, 4)}
            if args.timestamps:
                line["chunks"] = len(transcript.chunks)
            print(json.dumps(line, ensure_ascii=False), flush=True)
        return _report_failures(bad)
    good, bad = decode_files(args.files, rate)
    if good:
        waveforms = [s for _, s in good]
        if lm_decoder is not None:
            texts = _lm_transcripts(model, lm_decoder, waveforms)
        else:
            texts = [phones.decode("utf-8") for phones in _call(model, "transcribe", waveforms)["phones"]]
        for (path, samples), phones in zip(good, texts):
            print(
                json.dumps(
                    {"file": path, "phones": phones, "seconds": round(samples.shape[0] / rate, 4)},
                    ensure_ascii=False,
                )
            )
    return _report_failures(bad)


# ------------------------------------------------------------------------------ verify


def threshold_of(resolved, override: Optional[float]) -> Tuple[Optional[float], str]:
    """(decision threshold, where it comes from): --threshold, else the version's shipped one."""
    if override is not None:
        return override, "--threshold"
    tags = resolved.tags or {}
    if tags.get("decision_threshold"):
        return float(tags["decision_threshold"]), f"{resolved.describe()}: {tags.get('decision_threshold_source', '')}"
    return None, (
        f"{resolved.describe()} ships no decision threshold (a version pushed before thresholds were "
        "fitted, or a SavedModel folder): give --threshold"
    )


def verify(args: argparse.Namespace) -> int:
    from speechpipe.results.resolve import model_settings
    from speechpipe.speakers.embedder import score

    resolved, model, rate = _load(args)
    scoring = (model_settings(resolved.saved_model_dir).get("embedder") or {}).get("scoring", "cosine")
    threshold, source = threshold_of(resolved, args.threshold)
    if args.trials:
        from speechpipe.speakers.trials import read_trials, utterance_to_path

        trials = read_trials(args.trials, voxceleb_ids=False)
        root = args.root or os.path.dirname(os.path.abspath(args.trials))
        paths = {
            t: tuple(os.path.join(root, utterance_to_path(u)) for u in (t.utterance_a, t.utterance_b)) for t in trials
        }
        files = sorted({p for pair in paths.values() for p in pair})
    else:
        if len(args.files) != 2:
            raise ValueError("verify takes two files (A B), or --trials FILE")
        files = list(args.files)
        paths = {None: (args.files[0], args.files[1])}
    chunking = chunking_of(args, resolved.saved_model_dir, "speaker")
    if chunking.chunked:
        bad: List[Dict[str, str]] = []
        serving = _serving_model(resolved, model, "speaker", chunking)
        embeddings = {p: pooled.embeddings[0] for p, pooled in serving.embed(_scanned_files(serving, files, rate, bad))}
    else:
        good, bad = decode_files(files, rate)
        embeddings = (
            dict(zip([p for p, _ in good], _call(model, "embed", [s for _, s in good])["embeddings"])) if good else {}
        )
    for trial in paths if args.trials else [None]:
        a, b = paths[trial]
        if a not in embeddings or b not in embeddings:
            continue
        value = float(score(embeddings[a][None, :], embeddings[b][None, :], scoring)[0])
        line = {"a": a, "b": b, "score": round(value, 6)}
        if trial is not None:
            line["label"] = int(trial.label)
        if threshold is not None:
            line.update({"same_speaker": value >= threshold, "threshold": threshold, "threshold_source": source})
        print(json.dumps(line))
    if threshold is None:
        print(f"speechpipe: note: {source}", file=sys.stderr)
    return _report_failures(bad)


# ------------------------------------------------------------------------------ embed and cluster


def _embeddings_of_corpus(args: argparse.Namespace):
    from speechpipe.jobs import inference_job

    summary, resolved = _corpus_job(args, "speaker")
    lines = sorted(
        inference_job.read_lines(args.out, inference_job.RESULTS_PREFIX),
        key=lambda r: (r["utterance"], r.get("segment", 0)),
    )
    embeddings = np.array([line.pop("embedding") for line in lines], np.float32)
    return summary, resolved, lines, embeddings


def write_embeddings(out_dir: str, lines: List[dict], embeddings: np.ndarray) -> Dict[str, str]:
    """The documented embedding layout: row i of embeddings.npy is line i of utterances.jsonl;
    row j of speaker_means.npy is line j of speakers.jsonl (the mean of that speaker's rows)."""
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "embeddings.npy"), embeddings)
    with open(os.path.join(out_dir, "utterances.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    speakers = sorted({line["speaker"] for line in lines})
    means = (
        np.stack(
            [embeddings[[i for i, line in enumerate(lines) if line["speaker"] == s]].mean(axis=0) for s in speakers]
        )
        if speakers
        else np.zeros((0, embeddings.shape[1] if embeddings.ndim == 2 else 0), np.float32)
    )
    np.save(os.path.join(out_dir, "speaker_means.npy"), means)
    with open(os.path.join(out_dir, "speakers.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"speaker": s, "utterances": sum(line["speaker"] == s for line in lines)}) + "\n"
            for s in speakers
        )
    return {
        "embeddings": "embeddings.npy",
        "index": "utterances.jsonl",
        "speaker_means": "speaker_means.npy",
        "speakers": "speakers.jsonl",
    }


def embed(args: argparse.Namespace) -> int:
    summary, resolved, lines, embeddings = _embeddings_of_corpus(args)
    write_embeddings(args.out, lines, embeddings)
    per = f" ({len(lines)} segments of {args.segments:g} s)" if args.segments else ""
    print(
        f"embedded {summary['results']} of {summary['inputs']} utterances{per} with {resolved.describe()}: "
        f"{args.out}/embeddings.npy ({embeddings.shape[0]} x {embeddings.shape[1] if embeddings.ndim == 2 else 0}), "
        f"utterances.jsonl, speaker_means.npy ({summary['dead_letter']['total']} dead-lettered)"
    )
    return 1 if summary["dead_letter"]["total"] else 0


def cluster(args: argparse.Namespace) -> int:
    from speechpipe.results.resolve import model_settings
    from speechpipe.speakers import speaker_eval
    from speechpipe.speakers.embedder import EmbedderConfig, clustering_distances, with_legacy_settings

    summary, resolved, lines, embeddings = _embeddings_of_corpus(args)
    settings = model_settings(resolved.saved_model_dir)
    config = EmbedderConfig.from_json(with_legacy_settings(dict(settings.get("embedder") or {})))
    threshold = settings.get("cluster_threshold")
    if args.num_speakers is None and threshold is None:
        raise ValueError(f"{resolved.describe()} ships no clustering threshold: give --num-speakers")
    tree = speaker_eval.linkage_tree(clustering_distances(embeddings, config), config.linkage)
    found = (
        speaker_eval.cut(tree, n_clusters=args.num_speakers)
        if args.num_speakers
        else speaker_eval.cut(tree, threshold=float(threshold))
    )
    with open(args.table, "w", encoding="utf-8") as f:
        if args.segments:  # who speaks when: a row per segment, with its times
            f.write("file\tutterance\tstart\tend\tcluster\n")
            f.writelines(
                f"{line['file']}\t{line['utterance']}\t{line['start']}\t{line['end']}\t{int(c)}\n"
                for line, c in zip(lines, found)
            )
        else:
            f.write("file\tutterance\tcluster\n")
            f.writelines(f"{line['file']}\t{line['utterance']}\t{int(c)}\n" for line, c in zip(lines, found))
    speakers = [line["speaker"] for line in lines]
    known = [s for s in speakers if s]
    how = f"{args.num_speakers} given" if args.num_speakers else f"the model's threshold {float(threshold):.4f}"
    units = f"segments of {args.segments:g} s" if args.segments else "recordings"
    message = f"{len(set(found.tolist()))} clusters among {len(lines)} {units} ({how}): {args.table}"
    if len(known) == len(speakers) and len(set(known)) > 1 and not args.segments:
        message += (
            f"; against the corpus's speaker labels MR {speaker_eval.misclassification_rate(speakers, found):.3f}"
        )
    print(message)
    return 1 if summary["dead_letter"]["total"] else 0


# ------------------------------------------------------------------------------ parser


def _data_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        default=None,
        help="with --input: the folder audio paths must stay in (default: the input's folder); a "
        "Kaldi wav.scp or manifest with absolute paths needs the folder that holds them",
    )


def _chunk_arguments(parser: argparse.ArgumentParser) -> None:
    d = ChunkConfig()
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=d.chunk_seconds,
        help="audio per network run; memory is set by this, not by the recording "
        "(default %(default)s; 0 = each file whole)",
    )
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        default=d.overlap_seconds,
        help="context read on each side of a chunk and dropped (default %(default)s)",
    )


def _segments_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--segments",
        type=float,
        default=None,
        metavar="SECONDS",
        help="one embedding per segment of this length of each recording, with its times (default: per recording)",
    )


def add_commands(commands) -> None:
    """Adds the four commands to the `speechpipe` parser's subcommands."""
    t = commands.add_parser("transcribe", help="phones of recordings, from the CTC champion (or --model)")
    t.add_argument("files", nargs="*", metavar="FILE")
    t.add_argument("--input", default=None, help="a corpus (VoxCeleb folder, manifest, Kaldi dir): a Beam job")
    t.add_argument("--out", default=None, help="with --input: the output folder")
    t.add_argument(
        "--timestamps",
        action="store_true",
        help="each phone's start and end (s) from the CTC alignment: a line per chunk before each file's line",
    )
    t.add_argument(
        "--decoder",
        choices=("greedy", "lm"),
        default="greedy",
        help="greedy: the best path (the transcribe signature); lm: a beam search scored with the phone "
        "n-gram LM the model carries (whole files: --chunk-seconds 0; docs/ctc.md)",
    )
    _data_root_argument(t)
    _chunk_arguments(t)
    _model_arguments(t, CTC_MODEL)
    t.set_defaults(handler=transcribe, beam_args=[])

    v = commands.add_parser("verify", help="same speaker or not, at the embedder's shipped threshold")
    v.add_argument("files", nargs="*", metavar="FILE")
    v.add_argument("--trials", default=None, help="a VoxCeleb-format trial list (`label a b` lines)")
    v.add_argument("--root", default=None, help="the folder the trial list's paths are relative to")
    v.add_argument("--threshold", type=float, default=None, help="decide with this threshold instead")
    _chunk_arguments(v)
    _model_arguments(v, EMBEDDER_MODEL)
    v.set_defaults(handler=verify)

    e = commands.add_parser("embed", help="embeddings of a corpus's utterances and per-speaker means (Beam)")
    e.add_argument("--input", required=True, help="a corpus (VoxCeleb folder, manifest, Kaldi dir)")
    e.add_argument("--out", required=True, help="the output folder")
    _data_root_argument(e)
    _segments_argument(e)
    _chunk_arguments(e)
    _model_arguments(e, EMBEDDER_MODEL)
    e.set_defaults(handler=embed, beam_args=[])

    c = commands.add_parser("cluster", help="who speaks in which recording, among unlabelled recordings (Beam)")
    c.add_argument("--input", required=True, help="a corpus (VoxCeleb folder, manifest, Kaldi dir)")
    c.add_argument("--out", required=True, help="the working folder (embeddings)")
    c.add_argument("--table", default=None, help="the file -> cluster table (default OUT/clusters.tsv)")
    _data_root_argument(c)
    c.add_argument(
        "--num-speakers", type=int, default=None, help="cut at this many clusters (default: the model's threshold)"
    )
    _segments_argument(c)
    _chunk_arguments(c)
    _model_arguments(c, EMBEDDER_MODEL)
    c.set_defaults(handler=cluster, beam_args=[])


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if getattr(args, "table", "unset") is None:
        args.table = os.path.join(args.out, "clusters.tsv")
    return args
