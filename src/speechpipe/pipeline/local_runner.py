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
import re
import sys
import time
import uuid
from dataclasses import replace
from typing import Dict, List, Optional

from speechpipe.pipeline import spans as spans_module
from speechpipe.pipeline.run_config import (
    CTCBudget,
    EmbedderBudget,
    RunConfig,
    data_key,
    embedded_artifact_root,
    is_remote,
    span_fingerprint,
    validate_run_config,
)

class _Progress(logging.Handler):
    """Turns TFX's launcher log lines into one progress line per node."""

    _running = re.compile(r"Component (\S+) is running")
    _finished = re.compile(r"Component (\S+) is finished")
    _cached = re.compile(r"A cached execution \d+ is used")
    _skipped = re.compile(r"Skipping execution for")

    def __init__(self, out) -> None:
        super().__init__(logging.INFO)
        self.out, self.started, self.node, self.node_started, self.cached = out, time.time(), None, 0.0, False
        self.nodes: List[Dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            return
        m = self._running.search(message)
        if m:
            self.node, self.node_started, self.cached = m.group(1), time.time(), False
            print(f"[run {self._clock()}] {self.node} ...", file=self.out, flush=True)
            return
        if self._cached.search(message) or self._skipped.search(message):
            self.cached = True
            return
        m = self._finished.search(message)
        if m:
            seconds = time.time() - self.node_started
            how = "cached" if self.cached else "done"
            self.nodes.append({"node": m.group(1), "how": how, "seconds": round(seconds, 1)})
            print(f"[run {self._clock()}] {m.group(1)}: {how} ({seconds:.1f} s)", file=self.out, flush=True)

    def _clock(self) -> str:
        s = int(time.time() - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"


def new_run_id() -> str:
    return datetime.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def pipeline_arguments(config: RunConfig, fingerprints: List[str], key: str) -> Dict[str, object]:
    """`create_pipeline`'s arguments that come from the run's configuration, the same for every
    orchestrator; each runner adds its own (metadata connection, schema file, registry URI and
    artifact root)."""
    return dict(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        spans=[(s if is_remote(s) else os.path.abspath(s), f) for s, f in zip(config.spans, fingerprints)],
        feature_config=config.features,
        ctc_config=config.ctc.trainer_json(),
        model_name=config.registry_model_name,
        data_key=key,
        test_span=config.test_span,
        max_per=config.max_per,
        min_per_improvement=config.min_per_improvement,
        max_dead_letter_fraction=config.max_dead_letter_fraction,
        min_train_examples=config.min_train_examples,
        warm_start=config.warm_start,
        beam_args=config.effective_beam_args,
        split_fractions=config.split_fractions,
        include_speaker=config.include_speaker,
        speaker_feature_config=config.speaker_features,
        embedder_config=config.embedder.trainer_json(),
        embedder_model_name=config.embedder_model_name,
        max_eer=config.max_eer,
        min_eer_improvement=config.min_eer_improvement,
        enable_cache=config.enable_cache,
        champion_from=config.champion_from,
    )


def build(config: RunConfig):
    """The pipeline for a validated config, and the data key and span fingerprints it uses."""
    from tfx import v1 as tfx

    from speechpipe.pipeline.tfx_pipeline import create_pipeline
    from speechpipe.io.schema import schema_path

    fingerprints = [span_fingerprint(s) for s in config.spans]
    key = data_key(config, fingerprints)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    artifact_root = embedded_artifact_root(config.home_abs) if config.registry_uri.startswith("sqlite:") else ""
    pipeline = create_pipeline(
        **pipeline_arguments(config, fingerprints, key),
        schema_path=schema_path(),
        tracking_uri=config.registry_uri,
        artifact_root=artifact_root,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
    )
    return pipeline, key, fingerprints


def _execute(pipeline, run_id: str) -> None:
    from tfx.dsl.compiler import compiler
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.orchestration.portable import runtime_parameter_utils

    ir = compiler.Compiler().compile(pipeline)
    # Our own run id (LocalDagRunner would use the clock alone): the report and the registry name it.
    runtime_parameter_utils.substitute_runtime_parameter(ir, {"pipeline-run-id": run_id})
    LocalDagRunner().run_with_ir(ir)


def run_pipeline(config: RunConfig, run_id: Optional[str] = None, out=sys.stdout, report: bool = True) -> Dict[str, object]:
    """Runs the pipeline once; returns the run's summary (see `speechpipe.results.report.collect`). Does
    not raise on a failed run: the summary's `status` is `failed` and `error` says why."""
    config = validate_run_config(config)
    run_id = run_id or new_run_id()
    os.makedirs(config.home_abs, exist_ok=True)
    started = time.time()
    print(f"[run] {run_id}: {len(config.spans)} span(s), home {config.home_abs}", file=out, flush=True)
    pipeline, key, fingerprints = build(config)

    from absl import logging as absl_logging

    progress = _Progress(out)
    tfx_logger = logging.getLogger("absl")
    previous = (tfx_logger.level, tfx_logger.propagate, absl_logging.get_verbosity())
    absl_logging.set_verbosity(absl_logging.INFO)
    tfx_logger.setLevel(logging.INFO)
    tfx_logger.propagate = False
    tfx_logger.addHandler(progress)
    # speechpipe's own INFO lines (the trainers' epoch lines, warm start) as progress too.
    # Not propagated: a root handler (Beam and TFX install one) would print every line again.
    ours = logging.getLogger("speechpipe")
    ours_previous = (ours.level, ours.propagate)
    epoch_lines = logging.StreamHandler(out)
    epoch_lines.setFormatter(logging.Formatter("[run]   %(message)s"))
    ours.setLevel(logging.INFO)
    ours.propagate = False
    ours.addHandler(epoch_lines)
    error: Optional[BaseException] = None
    try:
        _execute(pipeline, run_id)
    except Exception as e:  # noqa: BLE001 - reported, then returned as status=failed
        error = e
    finally:
        tfx_logger.removeHandler(progress)
        ours.removeHandler(epoch_lines)
        ours.setLevel(ours_previous[0])
        ours.propagate = ours_previous[1]
        tfx_logger.setLevel(previous[0])
        tfx_logger.propagate = previous[1]
        absl_logging.set_verbosity(previous[2])
    from speechpipe.results import report as report_module

    summary = report_module.collect(config, run_id, error=error, data_key=key, fingerprints=fingerprints,
                                    wall_seconds=time.time() - started, progress=progress.nodes)
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
    parser = argparse.ArgumentParser(prog="speechpipe run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=d.home, help=f"home folder of the run (default {d.home})")
    parser.add_argument("--span", action="append", default=None, dest="spans",
                        help="an input span (manifest.jsonl, VoxCeleb or Kaldi folder); repeat, oldest first. "
                             "Default: HOME/corpus/manifest.jsonl, synthesised when missing")
    spans_module.add_arguments(parser)
    parser.add_argument("--pipeline-name", default=d.pipeline_name)
    parser.add_argument("--test-span", type=int, default=d.test_span, help="span whose test split is the fixed test set")
    parser.add_argument("--normalization", default=d.features.normalization, help="feature normalisation")
    parser.add_argument("--lstm-units", default=",".join(str(u) for u in c.lstm_units), help="CTC BLSTM sizes")
    parser.add_argument("--max-epochs", type=int, default=c.max_epochs)
    parser.add_argument("--max-minutes", type=float, default=c.max_minutes, help="CTC training budget")
    parser.add_argument("--batch-size", type=int, default=c.batch_size)
    parser.add_argument("--patience", type=int, default=c.patience)
    parser.add_argument("--max-per", type=float, default=d.max_per, help="bless only at or below this test PER")
    parser.add_argument("--min-per-improvement", type=float, default=d.min_per_improvement,
                        help="margin by which a candidate must beat the champion's PER")
    parser.add_argument("--max-dead-letter-fraction", type=float, default=d.max_dead_letter_fraction)
    parser.add_argument("--no-warm-start", action="store_true", help="train from scratch even when there is a champion")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI, else SQLite under HOME)")
    parser.add_argument("--model-name", default=d.registry_model_name)
    parser.add_argument("--no-cache", action="store_true", help="execute every component again")
    parser.add_argument("--in-memory", action="store_true", help="Beam DirectRunner in_memory (tests, tiny data)")
    parser.add_argument("--speaker-normalization", default=d.speaker_features.normalization,
                        help="the speaker embedder's feature normalisation (its own FeatureGen when it differs)")
    parser.add_argument("--max-eer", type=float, default=d.max_eer, help="bless the embedder only at or below this test EER")
    parser.add_argument("--min-eer-improvement", type=float, default=d.min_eer_improvement,
                        help="margin by which a candidate embedder must beat the champion's EER")
    parser.add_argument("--embedder-minutes", type=float, default=e.max_seconds / 60, help="speaker embedder budget")
    parser.add_argument("--embedder-model-name", default=d.embedder_model_name)
    speaker = parser.add_mutually_exclusive_group()
    speaker.add_argument("--speaker", dest="speaker", action="store_true", default=d.include_speaker,
                         help="train, evaluate and push the speaker embedder too" +
                              (" (the default)" if d.include_speaker else ""))
    speaker.add_argument("--no-speaker", dest="speaker", action="store_false",
                         help="the CTC branch only" + ("" if d.include_speaker else " (the default)"))
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    spans = (list(spans_module.resolve_spans(args.spans or [], args.spans_from, args.span_marker))
             or [os.path.join(args.home, "corpus", "manifest.jsonl")])
    d = RunConfig()
    ctc = replace(CTCBudget(), lstm_units=tuple(int(u) for u in args.lstm_units.split(",") if u),
                  max_epochs=args.max_epochs, max_minutes=args.max_minutes, batch_size=args.batch_size,
                  patience=args.patience)
    return replace(
        d, home=args.home, spans=tuple(spans), pipeline_name=args.pipeline_name, test_span=args.test_span,
        features=replace(d.features, normalization=args.normalization), ctc=ctc, max_per=args.max_per,
        min_per_improvement=args.min_per_improvement, max_dead_letter_fraction=args.max_dead_letter_fraction,
        warm_start=not args.no_warm_start, tracking_uri=args.tracking_uri, registry_model_name=args.model_name,
        enable_cache=not args.no_cache, include_speaker=args.speaker,
        speaker_features=replace(d.speaker_features, normalization=args.speaker_normalization),
        embedder=replace(d.embedder, max_seconds=60.0 * args.embedder_minutes), max_eer=args.max_eer,
        min_eer_improvement=args.min_eer_improvement, embedder_model_name=args.embedder_model_name,
        beam_args=("--direct_running_mode=in_memory",) if args.in_memory else (),
    )


def _ensure_demo_corpus(config: RunConfig, out=sys.stdout) -> None:
    """The default span is the demo corpus under the home folder: synthesise it once. A corpus
    made with other settings (an older default) is used as it is, with a notice: its features,
    models and registry entries may already build on it."""
    from speechpipe.config import DEMO_CORPUS
    from speechpipe.corpus.synth import read_corpus_settings, synthesize_corpus

    default = os.path.join(config.home, "corpus", "manifest.jsonl")
    if config.spans != (default,):
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
        print(f"[run] note: the demo corpus in {folder} was synthesised with "
              + ", ".join(f"{k}={made.get(k)}" for k in changed) + "; today's default is "
              + ", ".join(f"{k}={wanted[k]}" for k in changed)
              + ". It is used as it is; remove the folder to synthesise the current one.", file=out, flush=True)


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    _ensure_demo_corpus(config)
    summary = run_pipeline(config)
    print_summary(summary)
    return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(run())
