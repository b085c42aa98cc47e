"""PairGen: the pair builder (src/speechpipe/jobs/pairs_job.py) as a TFX component, one node per span.

Its output, a `SpeakerPairs` artifact, holds the test split's VoxCeleb-format trial list
(`trials_test.txt`), which the speaker evaluator scores, and the pair counts of every split in
summary.json (no pair records: the trainer draws its own pairs in every batch, from the speaker
blocks SpeakerBlockGen writes). It reads the span's FeatureGen output (the feature job's index),
so an unchanged span is a cache hit here too.

Given an official VoxCeleb trial list (`trials_file`: veri_test2.txt, list_test_hard2.txt, ...),
that list is the test protocol instead: every utterance it names must be in the span's test split
(an utterance it names that the corpus lacks is an error naming the first few, never a smaller
list), and the artifact's `test_trials` property points the evaluator at it.
"""
# No `from __future__ import annotations`: TFX reads the component signature's annotations as types.

import json

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact, standard_artifacts
from tfx.types.system_artifacts import Dataset

from speechpipe.io import storage


class SpeakerPairs(artifact.Artifact):
    """Pairs and trial lists of one span, in the layout `speechpipe pairs --out` writes. The span
    is a custom property: KFP v2 takes custom types named `<namespace>.<Name>` without typed
    PROPERTIES."""

    TYPE_NAME = "speechpipe.SpeakerPairs"
    TYPE_ANNOTATION = Dataset


@component
def PairGen(  # TFX names components in CamelCase
    examples: InputArtifact[standard_artifacts.Examples],
    pairs: OutputArtifact[SpeakerPairs],
    beam_args: Parameter[str] = "[]",
    seed: Parameter[int] = 0,
    trials_file: Parameter[str] = "",
) -> None:
    from speechpipe.jobs import pairs_job

    # The evaluator scores the test split's trial list; the trainer draws its own pairs, so no
    # pair record is written and no other split gets a list.
    argv = [
        "--features",
        examples.uri,
        "--out",
        pairs.uri,
        "--seed",
        str(seed),
        "--overwrite",
        "--trial-splits",
        "test",
        "--pair-splits",
        "",
    ]
    if trials_file:
        argv += ["--official_trials", trials_file]
    pairs_job.run(argv + list(json.loads(beam_args)))
    summary = storage.read_json(storage.join(pairs.uri, pairs_job.SUMMARY))  # local or object storage
    pairs.set_int_custom_property("span", int(examples.span or 0))
    counts = {split: c["pairs"] for split, c in summary["splits"].items()}
    pairs.set_string_custom_property("pairs", json.dumps(counts, sort_keys=True))
    test_list = pairs_job.TRIALS_FILE.format(split="test")
    test_trials = int(summary["splits"].get("test", {}).get("trials_lines") or 0)
    if trials_file:
        (official,) = summary["official_trials"]
        check_official_coverage(official, trials_file)
        test_list, test_trials = official["written"], int(official["covered"])
        pairs.set_string_custom_property("official_trials", official["list"])
    pairs.set_string_custom_property("test_trials_file", test_list)
    pairs.set_int_custom_property("test_trials", test_trials)


class TrialListError(ValueError):
    """An official trial list does not fit the corpus it is meant to test."""


def check_official_coverage(official: dict, trials_file: str) -> None:
    """Every trial of an official list must be scored on the test split: an utterance the corpus
    lacks (or that is shorter than one segment), or one of another split's speakers, is an error."""
    if official["missing_utterances"]:
        raise TrialListError(
            f"the trial list {trials_file} names {official['missing_utterances']} utterance(s) that the test span "
            f"lacks or that are shorter than one segment, e.g. {', '.join(official['missing_examples'])}; "
            f"{official['not_covered']} of {official['trials']} trials cannot be scored (is the corpus complete, "
            "and is this the list for this corpus?)"
        )
    outside = {split: n for split, n in official["covered_per_split"].items() if split != "test"}
    if official["cross_split"] or outside:
        raise TrialListError(
            f"the trial list {trials_file} pairs utterances outside the test split ({official['cross_split']} trials "
            f"across splits, {outside or 'none'} within other splits): its speakers must be the corpus's test "
            "speakers (for VoxCeleb1, the meta file's Set column says which)"
        )
