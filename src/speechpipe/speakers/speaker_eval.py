"""Speaker verification and clustering figures, the way the field reports them.

Verification (trials: `label score`, label 1 = same speaker, higher score = more alike)
    * EER: where the miss rate (FNR) and the false-alarm rate (FPR) are equal. The operating
      points are "accept when score >= t" for every distinct score t, plus "accept nothing";
      the EER is read where the straight line between the two operating points that bracket
      FNR = FPR crosses it (exact when a point has FNR = FPR).
    * minDCF: min over operating points of C_miss P_target FNR + C_fa (1 - P_target) FPR,
      divided by min(C_miss P_target, C_fa (1 - P_target)) (the cost of the better trivial
      system), with VoxSRC's P_target = 0.05, C_miss = C_fa = 1 by default.
    * DET curve: FNR against FPR on normal-deviate axes.

Clustering (agglomerative, average linkage over a precomputed distance matrix)
    * with the number of speakers given: the dendrogram cut that leaves that many clusters;
    * without it (the pairwise-KL papers do not give it): a distance threshold, chosen on other
      speakers (the validation split) as the cut with the lowest MR there, and applied as is.
    * MR, the misclassification rate: 1 - (utterances in their speaker's cluster) / N, with
      clusters matched one-to-one to speakers so that matched utterances are most (Hungarian
      assignment); an unmatched cluster's utterances are all errors, so splitting a speaker
      and merging two both cost. ARI: sklearn's adjusted Rand index.

Bounded figures (VoxCeleb scale): a verification figure takes at most `MAX_TRIALS` trials, drawn
by index without listing every pair (`sample_trials`, `cap_trials`), scored a chunk at a time
(`index_scores`); a clustering figure at most `CLUSTER_MAX_SPEAKERS` speakers of at most
`CLUSTER_MAX_UTTERANCES` utterances (`cluster_sample`). Under its cap a set is taken whole, in
the order the full computation uses, so small evaluations give the figures they always gave.

Plots are PNG files written with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from speechpipe.io import storage

VOXSRC_P_TARGET = 0.05


def _check_trials(scores: Sequence[float], labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.shape[0]} scores but {labels.shape[0]} labels")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("labels must be 1 (same speaker) or 0 (different)")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    if labels.sum() == 0 or labels.sum() == labels.size:
        raise ValueError("need both same-speaker (1) and different-speaker (0) trials")
    return scores, labels.astype(np.int64)


def operating_points(scores: Sequence[float], labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FPR, FNR) for "accept when score >= t", t from +inf down to the lowest
    score: FPR rises from 0 to 1 and FNR falls from 1 to 0."""
    scores, labels = _check_trials(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    targets = y.sum()
    nontargets = y.size - targets
    # Only the last of a run of equal scores is an operating point: ties are accepted together.
    last_of_run = np.r_[s[1:] != s[:-1], True]
    accepted_targets = np.cumsum(y)[last_of_run]
    accepted_nontargets = np.cumsum(1 - y)[last_of_run]
    fpr = np.r_[0.0, accepted_nontargets / nontargets]
    fnr = np.r_[1.0, 1.0 - accepted_targets / targets]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return thresholds, fpr, fnr


@dataclass(frozen=True)
class EER:
    eer: float
    threshold: float  # the score at (or nearest below) the crossing


def equal_error_rate(scores: Sequence[float], labels: Sequence[int]) -> EER:
    thresholds, fpr, fnr = operating_points(scores, labels)
    gap = fnr - fpr  # +1 at "accept nothing", -1 at "accept everything"
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return EER(float(fpr[i]), float(thresholds[i]))
    alpha = gap[i - 1] / (gap[i - 1] - gap[i])
    return EER(float(fpr[i - 1] + alpha * (fpr[i] - fpr[i - 1])), float(thresholds[i]))


def min_dcf(
    scores: Sequence[float],
    labels: Sequence[int],
    p_target: float = VOXSRC_P_TARGET,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """The normalised minimum detection cost."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target={p_target}: need (0, 1)")
    _, fpr, fnr = operating_points(scores, labels)
    cost = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def threshold_at_far(scores: Sequence[float], labels: Sequence[int], target_far: float) -> float:
    """The lowest threshold ("accept when score >= t") whose false-accept rate on these trials is
    at most `target_far`: the operating point a deployment that bounds false accepts ships."""
    if not 0.0 <= target_far < 1.0:
        raise ValueError(f"target_far={target_far}: need [0, 1)")
    thresholds, fpr, _ = operating_points(scores, labels)
    ok = np.flatnonzero(fpr <= target_far)
    i = int(ok[-1])  # fpr rises with i, so the last one within the target is the lowest threshold
    if not np.isfinite(thresholds[i]):  # no score passes: accept nothing above the highest non-target
        scores, labels = _check_trials(scores, labels)
        return float(np.nextafter(scores[labels == 0].max(), np.inf))
    return float(thresholds[i])


def rates_at(scores: Sequence[float], labels: Sequence[int], threshold: float) -> Tuple[float, float]:
    """(false-accept rate, false-reject rate) of "accept when score >= threshold" on these trials."""
    scores, labels = _check_trials(scores, labels)
    accepted = scores >= threshold
    return float(accepted[labels == 0].mean()), float((~accepted[labels == 1]).mean())


def det_curve(scores: Sequence[float], labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(FPR, FNR) at every operating point."""
    _, fpr, fnr = operating_points(scores, labels)
    return fpr, fnr


@dataclass(frozen=True)
class Verification:
    trials: int
    same: int
    different: int
    eer: float
    eer_threshold: float
    min_dcf: float
    p_target: float

    def to_json(self) -> Dict[str, float]:
        return asdict(self)


def verification(scores: Sequence[float], labels: Sequence[int], p_target: float = VOXSRC_P_TARGET) -> Verification:
    scores, labels = _check_trials(scores, labels)
    e = equal_error_rate(scores, labels)
    return Verification(
        int(labels.size),
        int(labels.sum()),
        int(labels.size - labels.sum()),
        e.eer,
        e.threshold,
        min_dcf(scores, labels, p_target),
        p_target,
    )


# --------------------------------------------------------------------------------- clustering


def misclassification_rate(speakers: Sequence, clusters: Sequence) -> float:
    """MR = 1 - (utterances in the cluster matched to their speaker) / N, with a one-to-one
    matching of clusters to speakers that maximises the matched utterances."""
    from scipy.optimize import linear_sum_assignment

    speakers, clusters = np.asarray(speakers), np.asarray(clusters)
    if speakers.shape != clusters.shape or speakers.ndim != 1 or speakers.size == 0:
        raise ValueError(f"need two equally long, non-empty label lists, got {speakers.shape} and {clusters.shape}")
    speaker_ids, s = np.unique(speakers, return_inverse=True)
    cluster_ids, c = np.unique(clusters, return_inverse=True)
    counts = np.zeros((speaker_ids.size, cluster_ids.size), np.int64)
    np.add.at(counts, (s, c), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(1.0 - counts[rows, cols].sum() / speakers.size)


def adjusted_rand_index(speakers: Sequence, clusters: Sequence) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(speakers), np.asarray(clusters)))


def linkage_tree(distances: np.ndarray, method: str = "average") -> np.ndarray:
    """scipy's linkage matrix of a square, symmetric distance matrix. `method="ward"` is only
    meaningful on Euclidean distances (its merge costs assume them)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    d = np.asarray(distances, np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] < 2:
        raise ValueError(f"need a square distance matrix of 2 or more items, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances must be finite")
    d = np.maximum(0.5 * (d + d.T), 0.0)
    np.fill_diagonal(d, 0.0)
    return linkage(squareform(d, checks=False), method=method)


def cut(tree: np.ndarray, n_clusters: Optional[int] = None, threshold: Optional[float] = None) -> np.ndarray:
    """Cluster labels from a linkage tree: `n_clusters` clusters, or every merge below
    `threshold` (distance) kept. Exactly one of the two."""
    from scipy.cluster.hierarchy import fcluster

    if (n_clusters is None) == (threshold is None):
        raise ValueError("give exactly one of n_clusters and threshold")
    if n_clusters is not None:
        if not 1 <= n_clusters <= tree.shape[0] + 1:
            raise ValueError(f"n_clusters={n_clusters}: need 1..{tree.shape[0] + 1}")
        return fcluster(tree, n_clusters, criterion="maxclust")
    return fcluster(tree, threshold, criterion="distance")


def best_threshold(tree: np.ndarray, speakers: Sequence) -> Tuple[float, float]:
    """(threshold, MR): the cut of the tree with the lowest MR for these speakers, placed
    halfway between the merge heights that bracket it (a cut above every merge when one
    cluster is best). Used on validation speakers, then applied to unseen ones."""
    heights = np.unique(tree[:, 2])
    cuts = np.r_[heights[0] / 2 if heights[0] > 0 else 0.0, (heights[:-1] + heights[1:]) / 2, heights[-1] * 1.5 + 1e-9]
    rates = [misclassification_rate(speakers, cut(tree, threshold=t)) for t in cuts]
    best = int(np.argmin(rates))
    return float(cuts[best]), float(rates[best])


@dataclass(frozen=True)
class Clustering:
    utterances: int
    speakers: int
    mr_known: float  # number of speakers given
    ari_known: float
    clusters_threshold: int  # clusters found by the threshold
    mr_threshold: float  # number of speakers not given: threshold from other speakers
    ari_threshold: float
    threshold: Optional[float]
    mr_best_cut: float  # the lowest MR over every cut of the tree (an oracle, for reference)

    def to_json(self) -> Dict[str, object]:
        return asdict(self)


def clustering(
    distances: np.ndarray, speakers: Sequence, threshold: Optional[float] = None, method: str = "average"
) -> Clustering:
    """Clusters utterances both ways and scores them. Without a threshold, the threshold figures
    are those of the oracle cut (the caller should pass one chosen on other speakers)."""
    speakers = np.asarray(speakers)
    tree = linkage_tree(distances, method)
    n = int(np.unique(speakers).size)
    known = cut(tree, n_clusters=n)
    oracle_threshold, oracle_mr = best_threshold(tree, speakers)
    t = oracle_threshold if threshold is None else float(threshold)
    found = cut(tree, threshold=t)
    return Clustering(
        utterances=int(speakers.size),
        speakers=n,
        mr_known=misclassification_rate(speakers, known),
        ari_known=adjusted_rand_index(speakers, known),
        clusters_threshold=int(np.unique(found).size),
        mr_threshold=misclassification_rate(speakers, found),
        ari_threshold=adjusted_rand_index(speakers, found),
        threshold=t,
        mr_best_cut=oracle_mr,
    )


# -------------------------------------------------------------------------------------- trials


def trial_scores(
    embeddings: Mapping[str, np.ndarray], trials: Iterable[Tuple[int, str, str]], score_fn
) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of (label, utterance_a, utterance_b) trials; `score_fn(A, B)` scores the
    rows of two [N, E] arrays. A trial naming an utterance without an embedding is an error."""
    trials = list(trials)
    if not trials:
        raise ValueError("no trials")
    missing = sorted({u for _, a, b in trials for u in (a, b) if u not in embeddings})
    if missing:
        raise KeyError(f"{len(missing)} trial utterance(s) have no embedding, e.g. {missing[:3]}")
    # One row per utterance, and each trial as two row numbers: the two sides are gathered a
    # chunk at a time (index_scores), never stacked for the whole list.
    rows = {u: k for k, u in enumerate(embeddings)}
    matrix = np.stack([np.asarray(embeddings[u]) for u in rows])
    first = np.fromiter((rows[t[1]] for t in trials), np.int64, len(trials))
    second = np.fromiter((rows[t[2]] for t in trials), np.int64, len(trials))
    labels = np.fromiter((t[0] for t in trials), np.int64, len(trials))
    return index_scores(matrix, first, second, score_fn), labels


def all_pairs_trials(utterances: Sequence[str], speakers: Sequence[str]) -> List[Tuple[int, str, str]]:
    """Every unordered pair of distinct utterances as a trial (for small evaluation sets)."""
    if len(utterances) != len(speakers):
        raise ValueError("one speaker per utterance")
    out = []
    for i in range(len(utterances)):
        for j in range(i + 1, len(utterances)):
            out.append((int(speakers[i] == speakers[j]), utterances[i], utterances[j]))
    return out


# ---------------------------------------------------------------------------- bounded samples
# Evaluation at VoxCeleb scale: all pairs of n utterances are n(n-1)/2 trials (136 M for
# VoxCeleb1), and a dendrogram over n utterances costs n^2 memory and more than n^2 time. Each
# figure is therefore taken on a seeded sample of at most a cap, drawn by index without
# materialising the full set; a set under its cap is taken whole, in the order the full
# computation uses, so small evaluations (the demo) are exactly what they were.

MAX_TRIALS = 200_000  # trials per verification figure; pins the EER to about 0.1 % absolute
CLUSTER_MAX_SPEAKERS = 64  # speakers per clustering figure
CLUSTER_MAX_UTTERANCES = 16  # utterances per speaker in a clustering figure
SAMPLE_SEED = 0  # one seed for every evaluator, so a candidate and its champion see one sample
SCORE_CHUNK = 8192  # trials scored at once: both sides of a chunk are gathered, never of all


@dataclass(frozen=True)
class IndexTrials:
    """Trials as rows of one split's utterance list: `first[t]` against `second[t]` (first <
    second), `labels[t]` = 1 when they share a speaker. `pairs` is how many pairs the split has
    in all, `max_trials` the cap they were drawn under."""

    first: np.ndarray  # int64 [T]
    second: np.ndarray  # int64 [T]
    labels: np.ndarray  # int64 [T]
    pairs: int
    max_trials: int

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def bound(self) -> bool:
        """Whether the cap left pairs out."""
        return self.pairs > len(self)

    def as_tuples(self, utterances: Sequence[str]) -> List[Tuple[int, str, str]]:
        """(label, utterance_a, utterance_b) rows, as `all_pairs_trials` gives them."""
        return [(int(y), utterances[i], utterances[j]) for y, i, j in zip(self.labels, self.first, self.second)]

    def to_json(self) -> Dict[str, object]:
        same = int(self.labels.sum())
        return {
            "max_trials": self.max_trials,
            "pairs": self.pairs,
            "trials": len(self),
            "same": same,
            "different": len(self) - same,
            "bound": self.bound,
        }


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _unrank_pairs(ranks: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, of the pairs at `ranks` of the row-major upper triangle of n items (the
    order of `all_pairs_trials`): row i starts at rank i n - i (i + 1) / 2."""
    r = np.asarray(ranks, np.int64)

    def row_start(i: np.ndarray) -> np.ndarray:
        return i * n - i * (i + 1) // 2

    # The float root is within one row of the answer; the integer steps make it exact.
    i = np.floor((2 * n - 1 - np.sqrt(np.maximum((2 * n - 1) ** 2 - 8.0 * r, 0.0))) / 2).astype(np.int64)
    i = np.clip(i, 0, max(n - 2, 0))
    for _ in range(2):
        i = np.where(row_start(i) > r, i - 1, i)
        i = np.where(row_start(i + 1) <= r, i + 1, i)
    return i, r - row_start(i) + i + 1


def _distinct(rng: np.random.Generator, population: int, k: int) -> np.ndarray:
    """k distinct ranks of range(population), sorted, seeded, in O(k) memory when k is small
    against the population (rejection, not a permutation of the population)."""
    if k >= population:
        return np.arange(population, dtype=np.int64)
    if k > population // 2:  # the complement is the smaller draw (then population < 2 k)
        keep = np.ones(population, bool)
        keep[_distinct(rng, population, population - k)] = False
        return np.flatnonzero(keep).astype(np.int64)
    chosen = np.zeros(0, np.int64)
    while chosen.size < k:
        chosen = np.unique(np.r_[chosen, rng.integers(0, population, 2 * (k - chosen.size) + 16)])
    return np.sort(chosen[rng.choice(chosen.size, k, replace=False)])


def _different_pairs(rng: np.random.Generator, codes: np.ndarray, total_different: int, k: int) -> np.ndarray:
    """Ranks (sorted) of k distinct different-speaker pairs in the whole triangle, seeded: drawn
    from the triangle with same-speaker pairs rejected; when k is more than half of those there
    are, they are few (at most 2 max_trials) and are listed row by row instead."""
    n = int(codes.size)
    total = _pairs(n)
    if k > total_different // 2:
        ranks = []
        for i in range(n - 1):
            j = np.flatnonzero(codes[i + 1 :] != codes[i]) + i + 1
            ranks.append(i * n - i * (i + 1) // 2 + j - i - 1)
        listed = np.concatenate(ranks).astype(np.int64)
        return listed[_distinct(rng, listed.size, k)]
    accept = total_different / total
    kept = np.zeros(0, np.int64)
    while kept.size < k:
        draw = rng.integers(0, total, min(int((2 * (k - kept.size) + 16) / accept) + 1, 1 << 20))
        i, j = _unrank_pairs(draw, n)
        kept = np.unique(np.r_[kept, draw[codes[i] != codes[j]]])
    return np.sort(kept[rng.choice(kept.size, k, replace=False)])


def sample_trials(speakers: Sequence[str], max_trials: int = MAX_TRIALS, seed: int = SAMPLE_SEED) -> IndexTrials:
    """Trials among one split's utterances (speaker per utterance, in record order): every pair
    when there are at most `max_trials` (exactly `all_pairs_trials`' trials, in its order);
    otherwise a seeded sample of `max_trials`, drawn by index, with as many same-speaker
    trials as different ones where the split has them (so the rare same-speaker class is
    measured as finely as the other; EER and minDCF do not depend on the ratio), in the same
    order. Memory is O(max_trials), whatever the number of pairs."""
    if max_trials < 2:
        raise ValueError(f"max_trials={max_trials}: need >= 2 (a same- and a different-speaker trial)")
    names, codes = np.unique(np.asarray(speakers), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    n = int(codes.size)
    total = _pairs(n)
    if total <= max_trials:
        first, second = np.triu_indices(n, 1)
        first, second = first.astype(np.int64), second.astype(np.int64)
        return IndexTrials(first, second, (codes[first] == codes[second]).astype(np.int64), total, max_trials)
    rng = np.random.default_rng(seed)
    counts = np.bincount(codes, minlength=names.size).astype(np.int64)
    within = counts * (counts - 1) // 2  # same-speaker pairs of each speaker
    total_same = int(within.sum())
    total_different = total - total_same
    n_different = min(total_different, max_trials - min(total_same, max_trials // 2))
    n_same = min(total_same, max_trials - n_different)
    # Same-speaker pairs: ranks into the speakers' triangles laid end to end.
    members = np.argsort(codes, kind="stable")  # each speaker's rows, ascending
    member_start = np.r_[0, np.cumsum(counts)[:-1]]
    triangle_start = np.r_[0, np.cumsum(within)[:-1]]
    ranks = _distinct(rng, total_same, n_same)
    speaker = np.searchsorted(triangle_start, ranks, side="right") - 1
    a = np.zeros(n_same, np.int64)
    b = np.zeros(n_same, np.int64)
    for s in np.unique(speaker):  # one speaker's triangle at a time
        at = speaker == s
        a[at], b[at] = _unrank_pairs(ranks[at] - triangle_start[s], int(counts[s]))
    same_first = members[member_start[speaker] + a]
    same_second = members[member_start[speaker] + b]
    diff_first, diff_second = _unrank_pairs(_different_pairs(rng, codes, total_different, n_different), n)
    first = np.r_[same_first, diff_first]
    second = np.r_[same_second, diff_second]
    labels = np.r_[np.ones(n_same, np.int64), np.zeros(n_different, np.int64)]
    order = np.argsort(first * n + second, kind="stable")  # all_pairs_trials' order
    return IndexTrials(first[order], second[order], labels[order], total, max_trials)


def cap_trials(
    trials: Sequence[Tuple[int, str, str]], max_trials: int = MAX_TRIALS, seed: int = SAMPLE_SEED
) -> Tuple[List[Tuple[int, str, str]], Dict[str, object]]:
    """A listed trial list (an official one, or the one built for a test split) at most
    `max_trials` long: whole when it fits, else a seeded sample that keeps the list's order and
    its share of same-speaker trials (at least one of each label); and what was done, for the
    record (`bound` says whether trials were left out)."""
    if max_trials < 2:
        raise ValueError(f"max_trials={max_trials}: need >= 2 (a same- and a different-speaker trial)")
    trials = list(trials)
    listed = len(trials)
    if listed > max_trials:
        labels = np.fromiter((t[0] for t in trials), np.int64, listed)
        same, different = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
        n_same = int(round(max_trials * same.size / listed))
        n_same = min(same.size, max(n_same, 1 if same.size else 0), max_trials - min(different.size, 1))
        rng = np.random.default_rng(seed)
        keep = np.sort(
            np.r_[
                same[rng.choice(same.size, n_same, replace=False)],
                different[rng.choice(different.size, max_trials - n_same, replace=False)],
            ]
        )
        trials = [trials[k] for k in keep]
    same_kept = sum(1 for t in trials if t[0] == 1)
    return trials, {
        "max_trials": max_trials,
        "listed": listed,
        "trials": len(trials),
        "same": same_kept,
        "different": len(trials) - same_kept,
        "bound": listed > max_trials,
    }


def balanced_utterances(
    speakers: Sequence[str], max_utterances: int, seed: int = SAMPLE_SEED, min_per_speaker: int = 2
) -> np.ndarray:
    """Rows (ascending) of at most `max_utterances` utterances, as even over the speakers as the
    cap allows: every utterance when they fit; else the same number from each speaker (all of a
    speaker's when it has fewer), seeded; and when the cap cannot give every speaker
    `min_per_speaker` (a within-speaker spread needs 2), a seeded choice of speakers that it
    can."""
    codes = np.unique(np.asarray(speakers), return_inverse=True)[1].reshape(-1)
    n = int(codes.size)
    if n <= max_utterances:
        return np.arange(n, dtype=np.int64)
    if max_utterances < min_per_speaker:
        raise ValueError(f"max_utterances={max_utterances}: need >= {min_per_speaker}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(codes == k) for k in range(int(codes.max()) + 1)]
    if len(groups) * min_per_speaker > max_utterances:
        chosen = np.sort(rng.choice(len(groups), max_utterances // min_per_speaker, replace=False))
        groups, quota = [groups[k] for k in chosen], min_per_speaker
    else:
        # The largest per-speaker quota whose total fits the cap.
        sizes = np.array([g.size for g in groups])
        quota = min_per_speaker
        while quota < sizes.max() and np.minimum(sizes, quota + 1).sum() <= max_utterances:
            quota += 1
    rows = [g if g.size <= quota else rng.choice(g, quota, replace=False) for g in groups]
    return np.sort(np.concatenate(rows)).astype(np.int64)


def cluster_sample(
    speakers: Sequence[str],
    max_speakers: int = CLUSTER_MAX_SPEAKERS,
    max_per_speaker: int = CLUSTER_MAX_UTTERANCES,
    seed: int = SAMPLE_SEED,
) -> Tuple[np.ndarray, Dict[str, object]]:
    """Rows (ascending) of the utterances a clustering figure is taken on: at most `max_speakers`
    speakers (seeded) with at most `max_per_speaker` utterances each (seeded); all of them when
    under both caps. And what was done, for the record."""
    if max_speakers < 2 or max_per_speaker < 1:
        raise ValueError(f"max_speakers={max_speakers}, max_per_speaker={max_per_speaker}: need >= 2 and >= 1")
    codes = np.unique(np.asarray(speakers), return_inverse=True)[1].reshape(-1)
    n_speakers = int(codes.max()) + 1 if codes.size else 0
    rng = np.random.default_rng(seed)
    chosen = np.arange(n_speakers)
    if n_speakers > max_speakers:
        chosen = np.sort(rng.choice(n_speakers, max_speakers, replace=False))
    rows = []
    for k in chosen:
        group = np.flatnonzero(codes == k)
        rows.append(group if group.size <= max_per_speaker else rng.choice(group, max_per_speaker, replace=False))
    picked = np.sort(np.concatenate(rows)).astype(np.int64) if rows else np.zeros(0, np.int64)
    return picked, {
        "max_speakers": max_speakers,
        "max_utterances_per_speaker": max_per_speaker,
        "speakers": int(chosen.size),
        "of_speakers": n_speakers,
        "utterances": int(picked.size),
        "of_utterances": int(codes.size),
        "bound": int(picked.size) < int(codes.size),
    }


def index_scores(
    embeddings: np.ndarray, first: np.ndarray, second: np.ndarray, score_fn, chunk: int = SCORE_CHUNK
) -> np.ndarray:
    """Scores [T] float64 of the trials (row first[t], row second[t]) of an [N, E] embedding
    matrix, `chunk` trials at a time: only one chunk's two sides are ever gathered."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    out = np.empty(first.size, np.float64)
    for start in range(0, first.size, chunk):
        stop = start + chunk
        out[start:stop] = score_fn(embeddings[first[start:stop]], embeddings[second[start:stop]])
    return out


# --------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    """Writes a figure as PNG to a local path or a URI. matplotlib opens a path with open(), so for
    a URI the PNG is rendered into memory and written through TFX's fileio as one object."""
    if storage.is_uri(path):
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=120, format="png")
        storage.write_bytes(path, buffer.getvalue())
    else:
        fig.savefig(path, dpi=120)


def plot_det(curves: Mapping[str, Tuple[np.ndarray, np.ndarray]], path: str, title: str = "DET curve") -> str:
    """DET curves (name -> (FPR, FNR)) on normal-deviate axes, 0.1 % to 50 %, with the EER line."""
    from scipy.stats import norm

    plt = _pyplot()
    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    lo, hi = 0.0005, 0.5
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, (fpr, fnr) in curves.items():
        ax.plot(norm.ppf(np.clip(fpr, lo, 1 - lo)), norm.ppf(np.clip(fnr, lo, 1 - lo)), label=name)
    ax.plot(norm.ppf([lo, hi]), norm.ppf([lo, hi]), "k:", linewidth=0.8, label="EER")
    ax.set_xticks(norm.ppf(ticks))
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks))
    ax.set_yticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
    ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def project_2d(embeddings: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """A 2-D projection: t-SNE (cosine metric, PCA init, seeded) or PCA."""
    x = np.asarray(embeddings, np.float64)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
        return TSNE(2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
    raise ValueError(f"method={method!r}: expected 'tsne' or 'pca'")


def plot_embeddings(
    embeddings: np.ndarray,
    speakers: Sequence[str],
    path: str,
    method: str = "tsne",
    title: str = "utterance embeddings",
    seed: int = 0,
) -> str:
    """The 2-D projection of the embeddings, one colour per speaker."""
    plt = _pyplot()
    xy = project_2d(embeddings, method, seed)
    speakers = np.asarray(speakers)
    names = sorted(set(speakers.tolist()))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for k, name in enumerate(names):
        sel = speakers == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=cmap(k % cmap.N), label=name)
    ax.set_title(f"{title} ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= 20:
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_curves(
    series: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
    path: str,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
) -> str:
    """Line plot of named (x, y) series, e.g. validation EER against training minutes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
