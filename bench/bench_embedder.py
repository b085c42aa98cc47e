"""The embedder's learning proof on unseen speakers, and seed 002 reproduced next to the fix.

    .venv/bin/python -m bench bench_embedder
    .venv/bin/python -m bench.bench_embedder [--minutes 20] [--runs default,seed002,...] [--out DIR]
    .venv/bin/python -m bench.bench_embedder --curve [--curve-steps 200,400,800,1600]

Environment: BENCH_CORPUS=DIR (a demo corpus; synthesised into bench/.cache when absent),
BENCH_EMBEDDER_OUT=DIR (default bench/.cache/embedder), BENCH_EMBEDDER_MINUTES (20, the main
run), BENCH_EMBEDDER_ABLATION_STEPS (1600, each ablation run), BENCH_EMBEDDER_RUNS (a subset),
BENCH_EMBEDDER_CURVE_STEPS (200,400,800,1600, the curve's budgets).

1. Features: `speechpipe features` with global normalisation (docs/embedder.md: per-utterance
   cmvn removes the long-term spectrum, which carries most of a speaker's identity), then
   `speechpipe pairs` for the training pairs and the trial lists.
2. Every ablation run trains for the same number of steps (`--ablation-steps`, 128 segments a
   step in both training forms, so the same compute; a step budget stays fair when other jobs
   share the cores; 1,600 steps take 5-8 minutes on a quiet 2-core machine), and
   `default` for `--minutes` of wall clock, on the training speakers, keeps its best weights by
   validation EER (other speakers) and exports
   the SavedModel. Runs: first the baseline,
      untrained        the default configuration after one training step, with its back end: what
                       the random network and the LDA give without learning;
   then each one change on top of the previous:
      seed002          PReLU output, one-sided KL of clipped outputs, margin 1, explicit pairs,
                       Keras "accuracy" (seed 002)
      +softmax         the output is a distribution
      +symmetric       both KL directions
      +margin          the default margin
      +in_batch        every pair inside P x K batches instead of explicit pairs
      +spec_augment    SpecAugment masks and input noise while training
      +lda             the LDA back end fitted on the training speakers (weights chosen by its
                       validation EER) and Ward clustering
      +hidden          the hidden layer below the output is the embedding
      +input_statistics  the segment's per-bin mean and standard deviation join the BLSTM's
                       summary before the dense layers
      +wide_output     1,024 outputs instead of 128 (the rows above keep 128)
      +lda_total       the LDA's within-speaker covariance shrunk toward the total covariance
                       instead of its mean variance (the rows above: the isotropic LDA)
      +hidden_statistics  the embedding is the hidden layer joined with the input statistics:
                       speechpipe's default configuration (EmbedderTrainConfig())
      default          the same configuration with the full budget (the learning proof)
3. Test (the test speakers, never seen, saying sentences never seen): the SavedModel's `embed`
   signature on the raw 16 kHz audio; EER and minDCF on the pair builder's trials_test.txt and
   on every pair of test utterances; agglomerative clustering with the number of speakers given
   and with the threshold chosen on the validation speakers (MR, ARI).
4. Written to the output folder: results.json, results.md, det.png, embeddings_<run>.png,
   val_eer.png, loss.png; per corpus (bench/corpus.py), corpus-<tag>/{features_global,pairs} and
   corpus-<tag>/runs/<run>/{model,tensorboard,result.json}.

5. (--curve, instead of 1-4's runs) The learning-curve guard: the current defaults trained for
   each of --curve-steps (one run per budget), and, when BASELINE names the settings before a
   change, those too, each scored on the test speakers as in 3; results_curve.md/json hold test
   EER by steps, side by side, with their ratio. A change that moves the curve the wrong way
   says so in its commit message.

A finished run is reused when its result.json holds the same settings (so runs can be done one
at a time, e.g. each under a CPU lock, and the report made at the end); without an LDA back end
the LDA's settings are not compared, since they do not change such a run. Nothing about time is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench.corpus import CACHE, bench_corpus, derived_dir

GOAL_EER, GOAL_MR = 0.08, 0.10  # the bar a learning proof must clear (our goals: 0.03 and 0.05)


@dataclass(frozen=True)
class Run:
    """One bench run: the product trainer's configuration, and seed 002's settings when the run
    trains seed 002's siamese form (bench/seed002.py) instead of the product's in-batch form."""

    config: object  # EmbedderTrainConfig
    seed002: Optional[object] = None  # bench.seed002.Seed002Settings

    def to_json(self) -> Dict[str, object]:
        data = self.config.to_json()
        if self.seed002 is not None:
            data["seed002"] = self.seed002.to_json()
        return data


def _runs(minutes: float, ablation_steps: int) -> Dict[str, Run]:
    """name -> Run: the ablation at `ablation_steps` each, in order (each one change on top of
    the last; the last is speechpipe's default configuration), then "default", the same
    configuration at the full budget."""
    from bench.seed002 import Seed002Settings
    from speechpipe.components.embedder_trainer import EmbedderTrainConfig

    # The wall-clock cap only guards against a stalled run; the step budget is what binds.
    default = EmbedderTrainConfig(max_steps=ablation_steps, max_seconds=1800.0)
    d = default.model
    # Seed 002's changes on the default network size, so that only the named change differs; and
    # none of speechpipe's additions (SpecAugment, the LDA back end, Ward clustering) until their rows.
    seed_model = replace(
        d,
        margin=1.0,
        pooling="last",
        freq_mask=0,
        time_mask=0,
        input_noise=0.0,
        backend="none",
        linkage="average",
        embedding="output",
        input_statistics=False,
        output_dim=128,
    )
    seed = Run(replace(default, model=seed_model), Seed002Settings())
    softmax = replace(seed, seed002=replace(seed.seed002, output_activation="softmax", clip=False))
    symmetric = replace(softmax, seed002=replace(softmax.seed002, symmetric=True))
    margin = replace(symmetric, config=replace(symmetric.config, model=replace(seed_model, margin=d.margin)))
    in_batch = Run(margin.config)
    c = in_batch.config
    spec_augment = replace(
        c, model=replace(c.model, freq_mask=d.freq_mask, time_mask=d.time_mask, input_noise=d.input_noise)
    )
    # The isotropic LDA: its within-speaker covariance shrunk toward its mean variance.
    lda = replace(
        spec_augment,
        model=replace(
            spec_augment.model, backend=d.backend, linkage=d.linkage, lda_shrinkage=0.05, lda_shrink_toward="isotropic"
        ),
    )
    hidden = replace(lda, model=replace(lda.model, embedding="hidden"))
    statistics = replace(hidden, model=replace(hidden.model, input_statistics=d.input_statistics))
    wide = replace(statistics, model=replace(statistics.model, output_dim=d.output_dim))
    total = replace(
        wide, model=replace(wide.model, lda_shrinkage=d.lda_shrinkage, lda_shrink_toward=d.lda_shrink_toward)
    )
    joined = replace(total, model=replace(total.model, embedding=d.embedding))
    if joined != default:
        raise AssertionError("the ablation's last step must be the default configuration")
    # The baseline every learning figure is read against: the default network after one training
    # step (its random weights, in effect) with the back end fitted on its embeddings.
    untrained = replace(default, max_steps=1, eval_every_steps=1, patience_evals=0)
    return {
        "untrained": Run(untrained),
        "seed002": seed,
        "+softmax": softmax,
        "+symmetric": symmetric,
        "+margin": margin,
        "+in_batch": in_batch,
        "+spec_augment": Run(spec_augment),
        "+lda": Run(lda),
        "+hidden": Run(hidden),
        "+input_statistics": Run(statistics),
        "+wide_output": Run(wide),
        "+lda_total": Run(total),
        "+hidden_statistics": Run(joined),
        "default": Run(replace(default, max_steps=0, max_seconds=60.0 * minutes)),
    }


# The embedder's settings before the last change to its defaults, as changes to today's (a
# "model" entry holds changes to the network's): the learning-curve guard (--curve) trains these
# next to the current defaults. Empty when the defaults have not changed since the curve was
# last read.
BASELINE: Dict[str, object] = {}
CURVE_STEPS = (200, 400, 800, 1600)


def _with_changes(config, changes: Dict[str, object]):
    """`config` (an EmbedderTrainConfig) with `changes`, whose "model" entry changes the network."""
    data = config.to_json()
    model_changes = dict(changes.get("model", {}))
    data.update({k: v for k, v in changes.items() if k != "model"})
    data["model"] = {**data["model"], **model_changes}
    return type(config).from_json(data)


def _curve_runs(steps: Sequence[int], baseline: Dict[str, object]) -> Dict[str, Run]:
    """name -> Run for the learning-curve guard: the current defaults, and the baseline when it
    names changes, each trained for every step budget (one run per budget: the best weights and
    the stopping rule depend on it)."""
    from speechpipe.components.embedder_trainer import EmbedderTrainConfig

    settings = {"current": EmbedderTrainConfig()}
    if baseline:
        settings["baseline"] = _with_changes(settings["current"], baseline)
    # The wall-clock cap only guards against a stalled run; the step budget is what binds.
    return {
        f"curve-{name}-{budget}": Run(replace(config, max_steps=budget, max_seconds=3600.0))
        for budget in steps
        for name, config in settings.items()
    }


def _curve_report(rows: List[Dict[str, object]], steps: Sequence[int], out: str) -> str:
    """The table of test EER by step budget, current against baseline, written to
    results_curve.md/json; returns the table."""
    by_name = {r["run"]: r for r in rows}
    names = [n for n in ("current", "baseline") if f"curve-{n}-{steps[0]}" in by_name]
    header = "| steps | " + " | ".join(f"{n}: test EER (minDCF), train min" for n in names)
    header += " | EER ratio current / baseline |" if len(names) == 2 else " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for budget in steps:
        cells, eers = [], []
        for name in names:
            r = by_name[f"curve-{name}-{budget}"]
            t = r["test_trials"]
            eers.append(t["eer"])
            cells.append(f"{100 * t['eer']:.2f} % ({t['min_dcf']:.3f}), {r['train_seconds'] / 60:.1f}")
        ratio = f" | {eers[0] / eers[1]:.2f}" if len(eers) == 2 and eers[1] else (" | n/a" if len(eers) == 2 else "")
        lines.append(f"| {budget} | " + " | ".join(cells) + ratio + " |")
    table = "\n".join(lines)
    with open(os.path.join(out, "results_curve.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "results_curve.json"), "w", encoding="utf-8") as f:
        json.dump(
            {"baseline": BASELINE, "rows": [{k: v for k, v in r.items() if k != "det"} for r in rows]}, f, indent=1
        )
    return table


def _features(corpus: str, out: str) -> str:
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.audio.sources import make_spec
    from speechpipe.config import FeatureConfig
    from speechpipe.filenames import SUMMARY_FILE
    from speechpipe.jobs.features_job import run_job

    folder = os.path.join(out, "features_global")
    if not os.path.exists(os.path.join(folder, SUMMARY_FILE)):
        started = time.time()
        run_job(
            make_spec(os.path.join(corpus, "manifest.jsonl")),
            FeatureConfig(normalization="global"),
            folder,
            PipelineOptions(["--direct_running_mode=in_memory"]),
        )
        print(f"features (global normalisation): {time.time() - started:.0f} s")
    return folder


def _pairs(features: str, out: str) -> str:
    from speechpipe.jobs import pairs_job

    folder = os.path.join(out, "pairs")
    if not os.path.exists(os.path.join(folder, "summary.json")):
        pairs_job.run(["--features", features, "--out", folder, "--direct_running_mode=in_memory", "--overwrite"])
    return folder


def _same_run(stored: Dict[str, object], expected: Dict[str, object]) -> bool:
    """Whether a stored run's settings are `expected`'s, ignoring the LDA's settings where
    neither has an LDA back end (they do not change such a run)."""

    def relevant(config: Dict[str, object]) -> Dict[str, object]:
        model = dict(config["model"])
        if model.get("backend") == "none":
            model = {k: v for k, v in model.items() if not k.startswith("lda_")}
        return {**config, "model": model}

    return relevant(stored) == relevant(expected)


def _train(name: str, run: Run, features: str, pairs: str, out: str) -> Dict[str, object]:
    """Trains one run (or reuses a finished one with the same settings); returns its result."""
    import tf_keras as keras

    from bench.seed002 import train_pairs
    from bench.training_input import cached_training_input
    from speechpipe.components.embedder_trainer import train
    from speechpipe.config import FeatureConfig
    from speechpipe.speakers.embedder import with_legacy_settings
    from speechpipe.validation import ConfigError

    folder = os.path.join(out, "runs", name.replace("+", "plus_"))
    result_path = os.path.join(folder, "result.json")
    config = run.config
    with open(os.path.join(features, "summary.json"), encoding="utf-8") as f:
        feature_config = FeatureConfig.from_json(json.load(f)["features"])
    with open(os.path.join(features, "global_stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    expected = replace(run, config=replace(config, model=replace(config.model, n_bins=feature_config.n_bins))).to_json()
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as f:
            done = json.load(f)
        stored = dict(done["config"])
        try:
            # Settings added after a run was trained read as the values it trained with.
            stored["model"] = with_legacy_settings(stored["model"])
        except ConfigError:  # recorded before seed 002's settings moved out of the product
            stored = {}
        if "seed002" in done:
            stored["seed002"] = done["seed002"]
        if stored and _same_run(stored, expected):
            print(f"[{name}] reusing {result_path}")
            return done
    budget = f"{config.max_steps} steps" if config.max_steps else f"{config.max_seconds / 60:g} min"
    print(f"[{name}] training for {budget} ...", flush=True)
    keras.backend.clear_session()
    blocks = cached_training_input(features, out, config)
    model_dir, log_dir = os.path.join(folder, "model"), os.path.join(folder, "tensorboard")
    validation = [os.path.join(features, "Split-validation")]
    if run.seed002 is None:
        result = train(blocks, validation, feature_config, model_dir, log_dir, config, stats)
    else:
        result = train_pairs(
            features, blocks, validation, feature_config, model_dir, log_dir, config, run.seed002, pairs, stats
        )
    summary = result.summary
    os.makedirs(folder, exist_ok=True)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary


def _test_audio(corpus: str) -> Tuple[List[str], List[str], List[np.ndarray]]:
    from speechpipe.audio.decode import decode

    with open(os.path.join(corpus, "manifest.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f]
    items = [i for i in items if i["split"] == "test"]
    waves = [decode(os.path.join(corpus, i["audio"]), 16000).samples for i in items]
    return [i["utterance"] for i in items], [i["speaker"] for i in items], waves


def _embed_audio(model_dir: str, waves: Sequence[np.ndarray], batch: int = 16):
    """Utterance embeddings through the SavedModel's `embed` signature, on raw audio."""
    from speechpipe.speakers.embedder import load_embedder

    loaded = load_embedder(model_dir)
    out = []
    order = np.argsort([len(w) for w in waves])  # similar lengths together: less padding
    for i in range(0, len(order), batch):
        chunk = [waves[j] for j in order[i : i + batch]]
        padded = np.zeros((len(chunk), max(len(w) for w in chunk)), np.float32)
        for k, w in enumerate(chunk):
            padded[k, : len(w)] = w
        out.append(loaded.embed(padded, np.array([len(w) for w in chunk], np.int32)))
    embeddings = np.zeros((len(waves), out[0].shape[1]), np.float32)
    embeddings[order] = np.concatenate(out)
    return embeddings, loaded


def _parity(loaded, utterances: Sequence[str], embeddings: np.ndarray, features: str) -> float:
    """max |embed(raw audio) - mean of embed_segments(feature job windows)| over the test set:
    the serving path against the training path, on the trained model."""
    from speechpipe.io import records
    from speechpipe.speakers.embedder import segment_windows

    stored = {u.utterance: u.features for u in records.read_split(features, "test")}
    worst = 0.0
    for utterance, served in zip(utterances, embeddings):
        windows = segment_windows(stored[utterance], loaded.config.segment_frames, loaded.config.eval_hop)
        worst = max(worst, float(np.max(np.abs(loaded.embed_segments(windows).mean(0) - served))))
    return worst


def _evaluate(
    name: str,
    summary: Dict[str, object],
    features: str,
    pairs: str,
    work: str,
    out: str,
    test: Tuple[List[str], List[str], List[np.ndarray]],
) -> Dict[str, object]:
    from speechpipe.speakers import speaker_eval
    from speechpipe.speakers.embedder import clustering_distances, score
    from speechpipe.speakers.trials import read_trials

    utterances, speakers, waves = test
    folder = os.path.join(work, "runs", name.replace("+", "plus_"))
    started = time.time()
    embeddings, loaded = _embed_audio(os.path.join(folder, "model"), waves)
    embed_seconds = time.time() - started
    parity = _parity(loaded, utterances, embeddings, features)
    scoring = loaded.config.scoring
    by_utterance = dict(zip(utterances, embeddings))
    score_fn = lambda a, b: score(a, b, scoring)  # noqa: E731
    listed = read_trials(os.path.join(pairs, "trials_test.txt"), voxceleb_ids=False)  # the job's own list
    s, y = speaker_eval.trial_scores(by_utterance, listed, score_fn)
    on_list = speaker_eval.verification(s, y)
    fpr, fnr = speaker_eval.det_curve(s, y)
    s_all, y_all = speaker_eval.trial_scores(
        by_utterance, speaker_eval.all_pairs_trials(utterances, speakers), score_fn
    )
    on_all = speaker_eval.verification(s_all, y_all)
    clusters = speaker_eval.clustering(
        clustering_distances(embeddings, loaded.config),
        speakers,
        threshold=loaded.info["cluster_threshold"],
        method=loaded.config.linkage,
    )
    speaker_eval.plot_embeddings(
        embeddings,
        speakers,
        os.path.join(out, f"embeddings_{name.replace('+', 'plus_')}.png"),
        title=f"{name}: unseen test speakers",
    )
    history = summary["history"]
    return {
        "run": name,
        "test_trials": on_list.to_json(),
        "test_all_pairs": on_all.to_json(),
        "clustering": clusters.to_json(),
        "linkage": loaded.config.linkage,
        "backend": loaded.config.backend,
        "train_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "segments_seen": summary["segments_seen"],
        "best_step": summary["best_step"],
        "best_val_eer": summary["best_val_eer"],
        "minutes_to_best": next((h["seconds"] for h in history if h["step"] == summary["best_step"]), None) / 60,
        "keras_accuracy_last": history[-1].get("keras_accuracy"),
        "embed_seconds": round(embed_seconds, 1),
        "parity_max_abs_diff": parity,
        "det": (fpr.tolist(), fnr.tolist()),
        "history": history,
    }


def _report(rows: List[Dict[str, object]], out: str, minutes: float, ablation_steps: int) -> None:
    from speechpipe.speakers import speaker_eval

    speaker_eval.plot_det(
        {r["run"]: (np.array(r["det"][0]), np.array(r["det"][1])) for r in rows},
        os.path.join(out, "det.png"),
        "unseen test speakers, trials_test.txt",
    )
    speaker_eval.plot_curves(
        {
            r["run"]: ([h["seconds"] / 60 for h in r["history"]], [100 * h["val_eer"] for h in r["history"]])
            for r in rows
        },
        os.path.join(out, "val_eer.png"),
        "training minutes (wall clock)",
        "validation EER (%)",
        "unseen validation speakers",
    )
    speaker_eval.plot_curves(
        {r["run"]: ([h["seconds"] / 60 for h in r["history"]], [h["loss"] for h in r["history"]]) for r in rows},
        os.path.join(out, "loss.png"),
        "training minutes (wall clock)",
        "training loss (epoch mean)",
        "training loss",
    )
    header = (
        "| run | test EER (list) | minDCF | EER (all pairs) | MR, k given | ARI, k given | MR, threshold "
        "| clusters | ARI, threshold | linkage | back end | best val EER | min to best | steps "
        '| Keras "accuracy" |'
    )
    lines = [
        f"Budget: {ablation_steps} training steps per ablation run, {minutes:g} min for "
        "`default` (validation included), 2 CPU cores.",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for r in rows:
        t, a, c = r["test_trials"], r["test_all_pairs"], r["clustering"]
        acc = r["keras_accuracy_last"]
        lines.append(
            f"| {r['run']} | {100 * t['eer']:.2f} % | {t['min_dcf']:.3f} | {100 * a['eer']:.2f} % | {c['mr_known']:.3f} "
            f"| {c['ari_known']:.3f} | {c['mr_threshold']:.3f} | {c['clusters_threshold']} | {c['ari_threshold']:.3f} "
            f"| {r.get('linkage', 'average')} | {r.get('backend', 'none')} | {100 * r['best_val_eer']:.2f} % | {r['minutes_to_best']:.1f} | {r['steps']} "
            f"| {'' if acc is None else f'{acc:.3f}'} |"
        )
    table = "\n".join(lines)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump([{k: v for k, v in r.items() if k != "det"} for r in rows], f, indent=1)
    print("\n" + table)
    default = next((r for r in rows if r["run"] == "default"), None)
    if default:
        eer, mr = default["test_trials"]["eer"], default["clustering"]["mr_known"]
        print(
            f"\ndefault on unseen speakers: EER {100 * eer:.2f} % (bar {100 * GOAL_EER:.0f} %: "
            f"{'met' if eer <= GOAL_EER else 'NOT met'}), MR {mr:.3f} with k given (bar {GOAL_MR}: "
            f"{'met' if mr <= GOAL_MR else 'NOT met'}), MR {default['clustering']['mr_threshold']:.3f} without k"
        )
    print(
        "serving/training parity on the test set (max |embed(raw) - embed_segments(features)|): "
        + ", ".join(f"{r['run']} {r['parity_max_abs_diff']:.1e}" for r in rows)
    )
    print(f"plots and tables in {out}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_embedder")
    parser.add_argument(
        "--minutes",
        type=float,
        default=float(os.environ.get("BENCH_EMBEDDER_MINUTES", "20")),
        help="budget of the main run (default configuration)",
    )
    parser.add_argument(
        "--ablation-steps",
        type=int,
        default=int(os.environ.get("BENCH_EMBEDDER_ABLATION_STEPS", "1600")),
        help="budget of each ablation run (seed 002 -> default, one change at a time)",
    )
    parser.add_argument("--runs", default=None, help="comma-separated subset of the runs (default: all)")
    parser.add_argument(
        "--curve",
        action="store_true",
        help="only the learning-curve guard: test EER after each of --curve-steps, current defaults and BASELINE",
    )
    parser.add_argument(
        "--curve-steps",
        default=os.environ.get("BENCH_EMBEDDER_CURVE_STEPS", ",".join(str(n) for n in CURVE_STEPS)),
        help="step budgets of the curve (comma-separated)",
    )
    parser.add_argument("--out", default=os.environ.get("BENCH_EMBEDDER_OUT") or os.path.join(CACHE, "embedder"))
    parser.add_argument("--no-report", action="store_true", help="train the runs only")
    args = parser.parse_args([] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    curve_steps = [int(n) for n in args.curve_steps.split(",") if n.strip()]
    runs = _curve_runs(curve_steps, BASELINE) if args.curve else _runs(args.minutes, args.ablation_steps)
    names = list(runs) if not args.runs else [n.strip() for n in args.runs.split(",") if n.strip()]
    if not args.runs and not args.curve and os.environ.get("BENCH_EMBEDDER_RUNS"):
        names = [n.strip() for n in os.environ["BENCH_EMBEDDER_RUNS"].split(",") if n.strip()]
    unknown = [n for n in names if n not in runs]
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; choose from {list(runs)}")
    corpus = bench_corpus()
    # Features, pairs and runs are kept per corpus; the report goes to --out.
    work = derived_dir(args.out, corpus)
    features = _features(corpus, work)
    pairs = _pairs(features, work)
    summaries = {name: _train(name, runs[name], features, pairs, work) for name in names}
    if args.no_report:
        return
    test = _test_audio(corpus)
    rows = [_evaluate(name, summaries[name], features, pairs, work, args.out, test) for name in names]
    if args.curve:
        print("\n" + _curve_report(rows, curve_steps, args.out))
        return
    _report(rows, args.out, args.minutes, args.ablation_steps)


if __name__ == "__main__":
    main(sys.argv[1:])
