"""An object store in memory for the tests: a Beam FileSystem under `memfs://`.

It behaves like GCS or S3 where speechpipe relies on them: no folders (a "folder" is a name
prefix), listings carry each object's size and update time, and a prefix is listed in one call.
Beam finds the class by its scheme as soon as this module is imported.
"""

from __future__ import annotations

import io
import time
from typing import Dict, Iterator, List, Tuple

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

SCHEME = "memfs"


class _Writer(io.BytesIO):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            put(self._path, self.getvalue())
        super().close()


class ObjectStorePaths:
    """Path handling of an object store, shared by the test filesystems (a mixin, not a
    FileSystem: Beam registers every FileSystem subclass by its scheme): "/"-joined names and
    no folders."""

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def split(self, path: str) -> Tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass  # no folders on an object store

    def has_dirs(self) -> bool:
        return False


class MemoryFileSystem(ObjectStorePaths, FileSystem):
    """Objects live in OBJECTS, {uri: (bytes, update time in seconds)}, shared by every instance."""

    OBJECTS: Dict[str, Tuple[bytes, float]] = {}

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def _list(self, dir_or_prefix: str) -> Iterator[FileMetadata]:
        for path, (data, updated) in sorted(self.OBJECTS.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), updated)

    def create(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return _Writer(path)

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        if path not in self.OBJECTS:
            raise BeamIOError(f"no object {path}", {path: FileNotFoundError(path)})
        return io.BytesIO(self.OBJECTS[path][0])

    def copy(self, source_file_names: List[str], destination_file_names: List[str]) -> None:
        for source, destination in zip(source_file_names, destination_file_names):
            put(destination, self.OBJECTS[source][0])

    def rename(self, source_file_names: List[str], destination_file_names: List[str]) -> None:
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        return path in self.OBJECTS

    def size(self, path: str) -> int:
        return len(self.OBJECTS[path][0])

    def last_updated(self, path: str) -> float:
        return self.OBJECTS[path][1]

    def metadata(self, path: str) -> FileMetadata:
        data, updated = self.OBJECTS[path]
        return FileMetadata(path, len(data), updated)

    def checksum(self, path: str) -> str:
        return str(hash(self.OBJECTS[path][0]))

    def delete(self, paths: List[str]) -> None:
        for path in paths:
            self.OBJECTS.pop(path, None)


def put(uri: str, data: bytes, updated: float = None) -> None:
    MemoryFileSystem.OBJECTS[uri] = (bytes(data), time.time() if updated is None else float(updated))


def clear() -> None:
    MemoryFileSystem.OBJECTS.clear()
