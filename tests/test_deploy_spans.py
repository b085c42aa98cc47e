"""Homes and spans on object storage (RunConfig's paths, span fingerprints) and span discovery
(pipeline/spans.py), locally and on an in-memory object store (tests/memfs.py)."""

import json
import os
import shutil

import pytest

from speechpipe.pipeline.run_config import RunConfig, span_fingerprint
from speechpipe.pipeline.spans import discover_spans, resolve_spans
from speechpipe.validation import ConfigError
from tests import memfs


@pytest.fixture(autouse=True)
def _empty_store():
    memfs.clear()
    yield
    memfs.clear()


def _write(path: str, data: bytes = b"x") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _upload(local_root: str, uri_root: str) -> None:
    """Copies a local tree into the object store, keeping sizes and modification times."""
    for folder, _, files in os.walk(local_root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            memfs.put(uri_root + "/" + os.path.relpath(path, local_root), data, os.stat(path).st_mtime)


# ------------------------------------------------------------------------------ RunConfig paths


@pytest.mark.parametrize("home", ["gs://bucket/speechpipe", "gs://bucket/speechpipe/", "s3://bucket/a/b"])
def test_a_home_on_object_storage_is_kept_as_given(home):
    config = RunConfig(home=home)
    base = home.rstrip("/")
    assert config.home_abs == base
    assert config.pipeline_root == f"{base}/pipeline_root/speechpipe"
    assert config.reports_dir == f"{base}/reports"
    with pytest.raises(ConfigError, match="local SQLite file"):
        _ = config.metadata_path


def test_a_local_home_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = RunConfig(home="h")
    assert config.home_abs == str(tmp_path / "h")
    assert config.pipeline_root == str(tmp_path / "h" / "pipeline_root" / "speechpipe")
    assert config.metadata_path == str(tmp_path / "h" / "metadata" / "speechpipe.sqlite")


# ------------------------------------------------------------------------------ fingerprints


def _manifest_span(root) -> str:
    _write(os.path.join(root, "wav", "a.wav"), b"a" * 10)
    _write(os.path.join(root, "wav", "b.wav"), b"b" * 20)
    _write(os.path.join(root, "unrelated.txt"), b"not in the manifest")
    # A folder that sorts before the root's files: os.walk visits it after them.
    _write(os.path.join(root, "a", "notes.txt"), b"also not in the manifest")
    lines = [{"utterance": "a", "audio": "wav/a.wav"}, {"utterance": "b", "audio": "wav/b.wav"}]
    return _write(os.path.join(root, "manifest.jsonl"), "".join(json.dumps(x) + "\n" for x in lines).encode())


def test_a_remote_span_has_the_fingerprint_of_the_same_files_on_disk(tmp_path):
    local = _manifest_span(str(tmp_path / "span"))
    _upload(str(tmp_path / "span"), "memfs://bucket/spans/s0")
    assert span_fingerprint("memfs://bucket/spans/s0/manifest.jsonl") == span_fingerprint(local)
    # A folder span: every object under the prefix, as os.walk sees every file.
    assert span_fingerprint("memfs://bucket/spans/s0") == span_fingerprint(str(tmp_path / "span"))


def test_a_remote_fingerprint_follows_the_manifest_and_its_audio_only(tmp_path):
    _manifest_span(str(tmp_path / "span"))
    _upload(str(tmp_path / "span"), "memfs://bucket/spans/s0")
    uri = "memfs://bucket/spans/s0/manifest.jsonl"
    before = span_fingerprint(uri)
    memfs.put("memfs://bucket/spans/s0/unrelated.txt", b"changed")
    memfs.put("memfs://bucket/spans/s1/manifest.jsonl", b"another span")
    assert span_fingerprint(uri) == before
    data, updated = memfs.MemoryFileSystem.OBJECTS["memfs://bucket/spans/s0/wav/a.wav"]
    memfs.put("memfs://bucket/spans/s0/wav/a.wav", data, updated + 60)
    touched = span_fingerprint(uri)
    assert touched != before
    memfs.put("memfs://bucket/spans/s0/wav/b.wav", b"b" * 21, updated)
    assert span_fingerprint(uri) not in (before, touched)
    memfs.MemoryFileSystem.OBJECTS.pop("memfs://bucket/spans/s0/wav/b.wav")
    assert span_fingerprint(uri) not in (before, touched)


# ------------------------------------------------------------------------------ discovery


def _publish_spans(root: str) -> None:
    """Five children: a manifest span, a Kaldi span, a VoxCeleb span, one still being uploaded
    (no marker) and a staging folder."""
    _write(os.path.join(root, "2025-01-01", "manifest.jsonl"), b"{}\n")
    _write(os.path.join(root, "2025-01-01", "_SUCCESS"))
    _write(os.path.join(root, "2025-02-01", "wav.scp"), b"u a.wav\n")
    _write(os.path.join(root, "2025-02-01", "_SUCCESS"))
    _write(os.path.join(root, "2025-03-01", "id1", "sess", "00001.wav"))
    _write(os.path.join(root, "2025-03-01", "_SUCCESS"))
    _write(os.path.join(root, "2025-04-01", "manifest.jsonl"), b"{}\n")  # no _SUCCESS yet
    _write(os.path.join(root, "_staging", "manifest.jsonl"), b"{}\n")
    _write(os.path.join(root, ".tmp", "manifest.jsonl"), b"{}\n")


@pytest.mark.parametrize("where", ["local", "object storage"])
def test_spans_are_discovered_in_name_order(tmp_path, where):
    local = str(tmp_path / "spans")
    _publish_spans(local)
    if where == "local":
        root, join = local, os.path.join
    else:
        _upload(local, "memfs://bucket/spans")
        root, join = "memfs://bucket/spans", lambda *p: "/".join(p)
    published = [join(root, "2025-01-01", "manifest.jsonl"), join(root, "2025-02-01"), join(root, "2025-03-01")]
    assert discover_spans(root, ready_marker="_SUCCESS") == published
    # Without a marker, the span being uploaded counts too; staging folders never do.
    assert discover_spans(root + "/") == published + [join(root, "2025-04-01", "manifest.jsonl")]
    assert discover_spans(join(root, "*", "manifest.jsonl"), ready_marker="_SUCCESS") == published[:1]


def test_explicit_spans_come_first_and_count_once(tmp_path):
    root = str(tmp_path / "spans")
    _publish_spans(root)
    first = os.path.join(root, "2025-02-01")
    spans = resolve_spans([first, "/elsewhere/old.jsonl"], root, "_SUCCESS")
    assert spans == (
        first,
        "/elsewhere/old.jsonl",
        os.path.join(root, "2025-01-01", "manifest.jsonl"),
        os.path.join(root, "2025-03-01"),
    )
    assert resolve_spans(["a"]) == ("a",)
    assert resolve_spans([]) == ()


def test_discovery_names_what_it_did_not_find(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_spans([], str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no span with a '_SUCCESS' marker found"):
        resolve_spans([], str(tmp_path / "empty"), "_SUCCESS")
    with pytest.raises(ConfigError, match="no span found"):
        resolve_spans([], "memfs://bucket/nothing-here")


def test_a_discovered_span_is_accepted_by_the_feature_job(tiny_corpus, tmp_path):
    """The paths discovery returns are what make_spec takes: a manifest, a folder."""
    from speechpipe.audio.sources import make_spec

    root = tmp_path / "spans"
    shutil.copytree(tiny_corpus, root / "span-0")
    (root / "span-0" / "_SUCCESS").touch()
    (span,) = discover_spans(str(root), "_SUCCESS")
    assert span == str(root / "span-0" / "manifest.jsonl")
    assert make_spec(span).kind == "manifest"
