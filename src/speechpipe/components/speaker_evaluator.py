"""SpeakerEvaluator: EER on the fixed test span's trial list, clustering of its speakers, the
thresholds, and the comparison with the champion embedder; its output is a `ModelBlessing`.

The test speakers are never seen in training (the feature job's splits are speaker-disjoint).
Candidate and champion are loaded back as SavedModels through TensorFlow alone and embed the
same test utterances through their `embed_segments` signature (the feature job's windows, the
mean per utterance), so the comparison is like for like and proves the export loads. The
blessing's folder holds evaluation.json, the DET curve (det.png) and a 2-D projection of the
test embeddings coloured by speaker (embeddings.png) for the run report. Artifact URIs may be
local folders or object storage (TFX's fileio).
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

from typing import Dict, List, Optional, Sequence, Tuple

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from speechpipe.io import storage
from speechpipe.components.pair_gen import SpeakerPairs

DET_PLOT = "det.png"
PROJECTION_PLOT = "embeddings.png"
MODEL_KIND = "speaker"


def read_split(split_uri: str) -> List[object]:
    """A split's utterances (records.UtteranceFeatures): the test split, read once for every model
    evaluated on it, or the validation split the decision threshold is fitted on; an error when it
    has fewer than 2 speakers (EER needs both kinds of trial).
    The split is a local folder or a URI: its shards are listed through fileio, read by tf.data."""
    import tensorflow as tf

    from speechpipe.io import records

    items = []
    for path in storage.glob(storage.join(split_uri.rstrip("/"), f"{records.SHARD_PREFIX}-*")):
        dataset = tf.data.TFRecordDataset(path, compression_type=records.compression_of(path))
        items += [records.decode_example(record) for record in dataset.as_numpy_iterator()]
    speakers = {item.speaker for item in items}
    if len(speakers) < 2:
        raise ValueError(f"the split {split_uri} has {len(speakers)} speaker(s): EER needs 2 or more")
    return items


# All pairs of validation utterances are the trials the decision threshold is fitted on; a larger
# validation split is sampled down to this many (seeded), which pins the threshold to well under
# a percent of FAR at the default target.
MAX_THRESHOLD_TRIALS = 200_000
DEFAULT_TARGET_FAR = 0.01


def operating_point(embed, validation_items: Sequence[object], score_fn, target_far: float,
                    test_scores, test_labels, where: str) -> Dict[str, object]:
    """The decision threshold a speaker model ships: fitted on the validation speakers (never the
    test ones), at the target false-accept rate, with the EER threshold beside it; and the test
    false-accept and false-reject rates at it, which is what a user of the threshold will get."""
    import numpy as np

    from speechpipe.speakers import speaker_eval

    utterances = [item.utterance for item in validation_items]
    speakers = [item.speaker for item in validation_items]
    trials = speaker_eval.all_pairs_trials(utterances, speakers)
    if len(trials) > MAX_THRESHOLD_TRIALS:
        keep = np.random.default_rng(0).choice(len(trials), MAX_THRESHOLD_TRIALS, replace=False)
        trials = [trials[i] for i in sorted(keep)]
    embeddings = dict(zip(utterances, embed(validation_items)))
    scores, labels = speaker_eval.trial_scores(embeddings, trials, score_fn)
    threshold = speaker_eval.threshold_at_far(scores, labels, target_far)
    eer = speaker_eval.equal_error_rate(scores, labels)
    test_far, test_frr = speaker_eval.rates_at(test_scores, test_labels, threshold)
    eer_far, eer_frr = speaker_eval.rates_at(test_scores, test_labels, eer.threshold)
    return {"threshold": threshold, "target_far": target_far,
            "source": f"fitted at FAR {target_far:g} on {len(set(speakers))} validation speakers of {where} "
                      f"({len(trials)} trials)",
            "validation_eer": float(eer.eer), "eer_threshold": float(eer.threshold),
            "test_far": test_far, "test_frr": test_frr, "test_far_at_eer_threshold": eer_far,
            "test_frr_at_eer_threshold": eer_frr, "validation_speakers": len(set(speakers)),
            "validation_trials": len(trials)}


def embedder_metrics(saved_model_dir: str, test_items: Sequence[object], trials: Sequence[Tuple[int, str, str]],
                     plot_dir: Optional[str] = None, label: str = "candidate",
                     validation_items: Optional[Sequence[object]] = None, target_far: float = DEFAULT_TARGET_FAR,
                     where: str = "the test span") -> Dict[str, object]:
    """EER and minDCF on a trial list, and agglomerative clustering of the test utterances with
    the number of speakers given and with the model's own threshold (chosen on its validation
    speakers), for an exported embedder. With `plot_dir`, the projection PNG is written there;
    the DET points are returned for the caller to plot."""
    import numpy as np

    from speechpipe.speakers import speaker_eval
    from speechpipe.speakers.embedder import clustering_distances, load_embedder, score, segment_windows

    loaded = load_embedder(saved_model_dir)  # a local folder or gs://
    config = loaded.config
    utterances = [item.utterance for item in test_items]
    speakers = [item.speaker for item in test_items]
    def embed(items):
        return np.stack([
            loaded.embed_segments(segment_windows(item.features, config.segment_frames, config.eval_hop)).mean(axis=0)
            for item in items])

    embeddings = embed(test_items)
    scoring = config.scoring
    score_fn = lambda a, b: score(a, b, scoring)  # noqa: E731
    scores, labels = speaker_eval.trial_scores(dict(zip(utterances, embeddings)), trials, score_fn)
    result = speaker_eval.verification(scores, labels)
    fpr, fnr = speaker_eval.det_curve(scores, labels)
    clusters = speaker_eval.clustering(clustering_distances(embeddings, config), speakers,
                                       threshold=loaded.info.get("cluster_threshold"), method=config.linkage)
    metrics: Dict[str, object] = {
        "eer": float(result.eer), "min_dcf": float(result.min_dcf), "trials": int(len(labels)),
        "utterances": len(utterances), "speakers": len(set(speakers)),
        "mr": float(clusters.mr_known), "ari": float(clusters.ari_known),
        "mr_threshold": float(clusters.mr_threshold), "clusters_threshold": int(clusters.clusters_threshold),
        "det": [fpr.tolist(), fnr.tolist()],
    }
    if validation_items:
        metrics["operating_point"] = operating_point(embed, validation_items, score_fn, target_far, scores, labels,
                                                     where)
    if plot_dir:
        metrics["projection_png"] = speaker_eval.plot_embeddings(
            embeddings, speakers, storage.join(plot_dir, f"{label}_{PROJECTION_PLOT}"),
            title=f"{label}: test speakers never seen in training")
    return metrics


@component
def SpeakerEvaluator(  # noqa: N802
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    pairs: InputArtifact[SpeakerPairs],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    champion: InputArtifact[standard_artifacts.Model] = None,
    max_eer: Parameter[float] = 0.4,
    min_eer_improvement: Parameter[float] = 0.0,
    data_key: Parameter[str] = "",
    target_far: Parameter[float] = 0.01,
) -> None:
    import numpy as np

    from speechpipe.speakers import speaker_eval
    from speechpipe.components.evaluator import champion_origin, decide, present_champion, serving_dir, write_blessing
    from speechpipe.pipeline.pairs_job import TRIALS_FILE
    from speechpipe.speakers.trials import read_trials

    storage.makedirs(blessing.uri)
    test_uri = storage.join(examples.uri, "Split-test")
    # The test span's own list, or the official list PairGen checked against it.
    listed = pairs.get_string_custom_property("test_trials_file") or TRIALS_FILE.format(split="test")
    trials = storage.join(pairs.uri, listed)
    if not storage.exists(trials):
        raise FileNotFoundError(f"no test trial list at {trials}: the test split of span {examples.span} has no "
                                "pairs (it needs 2 or more speakers with utterances of one segment or longer)")
    test_items, trial_list = read_split(test_uri), read_trials(trials)
    no_threshold = ""
    try:
        validation_items = read_split(storage.join(examples.uri, "Split-validation"))
    except ValueError as error:  # the test span validates too few speakers: no threshold is shipped
        validation_items, no_threshold = None, f"no decision threshold: {error}"
    candidate = embedder_metrics(serving_dir(model.uri), test_items, trial_list, blessing.uri, "candidate",
                                 validation_items, target_far, f"span {examples.span}")
    champion_metrics = None
    champion = present_champion(champion)  # None also for a registry champion marked absent
    if champion is not None:
        champion_metrics = embedder_metrics(serving_dir(champion.uri), test_items, trial_list, blessing.uri, "champion")
    curves = {"candidate": (np.array(candidate["det"][0]), np.array(candidate["det"][1]))}
    if champion_metrics:
        curves["champion"] = (np.array(champion_metrics["det"][0]), np.array(champion_metrics["det"][1]))
    speaker_eval.plot_det(curves, storage.join(blessing.uri, DET_PLOT), "test speakers never seen in training")

    reasons = decide({"eer": candidate["eer"]}, {"eer": champion_metrics["eer"]} if champion_metrics else None,
                     {"eer": max_eer}, {"eer": min_eer_improvement})
    blessed = not reasons
    why = ("blessed: EER within the threshold" + (" and better than the champion" if champion_metrics else
                                                  " (no champion yet)")) if blessed else "; ".join(reasons)
    strip = lambda m: {k: v for k, v in m.items() if k != "det"}  # noqa: E731 - the DET points are in the PNG
    operating = candidate.pop("operating_point", None) or ({"threshold": None, "why": no_threshold}
                                                           if no_threshold else None)
    evaluation = {
        "model_kind": MODEL_KIND, "blessed": blessed, "reasons": reasons, "why": why,
        "candidate": {"model_id": model.id, "uri": model.uri, **strip(candidate)},
        "champion": ({"model_id": champion.id, "uri": champion.uri, **champion_origin(champion), **strip(champion_metrics)}
                     if champion_metrics else None),
        "thresholds": {"max_eer": max_eer, "min_eer_improvement": min_eer_improvement},
        "test_examples": {"id": examples.id, "span": examples.span, "uri": test_uri},
        "trials": trials, "det_png": storage.join(blessing.uri, DET_PLOT), "data_key": data_key,
        # What the EER is measured on, as the report names it.
        "trial_list": pairs.get_string_custom_property("official_trials") or "built from the test split",
        # The decision threshold the pusher ships with the model (`speechpipe verify` uses it).
        "operating_point": operating,
    }
    write_blessing(blessing, evaluation, model, champion, data_key, MODEL_KIND, "eer")
