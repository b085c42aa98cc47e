"""Every evaluation is bounded (issue #25): trials drawn by index under a cap, the back end fitted on
a capped sample, clustering on a capped sample of speakers; and the CTC trainer's buckets and input
counts, which need no pass of their own. Under its cap a set is the full set, in the same order, so
the demo's figures do not move. The speaker evaluator embeds only the utterances its figures use,
streamed from the shards, and its figures are those of embedding every utterance in memory."""

import os

import numpy as np
import pytest

from speechpipe.speakers import speaker_eval
from tests.helpers import write_feature_split


def _split(n_speakers, per_speaker, seed=0, ragged=False):
    """Speaker per utterance in a shuffled record order, and utterance names."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 2 * per_speaker, n_speakers) if ragged else np.full(n_speakers, per_speaker)
    speakers = np.repeat([f"spk{k:04d}" for k in range(n_speakers)], counts)
    rng.shuffle(speakers)
    return [f"utt{i:06d}" for i in range(speakers.size)], speakers.tolist()


# ---------------------------------------------------------------------------------------- trials


@pytest.mark.parametrize(("n_speakers", "per_speaker", "ragged"), [(36, 10, False), (5, 4, True), (2, 1, False)])
def test_under_the_cap_the_trials_are_all_pairs_in_their_order(n_speakers, per_speaker, ragged):
    utterances, speakers = _split(n_speakers, per_speaker, ragged=ragged)
    everything = speaker_eval.all_pairs_trials(utterances, speakers)
    trials = speaker_eval.sample_trials(speakers, max_trials=max(len(everything), 2))
    assert trials.as_tuples(utterances) == everything
    assert not trials.bound and trials.pairs == len(everything)


def test_the_demo_validation_split_is_under_the_default_cap():
    """The demo: 36 validation speakers x 10 utterances = 64,620 pairs, every one scored."""
    utterances, speakers = _split(36, 10)
    trials = speaker_eval.sample_trials(speakers)
    assert len(trials) == trials.pairs == 64_620 and trials.max_trials == speaker_eval.MAX_TRIALS
    assert trials.as_tuples(utterances) == speaker_eval.all_pairs_trials(utterances, speakers)


@pytest.mark.parametrize("cap", [2, 3, 50, 1_000, 7_000])
@pytest.mark.parametrize("ragged", [False, True])
def test_over_the_cap_trials_are_a_seeded_sample_of_distinct_pairs_with_both_labels(cap, ragged):
    utterances, speakers = _split(30, 5, seed=1, ragged=ragged)
    n = len(speakers)
    assert n * (n - 1) // 2 > cap
    trials = speaker_eval.sample_trials(speakers, cap, seed=7)
    assert len(trials) == cap and trials.bound
    assert np.all(trials.first < trials.second) and trials.second.max() < n
    assert len(set(zip(trials.first.tolist(), trials.second.tolist()))) == cap, "no pair twice"
    names = np.array(speakers)
    assert np.array_equal(trials.labels, (names[trials.first] == names[trials.second]).astype(np.int64))
    assert 0 < trials.labels.sum() < cap, "both same- and different-speaker trials"
    assert np.all(np.diff(trials.first * n + trials.second) > 0), "in all_pairs_trials' order"
    again = speaker_eval.sample_trials(speakers, cap, seed=7)
    assert np.array_equal(again.first, trials.first) and np.array_equal(again.second, trials.second)
    if cap >= 50:
        other = speaker_eval.sample_trials(speakers, cap, seed=8)
        assert not np.array_equal(other.first * n + other.second, trials.first * n + trials.second)
    record = trials.to_json()
    assert record["bound"] and record["trials"] == cap and record["same"] + record["different"] == cap


def test_balanced_when_same_speaker_pairs_are_rare_and_when_they_dominate():
    _, many = _split(400, 6, seed=2)  # same-speaker pairs are 0.2 % of all
    trials = speaker_eval.sample_trials(many, 2_000)
    assert trials.labels.sum() == 1_000
    few = ["a"] * 300 + ["b"] * 2  # 600 different-speaker pairs among 45k
    trials = speaker_eval.sample_trials(few, 1_000)
    assert len(trials) == 1_000 and trials.labels.sum() == 500


def test_a_voxceleb_sized_split_samples_in_memory_of_the_cap():
    """150,000 utterances have 11 G pairs (at 13.5 KB a trial, all pairs would be 150 TB)."""
    speakers = np.repeat(np.arange(1_250), 120).astype(str)
    trials = speaker_eval.sample_trials(speakers, 20_000)
    assert trials.pairs == 150_000 * 149_999 // 2 and len(trials) == 20_000
    assert trials.labels.sum() == 10_000
    assert np.array_equal(trials.labels, (speakers[trials.first] == speakers[trials.second]).astype(np.int64))


def test_unranking_the_triangle_is_exact():
    for n in (2, 3, 9, 500):
        rows, cols = np.triu_indices(n, 1)
        first, second = speaker_eval._unrank_pairs(np.arange(n * (n - 1) // 2), n)
        assert np.array_equal(first, rows) and np.array_equal(second, cols)
    n = 3_000_000  # ranks near 2^52, where a float square root alone is off by one
    last = n * (n - 1) // 2 - 1
    first, second = speaker_eval._unrank_pairs(np.array([0, n - 2, n - 1, last]), n)
    assert first.tolist() == [0, 0, 1, n - 2] and second.tolist() == [1, n - 1, 2, n - 1]


def test_a_listed_trial_list_is_capped_in_order_and_says_so():
    utterances, speakers = _split(8, 6, seed=3)
    listed = speaker_eval.all_pairs_trials(utterances, speakers)
    same, record = speaker_eval.cap_trials(listed, len(listed))
    assert same == listed and not record["bound"] and record["listed"] == record["trials"] == len(listed)
    capped, record = speaker_eval.cap_trials(listed, 100, seed=4)
    assert len(capped) == 100 and record["bound"] and record["listed"] == len(listed)
    position = {t: k for k, t in enumerate(listed)}
    assert [position[t] for t in capped] == sorted(position[t] for t in capped), "the list's order"
    assert 0 < sum(t[0] for t in capped) < 100
    assert abs(sum(t[0] for t in capped) / 100 - sum(t[0] for t in listed) / len(listed)) < 0.02
    assert speaker_eval.cap_trials(listed, 100, seed=4)[0] == capped


def test_chunked_scores_equal_scores_of_the_whole_list():
    from speechpipe.speakers.embedder.scoring import score

    rng = np.random.default_rng(5)
    embeddings = rng.standard_normal((40, 16)).astype(np.float32)
    trials = speaker_eval.sample_trials(np.repeat(np.arange(8), 5).astype(str), 500)
    whole = score(embeddings[trials.first], embeddings[trials.second])
    chunked = speaker_eval.index_scores(embeddings, trials.first, trials.second, score, chunk=7)
    assert np.array_equal(whole, chunked)
    names = [str(k) for k in range(40)]
    by_name, labels = speaker_eval.trial_scores(dict(zip(names, embeddings)), trials.as_tuples(names), score)
    assert np.array_equal(by_name, whole) and np.array_equal(labels, trials.labels)


# ---------------------------------------------------------------------- back end and clustering


def test_the_back_end_sample_is_capped_and_balanced_over_speakers():
    _, speakers = _split(20, 10, seed=6, ragged=True)
    assert np.array_equal(speaker_eval.balanced_utterances(speakers, len(speakers)), np.arange(len(speakers)))
    rows = speaker_eval.balanced_utterances(speakers, 60, seed=1)
    assert rows.size <= 60 and np.all(np.diff(rows) > 0)
    names = np.array(speakers)
    per_speaker = {s: int((names[rows] == s).sum()) for s in set(speakers)}
    quota = max(per_speaker.values())
    assert all(v == min(quota, int((names == s).sum())) for s, v in per_speaker.items()), "even over speakers"
    assert np.array_equal(rows, speaker_eval.balanced_utterances(speakers, 60, seed=1))
    # Fewer slots than two per speaker: a seeded choice of speakers, two utterances each.
    rows = speaker_eval.balanced_utterances(speakers, 10, seed=1)
    counts = np.unique(names[rows], return_counts=True)[1]
    assert rows.size <= 10 and np.all(counts <= 2)


def test_the_clustering_sample_caps_speakers_and_utterances_per_speaker():
    _, speakers = _split(36, 10)
    rows, record = speaker_eval.cluster_sample(speakers)  # the demo's test and validation splits
    assert np.array_equal(rows, np.arange(360)) and not record["bound"]
    _, speakers = _split(300, 40, seed=7)
    rows, record = speaker_eval.cluster_sample(speakers, 20, 5, seed=2)
    names = np.array(speakers)[rows]
    assert np.unique(names).size == 20 and np.all(np.unique(names, return_counts=True)[1] == 5)
    assert record == {
        "max_speakers": 20,
        "max_utterances_per_speaker": 5,
        "speakers": 20,
        "of_speakers": 300,
        "utterances": 100,
        "of_utterances": 12_000,
        "bound": True,
    }
    assert np.array_equal(rows, speaker_eval.cluster_sample(speakers, 20, 5, seed=2)[0])


def test_the_demo_is_under_every_default_cap():
    from speechpipe.pipeline.run_config import DEMO_EMBEDDER

    # 360 validation utterances (64,620 pairs), 1,680 training utterances, 36 speakers of 10.
    assert DEMO_EMBEDDER.max_trials >= 64_620 and DEMO_EMBEDDER.backend_max_utterances >= 1_680
    assert DEMO_EMBEDDER.cluster_max_speakers >= 36 and DEMO_EMBEDDER.cluster_max_utterances >= 10


def test_the_back_end_embeds_only_its_sample(monkeypatch):
    from speechpipe.components import embedder_trainer
    from speechpipe.speakers.embedder import EmbedderTrainConfig
    from speechpipe.speakers.split_stream import SplitIndex

    _, speakers = _split(12, 6, seed=8)
    rng = np.random.default_rng(0)
    n = len(speakers)
    index = SplitIndex([], [f"u{k}" for k in range(n)], speakers, ["s"] * n, np.full(n, 3, np.int64))
    features = [rng.standard_normal((3, 4)).astype(np.float32) for _ in speakers]
    streamed, embedded = [], []

    def fake_stream(split, rows):
        streamed.append(list(rows))
        return (features[k] for k in rows)

    def fake_embed(model, stream, config, count):
        rows = [f.mean(axis=0) for f in stream]
        embedded.append(count)
        assert len(rows) == count
        return np.stack(rows) + rng.standard_normal((count, 4)) * 0.1

    monkeypatch.setattr(embedder_trainer, "stream_features", fake_stream)
    monkeypatch.setattr(embedder_trainer, "embed_utterances", fake_embed)
    config = EmbedderTrainConfig(backend_max_utterances=24)
    sample = embedder_trainer.eval_set(index, config.backend_max_utterances)
    assert len(sample) <= 24 and sample.record["bound"] and sample.record["of_utterances"] == 72
    backend = embedder_trainer.fit_backend(None, sample, config.model)
    # Only the sample's rows are read and embedded, once.
    assert streamed == [sample.rows.tolist()] and embedded == [len(sample)] and backend is not None
    whole = embedder_trainer.eval_set(index, EmbedderTrainConfig().backend_max_utterances)
    assert np.array_equal(whole.rows, np.arange(72)) and not whole.record["bound"]


def test_streamed_utterance_embeddings_equal_one_concatenation():
    """Windows are embedded as the batches reach them: the same batches as concatenating every
    utterance's windows first, so the figures are the same to the bit."""
    import tf_keras as keras

    from speechpipe.speakers.embedder import EmbedderConfig, embed_segments, embed_utterances, segment_windows

    config = EmbedderConfig(n_bins=6)
    inputs = keras.Input((config.segment_frames, 6))
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))
    rng = np.random.default_rng(9)
    features = [rng.standard_normal((int(n), 6)).astype(np.float32) for n in rng.integers(10, 200, 13)]
    windows = [segment_windows(f, config.segment_frames, config.eval_hop) for f in features]
    counts = np.array([len(w) for w in windows])
    segments = embed_segments(model, np.concatenate(windows, 0), 4)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    expected = (np.add.reduceat(segments.astype(np.float64), starts, axis=0) / counts[:, None]).astype(np.float32)
    streamed = embed_utterances(model, features, config, batch_size=4)
    assert streamed.dtype == np.float32 and np.array_equal(streamed, expected)


# ------------------------------------------------------------------------------------------ CTC


def test_buckets_reach_the_longest_utterance_the_feature_job_keeps():
    from speechpipe.config import FeatureConfig
    from speechpipe.phones.ctc_config import CTCTrainConfig

    config, features = CTCTrainConfig(), FeatureConfig()
    assert features.max_frames == 2998  # 30 s, 25 ms windows every 10 ms, not centred
    boundaries = config.boundaries_for(features)
    assert boundaries[:8] == (150, 200, 250, 300, 350, 400, 500, 700), "the demo's buckets"
    assert boundaries[-1] == features.max_frames + 1, "nothing the feature job writes is unbounded"
    assert all(b / a <= 1.4 for a, b in zip(boundaries[7:], boundaries[8:]))
    assert boundaries == tuple(sorted(set(boundaries)))
    # Features of at most 5 s (498 frames) already fit under the short buckets.
    assert config.boundaries_for(FeatureConfig(max_seconds=5.0)) == config.bucket_boundaries


def test_a_long_utterance_lands_in_a_bucket_that_fits(tmp_path):
    from speechpipe.components.ctc_trainer import make_dataset
    from speechpipe.config import FeatureConfig
    from speechpipe.phones.ctc_config import CTCTrainConfig

    lengths = [2_950, 2_800, 1_200, 160]
    files = [write_feature_split(str(tmp_path / "Split-train"), [(f"u{n}", n, [1, 2, 3]) for n in lengths])]
    config = CTCTrainConfig(batch_size=1)
    boundaries = config.boundaries_for(FeatureConfig())
    padded = sorted(
        int(inputs["features"].shape[1])
        for inputs, _ in make_dataset(files, config, training=False).as_numpy_iterator()
    )
    assert padded == sorted(lengths)
    for n in lengths:  # its bucket's upper boundary is within the growth of its length
        upper = min(b for b in boundaries if b > n)
        assert upper / n <= 1.25 + 0.05


@pytest.mark.slow  # trains a tiny model for two epochs
def test_the_ctc_trainer_reads_no_record_before_fit_and_counts_as_it_trains(tmp_path, monkeypatch):
    import tensorflow as tf

    from speechpipe import training
    from speechpipe.components import ctc_trainer
    from speechpipe.config import FeatureConfig
    from speechpipe.phones.ctc_config import CTCModelConfig, CTCTrainConfig
    from speechpipe.phones.ctc_model import CTCTrainer

    train = write_feature_split(
        str(tmp_path / "Split-train"),
        [("a", 60, [1, 2, 3]), ("b", 50, [4, 5]), ("c", 70, [1, 1, 2]), ("silent", 40, []), ("short", 4, [1, 2, 3])],
        bins=80,
    )
    validation = write_feature_split(str(tmp_path / "Split-validation"), [("v", 60, [1, 2]), ("w", 30, [])], bins=80)
    phase = {"now": "before fit"}
    reads = []
    reader = training.record_dataset

    def spying_reader(patterns):
        def note(utterance):
            reads.append(phase["now"])
            return utterance

        return reader(patterns).map(
            lambda e: {**e, "utterance": tf.ensure_shape(tf.py_function(note, [e["utterance"]], tf.string), [])}
        )

    real_fit = CTCTrainer.fit

    def fit(self, *args, **kwargs):
        phase["now"] = "fit"
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(training, "record_dataset", spying_reader)
    monkeypatch.setattr(CTCTrainer, "fit", fit)
    config = CTCTrainConfig(
        model=CTCModelConfig(lstm_units=(4,)), batch_size=2, max_epochs=2, patience=0, shuffle_buffer=8
    )
    result = ctc_trainer.train([train], [validation], FeatureConfig(), None, None, config)
    assert reads and set(reads) == {"fit"}, "no record read before fit"
    assert result["epochs"] == 2
    assert result["inputs"]["train"] == {"used": 3, "no_transcript": 1, "too_short_for_label": 1, "complete": True}
    assert result["inputs"]["validation"] == {"used": 1, "no_transcript": 1, "too_short_for_label": 0, "complete": True}
    assert result["inputs"]["bucket_boundaries"][-1] == FeatureConfig().max_frames + 1


@pytest.mark.slow  # builds a model
def test_a_label_outside_the_inventory_fails_training(tmp_path):
    from speechpipe.components import ctc_trainer
    from speechpipe.config import FeatureConfig
    from speechpipe.phones.ctc_config import CTCModelConfig, CTCTrainConfig

    train = write_feature_split(str(tmp_path / "Split-train"), [("a", 60, [1, 2, 999])], bins=80)
    validation = write_feature_split(str(tmp_path / "Split-validation"), [("v", 60, [1, 2])], bins=80)
    config = CTCTrainConfig(model=CTCModelConfig(lstm_units=(4,)), batch_size=2, max_epochs=1)
    with pytest.raises(ValueError, match="outside the phone inventory"):
        ctc_trainer.train([train], [validation], FeatureConfig(), None, None, config)


# ------------------------------------------------------------------------------- speaker evaluator
# The evaluator reads its splits as indexes of ids and streams the features of the utterances its
# figures use, one record at a time; these tests hold it to the figures of embedding every
# utterance in memory, on splits small enough to do both.

BINS = 80  # FeatureConfig's, which the exported embedder's signature takes


def _speaker_split(folder, n_speakers, per_speaker, seed, shards=1):
    """A Split-<name> folder of VoxCeleb-shaped utterances (speaker-dependent spectra, lengths
    from under one segment to several), in a shuffled record order over `shards` shards; the
    ids in record order."""
    import tensorflow as tf

    from speechpipe.filenames import SHARD_PREFIX
    from speechpipe.io import records

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_speakers):
        profile = rng.normal(0, 1, BINS)
        for n in range(per_speaker):
            frames = int(rng.integers(20, 140))
            features = (profile + 0.5 * rng.normal(0, 1, (frames, BINS))).astype(np.float32)
            speaker, session = f"id1{seed:02d}{s:02d}", f"abcdefghij{n % 3}"
            rows.append(
                records.UtteranceFeatures(
                    f"{speaker}/{session}/{n + 1:05d}", speaker, session, "x", features, frames / 100
                )
            )
    rng.shuffle(rows)
    os.makedirs(folder)
    for k in range(shards):
        with tf.io.TFRecordWriter(os.path.join(folder, f"{SHARD_PREFIX}-{k:05d}-of-{shards:05d}")) as writer:
            for row in rows[k::shards]:
                writer.write(records.encode_example(row))
    return folder


@pytest.fixture(scope="module")
def speaker_eval_inputs(tmp_path_factory):
    """A tiny untrained embedder made sensitive to its input (exported with a clustering
    threshold), a test split over two shards and a validation split."""
    import tf_keras as keras

    from speechpipe.config import FeatureConfig
    from speechpipe.speakers import embedder
    from speechpipe.speakers.embedder import EmbedderConfig

    root = tmp_path_factory.mktemp("speaker_eval")
    keras.utils.set_random_seed(0)
    config = EmbedderConfig(
        lstm_units=8, dense_units=(16,), output_dim=8, dropout=0.1, backend="none", embedding="hidden"
    )
    base = embedder.build_base_network(config)
    layer = base.get_layer("output_dense")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 30.0, bias])
    model = embedder.export_embedder(
        str(root / "model"), base, config, FeatureConfig(), extra={"cluster_threshold": 0.8}
    )
    test = _speaker_split(str(root / "Split-test"), 6, 6, seed=1, shards=2)
    validation = _speaker_split(str(root / "Split-validation"), 5, 6, seed=2)
    return model, test, validation


def _listed_trials(test, every=1):
    """A trial list over the test split's ids (every `every`-th pair of the ids in name order)."""
    from speechpipe.speakers.split_stream import read_index

    index = read_index(test)
    named = sorted(zip(index.utterances, index.speakers))
    pairs = [(int(a[1] == b[1]), a[0], b[0]) for i, a in enumerate(named) for b in named[i + 1 :]]
    return pairs[::every]


def _in_memory_metrics(model, test, trials, validation, plot_dir, max_trials, cluster_speakers, cluster_utterances):
    """The evaluator's figures computed from every utterance of both splits read into memory and
    embedded, each trial scored from a mapping of every utterance to its embedding."""
    from speechpipe.components.speaker_evaluator import PROJECTION_PLOT
    from speechpipe.speakers.embedder import clustering_distances, load_embedder, score, segment_windows
    from speechpipe.training import record_dataset

    loaded = load_embedder(model)
    config = loaded.config

    def read(folder):
        examples = list(record_dataset(folder).as_numpy_iterator())
        return [e["utterance"].decode() for e in examples], [e["speaker"].decode() for e in examples], examples

    def embed(examples):
        return np.stack(
            [
                loaded.embed_segments(segment_windows(e["features"], config.segment_frames, config.eval_hop)).mean(
                    axis=0
                )
                for e in examples
            ]
        )

    score_fn = lambda a, b: score(a, b, config.scoring)  # noqa: E731
    utterances, speakers, examples = read(test)
    embeddings = embed(examples)
    trials, trial_bound = speaker_eval.cap_trials(trials, max_trials)
    scores, labels = speaker_eval.trial_scores(dict(zip(utterances, embeddings)), trials, score_fn)
    result = speaker_eval.verification(scores, labels)
    fpr, fnr = speaker_eval.det_curve(scores, labels)
    rows, cluster_bound = speaker_eval.cluster_sample(speakers, cluster_speakers, cluster_utterances)
    clustered_speakers = [speakers[k] for k in rows]
    clusters = speaker_eval.clustering(
        clustering_distances(embeddings[rows], config),
        clustered_speakers,
        threshold=loaded.info.get("cluster_threshold"),
        method=config.linkage,
    )
    _, validation_speakers, validation_examples = read(validation)
    sampled = speaker_eval.sample_trials(validation_speakers, max_trials)
    validation_scores = speaker_eval.index_scores(embed(validation_examples), sampled.first, sampled.second, score_fn)
    threshold = speaker_eval.threshold_at_far(validation_scores, sampled.labels, 0.01)
    eer = speaker_eval.equal_error_rate(validation_scores, sampled.labels)
    test_far, test_frr = speaker_eval.rates_at(scores, labels, threshold)
    eer_far, eer_frr = speaker_eval.rates_at(scores, labels, eer.threshold)
    n_validation = len(set(validation_speakers))
    return {
        "eer": float(result.eer),
        "min_dcf": float(result.min_dcf),
        "trials": int(len(labels)),
        "utterances": len(utterances),
        "speakers": len(set(speakers)),
        "mr": float(clusters.mr_known),
        "ari": float(clusters.ari_known),
        "mr_threshold": float(clusters.mr_threshold),
        "clusters_threshold": int(clusters.clusters_threshold),
        "det": [fpr.tolist(), fnr.tolist()],
        "bounds": {"test_trials": trial_bound, "clustering": cluster_bound},
        "operating_point": {
            "threshold": threshold,
            "target_far": 0.01,
            "source": f"fitted at FAR 0.01 on {n_validation} validation speakers of the test span "
            f"({len(sampled)} trials)",
            "validation_eer": float(eer.eer),
            "eer_threshold": float(eer.threshold),
            "test_far": test_far,
            "test_frr": test_frr,
            "test_far_at_eer_threshold": eer_far,
            "test_frr_at_eer_threshold": eer_frr,
            "validation_speakers": n_validation,
            "validation_trials": len(sampled),
            "validation_trial_bound": sampled.to_json(),
        },
        "projection_png": speaker_eval.plot_embeddings(
            embeddings[rows],
            clustered_speakers,
            os.path.join(plot_dir, f"candidate_{PROJECTION_PLOT}"),
            title="candidate: test speakers never seen in training",
        ),
    }


# (max_trials, cluster speakers, cluster utterances per speaker): every cap binding, and none
CAPS = [(12, 2, 2), (speaker_eval.MAX_TRIALS, speaker_eval.CLUSTER_MAX_SPEAKERS, speaker_eval.CLUSTER_MAX_UTTERANCES)]


@pytest.mark.parametrize(("max_trials", "cluster_speakers", "cluster_utterances"), CAPS)
def test_streamed_evaluation_equals_embedding_every_utterance_in_memory(
    speaker_eval_inputs, tmp_path, max_trials, cluster_speakers, cluster_utterances
):
    from speechpipe.components.speaker_evaluator import embedder_metrics
    from speechpipe.speakers.split_stream import read_index

    model, test, validation = speaker_eval_inputs
    trials = _listed_trials(test, every=3)
    (tmp_path / "streamed").mkdir()
    (tmp_path / "in_memory").mkdir()
    streamed = embedder_metrics(
        model,
        read_index(test, min_speakers=2),
        trials,
        str(tmp_path / "streamed"),
        validation=read_index(validation, min_speakers=2),
        max_trials=max_trials,
        cluster_max_speakers=cluster_speakers,
        cluster_max_utterances=cluster_utterances,
    )
    expected = _in_memory_metrics(
        model, test, trials, validation, str(tmp_path / "in_memory"), max_trials, cluster_speakers, cluster_utterances
    )
    png, expected_png = streamed.pop("projection_png"), expected.pop("projection_png")
    assert streamed == expected
    with open(png, "rb") as a, open(expected_png, "rb") as b:
        assert a.read() == b.read(), "the projection of the same embeddings"
    bound = max_trials < len(trials)
    assert streamed["bounds"]["test_trials"]["bound"] == bound and streamed["bounds"]["clustering"]["bound"] == bound
    assert streamed["operating_point"]["validation_trial_bound"]["bound"] == bound
    assert streamed["utterances"] == 36 and streamed["speakers"] == 6
    assert 0.0 <= streamed["eer"] < 0.5, (
        "an embedder that tells the speakers apart, for the comparison to mean anything"
    )


def test_the_evaluator_streams_and_embeds_only_the_utterances_its_figures_use(speaker_eval_inputs, monkeypatch):
    from speechpipe.components.speaker_evaluator import embedder_metrics
    from speechpipe.speakers import split_stream
    from speechpipe.speakers.embedder import LoadedEmbedder

    model, test, validation = speaker_eval_inputs
    test_index, validation_index = split_stream.read_index(test), split_stream.read_index(validation)
    streamed, calls = [], []
    real_stream, real_embed = split_stream.stream_features, LoadedEmbedder.embed_segments

    def stream(index, rows):
        streamed.append((index.files, list(rows)))
        return real_stream(index, rows)

    def embed_segments(self, segments):
        calls.append(len(segments))
        return real_embed(self, segments)

    monkeypatch.setattr(split_stream, "stream_features", stream)
    monkeypatch.setattr(LoadedEmbedder, "embed_segments", embed_segments)
    trials = _listed_trials(test, every=3)
    embedder_metrics(
        model,
        test_index,
        trials,
        validation=validation_index,
        max_trials=12,
        cluster_max_speakers=2,
        cluster_max_utterances=2,
    )
    # What each figure uses, drawn on the ids alone.
    capped, _ = speaker_eval.cap_trials(trials, 12)
    row = {u: k for k, u in enumerate(test_index.utterances)}
    cluster_rows, _ = speaker_eval.cluster_sample(test_index.speakers, 2, 2)
    test_rows = sorted({row[u] for _, a, b in capped for u in (a, b)} | set(cluster_rows.tolist()))
    sampled = speaker_eval.sample_trials(validation_index.speakers, 12)
    validation_rows = sorted(set(sampled.first.tolist()) | set(sampled.second.tolist()))
    assert streamed == [(test_index.files, test_rows), (validation_index.files, validation_rows)]
    assert len(test_rows) < len(test_index) and len(validation_rows) < len(validation_index)
    assert len(calls) == len(test_rows) + len(validation_rows), "one embedding pass per used utterance"


def test_a_trial_naming_an_utterance_outside_the_test_split_is_an_error(speaker_eval_inputs, monkeypatch):
    from speechpipe.components.speaker_evaluator import embedder_metrics
    from speechpipe.speakers import split_stream

    model, test, _ = speaker_eval_inputs
    streamed = []
    monkeypatch.setattr(split_stream, "stream_features", lambda index, rows: streamed.append(rows) or iter(()))
    trials = _listed_trials(test, every=5) + [(0, "id19999/abcdefghij0/00001", _listed_trials(test)[0][1])]
    with pytest.raises(KeyError, match="1 trial utterance.*not in the test split.*id19999"):
        embedder_metrics(model, split_stream.read_index(test), trials)
    with pytest.raises(ValueError, match="no trials"):
        embedder_metrics(model, split_stream.read_index(test), [])
    assert streamed == [], "refused before any features are read"


def test_a_re_measure_on_the_test_split_streams_it_as_the_evaluator_did(speaker_eval_inputs, tmp_path):
    """The registry pusher's re-measure (blessing.measure_on_test_split) gives the evaluator's figures."""
    from speechpipe.components.blessing import measure_on_test_split
    from speechpipe.components.speaker_evaluator import embedder_metrics
    from speechpipe.speakers.split_stream import read_index
    from speechpipe.speakers.trials import Trial, write_trials

    model, test, _ = speaker_eval_inputs
    trials = _listed_trials(test, every=2)
    path = str(tmp_path / "trials_test.txt")
    write_trials(path, [Trial(*t) for t in trials])
    evaluation = {"test_examples": {"uri": test}, "trials": path}
    measured = measure_on_test_split("speaker", evaluation, model)
    expected = embedder_metrics(model, read_index(test, min_speakers=2), trials)
    expected.pop("det")
    assert measured == expected and measured["trials"] == len(trials)
