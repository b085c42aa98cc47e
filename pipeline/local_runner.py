"""`speechpipe run`: the TFX pipeline on embedded defaults, with LocalDagRunner.

    speechpipe run --home speechpipe_home --span CORPUS/manifest.jsonl [--span NEW/manifest.jsonl ...]
    speechpipe run --print-config > run.yaml; speechpipe run --config run.yaml [flags that override it]

Everything lives under the home folder: the pipeline root (artifacts), ML Metadata (SQLite), the
MLflow registry (SQLite + local artifact store, unless --tracking-uri / $MLFLOW_TRACKING_URI says
otherwise) and the reports. Progress is printed per node (executed or served from the ML Metadata
cache); the run ends by printing the results and where the report is. A run that fails (the
validation gate, an error) still writes its report, then exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import sys
import time
import uuid
from dataclasses import replace
from typing import Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from speechpipe.filenames import MANIFEST_FILE
from speechpipe.io.storage import is_uri
from speechpipe.jobs.beam_options import IN_MEMORY_ARGS
from speechpipe.phones.inventory import inventory_for
from speechpipe.pipeline import spans as spans_module
from speechpipe.pipeline.run_config import (
    BRANCHES,
    CTC,
    SPEAKER,
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


def pipeline_arguments(
    config: RunConfig, fingerprints: List[str], keys: Dict[str, str], preflight=None
) -> Dict[str, object]:
    """`create_pipeline`'s arguments that come from the run's configuration, the same for every
    orchestrator; each runner adds its own (metadata connection, schema file, registry URI and
    artifact root). `fingerprints` are those of `config.all_spans`, `keys` the branches' data keys,
    `preflight` the run's pipeline/preflight.py result (its split moves), if it ran."""
    from speechpipe.pipeline.preflight import span_options

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
        ctc_config=replace(config.ctc, inventory=inventory_for(config.language)).to_json(),
        model_name=config.ctc_model_name,
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
        embedder_config=config.embedder.to_json(),
        embedder_model_name=config.embedder_model_name,
        trials_file=where(config.trials_file) if config.trials_file else "",
        max_eer=config.max_eer,
        min_eer_improvement=config.min_eer_improvement,
        target_far=config.target_far,
        enable_cache=config.enable_cache,
        champion_from=config.champion_from,
        language=config.language,
        span_options=span_options(config, preflight),
    )


def build(config: RunConfig, preflight=None):
    """The pipeline for a validated config, and the data key and span fingerprints it uses;
    `preflight` (pipeline/preflight.py) hands each span's split moves to its FeatureGen."""
    from tfx import v1 as tfx

    from speechpipe.io.schema import schema_path
    from speechpipe.pipeline.tfx_pipeline import create_pipeline

    fingerprints = [span_fingerprint(s) for s in config.all_spans]
    keys = data_keys(config, fingerprints)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    artifact_root = embedded_artifact_root(config.home_abs) if config.registry_uri.startswith("sqlite:") else ""
    pipeline = create_pipeline(
        **pipeline_arguments(config, fingerprints, keys, preflight),
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


# Loggers whose lines belong in the run's log file only: TFX's (absl), Beam's (its own, and its
# SDK workers' lines, which the runner logs under apache_beam.runners.portability), MLflow's (its
# INFO lines on opening a store) and the libraries under them. The terminal gets one line per event.
FILE_ONLY_LOGGERS = ("absl", "apache_beam", "mlflow", "alembic", "sqlalchemy")


@contextlib.contextmanager
def run_logging(path: str, out: Optional[TextIO] = None) -> Iterator[logging.Handler]:
    """While a run lasts: every line of FILE_ONLY_LOGGERS (INFO and up; alembic and sqlalchemy
    at WARNING) goes to the log file at `path` and not to the terminal, and speechpipe's own INFO
    lines (the trainers' epoch lines, warm start) go to both. Each logger's level, handlers and
    propagation are put back afterwards. `out`: default the current sys.stdout."""
    from absl import logging as absl_logging

    out = sys.stdout if out is None else out

    try:  # MLflow replaces its loggers' handlers when imported: import it first, then route them.
        import mlflow  # noqa: F401
    except ImportError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log_file = logging.FileHandler(path, encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    absl_verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    for name in FILE_ONLY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        logger.handlers = [log_file]
        logger.setLevel(logging.WARNING if name in ("alembic", "sqlalchemy") else logging.INFO)
        # Not propagated: a root handler (Beam and TFX install one) would print every line.
        logger.propagate = False
    ours = logging.getLogger("speechpipe")
    saved.append((ours, ours.level, ours.propagate, list(ours.handlers)))
    epoch_lines = logging.StreamHandler(out)
    epoch_lines.setFormatter(logging.Formatter("[run]   %(message)s"))
    ours.setLevel(logging.INFO)
    ours.propagate = False
    ours.addHandler(epoch_lines)
    ours.addHandler(log_file)
    try:
        yield log_file
    finally:
        for logger, level, propagate, handlers in saved:
            logger.handlers = handlers
            logger.setLevel(level)
            logger.propagate = propagate
        absl_logging.set_verbosity(absl_verbosity)
        log_file.close()


def run_pipeline(
    config: RunConfig,
    run_id: Optional[str] = None,
    out: Optional[TextIO] = None,
    report: bool = True,
    preflight: bool = True,
) -> Dict[str, object]:
    """Runs the pipeline once; returns the run's summary (see `speechpipe.results.report.collect`). Does
    not raise on a failed run: the summary's `status` is `failed` and `error` says why. A failed
    node stops its own branch; the other branch still runs to its end. A configuration that fails
    validation or the preflight (pipeline/preflight.py: a branch that could not be trained or
    evaluated on these spans) raises ConfigError before any node runs; `preflight=False` skips it
    (no listing, no checks, no split moves: splits by the speaker hash alone)."""
    from speechpipe.pipeline.preflight import check

    out = sys.stdout if out is None else out  # the current stdout, not the one at import
    config = validate_run_config(config)
    run_id = run_id or new_run_id()
    os.makedirs(config.home_abs, exist_ok=True)
    started = time.time()
    branches = ", ".join(f"{b} on {len(config.branch_spans(b))} span(s)" for b in config.branches)
    print(f"[run] {run_id}: {branches}, home {config.home_abs}", file=out, flush=True)
    checked = check(config, out) if preflight else None
    progress = _Progress(out)
    error: Optional[BaseException] = None
    with run_logging(log_path(config, run_id), out):
        pipeline, keys, fingerprints = build(config, checked)
        try:
            _execute(pipeline, run_id, progress)
        except Exception as e:  # reported, then returned as status=failed
            error = e
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
    summary["preflight"] = checked.to_json() if checked is not None else None
    if report:
        summary["report"] = report_module.write(config, summary)
    return summary


def print_summary(summary: Dict[str, object], out: Optional[TextIO] = None) -> None:
    from speechpipe.results.report import summary_lines

    out = sys.stdout if out is None else out

    for line in summary_lines(summary):
        print(line, file=out)


# --------------------------------------------------------------------------------- CLI


class DeprecatedAlias(argparse.Action):
    """An old flag name kept for one release: it sets the new flag's value and says so on stderr."""

    def __init__(self, option_strings: List[str], dest: str, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"speechpipe: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _flag(parser: argparse.ArgumentParser, new: str, old: Optional[str] = None, **kwargs) -> None:
    """`new`, and `old` as its deprecated alias (hidden from --help)."""
    parser.add_argument(new, default=None, **kwargs)
    if old:
        dest = new.lstrip("-").replace("-", "_")
        kwargs.pop("help", None)
        parser.add_argument(
            old, dest=dest, default=None, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs
        )


def build_parser() -> argparse.ArgumentParser:
    """The flags of `speechpipe run`. A flag that is not given is None: the run file's value (or
    RunConfig's default) applies (`config_from_args`); the help texts name RunConfig's defaults."""
    d = RunConfig()
    c, e = d.ctc, d.embedder
    parser = argparse.ArgumentParser(
        prog="speechpipe run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a run file (YAML, as --print-config prints it; local or gs:// / s3://): the run's "
        "settings, which the flags given here override",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the run's whole configuration as YAML (the run file, the flags applied) and exit",
    )
    parser.add_argument("--home", default=None, help=f"home folder of the run (default {d.home})")
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
        default=None,
        dest="ctc_spans",
        metavar="PATH",
        help="a span for the CTC branch only (a transcribed corpus); repeat, oldest first",
    )
    parser.add_argument(
        "--speaker-span",
        action="append",
        default=None,
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
        default=None,
        metavar="FILE",
        help="an official VoxCeleb trial list (veri_test2.txt, list_test_hard2.txt, ...): the "
        "speaker branch's test protocol and blessing metric, on the test span's test split",
    )
    parser.add_argument(
        "--language",
        default=None,
        help="the corpus language (de, en-us) for transcripts given as ordinary text: espeak-ng "
        "turns them into the language's phones (default: transcripts are IPA)",
    )
    spans_module.add_arguments(parser)
    parser.add_argument(
        "--split-fractions",
        default=None,
        metavar="TRAIN,VALIDATION,TEST",
        help="speaker shares of the splits, for inputs that name no split (a VoxCeleb meta file "
        "names the test speakers: then the validation share of the dev speakers is "
        f"VALIDATION / (TRAIN + VALIDATION)); default {','.join(str(f) for f in d.split_fractions)}",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="the folder (or URI prefix) holding the audio of manifest and Kaldi spans that name "
        "absolute paths: their audio is read from it and confined to it (default: each span's own "
        "folder; a VoxCeleb-layout folder is always its own root)",
    )
    parser.add_argument(
        "--skip-preflight",
        action="store_true",
        help="do not list and check the spans before the run (pipeline/preflight.py): no check, and no "
        "split moves (each speaker's split by the hash of its id alone)",
    )
    parser.add_argument("--pipeline-name", default=None, help=f"default {d.pipeline_name}")
    parser.add_argument(
        "--test-span",
        type=int,
        default=None,
        help=f"span whose test split is the fixed test set (default {d.test_span})",
    )
    parser.add_argument(
        "--normalization", default=None, help=f"feature normalisation (default {d.features.normalization})"
    )
    ctc = parser.add_argument_group("the CTC branch")
    _flag(
        ctc,
        "--ctc-lstm-units",
        "--lstm-units",
        metavar="UNITS,...",
        help=f"BLSTM sizes (default {','.join(str(u) for u in c.model.lstm_units)})",
    )
    _flag(ctc, "--ctc-max-epochs", "--max-epochs", type=int, help=f"default {c.max_epochs}")
    _flag(ctc, "--ctc-minutes", "--max-minutes", type=float, help=f"training budget (default {c.max_minutes:g})")
    _flag(ctc, "--ctc-batch-size", "--batch-size", type=int, help=f"default {c.batch_size}")
    _flag(
        ctc,
        "--ctc-patience",
        "--patience",
        type=int,
        help=f"epochs without a better validation PER before stopping (default {c.patience})",
    )
    _flag(ctc, "--ctc-model-name", "--model-name", help=f"the registry model (default {d.ctc_model_name})")
    ctc.add_argument(
        "--max-per", type=float, default=None, help=f"bless only at or below this test PER (default {d.max_per})"
    )
    ctc.add_argument(
        "--min-per-improvement",
        type=float,
        default=None,
        help=f"margin by which a candidate must beat the champion's PER (default {d.min_per_improvement})",
    )
    parser.add_argument(
        "--max-dead-letter-fraction", type=float, default=None, help=f"default {d.max_dead_letter_fraction}"
    )
    parser.add_argument(
        "--no-warm-start",
        action="store_true",
        default=None,
        help="train from scratch even when there is a champion",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI, else SQLite under HOME)",
    )
    parser.add_argument("--no-cache", action="store_true", default=None, help="execute every component again")
    parser.add_argument(
        "--in-memory", action="store_true", default=None, help="Beam DirectRunner in_memory (tests, tiny data)"
    )
    speaker = parser.add_argument_group("the speaker branch")
    speaker.add_argument(
        "--speaker-normalization",
        default=None,
        help="the speaker embedder's feature normalisation, its own FeatureGen when it differs "
        f"(default {d.speaker_features.normalization})",
    )
    speaker.add_argument(
        "--speaker-augment",
        default=None,
        metavar="KINDS",
        help="augmented copies of the speaker branch's training utterances: noise, reverb, speed, "
        "comma-separated (speechpipe features --augment; default: none)",
    )
    speaker.add_argument(
        "--speaker-augment-copies",
        type=int,
        default=None,
        help="copies per training utterance with --speaker-augment (default 1)",
    )
    speaker.add_argument("--speaker-augment-seed", type=int, default=None, help="default 0")
    speaker.add_argument(
        "--max-eer",
        type=float,
        default=None,
        help=f"bless the embedder only at or below this test EER (default {d.max_eer})",
    )
    speaker.add_argument(
        "--min-eer-improvement",
        type=float,
        default=None,
        help=f"margin by which a candidate embedder must beat the champion's EER (default {d.min_eer_improvement})",
    )
    speaker.add_argument(
        "--target-far",
        type=float,
        default=None,
        help="the embedder's shipped decision threshold: this false-accept rate on its validation "
        f"speakers (default {d.target_far})",
    )
    speaker.add_argument(
        "--embedder-minutes", type=float, default=None, help=f"training budget (default {e.max_seconds / 60:g})"
    )
    speaker.add_argument(
        "--speakers-per-batch",
        type=int,
        default=None,
        metavar="P",
        help=f"speakers in each training batch; the training split needs at least P (default {e.speakers_per_batch})",
    )
    speaker.add_argument(
        "--segments-per-speaker",
        type=int,
        default=None,
        metavar="K",
        help=f"segments of each speaker in a batch (default {e.segments_per_speaker})",
    )
    speaker.add_argument(
        "--embedder-model-name", default=None, help=f"the registry model (default {d.embedder_model_name})"
    )
    both = parser.add_mutually_exclusive_group()
    both.add_argument(
        "--speaker",
        dest="speaker",
        action="store_true",
        default=None,
        help="both branches (the same as --branches ctc,speaker)",
    )
    both.add_argument(
        "--no-speaker", dest="speaker", action="store_false", help="the CTC branch only (the same as --branches ctc)"
    )
    return parser


def _given(value, default):
    """A flag's value when it was given, else the run file's (or RunConfig's default)."""
    return default if value is None else value


def branches_from_args(
    args: argparse.Namespace,
    spans: Sequence[str] = (),
    ctc_spans: Sequence[str] = (),
    speaker_spans: Sequence[str] = (),
    default: Tuple[str, ...] = BRANCHES,
) -> Tuple[str, ...]:
    """--branches, else --speaker/--no-speaker, else the branches --ctc-span / --speaker-span name
    when their spans are the only ones, else `default` (the run file's, or both)."""
    if args.branches is not None:
        chosen = tuple(b.strip() for b in args.branches.split(",") if b.strip())
        if args.speaker is not None:
            raise ConfigError("--branches and --speaker/--no-speaker: give one of them")
        return chosen
    if args.speaker is not None:
        return BRANCHES if args.speaker else (CTC,)
    own_given = args.ctc_spans is not None or args.speaker_spans is not None
    if own_given and not spans and (ctc_spans or speaker_spans):
        return tuple(b for b, own in ((CTC, ctc_spans), (SPEAKER, speaker_spans)) if own)
    return default


def base_config(args: argparse.Namespace) -> RunConfig:
    """The run file's RunConfig (--config), else RunConfig's defaults: what the flags override."""
    from speechpipe.pipeline.run_config_file import read_config_file

    path = getattr(args, "config", None)
    return read_config_file(path) if path else RunConfig()


def config_from_args(args: argparse.Namespace, demo_corpus: bool = True) -> RunConfig:
    """The RunConfig of a command line: the run file (or the defaults) with every flag given
    applied on top. Without any span, the demo corpus under the home folder (`demo_corpus`)."""
    base = base_config(args)
    home = _given(args.home, base.home)
    if args.spans is not None or args.spans_from:
        shared = list(spans_module.resolve_spans(args.spans or [], args.spans_from, args.span_marker))
    else:
        shared = list(base.spans)
    ctc_spans = tuple(_given(args.ctc_spans, base.ctc_spans))
    speaker_spans = tuple(_given(args.speaker_spans, base.speaker_spans))
    if demo_corpus and not shared and not ctc_spans and not speaker_spans:
        shared = [os.path.join(home, "corpus", MANIFEST_FILE)]
    c = base.ctc
    if args.ctc_lstm_units is not None:
        c = replace(c, model=replace(c.model, lstm_units=tuple(int(u) for u in args.ctc_lstm_units.split(",") if u)))
    c = replace(
        c,
        max_epochs=_given(args.ctc_max_epochs, c.max_epochs),
        max_minutes=_given(args.ctc_minutes, c.max_minutes),
        batch_size=_given(args.ctc_batch_size, c.batch_size),
        patience=_given(args.ctc_patience, c.patience),
    )
    embedder = base.embedder
    if args.embedder_minutes is not None:
        embedder = replace(embedder, max_seconds=60.0 * args.embedder_minutes)
    embedder = replace(
        embedder,
        speakers_per_batch=_given(args.speakers_per_batch, embedder.speakers_per_batch),
        segments_per_speaker=_given(args.segments_per_speaker, embedder.segments_per_speaker),
    )
    split_fractions = base.split_fractions
    if args.split_fractions is not None:
        split_fractions = tuple(float(f) for f in args.split_fractions.split(","))
    return replace(
        base,
        home=home,
        spans=tuple(shared),
        ctc_spans=ctc_spans,
        speaker_spans=speaker_spans,
        branches=branches_from_args(args, shared, ctc_spans, speaker_spans, base.branches),
        trials_file=_given(args.trials, base.trials_file),
        language=_given(args.language, base.language),
        split_fractions=split_fractions,
        data_root=_given(args.data_root, base.data_root),
        pipeline_name=_given(args.pipeline_name, base.pipeline_name),
        test_span=_given(args.test_span, base.test_span),
        features=replace(base.features, normalization=_given(args.normalization, base.features.normalization)),
        ctc=c,
        max_per=_given(args.max_per, base.max_per),
        min_per_improvement=_given(args.min_per_improvement, base.min_per_improvement),
        max_dead_letter_fraction=_given(args.max_dead_letter_fraction, base.max_dead_letter_fraction),
        warm_start=False if args.no_warm_start else base.warm_start,
        tracking_uri=_given(args.tracking_uri, base.tracking_uri),
        ctc_model_name=_given(args.ctc_model_name, base.ctc_model_name),
        enable_cache=False if args.no_cache else base.enable_cache,
        speaker_features=replace(
            base.speaker_features,
            normalization=_given(args.speaker_normalization, base.speaker_features.normalization),
        ),
        embedder=embedder,
        max_eer=_given(args.max_eer, base.max_eer),
        min_eer_improvement=_given(args.min_eer_improvement, base.min_eer_improvement),
        embedder_model_name=_given(args.embedder_model_name, base.embedder_model_name),
        target_far=_given(args.target_far, base.target_far),
        speaker_augment=speaker_augment_from_args(args, base.speaker_augment),
        beam_args=IN_MEMORY_ARGS if args.in_memory else base.beam_args,
    )


def speaker_augment_from_args(
    args: argparse.Namespace, base: Optional[Dict[str, object]] = None
) -> Optional[Dict[str, object]]:
    """The --speaker-augment* flags as AugmentConfig json (validated) over `base` (the run
    file's), or None when neither asks for augmentation."""
    from speechpipe.audio.augment import AugmentConfig, parse_kinds

    if args.speaker_augment is not None:
        kinds = parse_kinds(args.speaker_augment)
        if not kinds:
            return None
        start = AugmentConfig(copies=1, kinds=kinds)
    elif base:
        start = AugmentConfig.from_json(base)
    else:
        return None
    return (
        replace(
            start,
            copies=_given(args.speaker_augment_copies, start.copies),
            seed=_given(args.speaker_augment_seed, start.seed),
        )
        .validate()
        .to_json()
    )


def _ensure_demo_corpus(config: RunConfig, out: Optional[TextIO] = None) -> None:
    """The default span is the demo corpus under the home folder: synthesise it once. A corpus
    made with other settings (an older default) is used as it is, with a notice: its features,
    models and registry entries may already build on it."""
    from speechpipe.config import DEMO_CORPUS
    from speechpipe.corpus.synth import read_corpus_settings, synthesize_corpus

    out = sys.stdout if out is None else out
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


def print_config(config: RunConfig, out=None) -> None:
    """--print-config: the run file of `config` (pipeline/run_config_file.py), on stdout."""
    from speechpipe.pipeline.run_config_file import to_yaml

    print(to_yaml(config), end="", file=out or sys.stdout)


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_config:
        # Without the demo corpus: a run file without spans stays one (it runs on the demo corpus
        # under whatever home it is given).
        print_config(config_from_args(args, demo_corpus=False))
        return 0
    config = config_from_args(args)
    _ensure_demo_corpus(config)
    summary = run_pipeline(config, preflight=not args.skip_preflight)
    print_summary(summary)
    return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(run())
