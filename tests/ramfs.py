"""TensorFlow's in-memory filesystem (`ram://`) as a Beam FileSystem, for the object-storage tests.

TensorFlow's gfile has a built-in `ram://` filesystem, so TFX's fileio (gfile underneath) reads
and writes it as it would gs://. This module gives Beam's FileSystems the same scheme, delegating
to tf.io.gfile, so the Beam jobs, the TFX components and the tests see the same objects in one
process (DirectRunner in_memory; other processes have their own, empty, ram://). Beam finds the
class by its scheme as soon as this module is imported.

It answers like GCS where speechpipe relies on it: no folders for Beam (`exists` is true for an
object only, never for a prefix; `mkdirs` creates nothing), a prefix is listed in one call with
every object's size, and an object appears whole when its write channel closes. gfile itself
still calls a prefix a folder, as it does on gs://.

TensorFlow's ram:// has quirks of its own: any string prefix of a name "is a directory", listing
a folder (listdir, walk) shows only subfolders that were created explicitly, and writing an
existing file appends to it. So listings here go through glob, which matches every stored name;
writes create their parent folders, as TFX's components do before writing, so that gfile's walk
sees them as it would on gs://; and a write replaces the object, as on an object store.
"""

from __future__ import annotations

import io
import os
import posixpath
from typing import Iterator, List

from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem

from tests.memfs import ObjectStorePaths

SCHEME = "ram"


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _store(path: str, data: bytes) -> None:
    gfile = _gfile()
    gfile.makedirs(posixpath.dirname(path))
    if _is_object(path):
        gfile.remove(path)  # ram:// appends to an existing file where an object store replaces it
    with gfile.GFile(path, "wb") as f:
        f.write(data)


def _is_object(path: str) -> bool:
    try:
        return not _gfile().stat(path).is_directory
    except Exception:  # tf.errors.NotFoundError
        return False


def _objects(prefix: str, max_depth: int = 16) -> List[str]:
    """Every object whose name starts with `prefix`, at any depth below it, sorted."""
    gfile = _gfile()
    found = set()
    for depth in range(max_depth):
        found.update(p for p in gfile.glob(prefix + "*" + "/*" * depth) if _is_object(p))
    return sorted(found)


class _Reader(io.BytesIO):
    mode = "rb"  # Beam's CompressedFile tells reading from writing by it


class _Writer(io.BytesIO):
    """Buffers a write and stores the object when closed, as an object store publishes it."""

    mode = "wb"

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            _store(self._path, self.getvalue())
        super().close()


class RamFileSystem(ObjectStorePaths, FileSystem):
    """`ram://` through tf.io.gfile."""

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def _list(self, dir_or_prefix: str) -> Iterator[FileMetadata]:
        for path in _objects(dir_or_prefix):
            yield self.metadata(path)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        compression_type = self._get_compression_type(path, compression_type)
        raw = _Writer(path)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        if not _is_object(path):
            raise BeamIOError(f"no object {path}", {path: FileNotFoundError(path)})
        with _gfile().GFile(path, "rb") as f:
            raw = _Reader(f.read())
        compression_type = self._get_compression_type(path, compression_type)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def copy(self, source_file_names: List[str], destination_file_names: List[str]) -> None:
        for source, destination in zip(source_file_names, destination_file_names):
            with _gfile().GFile(source, "rb") as f:
                _store(destination, f.read())

    def rename(self, source_file_names: List[str], destination_file_names: List[str]) -> None:
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        return _is_object(path)

    def size(self, path: str) -> int:
        return int(_gfile().stat(path).length)

    def last_updated(self, path: str) -> float:
        return _gfile().stat(path).mtime_nsec / 1e9

    def metadata(self, path: str) -> FileMetadata:
        stat = _gfile().stat(path)
        return FileMetadata(path, int(stat.length), stat.mtime_nsec / 1e9)

    def checksum(self, path: str) -> str:
        with _gfile().GFile(path, "rb") as f:
            return str(hash(f.read()))

    def delete(self, paths: List[str]) -> None:
        gfile = _gfile()
        for path in paths:
            if _is_object(path):
                gfile.remove(path)
            else:  # a "folder" (Beam's temporary folders of a sink): everything under it
                for name in _objects(path.rstrip("/") + "/"):
                    gfile.remove(name)
                if gfile.isdir(path):
                    gfile.rmtree(path)  # the folder entries _store made


def upload_tree(local_dir: str, uri: str, skip_links: bool = True) -> List[str]:
    """Copies a local folder to `uri` (as `gsutil cp -r` would, without the symlinks); returns the
    objects written."""
    written = []
    for folder, dirs, files in os.walk(local_dir):
        dirs.sort()
        for name in sorted(files):
            local = os.path.join(folder, name)
            if skip_links and os.path.islink(local):
                continue
            target = uri.rstrip("/") + "/" + os.path.relpath(local, local_dir).replace(os.sep, "/")
            with open(local, "rb") as f:
                _store(target, f.read())
            written.append(target)
    return written


def put(uri: str, data: bytes) -> None:
    _store(uri, data)


def objects(prefix: str) -> List[str]:
    """Every object under a ram:// prefix, sorted."""
    return _objects(prefix)


def clear(prefix: str) -> None:
    """Removes every object under a ram:// prefix."""
    gfile = _gfile()
    for name in _objects(prefix):
        gfile.remove(name)
