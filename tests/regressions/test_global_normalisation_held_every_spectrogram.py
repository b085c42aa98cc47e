"""With `--normalization global`, the feature job's second pass recomputed the features in one
step and normalised them in the next, which waited for the statistics (a side input). Beam's
in-process runner ran the two steps apart and held the whole PCollection between them: every
spectrogram of the corpus (5.25 GB peak on 12,000 short utterances, bench/bench_scale_run.py,
against 323 MB once joined). The examples must come out of the one step that both recomputes
and takes the statistics, so nothing unnormalised waits for them."""

import apache_beam as beam

from speechpipe.audio.sources import make_spec
from speechpipe.config import FeatureConfig
from speechpipe.jobs import features_job
from speechpipe.jobs.feature_transforms import RecomputeAndNormaliseFn
from tests.helpers import make_tiny_corpus


def _producer_fn(pcollection):
    transform = pcollection.producer.transform
    return getattr(transform, "fn", None)


def test_global_examples_come_from_the_step_that_takes_the_statistics(tmp_path):
    corpus = make_tiny_corpus(str(tmp_path / "corpus"), speakers=3, utterances=2)
    spec = make_spec(f"{corpus}/manifest.jsonl")
    pipeline = beam.Pipeline()
    outputs = features_job.build(pipeline, spec, FeatureConfig(normalization="global"))
    producer = outputs["examples"].producer
    assert isinstance(_producer_fn(outputs["examples"]), RecomputeAndNormaliseFn), producer.full_label
    assert producer.side_inputs, "the statistics are a side input of the step that makes the examples"
    # Per-utterance normalisation needs no statistics: one pass, as before.
    cmvn = features_job.build(beam.Pipeline(), spec, FeatureConfig(normalization="cmvn"))
    assert not isinstance(_producer_fn(cmvn["examples"]), RecomputeAndNormaliseFn)
