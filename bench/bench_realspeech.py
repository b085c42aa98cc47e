"""Real speech: the speaker embedder's yardstick on LibriSpeech clips, next to a no-learning floor.

    .venv/bin/python -m bench bench_realspeech --model models:/NAME@champion
    .venv/bin/python -m bench.bench_realspeech [--model PATH_OR_URI ...] [--data DIR] [--json OUT]
        [--tracking-uri URI] [--home speechpipe_home] [--draws 1000] [--seed 0]

Every other figure the project has comes from espeak-ng voices; this one comes from people.

Data (`--data`, default ../shared/realspeech next to the checkout, or BENCH_REALSPEECH_DATA):
the folder's README.md; clips under librispeech/ (or directly under DIR):
    test-other/<speaker>/<file>.flac                    10 speakers x 10 utterances
    train-clean-100/<speaker>/<chapter>/<file>.flac     251 speakers x 1 utterance
The speaker is the first number of a file's name. A folder named with --data (or the
environment variable) that is missing is an error; when only the default is missing, as on a
machine without the shared folder, the bench says so and skips, so that `make bench` still runs
the others.

Models (`--model`, repeatable, or BENCH_REALSPEECH_MODELS, comma-separated): an exported
embedder's SavedModel folder (or a gs:// URI, or a downloaded registry version), or a registry
reference `models:/NAME@ALIAS` (e.g. @champion) or `models:/NAME/VERSION`, resolved as the
serving commands resolve it (speechpipe.results.resolve) through `--tracking-uri` (default:
$MLFLOW_TRACKING_URI, else the embedded SQLite registry of `--home`). Every clip goes through
the SavedModel's `embed` signature on the raw 16 kHz waveform, and pairs are scored with the
model's own scoring (its exported config: cosine, or KL), as the pipeline's evaluator does.

The floor, measured in the same run: an utterance's per-bin mean and standard deviation of its
log-mel features (`compute_features` with the model's feature config; unnormalised, since a
per-utterance cmvn would erase exactly these statistics), centred by the mean over all clips
(otherwise every cosine is near 1: all log spectra share their overall shape), cosine scoring.
Nothing is learnt, so whatever a model gains over it is what it learnt.

Protocols (EER and minDCF, speechpipe.speakers.speaker_eval.verification):
    (a) all    every pair of all clips (test-other + train-clean-100); the targets are
               test-other's only, since train-clean-100 has one utterance per speaker;
    (b) other  every pair within test-other's 10 speakers, with a 95 % interval: bootstrap over
               speakers (resample the speakers with replacement, `--draws` times, seeded; the 2.5
               and 97.5 percentiles of the EER), since with 10 speakers the trials are far from
               independent and a binomial interval on 4,950 trials would be much too narrow;
    (c) impostors  test-other's same-speaker pairs as targets, every test-other utterance against
               every train-clean-100 utterance as non-targets (251 unseen impostors, never a pair
               of two train-clean-100 clips).
Every target trial pairs two utterances of one LibriVox chapter (each test-other speaker's 10
clips come from a single chapter): same session, same microphone. That flatters every system
(a fixed channel shows in the long-term spectrum as the voice does); read the figures as a
bound on what cross-session trials would give. Nothing about time is asserted.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "realspeech"))
TEST_OTHER, TRAIN_CLEAN = "test-other", "train-clean-100"
SAMPLE_RATE = 16000
PROTOCOLS = ("a_all", "b_test_other", "c_impostors")
PROTOCOL_TITLES = {
    "a_all": "(a) all pairs",
    "b_test_other": "(b) test-other",
    "c_impostors": "(c) train-clean-100 impostors",
}

Trial = Tuple[int, str, str]  # (1 = same speaker, utterance a, utterance b), speaker_eval's form


class DataMissing(FileNotFoundError):
    """The real-speech folder is absent or does not have the expected layout."""


@dataclass(frozen=True)
class Clip:
    utterance: str  # the file's stem, e.g. 1688-142285-0000: unique across LibriSpeech
    speaker: str
    subset: str  # TEST_OTHER or TRAIN_CLEAN
    path: str


# ------------------------------------------------------------------------------------- data


def find_clips(data: str) -> List[Clip]:
    """Every FLAC clip of both subsets, in a fixed order (subset, speaker, utterance). Accepts
    the realspeech folder (clips under librispeech/) or the librispeech folder itself."""
    layout = (
        f"expected {TEST_OTHER}/<speaker>/<file>.flac and {TRAIN_CLEAN}/<speaker>/<chapter>/<file>.flac "
        "under DIR/librispeech or DIR (see the folder's README.md)"
    )
    if not os.path.isdir(data):
        raise DataMissing(f"no real-speech folder at {data}: {layout}; point --data at it")
    root = os.path.join(data, "librispeech") if os.path.isdir(os.path.join(data, "librispeech")) else data
    patterns = {
        TEST_OTHER: os.path.join(root, TEST_OTHER, "*", "*.flac"),
        TRAIN_CLEAN: os.path.join(root, TRAIN_CLEAN, "*", "*", "*.flac"),
    }
    clips: List[Clip] = []
    for subset, pattern in patterns.items():
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise DataMissing(f"{data}: no {subset} clips ({pattern}); {layout}")
        for path in paths:
            utterance = os.path.splitext(os.path.basename(path))[0]
            clips.append(Clip(utterance, utterance.split("-")[0], subset, path))
    seen = [c.utterance for c in clips]
    if len(set(seen)) != len(seen):
        raise ValueError(f"{data}: a file name appears twice; utterances are named by their file")
    return sorted(clips, key=lambda c: (c.subset != TEST_OTHER, c.speaker, c.utterance))


def read_waves(clips: Sequence[Clip]) -> List[np.ndarray]:
    """16 kHz mono float32 samples of each clip, in order."""
    from speechpipe.audio.decode import decode

    return [decode(c.path, SAMPLE_RATE).samples for c in clips]


# -------------------------------------------------------------------------------- protocols


def _pairs(clips: Sequence[Clip]) -> List[Trial]:
    return [
        (int(a.speaker == b.speaker), a.utterance, b.utterance) for i, a in enumerate(clips) for b in clips[i + 1 :]
    ]


def protocol_all(clips: Sequence[Clip]) -> List[Trial]:
    """(a) Every unordered pair of distinct clips."""
    return _pairs(clips)


def protocol_test_other(clips: Sequence[Clip]) -> List[Trial]:
    """(b) Every unordered pair of test-other clips."""
    return _pairs([c for c in clips if c.subset == TEST_OTHER])


def protocol_impostors(clips: Sequence[Clip]) -> List[Trial]:
    """(c) test-other's same-speaker pairs (targets) and every test-other clip against every
    train-clean-100 clip (non-targets): real impostors the test speakers never met."""
    other = [c for c in clips if c.subset == TEST_OTHER]
    clean = [c for c in clips if c.subset == TRAIN_CLEAN]
    targets = [t for t in _pairs(other) if t[0] == 1]
    return targets + [(0, a.utterance, b.utterance) for a in other for b in clean]


def protocols(clips: Sequence[Clip]) -> Dict[str, List[Trial]]:
    return {
        "a_all": protocol_all(clips),
        "b_test_other": protocol_test_other(clips),
        "c_impostors": protocol_impostors(clips),
    }


# --------------------------------------------------------------------------------- scoring


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, E] arrays (the floor's scoring; the models use
    speechpipe.speakers.embedder.score, which needs TensorFlow to import)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def statistics_embeddings(waves: Sequence[np.ndarray], feature_config=None) -> np.ndarray:
    """The floor's embedding: each utterance's per-bin mean and standard deviation of its
    unnormalised log features, centred by the mean over `waves` (an unsupervised step: no
    speaker label is used)."""
    from speechpipe.audio.features import compute_features
    from speechpipe.config import FeatureConfig

    config = feature_config or FeatureConfig()
    rows = []
    for w in waves:
        f = compute_features(w, config).astype(np.float64)
        rows.append(np.concatenate([f.mean(0), f.std(0)]))
    e = np.stack(rows)
    return (e - e.mean(0)).astype(np.float32)


def score_protocol(
    embeddings: Dict[str, np.ndarray], trials: Sequence[Trial], score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    from speechpipe.speakers import speaker_eval

    return speaker_eval.trial_scores(embeddings, trials, score_fn)


def bootstrap_weights(counts: np.ndarray, labels: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """How often each trial appears in one speaker-bootstrap draw, where speaker s was drawn
    counts[s] times and each copy is a speaker of its own: a target trial once per copy
    (counts[s]), a non-target trial once per pair of copies (counts[a] x counts[b]). Pairs of
    two copies of one speaker are left out: they are neither a real non-target nor a new target."""
    return np.where(labels == 1, counts[ia], counts[ia] * counts[ib]).astype(np.int64)


def speaker_bootstrap(
    scores: np.ndarray,
    labels: np.ndarray,
    speakers_a: Sequence[str],
    speakers_b: Sequence[str],
    draws: int = 1000,
    seed: int = 0,
) -> Dict[str, object]:
    """A 95 % interval of the EER over speakers: each draw resamples the speakers with
    replacement and scores the trials they own (`bootstrap_weights`); the 2.5 and 97.5
    percentiles of the draws' EERs. Draws with no target or no non-target trial (all copies of
    one speaker) are skipped and counted."""
    from speechpipe.speakers.speaker_eval import equal_error_rate

    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.int64)
    speakers = sorted(set(speakers_a) | set(speakers_b))
    index = {s: i for i, s in enumerate(speakers)}
    ia = np.array([index[s] for s in speakers_a])
    ib = np.array([index[s] for s in speakers_b])
    rng = np.random.default_rng(seed)
    eers, skipped = [], 0
    for _ in range(draws):
        counts = np.bincount(rng.integers(0, len(speakers), len(speakers)), minlength=len(speakers))
        w = bootstrap_weights(counts, labels, ia, ib)
        y = np.repeat(labels, w)
        if y.size == 0 or y.min() == y.max():
            skipped += 1
            continue
        eers.append(equal_error_rate(np.repeat(scores, w), y).eer)
    if not eers:
        raise ValueError("no bootstrap draw had both target and non-target trials")
    low, high = np.percentile(eers, [2.5, 97.5])
    return {
        "eer_ci95": [float(low), float(high)],
        "draws": draws,
        "draws_used": len(eers),
        "seed": seed,
        "speakers": len(speakers),
    }


def evaluate(
    embeddings: Dict[str, np.ndarray],
    clips: Sequence[Clip],
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    draws: int = 1000,
    seed: int = 0,
) -> Dict[str, Dict[str, object]]:
    """Verification figures of the three protocols, with the speaker bootstrap on (b)."""
    from speechpipe.speakers import speaker_eval

    speaker = {c.utterance: c.speaker for c in clips}
    out: Dict[str, Dict[str, object]] = {}
    for name, trials in protocols(clips).items():
        scores, labels = score_protocol(embeddings, trials, score_fn)
        out[name] = speaker_eval.verification(scores, labels).to_json()
        if name == "b_test_other":
            out[name].update(
                speaker_bootstrap(
                    scores, labels, [speaker[t[1]] for t in trials], [speaker[t[2]] for t in trials], draws, seed
                )
            )
    return out


# ---------------------------------------------------------------------------------- models


def resolve_model(spec: str, tracking_uri: str, workdir: str) -> Tuple[str, Dict[str, str]]:
    """(the SavedModel folder of `spec`, where it came from), through the resolver the serving
    commands use (speechpipe.results.resolve): a folder, or a registry version downloaded into
    `workdir`, whether the version is the SavedModel itself or an MLflow model holding it."""
    if "://" in spec and not spec.startswith("models:/"):
        return spec, {"model_dir": spec}  # gs://, s3://: TensorFlow's gfile reads it where it is
    from speechpipe.results.resolve import resolve

    resolved = resolve(spec, tracking_uri, workdir)
    if not resolved.version:
        return resolved.saved_model_dir, {"model_dir": spec}
    print(f"{spec}: {resolved.describe()}, from {tracking_uri}")
    return resolved.saved_model_dir, {"registry": tracking_uri, "name": resolved.name, "version": resolved.version}


def model_embeddings(model_dir: str, waves: Sequence[np.ndarray]):
    """(embeddings [clips, E] through the `embed` signature on raw audio, the LoadedEmbedder)."""
    from bench.bench_embedder import _embed_audio

    embeddings, loaded = _embed_audio(model_dir, waves)
    if loaded.feature_config.sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"{model_dir}: the model takes {loaded.feature_config.sample_rate} Hz audio, the clips "
            f"are decoded at {SAMPLE_RATE} Hz"
        )
    return embeddings, loaded


# ---------------------------------------------------------------------------------- report


def format_table(rows: Sequence[Dict[str, object]]) -> str:
    """Markdown: one row per system (the floor first), EER / minDCF per protocol, and each
    model's EER relative to the floor measured with its feature config."""
    header = (
        "| system | (a) all pairs EER | minDCF | (b) test-other EER | 95 % CI (speakers) | minDCF "
        "| (c) impostors EER | minDCF |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        a, b, c = (r["figures"][p] for p in PROTOCOLS)
        low, high = b["eer_ci95"]
        lines.append(
            f"| {r['system']} | {100 * a['eer']:.2f} % | {a['min_dcf']:.3f} | {100 * b['eer']:.2f} % "
            f"| {100 * low:.1f}-{100 * high:.1f} % | {b['min_dcf']:.3f} | {100 * c['eer']:.2f} % "
            f"| {c['min_dcf']:.3f} |"
        )
    for r in rows:
        floor = r.get("floor")
        if floor is None:
            continue
        base = next(x for x in rows if x["system"] == floor)
        lines.append("")
        lines.append(
            f"{r['system']} against the floor: "
            + ", ".join(
                f"{PROTOCOL_TITLES[p]} {100 * r['figures'][p]['eer']:.2f} % vs {100 * base['figures'][p]['eer']:.2f} %"
                for p in PROTOCOLS
            )
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_realspeech", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default=os.environ.get("BENCH_REALSPEECH_DATA"),
        help=f"the real-speech folder (default {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="an exported embedder folder, models:/NAME@champion or models:/NAME/VERSION (repeatable)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the embedded registry under --home)",
    )
    parser.add_argument(
        "--home", default="speechpipe_home", help="speechpipe's home folder (for the embedded registry)"
    )
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--draws", type=int, default=1000, help="speaker-bootstrap draws for (b)'s interval")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    args = parser.parse_args([] if argv is None else list(argv))
    named = args.data is not None
    data = args.data or DEFAULT_DATA
    specs = args.model or [m.strip() for m in os.environ.get("BENCH_REALSPEECH_MODELS", "").split(",") if m.strip()]

    try:
        clips = find_clips(data)
    except DataMissing as error:
        if named:
            raise SystemExit(f"bench_realspeech: {error}") from None
        print(f"bench_realspeech: skipped: {error}")
        return
    from speechpipe.results.tracking import tracking_uri_for

    tracking_uri = tracking_uri_for(args.tracking_uri, args.home)
    other = [c for c in clips if c.subset == TEST_OTHER]
    print(
        f"{data}: {len(other)} {TEST_OTHER} clips of {len({c.speaker for c in other})} speakers, "
        f"{len(clips) - len(other)} {TRAIN_CLEAN} clips of {len({c.speaker for c in clips if c.subset == TRAIN_CLEAN})} "
        "speakers",
        flush=True,
    )
    waves = read_waves(clips)
    print(f"{sum(len(w) for w in waves) / SAMPLE_RATE / 60:.1f} min of audio decoded at {SAMPLE_RATE} Hz", flush=True)
    utterances = [c.utterance for c in clips]

    rows: List[Dict[str, object]] = []
    floors: Dict[str, str] = {}  # feature config (JSON) -> the floor's row name

    def floor_for(feature_config) -> str:
        key = json.dumps(feature_config.to_json(), sort_keys=True)
        if key not in floors:
            label = f"no learning: {feature_config.kind} {feature_config.n_bins} bins mean+std"
            if label in floors.values():
                label += f" #{len(floors) + 1}"  # same kind and size, other settings
            e = statistics_embeddings(waves, feature_config)
            rows.append(
                {
                    "system": label,
                    "kind": "floor",
                    "features": feature_config.to_json(),
                    "figures": evaluate(dict(zip(utterances, e)), clips, cosine, args.draws, args.seed),
                }
            )
            floors[key] = label
        return floors[key]

    with tempfile.TemporaryDirectory(prefix="bench_realspeech_") as workdir:
        for spec in specs:
            from speechpipe.speakers.embedder import score

            try:
                model_dir, source = resolve_model(spec, tracking_uri, workdir)
            except ValueError as error:  # ModelNotFound: say which --model, no traceback
                raise SystemExit(f"bench_realspeech: --model {spec}: {error}") from None
            embeddings, loaded = model_embeddings(model_dir, waves)
            config = loaded.config
            figures = evaluate(
                dict(zip(utterances, embeddings)),
                clips,
                lambda a, b, s=config.scoring, eps=config.epsilon: score(a, b, s, eps),
                args.draws,
                args.seed,
            )
            rows.append(
                {
                    "system": spec,
                    "kind": "model",
                    **source,
                    "scoring": config.scoring,
                    "embedding": config.embedding,
                    "backend": config.backend,
                    "dimension": int(embeddings.shape[1]),
                    "floor": floor_for(loaded.feature_config),
                    "figures": figures,
                }
            )
    if not specs:
        from speechpipe.config import FeatureConfig

        floor_for(FeatureConfig())
    rows.sort(key=lambda r: r["kind"] != "floor")  # the floor first, then the models in order

    print("\n" + format_table(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "data": os.path.abspath(data),
                    "clips": {
                        TEST_OTHER: {"clips": len(other), "speakers": len({c.speaker for c in other})},
                        TRAIN_CLEAN: {
                            "clips": len(clips) - len(other),
                            "speakers": len({c.speaker for c in clips if c.subset == TRAIN_CLEAN}),
                        },
                    },
                    "systems": rows,
                },
                f,
                indent=1,
            )
        print(f"figures in {args.json}")


if __name__ == "__main__":
    main(sys.argv[1:])
