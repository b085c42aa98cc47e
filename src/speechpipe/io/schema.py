"""The TFMD schema of the feature records (package data); TFDV validation against it is a Beam job
(speechpipe.jobs.schema_check)."""

from __future__ import annotations

from importlib import resources

SCHEMA_FILE = "features.pbtxt"


def schema_path() -> str:
    """Path of schemas/features.pbtxt (ImportSchemaGen takes a path)."""
    return str(resources.files("speechpipe.schemas").joinpath(SCHEMA_FILE))


def load_schema():
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(schema_path())
