"""`make demo`: the main job on embedded defaults. Synthesises the demo corpus under the home
folder (once; it is reused when present), then runs every pipeline stage on it."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

from speechpipe.config import DEMO_CORPUS


def run(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", default="speechpipe_home", help="where everything is written")
    args = parser.parse_args(argv)

    from speechpipe.corpus.synth import MANIFEST, synthesize_corpus

    corpus_dir = os.path.join(args.home, "corpus")
    started = time.time()
    if os.path.exists(os.path.join(corpus_dir, MANIFEST)):
        print(f"[demo] corpus: reusing {corpus_dir}")
    else:
        print(f"[demo] corpus: synthesising {DEMO_CORPUS.speakers} speakers x {DEMO_CORPUS.utterances} utterances")
        summary = synthesize_corpus(DEMO_CORPUS, corpus_dir)
        hours = sum(summary["seconds"].values()) / 3600
        print(f"[demo] corpus: {sum(summary['utterances'].values())} utterances, {hours:.2f} h in {time.time() - started:.0f} s")
    features_dir = os.path.join(args.home, "features")
    if os.path.exists(os.path.join(features_dir, "summary.json")):
        print(f"[demo] features: reusing {features_dir}")
    else:
        from apache_beam.options.pipeline_options import PipelineOptions

        from speechpipe.config import FeatureConfig
        from speechpipe.pipeline.features_job import run_job
        from speechpipe.sources import make_spec

        print("[demo] features: Beam DirectRunner (multi_processing), log-mel + "
              f"{FeatureConfig().normalization}")
        step = time.time()
        summary = run_job(make_spec(os.path.join(corpus_dir, "manifest.jsonl")), FeatureConfig(), features_dir,
                          PipelineOptions(["--direct_running_mode=multi_processing",
                                           f"--direct_num_workers={os.cpu_count() or 1}"]))
        print(f"[demo] features: {summary['good']} good, {summary['dead_letter']['total']} dead-lettered, "
              f"{time.time() - step:.0f} s")
    pairs_dir = os.path.join(args.home, "pairs")
    if os.path.exists(os.path.join(pairs_dir, "summary.json")):
        print(f"[demo] pairs: reusing {pairs_dir}")
    else:
        from speechpipe.pipeline import pairs_job

        step = time.time()
        pairs_job.run(["--features", features_dir, "--out", pairs_dir])
        print(f"[demo] pairs: trial lists and training pairs in {time.time() - step:.0f} s")
    print(f"[demo] done in {time.time() - started:.0f} s; everything is under {args.home}/")
    return 0


if __name__ == "__main__":
    sys.exit(run())
