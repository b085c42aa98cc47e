"""What the pair job writes: its output layout, the pair-record sink, the trial lists joined
from their shards, the official trial lists checked against the corpus, and summary.json."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Optional, Tuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from speechpipe.config import SPLITS
from speechpipe.io.storage import is_uri
from speechpipe.speakers.pairs import SplitPlan
from speechpipe.speakers.trials import format_trial, iter_trials, trial_stats

# Output layout.
PAIRS_DIR = "pairs"
PAIRS_PREFIX = "pairs"
PAIRS_SUFFIX = ".tfrecord.gz"
TRIAL_PARTS_DIR = ".trial_parts"  # shards of the trial lists before they are joined; removed
EXCLUDED_DIR = "excluded"
EXCLUDED_PREFIX = "short_utterances"
OFFICIAL_DIR = "official"
SUMMARY = "summary.json"


class PairRecordSink(FileBasedSink):
    """A TFRecord sink whose elements are blocks of already framed records
    (speechpipe.speakers.pairs.encode_pair_block), written as they are. The files are ordinary TFRecord
    files, read by tf.data.TFRecordDataset."""

    def __init__(
        self, file_path_prefix: str, file_name_suffix: str = PAIRS_SUFFIX, compression_type: str = CompressionTypes.GZIP
    ):
        super().__init__(
            file_path_prefix,
            coder=coders.BytesCoder(),
            file_name_suffix=file_name_suffix,
            mime_type="application/octet-stream",
            compression_type=compression_type,
        )

    def write_encoded_record(self, file_handle, encoded_value: bytes) -> None:
        file_handle.write(encoded_value)


def format_trial_block(block: Tuple[str, List[Tuple[int, str, str]]]) -> str:
    """A block's trial lines, joined (the text sink adds the last newline)."""
    return "\n".join(format_trial(label, a, b) for label, a, b in block[1])


def join_shards(shards: List[str], destination: str) -> Dict[str, object]:
    """Concatenates sorted text shards into one file, streaming, then deletes the shards.

    The trial list must be one file (veri_test2.txt is), but a sink with one fixed shard
    shuffles every line to one worker; writing per bundle and joining afterwards does not."""
    shards = sorted(shards)
    lines = 0
    with FileSystems.create(destination, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for shard in shards:
            with FileSystems.open(shard, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                while True:
                    chunk = f.read(1 << 22)
                    if not chunk:
                        break
                    lines += chunk.count(b"\n")
                    out.write(chunk)
    if shards:
        FileSystems.delete(shards)
    return {"file": destination, "trials": lines}


class CheckOfficialTrials(beam.DoFn):
    """An official trial list -> its coverage by the index, and official/<name> holding the
    trials whose two utterances are eligible (file order kept; identical to the input when the
    whole list is covered, apart from line ends). A malformed line is an error."""

    def __init__(self, out_dir: str, voxceleb_ids: bool):
        self._out_dir = out_dir
        self._voxceleb_ids = voxceleb_ids

    def process(self, path: str, plans: Dict[str, SplitPlan]):
        where: Dict[str, Tuple[str, frozenset]] = {}  # speaker -> (split, its utterances)
        for split, plan in plans.items():
            for rank, speaker in enumerate(plan.speakers):
                where[speaker] = (split, plan.utterances[rank])
        sets: Dict[str, frozenset] = {}
        owners: Dict[str, str] = {}  # utterance -> speaker, every eligible one: built at the first miss

        def speaker_of(utterance: str) -> Optional[str]:
            # VoxCeleb's ids start with their speaker: tried first, it reads only that speaker's
            # utterances. Other ids (Kaldi's `spk-utt`, a manifest's own) need the whole index.
            prefix = utterance.split("/", 1)[0]
            if prefix in where:
                if prefix not in sets:
                    sets[prefix] = frozenset(where[prefix][1])
                if utterance in sets[prefix]:
                    return prefix
            if not owners:
                owners.update((u, speaker) for speaker, (_, utterances) in where.items() for u in utterances)
            return owners.get(utterance)

        def split_of(utterance: str) -> Optional[str]:
            speaker = speaker_of(utterance)
            return None if speaker is None else where[speaker][0]

        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        destination = FileSystems.join(self._out_dir, OFFICIAL_DIR, name)
        covered = cross_split = 0
        per_split: Dict[str, int] = {}
        missing = set()
        trials = []
        with FileSystems.create(
            destination, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED
        ) as out:
            for trial in iter_trials(path, self._voxceleb_ids):
                trials.append(trial)
                split_a, split_b = split_of(trial.utterance_a), split_of(trial.utterance_b)
                for utterance, split in ((trial.utterance_a, split_a), (trial.utterance_b, split_b)):
                    if split is None:
                        missing.add(utterance)
                if split_a is None or split_b is None:
                    continue
                covered += 1
                if split_a != split_b:
                    cross_split += 1
                else:
                    per_split[split_a] = per_split.get(split_a, 0) + 1
                out.write((format_trial(*trial) + "\n").encode("utf-8"))
        # An utterance not in the index has no known speaker: its id's first path component stands
        # in (VoxCeleb's speaker).
        stats = trial_stats(trials, lambda u: speaker_of(u) or u.split("/", 1)[0])
        yield {
            "list": name,
            "source": path,
            "written": destination,
            **stats.to_json(),
            "covered": covered,
            "not_covered": stats.trials - covered,
            "missing_utterances": len(missing),
            "missing_examples": sorted(missing)[:5],
            "covered_per_split": dict(sorted(per_split.items())),
            "cross_split": cross_split,
        }


def no_pairs_reasons(counts: Mapping[str, object], config: Mapping[str, object]) -> Dict[str, str]:
    """Why a split got no same-speaker or no different-speaker pair, keyed by label name ("same",
    "different"); empty when it has both. `counts` is the split's entry of summary.json, `config`
    the job's (its ratio and segment length). A split without one of the labels gives no EER,
    so it is said, not left to a bare 0."""
    pairs = counts["pairs"]
    speakers, paired = int(counts["speakers"]), int(counts["speakers_paired"])
    reasons: Dict[str, str] = {}
    if speakers == 0:
        reason = "the split has no speakers"
        return {"same": reason, "different": reason}
    if paired == 0:
        reason = (
            f"all utterances of its {speakers} speaker(s) are shorter than one segment "
            f"({config['segment_frames']} frames)"
        )
        return {"same": reason, "different": reason}
    if not pairs["same"]:
        single, all_short = int(counts["speakers_single_utterance"]), int(counts["speakers_all_short"])
        if single == paired:
            reasons["same"] = (
                f"no speaker has two utterances of one segment or longer ({single} speaker(s) with one"
                + (f", {all_short} with none" if all_short else "")
                + "): a same-speaker pair needs two different utterances"
            )
        else:  # not expected: every speaker with two utterances has a candidate pair
            reasons["same"] = f"{counts['positives_available']} candidate same-speaker pairs"
    if not pairs["different"]:
        ratio = str(config["ratio"])
        if paired < 2:
            reasons["different"] = f"only {paired} speaker has utterances of one segment or longer"
        elif ratio.endswith(":0"):
            reasons["different"] = f"the ratio {ratio} asks for none"
        elif not pairs["same"]:
            reasons["different"] = (
                f"different-speaker pairs are drawn in proportion to same-speaker ones (ratio {ratio}), "
                "and there are none"
            )
        else:  # not expected: two speakers always have a cell of their utterance grid
            reasons["different"] = f"target {counts['different_target']}, shortfall {counts['different_shortfall']}"
    return reasons


def summary_warnings(splits: Mapping[str, Mapping[str, object]]) -> List[str]:
    """What the job prints and logs after the counts: a line per split short of a label, and per
    split whose single-session speakers gave same-session positives although the rule asks for
    two sessions (same-session positives asked for with --same_session_positives are counted in
    the summary, not warned of)."""
    lines: List[str] = []
    for split, counts in splits.items():
        for label, reason in counts["no_pairs"].items():
            lines.append(f"{split}: no {label}-speaker pairs (no {label}-speaker trials): {reason}")
        fallback = int(counts["speakers_single_session_positives"])
        if fallback:
            lines.append(
                f"{split}: {counts['same_session_positives']} of {counts['pairs']['same']} same-speaker pairs "
                f"are within one session: {fallback} speaker(s) have one session, so their positives pair "
                "utterances of that session; they flatter the EER"
            )
    return lines


def block_counts() -> Dict[str, object]:
    """A split's entry under summary.json's "blocks" before any count (speechpipe.jobs.speaker_blocks)."""
    return {
        "speakers": 0,
        "blocks": 0,
        "segments": 0,
        "bytes": 0,  # serialised blocks, before GZIP
        "utterances": 0,  # utterances cropped into blocks
        "excluded_short": 0,  # shorter than one segment: in no block
        "crops": 0,
        "crops_unused": 0,
        "speakers_repeating_utterances": 0,
        "sessions_per_block": 0,  # summed over blocks; / blocks = the mean
        "files": [],
    }


def _relative(path: str, root: str) -> str:
    return path if is_uri(path) else os.path.relpath(path, root)


def write_summary(parts: List[Tuple[str, object]], out_dir: str, header: Dict[str, object]) -> str:
    """Gathers every count into summary.json; written last, so its presence means the job ran."""
    splits: Dict[str, Dict[str, object]] = {
        split: {
            "speakers": 0,
            "utterances": 0,
            "eligible_utterances": 0,
            "excluded_short": 0,
            "speakers_all_short": 0,
            "speakers_paired": 0,
            "speakers_capped": 0,
            "speakers_without_positives": 0,
            "speakers_single_session": 0,
            "speakers_single_session_positives": 0,
            "speakers_single_utterance": 0,
            "same_session_positives": 0,
            "positives_available": 0,
            "positives_planned": 0,
            "different_target": 0,
            "different_shortfall": 0,
            "speaker_links": 0,
            "pairs": {"same": 0, "different": 0},
            "pair_files": [],
            "trials_file": None,
        }
        for split in SPLITS
    }
    official: List[Dict[str, object]] = []
    excluded_files: List[str] = []
    blocks: Dict[str, Dict[str, object]] = {
        split: block_counts() for split in header.get("blocks", {}).get("feature_shards", {})
    }
    for kind, payload in parts:
        if kind == "counts":
            split, counts = payload
            for key, value in counts.items():
                if key in ("same", "different"):
                    splits[split]["pairs"][key] += value
                else:
                    splits[split][key] += value
        elif kind == "pair_file":
            split, path = payload
            splits[split]["pair_files"].append(_relative(path, out_dir))
        elif kind == "trials":
            split, info = payload
            splits[split]["trials_file"] = _relative(info["file"], out_dir)
            splits[split]["trials_lines"] = info["trials"]
        elif kind == "excluded_file":
            excluded_files.append(_relative(payload, out_dir))
        elif kind == "official":
            official.append({**payload, "written": _relative(payload["written"], out_dir)})
        elif kind == "block_counts":
            split, counts = payload
            blocks[split].update(counts)
        elif kind == "block_file":
            split, (path, count, size) = payload
            blocks[split]["files"].append({"file": _relative(path, out_dir), "blocks": count, "bytes": size})
    for split in SPLITS:
        splits[split]["pair_files"].sort()
        splits[split]["pairs"]["total"] = splits[split]["pairs"]["same"] + splits[split]["pairs"]["different"]
        splits[split]["no_pairs"] = no_pairs_reasons(splits[split], header["config"])
    parts_dir = FileSystems.join(out_dir, TRIAL_PARTS_DIR)
    if FileSystems.exists(parts_dir):  # every shard was joined and deleted before this step
        FileSystems.delete([parts_dir])
    summary = {
        **header,
        "splits": splits,
        "pairs_per_label": {  # same: label 1, different: label 0
            "same": sum(s["pairs"]["same"] for s in splits.values()),
            "different": sum(s["pairs"]["different"] for s in splits.values()),
        },
        "same_session_positives": sum(s["same_session_positives"] for s in splits.values()),
        "warnings": summary_warnings(splits),
        "excluded_short": sum(s["excluded_short"] for s in splits.values()),
        "excluded_files": sorted(excluded_files),
        "speakers_capped": sum(s["speakers_capped"] for s in splits.values()),
        "official_trials": sorted(official, key=lambda o: o["list"]),
    }
    if "blocks" in header:
        for counts in blocks.values():
            counts["files"].sort(key=lambda f: f["file"])
            counts["shards"] = len(counts["files"])
            counts["bytes"] = sum(f["bytes"] for f in counts["files"])
            counts["empty_shards"] = sum(1 for f in counts["files"] if not f["blocks"])
        summary["blocks"] = {**header["blocks"], "splits": blocks}
    path = FileSystems.join(out_dir, SUMMARY)
    with FileSystems.create(path, mime_type="application/json", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write((json.dumps(summary, indent=1, sort_keys=False) + "\n").encode("utf-8"))
    return path
