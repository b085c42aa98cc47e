"""SpeakerEvaluator: the embedder's EER on the fixed test span's trial list, clustering of its
speakers, and the decision threshold fitted on the validation speakers, blessed against the
threshold and the champion embedder (speechpipe.components.blessing); its output is a
`ModelBlessing`.

The test speakers are never seen in training (the feature job's splits are speaker-disjoint).
Both models embed the same test utterances through their `embed_segments` signature (the
feature job's windows, the mean per utterance). Every figure is bounded (`max_trials` trials,
`cluster_max_speakers` speakers of `cluster_max_utterances` utterances clustered; the run's
embedder section sets them): a longer trial list, official or built, is scored on a seeded
sample, and evaluation.json says so. The blessing's folder also holds the DET curve
(det.png) and a 2-D projection of the test embeddings coloured by speaker (embeddings.png) for
the run report.

Memory is bounded by the figures, not by the splits: the test and validation splits are read as
indexes of their ids (speechpipe.speakers.split_stream, one pass, no features), the samples are
drawn on those indexes, and only the utterances a figure uses (the capped trial list's and the
clustering sample's on the test split, the sampled trials' on the validation split) are
embedded, their features streamed one record at a time into one float32 matrix per split. A
VoxCeleb-sized split (10^5-10^6 utterances) costs its index and those embeddings, never its
spectrograms. The figures are those of embedding every utterance and scoring the same trials:
the same utterances are embedded one at a time by the same calls, and each score reads the same
two embeddings.
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from speechpipe.components.blessing import evaluate_and_bless
from speechpipe.components.pair_gen import SpeakerPairs
from speechpipe.config import MAX_EER
from speechpipe.filenames import TRIALS_FILE, split_dir
from speechpipe.io import storage

DET_PLOT = "det.png"
PROJECTION_PLOT = "embeddings.png"
MODEL_KIND = "speaker"

if TYPE_CHECKING:
    import numpy as np

    from speechpipe.speakers.embedder import LoadedEmbedder
    from speechpipe.speakers.split_stream import SplitIndex

# (split index, ascending rows) -> their embeddings [rows, E] float32
EmbedRows = Callable[["SplitIndex", "np.ndarray"], "np.ndarray"]


DEFAULT_TARGET_FAR = 0.01
# Evaluation bounds (the embedder trainer's caps, EmbedderTrainConfig; the pipeline passes the
# run's values): trials per figure, and speakers / utterances per speaker clustered. A set under
# its cap is taken whole; speechpipe.speakers.speaker_eval draws the seeded samples.
MAX_TRIALS = 200_000
CLUSTER_MAX_SPEAKERS = 64
CLUSTER_MAX_UTTERANCES = 16


def embed_rows(loaded: "LoadedEmbedder", split: "SplitIndex", rows: "np.ndarray") -> "np.ndarray":
    """Embeddings [len(rows), E] float32 of the ascending, distinct `rows` of `split`: each
    utterance's features streamed from the shards, cut into the evaluation windows, embedded by
    `embed_segments` and averaged. Only one utterance's features are held at a time, so memory is
    the matrix whatever the split's size; each utterance is embedded by a call of its own, so its
    embedding is the same to the bit whichever other utterances are embedded beside it."""
    import numpy as np

    from speechpipe.speakers import split_stream
    from speechpipe.speakers.embedder import segment_windows

    config = loaded.config
    rows = np.asarray(rows, np.int64)
    matrix: Optional[np.ndarray] = None
    for k, features in enumerate(split_stream.stream_features(split, rows)):
        embedding = loaded.embed_segments(segment_windows(features, config.segment_frames, config.eval_hop)).mean(
            axis=0
        )
        if matrix is None:  # the embedding size is the model's: known at its first output
            matrix = np.empty((rows.size, embedding.shape[-1]), np.float32)
        matrix[k] = embedding
    return matrix if matrix is not None else np.zeros((0, 0), np.float32)


def trial_rows(
    split: "SplitIndex", trials: Sequence[Tuple[int, str, str]]
) -> Tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """(first, second, labels) [T] int64: each (label, utterance_a, utterance_b) trial's two
    utterances as rows of `split`, found in one pass over its ids, so that the trials are scored
    from an embedding matrix of their utterances alone. An empty list is an error, and so is a
    trial naming an utterance the split does not hold (a KeyError, as
    speechpipe.speakers.speaker_eval.trial_scores raises), before anything is embedded."""
    import numpy as np

    trials = list(trials)
    if not trials:
        raise ValueError("no trials")
    named = {u for _, a, b in trials for u in (a, b)}
    row: Dict[str, int] = {}
    for k, utterance in enumerate(split.utterances):
        if utterance in named:
            # An id recorded twice is scored by its last record, as a mapping of every
            # utterance to its embedding (speaker_eval.trial_scores') keeps it.
            row[utterance] = k
    missing = sorted(named - row.keys())
    if missing:
        raise KeyError(
            f"{len(missing)} trial utterance(s) have no embedding (not in the test split), e.g. {missing[:3]}"
        )
    first = np.fromiter((row[t[1]] for t in trials), np.int64, len(trials))
    second = np.fromiter((row[t[2]] for t in trials), np.int64, len(trials))
    labels = np.fromiter((t[0] for t in trials), np.int64, len(trials))
    return first, second, labels


def operating_point(
    embed: EmbedRows,
    validation: "SplitIndex",
    score_fn,
    target_far: float,
    test_scores,
    test_labels,
    where: str,
    max_trials: int = MAX_TRIALS,
) -> Dict[str, object]:
    """The decision threshold a speaker model ships: fitted on the validation speakers (never the
    test ones), at the target false-accept rate, with the EER threshold beside it; and the test
    false-accept and false-reject rates at it, which is what a user of the threshold will get.
    Only the utterances of the sampled trials are embedded (`embed`), whatever the split's size."""
    import numpy as np

    from speechpipe.speakers import speaker_eval

    speakers = validation.speakers
    # Every pair of validation utterances up to `max_trials`, else a seeded sample drawn by index.
    trials = speaker_eval.sample_trials(speakers, max_trials, speaker_eval.SAMPLE_SEED)
    used = np.unique(np.r_[trials.first, trials.second])  # ascending: the order they are streamed in
    scores = speaker_eval.index_scores(
        embed(validation, used),
        np.searchsorted(used, trials.first),
        np.searchsorted(used, trials.second),
        score_fn,
    )
    labels = trials.labels
    threshold = speaker_eval.threshold_at_far(scores, labels, target_far)
    eer = speaker_eval.equal_error_rate(scores, labels)
    test_far, test_frr = speaker_eval.rates_at(test_scores, test_labels, threshold)
    eer_far, eer_frr = speaker_eval.rates_at(test_scores, test_labels, eer.threshold)
    return {
        "threshold": threshold,
        "target_far": target_far,
        "source": f"fitted at FAR {target_far:g} on {len(set(speakers))} validation speakers of {where} "
        f"({len(trials)} trials)",
        "validation_eer": float(eer.eer),
        "eer_threshold": float(eer.threshold),
        "test_far": test_far,
        "test_frr": test_frr,
        "test_far_at_eer_threshold": eer_far,
        "test_frr_at_eer_threshold": eer_frr,
        "validation_speakers": len(set(speakers)),
        "validation_trials": len(trials),
        "validation_trial_bound": trials.to_json(),
    }


def embedder_metrics(
    saved_model_dir: str,
    test: "SplitIndex",
    trials: Sequence[Tuple[int, str, str]],
    plot_dir: Optional[str] = None,
    label: str = "candidate",
    validation: Optional["SplitIndex"] = None,
    target_far: float = DEFAULT_TARGET_FAR,
    where: str = "the test span",
    max_trials: int = MAX_TRIALS,
    cluster_max_speakers: int = CLUSTER_MAX_SPEAKERS,
    cluster_max_utterances: int = CLUSTER_MAX_UTTERANCES,
) -> Dict[str, object]:
    """EER and minDCF on a trial list, and agglomerative clustering of the test utterances with
    the number of speakers given and with the model's own threshold (chosen on its validation
    speakers), for an exported embedder. `test` and `validation` are split indexes
    (speechpipe.speakers.split_stream.read_index): the trials and the clustering sample are drawn
    on their ids first, and only the utterances they name are embedded. With `plot_dir`, the
    projection PNG is written there; the DET points are returned for the caller to plot."""
    import logging

    import numpy as np

    from speechpipe.speakers import speaker_eval
    from speechpipe.speakers.embedder import clustering_distances, load_embedder, score

    loaded = load_embedder(saved_model_dir)  # a local folder or gs://
    config = loaded.config
    speakers = test.speakers

    def embed(split: "SplitIndex", rows: np.ndarray) -> np.ndarray:
        return embed_rows(loaded, split, rows)

    scoring = config.scoring
    score_fn = lambda a, b: score(a, b, scoring)  # noqa: E731
    # A longer list than the cap is scored on a seeded, label-stratified sample (the record says so).
    trials, trial_bound = speaker_eval.cap_trials(trials, max_trials, speaker_eval.SAMPLE_SEED)
    first, second, labels = trial_rows(test, trials)
    # Clustered: at most `cluster_max_speakers` test speakers of `cluster_max_utterances` each.
    rows, cluster_bound = speaker_eval.cluster_sample(
        speakers, cluster_max_speakers, cluster_max_utterances, speaker_eval.SAMPLE_SEED
    )
    # One matrix for every test utterance a figure uses; `used` maps its rows to the split's.
    used = np.unique(np.r_[first, second, rows])
    embeddings = embed(test, used)
    logging.getLogger(__name__).info(
        "%s: %d of the %d test utterances embedded (%d trials, %d clustered)",
        label,
        used.size,
        len(test),
        len(trials),
        rows.size,
    )
    scores = speaker_eval.index_scores(
        embeddings, np.searchsorted(used, first), np.searchsorted(used, second), score_fn
    )
    result = speaker_eval.verification(scores, labels)
    fpr, fnr = speaker_eval.det_curve(scores, labels)
    clustered = embeddings[np.searchsorted(used, rows)]
    clustered_speakers = [speakers[k] for k in rows]
    clusters = speaker_eval.clustering(
        clustering_distances(clustered, config),
        clustered_speakers,
        threshold=loaded.info.get("cluster_threshold"),
        method=config.linkage,
    )
    metrics: Dict[str, object] = {
        "eer": float(result.eer),
        "min_dcf": float(result.min_dcf),
        "trials": int(len(labels)),
        "utterances": len(test),
        "speakers": len(set(speakers)),
        "mr": float(clusters.mr_known),
        "ari": float(clusters.ari_known),
        "mr_threshold": float(clusters.mr_threshold),
        "clusters_threshold": int(clusters.clusters_threshold),
        "det": [fpr.tolist(), fnr.tolist()],
        "bounds": {"test_trials": trial_bound, "clustering": cluster_bound},
    }
    if validation is not None:
        metrics["operating_point"] = operating_point(
            embed, validation, score_fn, target_far, scores, labels, where, max_trials
        )
    if plot_dir:
        metrics["projection_png"] = speaker_eval.plot_embeddings(
            clustered,
            clustered_speakers,
            storage.join(plot_dir, f"{label}_{PROJECTION_PLOT}"),
            title=f"{label}: test speakers never seen in training",
        )
    return metrics


@component
def SpeakerEvaluator(
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    pairs: InputArtifact[SpeakerPairs],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    champion: InputArtifact[standard_artifacts.Model] = None,
    max_eer: Parameter[float] = MAX_EER,
    min_eer_improvement: Parameter[float] = 0.0,
    data_key: Parameter[str] = "",
    target_far: Parameter[float] = 0.01,
    max_trials: Parameter[int] = MAX_TRIALS,
    cluster_max_speakers: Parameter[int] = CLUSTER_MAX_SPEAKERS,
    cluster_max_utterances: Parameter[int] = CLUSTER_MAX_UTTERANCES,
) -> None:
    import logging

    import numpy as np

    from speechpipe.speakers import speaker_eval
    from speechpipe.speakers.split_stream import read_index
    from speechpipe.speakers.trials import read_trials

    storage.makedirs(blessing.uri)
    test_uri = storage.join(examples.uri, split_dir("test"))
    # The test span's own list, or the official list PairGen checked against it.
    listed = pairs.get_string_custom_property("test_trials_file") or TRIALS_FILE.format(split="test")
    trials = storage.join(pairs.uri, listed)
    if not storage.exists(trials):
        raise FileNotFoundError(
            f"no test trial list at {trials}: the test split of span {examples.span} has no "
            "pairs (it needs 2 or more speakers with utterances of one segment or longer)"
        )
    # An official list is held to VoxCeleb's path shape; the list PairGen built from the span
    # names the corpus's own utterance ids, whatever their form (LibriSpeech chapters, CN-Celeb).
    official = bool(pairs.get_string_custom_property("official_trials"))
    # The splits' ids only: each model streams the features of the utterances it is measured on.
    test, trial_list = read_index(test_uri, min_speakers=2), read_trials(trials, voxceleb_ids=official)
    no_threshold = ""
    try:
        validation = read_index(storage.join(examples.uri, split_dir("validation")), min_speakers=2)
    except (ValueError, FileNotFoundError) as error:  # too few validation speakers, or none: no threshold
        validation, no_threshold = None, f"no decision threshold: {error}"
    curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    operating: Dict[str, object] = {}
    notes: List[str] = []

    def measure(saved_model: str, role: str) -> Dict[str, object]:
        is_candidate = role == "candidate"
        metrics = embedder_metrics(
            saved_model,
            test,
            trial_list,
            blessing.uri,
            role,
            validation if is_candidate else None,
            target_far,
            f"span {examples.span}",
            max_trials,
            cluster_max_speakers,
            cluster_max_utterances,
        )
        capped = metrics["bounds"]["test_trials"]
        if capped["bound"]:  # never silently: the EER is not the listed protocol's
            note = (
                f"{role}: {capped['trials']} of the {capped['listed']} trials of the "
                f"{'official' if official else 'built'} list scored (seeded, label-stratified; "
                f"max_trials={max_trials})"
            )
            logging.getLogger(__name__).warning("%s", note)
            notes.append(note)
        fpr, fnr = metrics.pop("det")  # the DET points go into the PNG
        curves[role] = (np.array(fpr), np.array(fnr))
        if is_candidate:
            operating["point"] = metrics.pop("operating_point", None)
        return metrics

    def annotate(evaluation: Dict[str, object]) -> None:
        evaluation.update(
            {
                "trials": trials,
                "det_png": storage.join(blessing.uri, DET_PLOT),
                # What the EER is measured on, as the report names it.
                "trial_list": pairs.get_string_custom_property("official_trials") or "built from the test split",
                # The decision threshold the pusher ships with the model (`speechpipe verify` uses it).
                "operating_point": operating.get("point")
                or ({"threshold": None, "why": no_threshold} if no_threshold else None),
                # The caps every figure ran under (each model's `bounds` says whether one bound).
                "evaluation_bounds": {
                    "max_trials": max_trials,
                    "cluster_max_speakers": cluster_max_speakers,
                    "cluster_max_utterances": cluster_max_utterances,
                    "trial_list_capped": notes,
                },
            }
        )

    evaluate_and_bless(
        blessing,
        model,
        champion,
        examples,
        test_uri,
        MODEL_KIND,
        "eer",
        max_eer,
        min_eer_improvement,
        measure,
        data_key,
        annotate,
    )
    speaker_eval.plot_det(curves, storage.join(blessing.uri, DET_PLOT), "test speakers never seen in training")
