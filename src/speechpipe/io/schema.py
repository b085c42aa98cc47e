"""The TFMD schema of the feature records, and validation of records against it with TFDV."""
from __future__ import annotations

from importlib import resources
from typing import List, Optional

SCHEMA_FILE = "features.pbtxt"


def schema_path() -> str:
    """Path of src/speechpipe/schemas/features.pbtxt (ImportSchemaGen takes a path)."""
    return str(resources.files("speechpipe.schemas").joinpath(SCHEMA_FILE))


def load_schema():
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(schema_path())


def anomalies_in(file_pattern: str, pipeline_args: Optional[List[str]] = None) -> List[str]:
    """Human-readable anomalies of the records matching `file_pattern`; empty when they conform
    (Beam in memory unless `pipeline_args` say otherwise)."""
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    from speechpipe.pipeline.beam_options import IN_MEMORY_ARGS

    pipeline_args = IN_MEMORY_ARGS if pipeline_args is None else pipeline_args

    stats = tfdv.generate_statistics_from_tfrecord(
        data_location=file_pattern, pipeline_options=PipelineOptions(list(pipeline_args)))
    anomalies = tfdv.validate_statistics(stats, load_schema())
    return [f"{name}: {info.short_description} ({info.description})"
            for name, info in sorted(anomalies.anomaly_info.items())]
