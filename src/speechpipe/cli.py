"""The `speechpipe` command. Each subcommand imports its stage only when it runs, so that
`speechpipe --help` answers without loading TensorFlow or Beam."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional

from speechpipe.config import DEMO_CORPUS, CorpusConfig


def _corpus_synth(args: argparse.Namespace) -> int:
    from speechpipe.corpus.synth import synthesize_corpus

    config = CorpusConfig(
        speakers=args.speakers,
        utterances=args.utterances,
        # Sessions split a speaker's utterances: the default never asks for more than there are.
        sessions=args.sessions if args.sessions is not None else min(DEMO_CORPUS.sessions, args.utterances),
        seed=args.seed,
        sample_rate=args.sample_rate,
        sentences=args.sentences,
        workers=args.workers,
    )
    summary = synthesize_corpus(config, args.out, progress=not args.no_progress, overwrite=args.overwrite)
    print(json.dumps({k: summary[k] for k in ("utterances", "speakers", "seconds")}, indent=1))
    print(f"corpus written to {args.out}")
    return 0


def _phones(args: argparse.Namespace) -> int:
    from speechpipe.phones.inventory import load_inventory

    inventory = load_inventory(args.inventory)
    if args.ipa:
        print(" ".join(inventory.tokenize(args.ipa)))
    else:
        print(f"{inventory.name}: {inventory.size} phones + CTC blank (id {inventory.blank_id})")
        print(" ".join(inventory.phones))
    return 0


def _registry_list(args: argparse.Namespace) -> int:
    from speechpipe.results.registry import Registry, format_listing
    from speechpipe.results.tracking import tracking_uri_for

    uri = tracking_uri_for(args.tracking_uri, args.home)
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///") :]):
        print(f"no registry at {uri} (nothing pushed yet)")
        return 0
    models = Registry(uri).list()
    print(json.dumps(models, indent=1, default=str) if args.json else format_listing(models))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    """What a corpus gives a speaker-branch run, from its listing alone (pipeline/preflight.py)."""
    from dataclasses import replace

    from speechpipe.pipeline.preflight import run_preflight
    from speechpipe.pipeline.run_config import SPEAKER, RunConfig, validate_run_config

    base = RunConfig()
    config = RunConfig(
        spans=tuple(args.corpus),
        branches=(SPEAKER,),
        data_root=args.data_root or "",
        trials_file=args.trials or "",
        split_fractions=(
            tuple(float(f) for f in args.split_fractions.split(",")) if args.split_fractions else base.split_fractions
        ),
        embedder=replace(
            base.embedder,
            speakers_per_batch=args.speakers_per_batch or base.embedder.speakers_per_batch,
        ),
    )
    result = run_preflight(validate_run_config(config))
    if args.json:
        print(json.dumps(result.to_json(), indent=1, sort_keys=True))
    else:
        for line in result.lines():
            print(line)
        print(f"listed in {result.seconds:.1f} s")
    return 1 if result.problems else 0


# Beam jobs parse their own arguments (Beam's parse_known_args style), so that runner options
# such as --runner or --direct_running_mode pass straight through to PipelineOptions.
BEAM_JOBS: Dict[str, str] = {
    "features": "speechpipe.jobs.features_job",
    "pairs": "speechpipe.jobs.pairs_job",
    # The TFX pipeline parses its own arguments too (`speechpipe run --help`).
    "run": "speechpipe.pipeline.local_runner",
    # The same pipeline compiled for Kubeflow Pipelines / Vertex AI (`speechpipe compile --help`).
    "compile": "speechpipe.pipeline.kubeflow_v2_runner",
}


# The commands on the registry's models whose --input runs the batch-inference Beam job.
CORPUS_COMMANDS = ("transcribe", "embed", "cluster")


def _beam_job(module: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).run(args.job_args)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechpipe",
        description="Speech data and training pipeline: corpora, features, pairs, training, registry.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    corpus = commands.add_parser("corpus", help="demo corpus tools")
    corpus_commands = corpus.add_subparsers(dest="corpus_command", metavar="ACTION")
    corpus_commands.required = True
    synth = corpus_commands.add_parser(
        "synth", help="synthesise the German demo corpus (VoxCeleb layout, IPA transcripts)"
    )
    d = DEMO_CORPUS
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--speakers", type=int, default=d.speakers, help=f"default {d.speakers}")
    synth.add_argument("--utterances", type=int, default=d.utterances, help=f"per speaker, default {d.utterances}")
    synth.add_argument(
        "--sessions", type=int, default=None, help=f"per speaker, default {d.sessions} (or --utterances, when fewer)"
    )
    synth.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    synth.add_argument("--sample-rate", type=int, default=d.sample_rate, help=f"default {d.sample_rate}")
    synth.add_argument("--sentences", default=None, help="sentence file (default: packaged German set)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing corpus")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_corpus_synth)

    job_help = {
        "features": "Beam: audio to normalised spectrogram TFRecords, with a dead letter",
        "pairs": "Beam: same/different-speaker pairs and VoxCeleb trial lists",
        "run": "TFX: features, validation gate, training, evaluation, push to the MLflow registry",
        "compile": "the same pipeline as a KFP v2 spec for Kubeflow Pipelines or Vertex AI (docs/deploy.md)",
    }
    for name, module in BEAM_JOBS.items():
        job = commands.add_parser(name, help=job_help[name], add_help=False)
        job.add_argument("job_args", nargs=argparse.REMAINDER, help="see `speechpipe %(prog)s --help`")
        job.set_defaults(handler=_beam_job(module))

    inspect = commands.add_parser(
        "inspect",
        help="what a corpus holds and what a speaker-branch run would make of it, before any audio is read",
        description="Lists a corpus (manifest.jsonl, VoxCeleb/LibriSpeech/CN-Celeb-layout folder, Kaldi "
        "dir) with the feature job's own rules, without decoding audio, and reports per split: speakers, "
        "utterances, sessions and utterances per speaker, and the same-/different-speaker trials each "
        "evaluation split can give. Exits 1 when `speechpipe run` would stop on it, naming the fix.",
    )
    inspect.add_argument("corpus", nargs="+", help="the span(s), oldest first, as `speechpipe run --span` takes them")
    inspect.add_argument("--data-root", default=None, metavar="DIR", help="as `speechpipe run --data-root`")
    inspect.add_argument("--split-fractions", default=None, metavar="TRAIN,VALIDATION,TEST", help="as `speechpipe run`")
    inspect.add_argument("--speakers-per-batch", type=int, default=None, metavar="P", help="as `speechpipe run`")
    inspect.add_argument("--trials", default=None, metavar="FILE", help="an official trial list to check")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=_inspect)

    registry = commands.add_parser("registry", help="the MLflow model registry")
    registry_commands = registry.add_subparsers(dest="registry_command", metavar="ACTION")
    registry_commands.required = True
    listing = registry_commands.add_parser("list", help="models, versions, aliases and metrics")
    listing.add_argument("--home", default="speechpipe_home", help="home folder of the embedded registry")
    listing.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite under --home)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_registry_list)

    from speechpipe.serving.commands import add_commands

    add_commands(commands)

    phones = commands.add_parser("phones", help="show the phone inventory, or tokenize an IPA string")
    phones.add_argument("ipa", nargs="?", help="IPA string to split into phones")
    phones.add_argument("--inventory", default="phones_de.json")
    phones.set_defaults(handler=_phones)
    return parser


def quiet_tensorflow() -> None:
    """TensorFlow 2.16 logs C++ start-up lines on every import: INFO and WARNING about CUDA and
    CPU features, and ERROR lines ("Unable to register cuDNN factory") that are a known, harmless
    double registration, on machines with and without GPUs. Level 3 hides them; set
    TF_CPP_MIN_LOG_LEVEL yourself (0-2) to see TensorFlow's C++ log. Real failures still surface
    as Python exceptions. Subprocesses (Beam workers, TFX nodes) inherit the setting."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# FutureWarnings that Google's client libraries raise on import, about versions the lock pins
# (grpcio, google-cloud-storage): every process, Beam worker and TFX node would print them.
_GOOGLE_FUTURE_WARNINGS = ("google.auth.transport.grpc", "google.cloud.aiplatform.models")


def quiet_dependency_warnings() -> None:
    """Hides those warnings here and, through PYTHONWARNINGS, in every subprocess; a user's own
    PYTHONWARNINGS is kept and comes first."""
    import warnings

    for module in _GOOGLE_FUTURE_WARNINGS:
        warnings.filterwarnings("ignore", category=FutureWarning, module=module.replace(".", r"\.") + "$")
    ours = ",".join(f"ignore::FutureWarning:{module}" for module in _GOOGLE_FUTURE_WARNINGS)
    user = os.environ.get("PYTHONWARNINGS", "")
    os.environ["PYTHONWARNINGS"] = f"{user},{ours}" if user and ours not in user else (user or ours)


def quiet_mlflow() -> None:
    """MLflow prints INFO lines on opening a store (`INFO mlflow.store.db.utils ...`) on every
    command that reaches the registry; WARNING and up still show. `speechpipe run` writes
    MLflow's INFO lines to the run's log file (pipeline/local_runner.py, run_logging). Set
    MLFLOW_LOGGING_LEVEL yourself to see them on the terminal."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def main(argv: Optional[List[str]] = None) -> int:
    quiet_tensorflow()
    quiet_dependency_warnings()
    quiet_mlflow()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in BEAM_JOBS:
        # argparse's REMAINDER does not take leading --options: hand the job its argv directly.
        args = argparse.Namespace(handler=_beam_job(BEAM_JOBS[argv[0]]), job_args=argv[1:])
    elif argv and argv[0] in CORPUS_COMMANDS:
        # Their --input runs a Beam job: options they do not know go to Beam, as for the jobs above.
        args, rest = build_parser().parse_known_args(argv)
        unknown = [a for a in rest if not a.startswith("--")]
        if unknown:
            build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
        args.beam_args = rest
    else:
        args = build_parser().parse_args(argv)
    from speechpipe.serving.commands import finish_args

    args = finish_args(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"speechpipe: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
