"""With speed perturbation on, an utterance's stretched length picked its length bucket, so an
epoch's number of batches changed from one epoch to the next. Keras takes the first epoch's
count for every epoch and ended training at the first shorter one ("Your input ran out of
data"): a 2,400-step screening run stopped after 335 steps, with no error. Stretched utterances
are now bucketed by their recorded length."""

import os
from dataclasses import replace

import numpy as np
import tensorflow as tf

from speechpipe.components.ctc_trainer import CTCTrainConfig, make_dataset


def test_every_epoch_of_stretched_batches_has_the_same_batches_as_unstretched(tiny_features):
    files = [os.path.join(tiny_features, "Split-train")]
    tf.random.set_seed(1)
    plain = replace(CTCTrainConfig(time_masks=0, freq_masks=0), batch_size=2)
    stretched = replace(plain, time_stretch=0.4 - 1e-6)
    sizes = [int(tf.shape(i["num_frames"])[0]) for i, _ in make_dataset(files, plain, True)]
    dataset = make_dataset(files, stretched, True)
    lengths = []
    for _ in range(4):
        batches = list(dataset)
        assert sorted(int(tf.shape(i["num_frames"])[0]) for i, _ in batches) == sorted(sizes)
        lengths.append(np.sort(np.concatenate([i["num_frames"].numpy() for i, _ in batches])))
    assert any(not np.array_equal(lengths[0], other) for other in lengths[1:]), "lengths were stretched"
