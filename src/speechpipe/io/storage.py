"""Paths that may be local or on object storage (gs://, s3://, any URI with a scheme).

Two layers, one per kind of caller:

- Beam code (the feature and pair jobs, their inputs and audio) goes through Beam's
  `FileSystems`, which the runner already uses for its sinks: the same URI works on every worker
  and runner, with whichever filesystems the Beam installation has (gs:// with
  `apache-beam[gcp]`, s3:// with `apache-beam[aws]`).
- TFX components go through `tfx.dsl.io.fileio`, the layer TFX's own components use for their
  artifact URIs (TensorFlow's gfile underneath: gs:// with TensorFlow itself, s3:// with
  `tensorflow-io`).

Object stores have no folders: a "folder" is a name prefix, listed in one paged call. Local
paths keep their local meaning (folders, symlinks, `os.path`); callers that must resolve local
paths exactly as before test `is_uri` and keep their local code.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
from typing import Any, BinaryIO, Dict, Iterator, List, Tuple


def is_uri(path: str) -> bool:
    """True for a URI with a scheme (gs://, s3://, hdfs://, ...): object storage, read through
    TFX's fileio or Beam's FileSystems and never resolved against the working folder. The one
    rule every module asks."""
    return "://" in path


def join(base: str, *parts: str) -> str:
    """os.path.join for local paths; '/'-joined for URIs, whatever the local separator."""
    return posixpath.join(base, *parts) if is_uri(base) else os.path.join(base, *parts)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_uri(path) else os.path.basename(path)


def dirname(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if is_uri(path) else os.path.dirname(path)


def walk_order(relative: str) -> Tuple[Tuple[int, str], ...]:
    """Sort key of a '/'-separated relative path in the order os.walk visits a local folder with
    sorted folders and files: at the first differing level, a file (0) comes before a folder (1)."""
    parts = relative.split("/")
    return tuple((1, name) for name in parts[:-1]) + ((0, parts[-1]),)


# ---------------------------------------------------------------------------------- Beam FileSystems


def beam_exists(path: str) -> bool:
    """An object (a file) at exactly `path`. On object stores a prefix ("folder") is not one."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def beam_open(path: str) -> BinaryIO:
    """A binary read channel, never decompressed: Beam's default (AUTO) would gunzip a `.gz` name."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def beam_read_bytes(path: str) -> bytes:
    with beam_open(path) as f:
        return f.read()


def beam_write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    """Writes one file (an object store publishes it whole when the channel closes)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def beam_lines(path: str) -> Iterator[bytes]:
    """The lines of a file, line ends kept, streamed: readline works on every Beam read channel."""
    with beam_open(path) as f:
        yield from iter(f.readline, b"")


def beam_text(path: str) -> io.TextIOWrapper:
    """A UTF-8 text read channel (universal newlines, like open(path, encoding='utf-8'))."""
    return io.TextIOWrapper(beam_open(path), encoding="utf-8")


def beam_match(pattern: str) -> List[str]:
    """Sorted paths matching a glob (Beam's syntax: `*` stops at '/', `**` does not); [] when
    nothing matches."""
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except BeamIOError:  # some filesystems raise it when nothing matches
        return []


def beam_list(prefix: str) -> Dict[str, int]:
    """Every object under a URI prefix (a "folder"), {uri: size in bytes}: one paged listing."""
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems

    prefix = prefix.rstrip("/")
    try:
        (result,) = FileSystems.match([prefix + "/**"])
    except BeamIOError:  # some filesystems raise it when nothing is under the prefix
        return {}
    return {m.path: int(m.size_in_bytes) for m in result.metadata_list}


def beam_has_objects(prefix: str) -> bool:
    """Whether anything lies under a URI prefix; stops after the first listing page."""
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems

    try:
        (result,) = FileSystems.match([prefix.rstrip("/") + "/**"], limits=[1])
    except BeamIOError:  # some filesystems raise it when nothing is under the prefix
        return False
    return bool(result.metadata_list)


# ---------------------------------------------------------------------------------- TFX fileio


def _fileio():
    from tfx.dsl.io import fileio

    return fileio


def exists(path: str) -> bool:
    return _fileio().exists(path)


def isdir(path: str) -> bool:
    return _fileio().isdir(path)


def makedirs(path: str) -> None:
    """A folder and its parents (on object stores there is nothing to create; gfile knows that)."""
    _fileio().makedirs(path)


def glob(pattern: str) -> List[str]:
    """Sorted matches of a glob, local or URI."""
    return sorted(_fileio().glob(pattern))


def read_bytes(path: str) -> bytes:
    with _fileio().open(path, "rb") as f:
        return f.read()


def read_json(path: str) -> Any:
    with _fileio().open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
    with _fileio().open(path, "wb") as f:
        f.write(data)


def write_json(path: str, value: Any, **dump_args: Any) -> None:
    """json.dump(value, f, **dump_args) into a file, written whole: the same bytes as a local
    json.dump to an open file."""
    write_bytes(path, json.dumps(value, **dump_args).encode("utf-8"))


def copy_tree_to_local(uri: str, local_dir: str) -> str:
    """Copies a folder on object storage into `local_dir`, which it creates; returns `local_dir`.
    For libraries that read local files only (MLflow's artifact logging, the embedder's config
    reader); a model is a few MB."""
    fileio = _fileio()
    top = uri.rstrip("/")
    os.makedirs(local_dir, exist_ok=True)
    for folder, _, files in fileio.walk(top):
        relative = folder.rstrip("/")[len(top) :].lstrip("/")
        target = os.path.join(local_dir, *relative.split("/")) if relative else local_dir
        os.makedirs(target, exist_ok=True)
        for name in files:
            with (
                fileio.open(f"{folder.rstrip('/')}/{name}", "rb") as source,
                open(os.path.join(target, name), "wb") as out,
            ):
                shutil.copyfileobj(source, out, 4 << 20)
    return local_dir
