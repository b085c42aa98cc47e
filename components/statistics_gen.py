"""StatisticsGen: TFX's component, its memory bounded by a batch of records, not by how long a run lasts.

TFX's executor reads the examples with `TFXIO.BeamSource()` and no batch size, which hands the
batch size to Beam's `BatchElements`: it grows batches toward 1,000 records while a run goes on,
and a record here carries a whole utterance's spectrogram (~160 KB), so a batch held up to 160 MB
per bundle in flight. Peak memory then depended on how far a run's batches had grown: 1,074 to
1,720 MB on the same 32,000 utterances over repeated runs (bench/bench_scale.py, 16x). tfx_bsl's
byte-size batching (`tfxio_use_byte_size_batching`: 20 MiB batches, at most 8,192 records) fixes
the batch by its bytes instead: 1,113-1,126 MB over four runs at 16x, 1,106 MB at 1x, and no slower.

The batching is chosen when the Beam graph is built, inside `Do`, so the flag is set for the
construction only (and put back after); the workers of a distributed runner receive the built
graph and need no flag.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List

from tfx.components.statistics_gen import component as statistics_gen_component
from tfx.components.statistics_gen import executor as statistics_gen_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact

BYTE_SIZE_BATCHING_FLAG = "tfxio_use_byte_size_batching"


def statistics_options():
    """TFDV's options for every StatisticsGen. Its exact top-k counts of a string feature keep
    every distinct value, and each record's `features` blob (and utterance id) is distinct, so
    the exact pass holds the whole span's feature bytes (3.4x the memory for 4x the utterances);
    the sketches (Misra-Gries top-k, KMV distinct counts) are fixed-size (bench/bench_statistics.py).
    The validator's checks are unchanged: presence and value counts are exact either way, and the
    one string domain (`split`, three values) is counted exactly by a sketch of that size."""
    import tensorflow_data_validation as tfdv

    return tfdv.StatsOptions(use_sketch_based_topk_uniques=True)


@contextlib.contextmanager
def byte_size_batching() -> Iterator[None]:
    """TFXIO sources built inside batch their records by bytes (tfx_bsl's flag), then the flags
    are put back as they were (unparsed flags stay unparsed)."""
    import tfx_bsl.coders.batch_util  # noqa: F401  (defines the flag)
    from absl import flags

    was_parsed = flags.FLAGS.is_parsed()
    if not was_parsed:
        flags.FLAGS.mark_as_parsed()
    previous = flags.FLAGS[BYTE_SIZE_BATCHING_FLAG].value
    flags.FLAGS[BYTE_SIZE_BATCHING_FLAG].value = True
    try:
        yield
    finally:
        flags.FLAGS[BYTE_SIZE_BATCHING_FLAG].value = previous
        if not was_parsed:
            flags.FLAGS.unparse_flags()


class Executor(statistics_gen_executor.Executor):
    """TFX's StatisticsGen executor, its examples read in batches of a fixed byte size."""

    def Do(
        self,
        input_dict: Dict[str, List[artifact.Artifact]],
        output_dict: Dict[str, List[artifact.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        with byte_size_batching():
            super().Do(input_dict, output_dict, exec_properties)


class StatisticsGen(statistics_gen_component.StatisticsGen):
    """TFX's StatisticsGen (same inputs, outputs and options) with the executor above."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
