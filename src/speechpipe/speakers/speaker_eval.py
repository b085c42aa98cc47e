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
    a = np.stack([embeddings[t[1]] for t in trials])
    b = np.stack([embeddings[t[2]] for t in trials])
    return np.asarray(score_fn(a, b), np.float64), np.array([t[0] for t in trials], np.int64)


def all_pairs_trials(utterances: Sequence[str], speakers: Sequence[str]) -> List[Tuple[int, str, str]]:
    """Every unordered pair of distinct utterances as a trial (for small evaluation sets)."""
    if len(utterances) != len(speakers):
        raise ValueError("one speaker per utterance")
    out = []
    for i in range(len(utterances)):
        for j in range(i + 1, len(utterances)):
            out.append((int(speakers[i] == speakers[j]), utterances[i], utterances[j]))
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
