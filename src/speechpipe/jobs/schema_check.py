"""Records checked against the feature schema by TFDV, as a Beam job (in memory by default)."""

from __future__ import annotations

from typing import List, Optional

from speechpipe.io.schema import load_schema
from speechpipe.jobs.beam_options import IN_MEMORY_ARGS


def anomalies_in(file_pattern: str, pipeline_args: Optional[List[str]] = None) -> List[str]:
    """Human-readable anomalies of the records matching `file_pattern`; empty when they conform
    (Beam in memory unless `pipeline_args` say otherwise)."""
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    pipeline_args = IN_MEMORY_ARGS if pipeline_args is None else pipeline_args

    stats = tfdv.generate_statistics_from_tfrecord(
        data_location=file_pattern, pipeline_options=PipelineOptions(list(pipeline_args))
    )
    anomalies = tfdv.validate_statistics(stats, load_schema())
    return [
        f"{name}: {info.short_description} ({info.description})"
        for name, info in sorted(anomalies.anomaly_info.items())
    ]
