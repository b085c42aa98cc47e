"""bench/corpus.py: a bench never reuses files made from another corpus."""

import json
import os
import shutil

from bench import corpus as bench_corpus_module
from speechpipe.config import DEMO_CORPUS


def test_derived_folders_are_kept_apart_per_corpus_configuration(tiny_corpus, tmp_path):
    other = str(tmp_path / "other")
    shutil.copytree(tiny_corpus, other)
    info = os.path.join(other, bench_corpus_module.CORPUS_INFO)
    with open(info, encoding="utf-8") as f:
        data = json.load(f)
    data["config"]["utterances"] += 1
    with open(info, "w", encoding="utf-8") as f:
        json.dump(data, f)
    root = str(tmp_path / "cache")
    mine, theirs = (bench_corpus_module.derived_dir(root, c) for c in (tiny_corpus, other))
    assert mine != theirs and os.path.dirname(mine) == root
    assert bench_corpus_module.derived_dir(root, tiny_corpus) == mine  # stable
    with open(os.path.join(tiny_corpus, bench_corpus_module.CORPUS_INFO), encoding="utf-8") as f:
        config = json.load(f)["config"]
    assert os.path.basename(mine) == f"corpus-{config['speakers']}x{config['utterances']}-" + mine.rsplit("-", 1)[1]


def test_a_manifest_without_corpus_json_is_told_apart_by_its_manifest(tmp_path):
    for name, lines in (("a", 1), ("b", 2)):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "manifest.jsonl").write_text("{}\n" * lines)
    a, b = (bench_corpus_module.derived_dir(str(tmp_path), str(tmp_path / n)) for n in ("a", "b"))
    assert a != b


def test_bench_corpus_honours_bench_corpus_and_names_the_default_by_its_configuration(tiny_corpus, monkeypatch):
    monkeypatch.setenv("BENCH_CORPUS", tiny_corpus)
    assert bench_corpus_module.bench_corpus() == tiny_corpus  # present: nothing synthesised
    monkeypatch.delenv("BENCH_CORPUS")
    monkeypatch.setattr(os.path, "exists", lambda path: True)  # do not synthesise the demo corpus here
    default = bench_corpus_module.bench_corpus()
    assert os.path.basename(default).startswith(f"demo_corpus-{DEMO_CORPUS.speakers}x{DEMO_CORPUS.utterances}-")
