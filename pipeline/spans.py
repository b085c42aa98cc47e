"""Span discovery: the spans a scheduled run trains on, found in one folder.

New audio arrives as a new span (docs/pipeline.md, "Spans and retraining"). A scheduled run does
not name its spans one by one: it is pointed at the folder where an ingestion job publishes them,
`--spans-from ROOT`, and takes every published span in name order, so span i stays span i as
new ones arrive (`FeatureGen_span<i>` keeps its cache and span 0 keeps the fixed test split).
Name spans so that they sort oldest first (`2025-06-01`, `span-00042`).

    ROOT/<name>/manifest.jsonl   a manifest span: the span is the manifest
    ROOT/<name>/wav.scp          a Kaldi span: the span is the folder
    ROOT/<name>/...              any other folder: a VoxCeleb-layout span

Children whose name starts with `.` or `_` are skipped (staging folders, `_SUCCESS` files). With
`ready_marker` (e.g. `_SUCCESS`), a span counts only once that file exists in it, so a span still
being uploaded is left for the next run instead of being trained on half-written. ROOT may also be
a glob of span paths (`gs://b/corpora/*/manifest.jsonl`), taken in sorted order.

ROOT is a local folder or an object-storage URI (gs://, s3://; through Beam's FileSystems, which
lists a prefix with one paged call rather than a request per object).
"""

from __future__ import annotations

import argparse
import os
import posixpath
from typing import Dict, List, Optional, Sequence, Tuple

from speechpipe.filenames import MANIFEST_FILE
from speechpipe.io.storage import is_uri
from speechpipe.validation import ConfigError

MANIFEST = MANIFEST_FILE
KALDI_TABLE = "wav.scp"
GLOB_CHARS = "*?["


def list_objects(prefix: str) -> Dict[str, Tuple[int, float]]:
    """Every object under a URI prefix (a "folder"), as {uri: (size in bytes, update time in
    seconds)}: one paged listing, sizes and times included."""
    from apache_beam.io.filesystems import FileSystems

    prefix = prefix.rstrip("/")
    (result,) = FileSystems.match([prefix + "/**"])
    return {m.path: (int(m.size_in_bytes), float(m.last_updated_in_seconds or 0.0)) for m in result.metadata_list}


def _children(root: str) -> Dict[str, List[str]]:
    """{child name: the names of the files directly in it} for the folders directly under root."""
    children: Dict[str, List[str]] = {}
    if is_uri(root):
        # Object stores have no folders: a child "folder" is the first path component of the
        # objects under root.
        root = root.rstrip("/")
        for uri in list_objects(root):
            parts = uri[len(root) + 1 :].split("/")
            if len(parts) >= 2:
                files = children.setdefault(parts[0], [])
                if len(parts) == 2:
                    files.append(parts[1])
    else:
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if os.path.isdir(path):
                children[name] = [f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f))]
    return children


def _glob(pattern: str) -> List[str]:
    if is_uri(pattern):
        from apache_beam.io.filesystems import FileSystems

        (result,) = FileSystems.match([pattern])
        return [m.path for m in result.metadata_list]
    import glob

    return glob.glob(pattern)


def _exists(path: str) -> bool:
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.exists(path)


def discover_spans(root: str, ready_marker: Optional[str] = None) -> List[str]:
    """The spans published under `root` (a folder or a glob, local or on object storage), oldest
    first (sorted by name). Raises ConfigError when `root` does not exist."""
    join = posixpath.join if is_uri(root) else os.path.join
    if any(c in root for c in GLOB_CHARS):
        found = sorted(_glob(root))
        if ready_marker:
            dirname = posixpath.dirname if is_uri(root) else os.path.dirname
            found = [p for p in found if _exists(join(dirname(p.rstrip("/")), ready_marker))]
        return found
    if not is_uri(root) and not os.path.isdir(root):
        raise ConfigError(f"--spans-from {root!r}: no such folder")
    spans = []
    for name, files in sorted(_children(root).items()):
        if name.startswith((".", "_")):
            continue
        if ready_marker and ready_marker not in files:
            continue  # still being published
        folder = join(root.rstrip("/"), name)
        spans.append(join(folder, MANIFEST) if MANIFEST in files else folder)
    return spans


def resolve_spans(
    explicit: Sequence[str], spans_from: Optional[str] = None, ready_marker: Optional[str] = None
) -> Tuple[str, ...]:
    """The spans of a run: the explicit ones (`--span`, oldest first), then the ones discovered
    under `spans_from`, each once. Empty when neither is given (the caller's default applies);
    raises ConfigError when `spans_from` is given and holds no published span."""
    spans = list(explicit)
    if spans_from:
        found = discover_spans(spans_from, ready_marker)
        if not found:
            marker = f" with a {ready_marker!r} marker" if ready_marker else ""
            raise ConfigError(
                f"--spans-from {spans_from!r}: no span{marker} found (a span is a folder holding "
                f"{MANIFEST}, {KALDI_TABLE} or VoxCeleb-layout audio; see pipeline/spans.py)"
            )
        spans += [s for s in found if s not in spans]
    return tuple(spans)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--spans-from` and `--span-marker`, for `speechpipe run` and `speechpipe compile`."""
    parser.add_argument(
        "--spans-from",
        default=None,
        metavar="ROOT",
        help="take every span published under ROOT (folder or glob, local or gs:// / s3://), "
        "in name order, after the --span ones",
    )
    parser.add_argument(
        "--span-marker",
        default=None,
        metavar="NAME",
        help="with --spans-from: only spans holding this file (e.g. _SUCCESS) are published",
    )
