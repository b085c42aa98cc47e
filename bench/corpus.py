"""The corpus the benches run on, and where the files derived from it are cached.

BENCH_CORPUS=DIR names a corpus (a `speechpipe corpus synth` folder, or any folder with a
manifest.jsonl); without it the demo corpus (`speechpipe.config.DEMO_CORPUS`) is synthesised
once into bench/.cache/demo_corpus-<tag>. The tag names the corpus's configuration, so a changed
default never reuses an older corpus, nor the features, pairs and trained runs made from one:
those go under <root>/corpus-<tag>/ (`derived_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict

from speechpipe.config import DEMO_CORPUS
from speechpipe.corpus.synth import CORPUS_INFO, MANIFEST, read_corpus_settings  # noqa: F401 (CORPUS_INFO re-exported)

CACHE = os.path.join(os.path.dirname(__file__), ".cache")


def corpus_tag(config: Dict[str, object]) -> str:
    """'<speakers>x<utterances>-<hash of the whole configuration>'."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    return f"{config.get('speakers', 'n')}x{config.get('utterances', 'n')}-{digest}"


def bench_corpus() -> str:
    """BENCH_CORPUS, or the demo corpus, synthesised when absent."""
    corpus = os.environ.get("BENCH_CORPUS") or os.path.join(
        CACHE, "demo_corpus-" + corpus_tag(DEMO_CORPUS.content_json())
    )
    if not os.path.exists(os.path.join(corpus, MANIFEST)):
        from speechpipe.corpus.synth import synthesize_corpus

        print(f"synthesising the demo corpus into {corpus}", flush=True)
        synthesize_corpus(DEMO_CORPUS, corpus, progress=False)
    return corpus


def corpus_identity(corpus: str) -> Dict[str, object]:
    """What tells corpora apart: a synthesised corpus's configuration, else its manifest's path
    and size."""
    settings = read_corpus_settings(corpus)
    if settings is not None:
        return settings
    manifest = os.path.realpath(os.path.join(corpus, MANIFEST))
    return {"manifest": manifest, "bytes": os.path.getsize(manifest)}


def derived_dir(root: str, corpus: str) -> str:
    """<root>/corpus-<tag>: the folder for files made from `corpus`, apart from other corpora's."""
    return os.path.join(root, "corpus-" + corpus_tag(corpus_identity(corpus)))
