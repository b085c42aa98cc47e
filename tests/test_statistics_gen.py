"""StatisticsGen's executor: TFX's, its records batched by bytes while the Beam graph is built."""

import os

from absl import flags
from tfx.components.statistics_gen import executor as stock
from tfx.types import artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx_bsl.coders import batch_util

from speechpipe.components.statistics_gen import Executor, StatisticsGen, byte_size_batching, statistics_options


def _statistics(executor_class, features: str, out: str):
    import tensorflow_data_validation as tfdv

    examples = standard_artifacts.Examples()
    examples.uri = features
    examples.split_names = artifact_utils.encode_split_names(["train", "validation"])
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = out
    properties = {specs.STATS_OPTIONS_JSON_KEY: statistics_options().to_json(), specs.EXCLUDE_SPLITS_KEY: "[]"}
    context = executor_class.Context(beam_pipeline_args=["--direct_running_mode=in_memory"])
    executor_class(context).Do({specs.EXAMPLES_KEY: [examples]}, {specs.STATISTICS_KEY: [statistics]}, properties)
    return {
        split: tfdv.load_stats_binary(os.path.join(out, f"Split-{split}", "FeatureStats.pb"))
        for split in ("train", "validation")
    }


def test_sources_built_inside_batch_by_bytes_and_the_flags_are_put_back():
    assert "element_size_fn" not in batch_util.GetBatchElementsKwargs(None)
    was_parsed = flags.FLAGS.is_parsed()
    with byte_size_batching():
        kwargs = batch_util.GetBatchElementsKwargs(None)
        assert kwargs["max_batch_size"] == kwargs["min_batch_size"]  # a fixed byte budget per batch
        assert "element_size_fn" in kwargs
        assert batch_util.GetBatchElementsKwargs(100) == {"min_batch_size": 100, "max_batch_size": 100}
    assert "element_size_fn" not in batch_util.GetBatchElementsKwargs(None)
    assert flags.FLAGS.is_parsed() == was_parsed


def test_the_flags_are_put_back_when_the_work_fails():
    try:
        with byte_size_batching():
            raise RuntimeError("the executor failed")
    except RuntimeError:
        pass
    assert "element_size_fn" not in batch_util.GetBatchElementsKwargs(None)


def test_statistics_equal_tfx_executors(tiny_features, tmp_path):
    ours = _statistics(Executor, tiny_features, str(tmp_path / "ours"))
    theirs = _statistics(stock.Executor, tiny_features, str(tmp_path / "stock"))
    for split in ours:
        assert ours[split].datasets[0].num_examples > 0
        assert ours[split] == theirs[split], split


def test_the_component_runs_this_executor_with_tfxs_interface():
    assert StatisticsGen.EXECUTOR_SPEC.executor_class is Executor
    assert StatisticsGen.SPEC_CLASS is stock_component_spec()


def stock_component_spec():
    from tfx.components import StatisticsGen as TFXStatisticsGen

    return TFXStatisticsGen.SPEC_CLASS
