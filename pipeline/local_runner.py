"""`speechpipe run`: the TFX pipeline on embedded defaults, with LocalDagRunner.

    speechpipe run --home speechpipe_home --span CORPUS/manifest.jsonl [--span NEW/manifest.jsonl ...]

Everything lives under the home folder: the pipeline root (artifacts), ML Metadata (SQLite), the
MLflow registry (SQLite + local artifact store, unless --tracking-uri / $MLFLOW_TRACKING_URI says
otherwise) and the reports. Progress is printed per node (executed or served from the ML Metadata
cache); the run ends by printing the results and where the report is. A run that fails (the
validation gate, an error) still writes its report, then exits non-zero.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
import uuid
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from speechpipe.filenames import MANIFEST_FILE
from speechpipe.io.storage import is_uri
from speechpipe.jobs.beam_options import IN_MEMORY_ARGS
from speechpipe.phones.inventory import inventory_for
from speechpipe.pipeline import spans as spans_module
from speechpipe.pipeline.run_config import (
    BRANCHES,
    CTC,
    SPEAKER,
    CTCBudget,
    EmbedderBudget,
    RunConfig,
    data_keys,
    span_fingerprint,
    validate_run_config,
)
from speechpipe.results.tracking import embedded_artifact_root
from speechpipe.validation import ConfigError


class _Progress:
    """One line per node as the run goes: started, then executed, served from the cache, failed
    or skipped (pipeline/local_dag.py reports each)."""

    def __init__(self, out) -> None:
        self.out, self.started = out, time.time()
        self.nodes: List[Dict[str, object]] = []

    def start(self, node: str) -> None:
        print(f"[run {self._clock()}] {node} ...", file=self.out, flush=True)

    def end(self, outcome) -> None:
        from speechpipe.pipeline.local_dag import FAILED, SKIPPED

        entry = {"node": outcome.node, "how": outcome.how, "seconds": round(outcome.seconds, 1)}
        if outcome.error is not None:
            entry["error"] = f"{type(outcome.error).__name__}: {outcome.error}"
        if outcome.why:
            entry["why"] = outcome.why
        self.nodes.append(entry)
        if outcome.how == SKIPPED:
            print(f"[run {self._clock()}] {outcome.node}: skipped ({outcome.why})", file=self.out, flush=True)
        elif outcome.how == FAILED:
            print(
                f"[run {self._clock()}] {outcome.node}: failed ({outcome.seconds:.1f} s): "
                f"{type(outcome.error).__name__}: {outcome.error}",
                file=self.out,
                flush=True,
            )
        else:
            print(
                f"[run {self._clock()}] {outcome.node}: {outcome.how} ({outcome.seconds:.1f} s)",
                file=self.out,
                flush=True,
            )

    def _clock(self) -> str:
        s = int(time.time() - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"


def new_run_id() -> str:
    return datetime.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def pipeline_arguments(config: RunConfig, fingerprints: List[str], keys: Dict[str, str]) -> Dict[str, object]:
    """`create_pipeline`'s arguments that come from the run's configuration, the same for every
    orchestrator; each runner adds its own (metadata connection, schema file, registry URI and
    artifact root). `fingerprints` are those of `config.all_spans`, `keys` the branches' data keys."""

    def where(path: str) -> str:
        return path if is_uri(path) else os.path.abspath(path)

    return dict(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        spans=[(where(s), f) for s, f in zip(config.all_spans, fingerprints)],
        ctc_spans=list(config.span_numbers(CTC)),
        speaker_spans=list(config.span_numbers(SPEAKER)),
        feature_config=config.features,
        # The trainer's phone set is the one the feature job tokenised the transcripts with.
        ctc_config={**config.ctc.trainer_json(), "inventory": inventory_for(config.language)},
        model_name=config.registry_model_name,
        data_key=keys.get(CTC, ""),
        speaker_data_key=keys.get(SPEAKER, ""),
        test_span=config.test_span,
        max_per=config.max_per,
        min_per_improvement=config.min_per_improvement,
        max_dead_letter_fraction=config.max_dead_letter_fraction,
        min_train_examples=config.min_train_examples,
        warm_start=config.warm_start,
        beam_args=config.effective_beam_args,
        split_fractions=config.split_fractions,
        speaker_feature_config=config.speaker_features,
        speaker_augment=config.speaker_augment,
        embedder_config=config.embedder.trainer_json(),
        embedder_model_name=config.embedder_model_name,
        trials_file=where(config.trials_file) if config.trials_file else "",
        max_eer=config.max_eer,
        min_eer_improvement=config.min_eer_improvement,
        target_far=config.target_far,
        enable_cache=config.enable_cache,
        champion_from=config.champion_from,
        language=config.language,
    )


def build(config: RunConfig):
    """The pipeline for a validated config, and the data key and span fingerprints it uses."""
    from tfx import v1 as tfx

    from speechpipe.io.schema import schema_path
    from speechpipe.pipeline.tfx_pipeline import create_pipeline

    fingerprints = [span_fingerprint(s) for s in config.all_spans]
    keys = data_keys(config, fingerprints)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    artifact_root = embedded_artifact_root(config.home_abs) if config.registry_uri.startswith("sqlite:") else ""
    pipeline = create_pipeline(
        **pipeline_arguments(config, fingerprints, keys),
        schema_path=schema_path(),
        tracking_uri=config.registry_uri,
        artifact_root=artifact_root,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
    )
    return pipeline, keys, fingerprints


def _execute(pipeline, run_id: str, progress: _Progress) -> None:
    from tfx.dsl.compiler import compiler
    from tfx.orchestration.portable import runtime_parameter_utils

    from speechpipe.pipeline.local_dag import run_ir

    ir = compiler.Compiler().compile(pipeline)
    # Our own run id (LocalDagRunner would use the clock alone): the report and the registry name it.
    runtime_parameter_utils.substitute_runtime_parameter(ir, {"pipeline-run-id": run_id})
    run_ir(ir, on_start=progress.start, on_end=progress.end)


def log_path(config: RunConfig, run_id: str) -> str:
    """The run's full log (TFX's, Beam's and speechpipe's own lines), next to its report."""
    return os.path.join(config.home_abs, "logs", f"{run_id}.log")


def run_pipeline(
    config: RunConfig, run_id: Optional[str] = None, out=sys.stdout, report: bool = True
) -> Dict[str, object]:
    """Runs the pipeline once; returns the run's summary (see `speechpipe.results.report.collect`). Does
    not raise on a failed run: the summary's `status` is `failed` and `error` says why. A failed
    node stops its own branch; the other branch still runs to its end."""
    config = validate_run_config(config)
    run_id = run_id or new_run_id()
    os.makedirs(config.home_abs, exist_ok=True)
    started = time.time()
    branches = ", ".join(f"{b} on {len(config.branch_spans(b))} span(s)" for b in config.branches)
    print(f"[run] {run_id}: {branches}, home {config.home_abs}", file=out, flush=True)
    pipeline, keys, fingerprints = build(config)

    from absl import logging as absl_logging

    progress = _Progress(out)
    # TFX's and Beam's own lines go to the run's log file only: the terminal gets one line per event.
    os.makedirs(os.path.dirname(log_path(config, run_id)), exist_ok=True)
    log_file = logging.FileHandler(log_path(config, run_id), encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    tfx_logger = logging.getLogger("absl")
    previous = (tfx_logger.level, tfx_logger.propagate, absl_logging.get_verbosity())
    absl_logging.set_verbosity(absl_logging.INFO)
    tfx_logger.setLevel(logging.INFO)
    tfx_logger.propagate = False
    tfx_logger.addHandler(log_file)
    # speechpipe's own INFO lines (the trainers' epoch lines, warm start) on the terminal too. Not
    # propagated: a root handler (Beam and TFX install one) would print every line again.
    ours = logging.getLogger("speechpipe")
    ours_previous = (ours.level, ours.propagate)
    epoch_lines = logging.StreamHandler(out)
    epoch_lines.setFormatter(logging.Formatter("[run]   %(message)s"))
    ours.setLevel(logging.INFO)
    ours.propagate = False
    ours.addHandler(epoch_lines)
    ours.addHandler(log_file)
    error: Optional[BaseException] = None
    try:
        _execute(pipeline, run_id, progress)
    except Exception as e:  # reported, then returned as status=failed
        error = e
    finally:
        tfx_logger.removeHandler(log_file)
        ours.removeHandler(epoch_lines)
        ours.removeHandler(log_file)
        log_file.close()
        ours.setLevel(ours_previous[0])
        ours.propagate = ours_previous[1]
        tfx_logger.setLevel(previous[0])
        tfx_logger.propagate = previous[1]
        absl_logging.set_verbosity(previous[2])
    from speechpipe.results import report as report_module

    summary = report_module.collect(
        config,
        run_id,
        error=error,
        data_key=keys,
        fingerprints=fingerprints,
        wall_seconds=time.time() - started,
        progress=progress.nodes,
    )
    if report:
        summary["report"] = report_module.write(config, summary)
    return summary


def print_summary(summary: Dict[str, object], out=sys.stdout) -> None:
    from speechpipe.results.report import summary_lines

    for line in summary_lines(summary):
        print(line, file=out)


# --------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    d, c, e = RunConfig(), CTCBudget(), EmbedderBudget()
    parser = argparse.ArgumentParser(
        prog="speechpipe run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", default=d.home, help=f"home folder of the run (default {d.home})")
    parser.add_argument(
        "--span",
        action="append",
        default=None,
        dest="spans",
        help="an input span for both branches (manifest.jsonl, VoxCeleb or Kaldi folder); repeat, "
        "oldest first. Default: HOME/corpus/manifest.jsonl, synthesised when missing",
    )
    parser.add_argument(
        "--ctc-span",
        action="append",
        default=[],
        dest="ctc_spans",
        metavar="PATH",
        help="a span for the CTC branch only (a transcribed corpus); repeat, oldest first",
    )
    parser.add_argument(
        "--speaker-span",
        action="append",
        default=[],
        dest="speaker_spans",
        metavar="PATH",
        help="a span for the speaker branch only (VoxCeleb: no transcripts needed); repeat, oldest first",
    )
    parser.add_argument(
        "--branches",
        default=None,
        metavar="ctc,speaker",
        help="which branches run: ctc, speaker or ctc,speaker (default: both, or the ones "
        "--ctc-span / --speaker-span alone name)",
    )
    parser.add_argument(
        "--trials",
        default="",
        metavar="FILE",
        help="an official VoxCeleb trial list (veri_test2.txt, list_test_hard2.txt, ...): the "
        "speaker branch's test protocol and blessing metric, on the test span's test split",
    )
    parser.add_argument(
        "--language",
        default="",
        help="the corpus language (de, en-us) for transcripts given as ordinary text: espeak-ng "
        "turns them into the language's phones (default: transcripts are IPA)",
    )
    spans_module.add_arguments(parser)
    parser.add_argument(
        "--split-fractions",
        default=",".join(str(f) for f in d.split_fractions),
        metavar="TRAIN,VALIDATION,TEST",
        help="speaker shares of the splits, for inputs that name no split (a VoxCeleb meta file "
        "names the test speakers: then the validation share of the dev speakers is "
        "VALIDATION / (TRAIN + VALIDATION)); default %(default)s",
    )
    parser.add_argument("--pipeline-name", default=d.pipeline_name)
    parser.add_argument(
        "--test-span", type=int, default=d.test_span, help="span whose test split is the fixed test set"
    )
    parser.add_argument("--normalization", default=d.features.normalization, help="feature normalisation")
    parser.add_argument("--lstm-units", default=",".join(str(u) for u in c.lstm_units), help="CTC BLSTM sizes")
    parser.add_argument("--max-epochs", type=int, default=c.max_epochs)
    parser.add_argument("--max-minutes", type=float, default=c.max_minutes, help="CTC training budget")
    parser.add_argument("--batch-size", type=int, default=c.batch_size)
    parser.add_argument("--patience", type=int, default=c.patience)
    parser.add_argument("--max-per", type=float, default=d.max_per, help="bless only at or below this test PER")
    parser.add_argument(
        "--min-per-improvement",
        type=float,
        default=d.min_per_improvement,
        help="margin by which a candidate must beat the champion's PER",
    )
    parser.add_argument("--max-dead-letter-fraction", type=float, default=d.max_dead_letter_fraction)
    parser.add_argument("--no-warm-start", action="store_true", help="train from scratch even when there is a champion")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI, else SQLite under HOME)",
    )
    parser.add_argument("--model-name", default=d.registry_model_name)
    parser.add_argument("--no-cache", action="store_true", help="execute every component again")
    parser.add_argument("--in-memory", action="store_true", help="Beam DirectRunner in_memory (tests, tiny data)")
    parser.add_argument(
        "--speaker-normalization",
        default=d.speaker_features.normalization,
        help="the speaker embedder's feature normalisation (its own FeatureGen when it differs)",
    )
    parser.add_argument(
        "--speaker-augment",
        default="",
        metavar="KINDS",
        help="augmented copies of the speaker branch's training utterances: noise, reverb, speed, "
        "comma-separated (speechpipe features --augment; default: none)",
    )
    parser.add_argument(
        "--speaker-augment-copies",
        type=int,
        default=1,
        help="copies per training utterance with --speaker-augment (default %(default)s)",
    )
    parser.add_argument("--speaker-augment-seed", type=int, default=0, help="default %(default)s")
    parser.add_argument(
        "--max-eer", type=float, default=d.max_eer, help="bless the embedder only at or below this test EER"
    )
    parser.add_argument(
        "--min-eer-improvement",
        type=float,
        default=d.min_eer_improvement,
        help="margin by which a candidate embedder must beat the champion's EER",
    )
    parser.add_argument(
        "--target-far",
        type=float,
        default=d.target_far,
        help="the embedder's shipped decision threshold: this false-accept rate on its validation "
        "speakers (default %(default)s)",
    )
    parser.add_argument("--embedder-minutes", type=float, default=e.max_seconds / 60, help="speaker embedder budget")
    parser.add_argument("--embedder-model-name", default=d.embedder_model_name)
    speaker = parser.add_mutually_exclusive_group()
    speaker.add_argument(
        "--speaker",
        dest="speaker",
        action="store_true",
        default=None,
        help="both branches (the same as --branches ctc,speaker)",
    )
    speaker.add_argument(
        "--no-speaker", dest="speaker", action="store_false", help="the CTC branch only (the same as --branches ctc)"
    )
    return parser


def branches_from_args(args: argparse.Namespace) -> Tuple[str, ...]:
    """--branches, else --speaker/--no-speaker, else the branches --ctc-span / --speaker-span name
    when they are the only spans given, else both."""
    if args.branches is not None:
        chosen = tuple(b.strip() for b in args.branches.split(",") if b.strip())
        if args.speaker is not None:
            raise ConfigError("--branches and --speaker/--no-speaker: give one of them")
        return chosen
    if args.speaker is not None:
        return BRANCHES if args.speaker else (CTC,)
    if not args.spans and not getattr(args, "spans_from", None) and (args.ctc_spans or args.speaker_spans):
        return tuple(b for b, own in ((CTC, args.ctc_spans), (SPEAKER, args.speaker_spans)) if own)
    return BRANCHES


def config_from_args(args: argparse.Namespace) -> RunConfig:
    branches = branches_from_args(args)
    shared = list(spans_module.resolve_spans(args.spans or [], args.spans_from, args.span_marker))
    if not shared and not args.ctc_spans and not args.speaker_spans:
        shared = [os.path.join(args.home, "corpus", MANIFEST_FILE)]
    d = RunConfig()
    ctc = replace(
        CTCBudget(),
        lstm_units=tuple(int(u) for u in args.lstm_units.split(",") if u),
        max_epochs=args.max_epochs,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        patience=args.patience,
    )
    return replace(
        d,
        home=args.home,
        spans=tuple(shared),
        ctc_spans=tuple(args.ctc_spans),
        speaker_spans=tuple(args.speaker_spans),
        branches=branches,
        trials_file=args.trials,
        language=args.language,
        split_fractions=tuple(float(f) for f in args.split_fractions.split(",")),
        pipeline_name=args.pipeline_name,
        test_span=args.test_span,
        features=replace(d.features, normalization=args.normalization),
        ctc=ctc,
        max_per=args.max_per,
        min_per_improvement=args.min_per_improvement,
        max_dead_letter_fraction=args.max_dead_letter_fraction,
        warm_start=not args.no_warm_start,
        tracking_uri=args.tracking_uri,
        registry_model_name=args.model_name,
        enable_cache=not args.no_cache,
        speaker_features=replace(d.speaker_features, normalization=args.speaker_normalization),
        embedder=replace(d.embedder, max_seconds=60.0 * args.embedder_minutes),
        max_eer=args.max_eer,
        min_eer_improvement=args.min_eer_improvement,
        embedder_model_name=args.embedder_model_name,
        target_far=args.target_far,
        speaker_augment=speaker_augment_from_args(args),
        beam_args=IN_MEMORY_ARGS if args.in_memory else (),
    )


def speaker_augment_from_args(args: argparse.Namespace) -> Optional[Dict[str, object]]:
    """The --speaker-augment* flags as AugmentConfig json (validated), or None."""
    from speechpipe.audio.augment import AugmentConfig, parse_kinds

    kinds = parse_kinds(args.speaker_augment)
    if not kinds:
        return None
    return (
        AugmentConfig(copies=args.speaker_augment_copies, kinds=kinds, seed=args.speaker_augment_seed)
        .validate()
        .to_json()
    )


def _ensure_demo_corpus(config: RunConfig, out=sys.stdout) -> None:
    """The default span is the demo corpus under the home folder: synthesise it once. A corpus
    made with other settings (an older default) is used as it is, with a notice: its features,
    models and registry entries may already build on it."""
    from speechpipe.config import DEMO_CORPUS
    from speechpipe.corpus.synth import read_corpus_settings, synthesize_corpus

    default = os.path.join(config.home, "corpus", MANIFEST_FILE)
    if config.all_spans != (default,):
        return
    folder = os.path.dirname(default)
    if not os.path.exists(default):
        print(f"[run] no span given: synthesising the demo corpus into {folder}", file=out, flush=True)
        synthesize_corpus(DEMO_CORPUS, folder)
        return
    made = read_corpus_settings(folder)
    if made is None:
        return  # not a synthesised corpus: the user's own data under the default name
    wanted = DEMO_CORPUS.content_json()
    changed = sorted(k for k in wanted if made.get(k) != wanted[k])
    if changed:
        print(
            f"[run] note: the demo corpus in {folder} was synthesised with "
            + ", ".join(f"{k}={made.get(k)}" for k in changed)
            + "; today's default is "
            + ", ".join(f"{k}={wanted[k]}" for k in changed)
            + ". It is used as it is; remove the folder to synthesise the current one.",
            file=out,
            flush=True,
        )


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    _ensure_demo_corpus(config)
    summary = run_pipeline(config)
    print_summary(summary)
    return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(run())
