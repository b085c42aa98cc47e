"""Test data generators shared by the tests."""
from __future__ import annotations

import json
import os
from typing import Dict, List

from speechpipe.config import TINY_CORPUS, CorpusConfig
from speechpipe.corpus.synth import MANIFEST, SPEAKERS, synthesize_corpus


def make_tiny_corpus(out_dir: str, **overrides) -> str:
    """Synthesises the tiny test corpus (6 speakers x 4 utterances unless overridden)."""
    config = CorpusConfig(**{**TINY_CORPUS.to_json(), **overrides})
    synthesize_corpus(config, out_dir, progress=False)
    return out_dir


def read_jsonl(path: str) -> List[Dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_manifest(corpus_dir: str) -> List[Dict]:
    return read_jsonl(os.path.join(corpus_dir, MANIFEST))


def read_speakers(corpus_dir: str) -> List[Dict]:
    return read_jsonl(os.path.join(corpus_dir, SPEAKERS))


def tree_bytes(root: str) -> Dict[str, bytes]:
    """Every file under `root`, by relative path, with its content."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out
