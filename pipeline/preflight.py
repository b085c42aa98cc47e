"""The run's preflight: every span listed and counted before any node runs, and the run stopped in
seconds, naming the option that fixes it, when a branch could not be trained or evaluated.

`speechpipe run` and `speechpipe compile` call `check` after the configuration is validated.
Each span is listed with the feature job's own readers (speechpipe.jobs.corpus_inventory: file
names, meta files, Kaldi tables, manifest lines; no audio is decoded), so its splits here are the
ones FeatureGen will write. The report gives, per branch and split, the speakers, utterances,
sessions and utterances per speaker (min/median/max) and the same- and different-speaker trials
each evaluation split can give (same-session ones counted apart). It stops the run when:

* every input of a span lies outside its data root, or more than the gate allows (`--data-root`);
* the speaker branch's training split has fewer speakers than a batch takes
  (`--speakers-per-batch`, run file `embedder.speakers_per_batch`);
* its validation split, or its test span's test split, has fewer than two speakers or no
  same-speaker trial (`--split-fractions`; a corpus that names its splits: its own split fields);
* an official trial list (`--trials`) names utterances the test split lacks.

It also plans the split rule's moves (corpus_inventory.plan_split_overrides) for the speaker
branch's spans that name no splits, handed to each span's FeatureGen (`split_overrides`) and
recorded in the feature job's summary. A span that cannot be listed cheaply (object storage
without access from here) is reported as skipped, and the checks that need it are not made.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, TextIO

from speechpipe.audio.sources import OUTSIDE_ROOT, VOXCELEB, InputError, detect_kind, make_spec
from speechpipe.jobs.corpus_inventory import (
    MIN_EVALUATION_SPEAKERS,
    SpanInventory,
    SpeakerTally,
    SplitCounts,
    count_split,
    list_span,
    plan_split_overrides,
    trial_coverage,
)
from speechpipe.pipeline.run_config import CTC, SPEAKER, RunConfig
from speechpipe.validation import ConfigError


class PreflightError(ConfigError):
    """The run could not train or evaluate a branch; the message names each reason and its fix."""


@dataclass(frozen=True)
class Problem:
    where: str  # "span 0 (PATH)", "speaker branch, validation split"
    message: str
    fix: str  # the option (flag or run file key) that fixes it

    def text(self) -> str:
        return f"{self.where}: {self.message}; fix: {self.fix}"


@dataclass
class SpanCheck:
    index: int
    path: str
    data_root: str = ""  # the FeatureGen's data root, "" = the span's own folder
    inventory: Optional[SpanInventory] = None
    skipped: str = ""  # why the span was not listed
    overrides: Dict[str, str] = field(default_factory=dict)


@dataclass
class Preflight:
    spans: List[SpanCheck]
    branches: Dict[str, Dict[str, SplitCounts]] = field(default_factory=dict)
    problems: List[Problem] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> Dict[str, object]:
        return {
            "seconds": round(self.seconds, 2),
            "spans": [
                {
                    "span": s.index,
                    "path": s.path,
                    "data_root": s.data_root or None,
                    "skipped": s.skipped or None,
                    "inputs": s.inventory.inputs if s.inventory else None,
                    "dead_letter": dict(s.inventory.dead_letter) if s.inventory else None,
                    "split_overrides": dict(sorted(s.overrides.items())),
                }
                for s in self.spans
            ],
            "branches": {b: {k: c.to_json() for k, c in splits.items()} for b, splits in self.branches.items()},
            "problems": [p.text() for p in self.problems],
            "notes": list(self.notes),
        }

    def lines(self) -> List[str]:
        out = []
        for s in self.spans:
            if s.skipped:
                out.append(f"span {s.index} {s.path}: not listed ({s.skipped}); its checks are skipped")
                continue
            inv = s.inventory
            dead = sum(inv.dead_letter.values())
            reasons = f" ({', '.join(f'{r} {n}' for r, n in sorted(inv.dead_letter.items()))})" if dead else ""
            splits = "named by the input" if inv.named_splits else "by speaker hash"
            out.append(
                f"span {s.index} {s.path}: {inv.spec.kind}, {inv.inputs} inputs, {dead} dead-lettered{reasons}, "
                f"splits {splits}, listed in {inv.seconds:.1f} s"
            )
            if s.overrides:
                moved = ", ".join(f"{k} -> {v}" for k, v in sorted(s.overrides.items()))
                out.append(
                    f"  split rule: moved {len(s.overrides)} speaker(s) so each evaluation split can give trials: {moved}"
                )
        for branch, splits in self.branches.items():
            out.append(f"{branch} branch:")
            for split, counts in splits.items():
                out.append(f"  {split}: {counts.line()}")
        out += [f"note: {n}" for n in self.notes]
        out += [f"STOP: {p.text()}" for p in self.problems]
        return out

    def overrides(self, span: int) -> Dict[str, str]:
        return self.spans[span].overrides if span < len(self.spans) else {}


def span_data_root(config: RunConfig, span: str) -> str:
    """The data root of one span's FeatureGen: `config.data_root` for a manifest or a Kaldi
    directory (the formats that can name absolute paths), "" (the span's own folder) for a
    VoxCeleb-layout folder, whose paths are relative to it by construction, or without a data root."""
    if not config.data_root:
        return ""
    try:
        return "" if detect_kind(span) == VOXCELEB else config.data_root
    except (InputError, OSError):
        return config.data_root


def span_options(config: RunConfig, preflight: Optional[Preflight] = None) -> List[Dict[str, str]]:
    """Per span of `config.all_spans`, the FeatureGen parameters beyond the defaults: its data root
    and the preflight's split moves (JSON). Empty for a span that needs neither, so that its
    FeatureGen's execution properties (and ML Metadata cache) stay as they were."""
    options = []
    for i, span in enumerate(config.all_spans):
        option: Dict[str, str] = {}
        root = span_data_root(config, span)
        if root:
            option["data_root"] = root
        moved = preflight.overrides(i) if preflight is not None else {}
        if moved:
            option["split_overrides"] = json.dumps(moved, sort_keys=True)
        options.append(option)
    return options


def _merge(inventories: List[SpanCheck], split: str) -> List[SpeakerTally]:
    """One tally per speaker of `split` over several spans (a speaker in two spans counts once)."""
    merged: Dict[str, SpeakerTally] = {}
    for s in inventories:
        for speaker, tally in s.inventory.by_split(s.overrides)[split].items():
            into = merged.setdefault(speaker, SpeakerTally(split=split, sessions=Counter()))
            into.sessions.update(tally.sessions)
            into.transcribed += tally.transcribed
    return list(merged.values())


def _list_spans(config: RunConfig) -> List[SpanCheck]:
    speaker_spans = set(config.span_numbers(SPEAKER))
    test_span = config.span_numbers(SPEAKER)[config.test_span] if config.include_speaker else -1
    checks = []
    for i, path in enumerate(config.all_spans):
        check = SpanCheck(index=i, path=path, data_root=span_data_root(config, path))
        try:
            spec = make_spec(path, data_root=check.data_root or None, split_fractions=config.split_fractions)
            check.inventory = list_span(spec, keep_utterances=bool(config.trials_file) and i == test_span)
        except InputError as error:
            check.skipped = f"unreadable: {error}"
        except Exception as error:  # object storage without access, a listing that failed
            check.skipped = f"{type(error).__name__}: {error}"
        if check.inventory is not None and i in speaker_spans:
            check.overrides = plan_split_overrides(check.inventory)
        checks.append(check)
    return checks


def _span_problems(config: RunConfig, check: SpanCheck) -> List[Problem]:
    inv = check.inventory
    where = f"span {check.index} ({check.path})"
    outside = inv.dead_letter.get(OUTSIDE_ROOT, 0)
    root = check.data_root or inv.spec.data_root
    if outside and (inv.records == 0 or outside / max(inv.inputs, 1) > config.max_dead_letter_fraction):
        return [
            Problem(
                where,
                f"{outside} of {inv.inputs} inputs would be dead-lettered {OUTSIDE_ROOT}: they name audio outside the "
                f"data root {root!r}, e.g. "
                f"{inv.dead_examples[OUTSIDE_ROOT]}",
                "--data-root DIR (run file: data_root), a folder holding the audio",
            )
        ]
    if inv.records == 0:
        reasons = "; ".join(f"{r} x{n}: {inv.dead_examples[r]}" for r, n in sorted(inv.dead_letter.items()))
        return [
            Problem(
                where,
                f"no usable input among {inv.inputs}" + (f" ({reasons})" if reasons else ""),
                "the input itself (`speechpipe inspect` lists what it holds)",
            )
        ]
    return []


def _evaluation_problem(config: RunConfig, where: str, counts: SplitCounts, named: bool) -> Optional[Problem]:
    if counts.speakers >= MIN_EVALUATION_SPEAKERS and counts.same > 0:
        return None
    fix = "--split-fractions TRAIN,VALIDATION,TEST with a larger share for this split (run file: split_fractions)"
    if named:
        fix += "; for splits the corpus names itself (manifest `split` fields), more speakers there"
    return Problem(
        where,
        f"{counts.speakers} speaker(s) and {counts.same} possible same-speaker trial(s): an EER needs at least "
        f"{MIN_EVALUATION_SPEAKERS} speakers and a same-speaker trial (a speaker needs 2 utterances)",
        fix,
    )


def run_preflight(config: RunConfig) -> Preflight:
    """Lists and counts every span of a validated `config` and collects its problems (raises nothing)."""
    started = time.time()
    result = Preflight(spans=_list_spans(config))
    unusable = set()
    for s in result.spans:
        if s.inventory is not None:
            found = _span_problems(config, s)
            result.problems += found
            unusable |= {s.index} if found else set()
    for branch in config.branches:
        numbers = config.span_numbers(branch)
        checks = [result.spans[i] for i in numbers]
        if any(s.inventory is None for s in checks):
            result.notes.append(f"{branch} branch: a span could not be listed, so its split checks are skipped")
            continue
        if unusable & set(numbers):
            continue  # its span's problem says what to fix first; counts without that span would mislead
        test = result.spans[numbers[config.test_span]]
        splits = {
            "train": count_split(_merge(checks, "train")),
            "validation": count_split(_merge(checks, "validation")),
            "test": count_split(_merge([test], "test")),
        }
        result.branches[branch] = splits
        named = any(s.inventory.named_splits for s in checks)
        if branch == CTC:
            if splits["train"].utterances and not splits["train"].transcribed:
                result.notes.append("ctc branch: no training utterance has a transcript (text or phones)")
            continue
        p = config.embedder.speakers_per_batch
        if splits["train"].speakers < p:
            result.problems.append(
                Problem(
                    "speaker branch, train split",
                    f"{splits['train'].speakers} training speakers, but a batch takes speakers_per_batch={p}",
                    f"--speakers-per-batch N with N <= {splits['train'].speakers} (and >= 2; run file: "
                    "embedder.speakers_per_batch), or more training speakers",
                )
            )
        problem = _evaluation_problem(config, "speaker branch, validation split", splits["validation"], named)
        if problem:
            result.problems.append(problem)
        if config.trials_file:
            result.problems += _trial_list_problems(config, test)
        else:
            problem = _evaluation_problem(
                config, f"speaker branch, test split of span {test.index}", splits["test"], named
            )
            if problem:
                result.problems.append(problem)
        if splits["test"].same_within_session:
            result.notes.append(
                f"speaker branch: {splits['test'].same_within_session} of the test split's possible same-speaker "
                "trials are within one session (single-session speakers): easier than cross-session ones"
            )
    result.notes.append(
        "not checked without decoding: audio that does not decode, is too long, or is shorter than one segment"
    )
    result.seconds = time.time() - started
    return result


def _trial_list_problems(config: RunConfig, test: SpanCheck) -> List[Problem]:
    from speechpipe.speakers.pairs import PairsInputError

    try:
        coverage = trial_coverage(config.trials_file, test.inventory.split_utterances("test", test.overrides))
    except (PairsInputError, FileNotFoundError) as error:
        return [Problem("--trials", str(error), "--trials FILE, a trial list of this corpus")]
    if not coverage.missing_utterances:
        return []
    return [
        Problem(
            f"--trials {config.trials_file}",
            f"names {coverage.missing_utterances} utterance(s) that the test split of span {test.index} lacks, e.g. "
            f"{', '.join(coverage.missing_examples)}; {coverage.not_covered} of {coverage.trials} trials could not be "
            "scored",
            "--trials FILE with the list for this corpus (its speakers must be the test split's: for VoxCeleb1 "
            "the meta file's Set column), or --test-span N naming the span it was made for",
        )
    ]


def check(config: RunConfig, out: Optional[TextIO] = None) -> Preflight:
    """run_preflight, its report printed to `out` ("[preflight] " lines); raises PreflightError
    naming every problem and its fix."""
    result = run_preflight(config)
    if out is not None:
        for line in result.lines():
            print(f"[preflight] {line}", file=out, flush=True)
        print(f"[preflight] {len(config.all_spans)} span(s) checked in {result.seconds:.1f} s", file=out, flush=True)
    if result.problems:
        raise PreflightError(
            "the preflight stopped the run before any node ran:\n" + "\n".join(f"  {p.text()}" for p in result.problems)
        )
    return result
