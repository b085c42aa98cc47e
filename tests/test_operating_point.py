"""The decision threshold a speaker model ships (speechpipe.speakers.speaker_eval): the lowest
threshold within a target false-accept rate, and the rates a user gets at a threshold."""

import numpy as np
import pytest

from speechpipe.speakers.speaker_eval import rates_at, threshold_at_far


def test_threshold_at_a_target_far_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    labels = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0]  # 3 targets, 7 non-targets
    assert threshold_at_far(scores, labels, 0.0) == 0.8  # accepting 0.7 would be a false accept
    assert threshold_at_far(scores, labels, 1 / 7) == 0.6  # one false accept (0.7) is within 1/7
    assert rates_at(scores, labels, 0.6) == (1 / 7, 0.0)
    assert rates_at(scores, labels, 0.8) == (0.0, 1 / 3)


def test_the_threshold_keeps_the_target_on_the_trials_it_was_fitted_on():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(500, int), np.zeros(5000, int)]
    scores = np.r_[rng.normal(2, 1, 500), rng.normal(0, 1, 5000)]
    for target in (0.001, 0.01, 0.1):
        far, frr = rates_at(scores, labels, threshold_at_far(scores, labels, target))
        assert far <= target and far > target / 2  # the lowest threshold: close to the target, not far below
        assert 0 < frr < 1


def test_a_target_below_every_false_accept_rejects_all_non_targets():
    scores, labels = [0.2, 0.9, 0.1], [1, 0, 1]  # the non-target scores highest
    threshold = threshold_at_far(scores, labels, 0.0)
    assert threshold > 0.9 and rates_at(scores, labels, threshold) == (0.0, 1.0)
    with pytest.raises(ValueError, match="target_far"):
        threshold_at_far(scores, labels, 1.0)
