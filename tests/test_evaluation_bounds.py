"""Every evaluation is bounded (issue #25): trials drawn by index under a cap, the back end fitted on
a capped sample, clustering on a capped sample of speakers; and the CTC trainer's buckets and input
counts, which need no pass of their own. Under its cap a set is the full set, in the same order, so
the demo's figures do not move."""

import os

import numpy as np
import pytest

from speechpipe.speakers import speaker_eval


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
    from speechpipe.speakers.split_data import SplitData

    _, speakers = _split(12, 6, seed=8)
    rng = np.random.default_rng(0)
    data = SplitData(
        [f"u{k}" for k in range(len(speakers))],
        speakers,
        ["s"] * len(speakers),
        [rng.standard_normal((3, 4)).astype(np.float32) for _ in speakers],
    )
    embedded = []

    def fake_embed(model, features, config):
        embedded.append(len(features))
        return np.stack([f.mean(axis=0) for f in features]) + rng.standard_normal((len(features), 4)) * 0.1

    monkeypatch.setattr(embedder_trainer, "embed_utterances", fake_embed)
    config = EmbedderTrainConfig(backend_max_utterances=24)
    sample = embedder_trainer.backend_sample(data, config)
    assert sample.rows.size <= 24 and sample.record["bound"] and sample.record["of_utterances"] == 72
    backend = embedder_trainer.fit_backend(None, data, config.model, sample.rows)
    assert embedded == [sample.rows.size] and backend is not None
    whole = embedder_trainer.backend_sample(data, EmbedderTrainConfig())
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


def _write_split(folder, utterances, bins=8):
    import tensorflow as tf

    from speechpipe.io import records

    os.makedirs(folder)
    with tf.io.TFRecordWriter(os.path.join(folder, f"{records.SHARD_PREFIX}-00000-of-00001")) as writer:
        for name, frames, ids in utterances:
            writer.write(
                records.encode_example(
                    records.UtteranceFeatures(
                        name, "spk", "s1", "train", np.zeros((frames, bins), np.float32), frames / 100, ids
                    )
                )
            )
    return folder


def test_a_long_utterance_lands_in_a_bucket_that_fits(tmp_path):
    from speechpipe.components.ctc_trainer import make_dataset
    from speechpipe.config import FeatureConfig
    from speechpipe.phones.ctc_config import CTCTrainConfig

    lengths = [2_950, 2_800, 1_200, 160]
    files = [_write_split(str(tmp_path / "Split-train"), [(f"u{n}", n, [1, 2, 3]) for n in lengths])]
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

    train = _write_split(
        str(tmp_path / "Split-train"),
        [("a", 60, [1, 2, 3]), ("b", 50, [4, 5]), ("c", 70, [1, 1, 2]), ("silent", 40, []), ("short", 4, [1, 2, 3])],
        bins=80,
    )
    validation = _write_split(str(tmp_path / "Split-validation"), [("v", 60, [1, 2]), ("w", 30, [])], bins=80)
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

    train = _write_split(str(tmp_path / "Split-train"), [("a", 60, [1, 2, 999])], bins=80)
    validation = _write_split(str(tmp_path / "Split-validation"), [("v", 60, [1, 2])], bins=80)
    config = CTCTrainConfig(model=CTCModelConfig(lstm_units=(4,)), batch_size=2, max_epochs=1)
    with pytest.raises(ValueError, match="outside the phone inventory"):
        ctc_trainer.train([train], [validation], FeatureConfig(), None, None, config)
