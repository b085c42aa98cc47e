"""Test data generators shared by the tests."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

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


def voxceleb_layout(corpus_dir: str, out_dir: str, version: int, test_speakers: List[str]) -> str:
    """A synthesised corpus rewritten as VoxCeleb ships: VoxCeleb1 (`wav/<spk>/<video>/<n>.wav` and a
    tab-separated vox1_meta.csv) or VoxCeleb2 (`dev/aac/...` and `test/aac/...` as AAC .m4a, and a
    comma-separated vox2_meta.csv). No transcripts. `test_speakers` get Set=test."""
    import shutil

    import soundfile as sf

    from tests.audio_inputs import write_m4a

    speakers = sorted({line["speaker"] for line in read_manifest(corpus_dir)})
    for line in read_manifest(corpus_dir):
        source = os.path.join(corpus_dir, line["audio"])
        relative = os.path.relpath(source, os.path.join(corpus_dir, "wav"))
        if version == 1:
            target = os.path.join(out_dir, "wav", relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)
        else:
            folder = "test" if line["speaker"] in test_speakers else "dev"
            samples, rate = sf.read(source, dtype="float32")
            write_m4a(
                os.path.join(out_dir, folder, "aac", os.path.splitext(relative)[0] + ".m4a"), rate=rate, samples=samples
            )
    if version == 1:
        rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
        rows += [f"{s}\tPerson_{s}\tf\tGermany\t{'test' if s in test_speakers else 'dev'}" for s in speakers]
        name = "vox1_meta.csv"
    else:
        rows = ["VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set "]
        rows += [f"{s} ,n{s[2:]} ,m ,{'test' if s in test_speakers else 'dev'} " for s in speakers]
        name = "vox2_meta.csv"
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    return out_dir


def write_official_trials(corpus_dir: str, speakers: List[str], path: str) -> str:
    """A VoxCeleb-format trial list over `speakers`' utterances (paths as the official lists
    write them): every same-speaker pair across sessions and one different-speaker pair each."""
    by_speaker: Dict[str, List[str]] = {}
    for line in read_manifest(corpus_dir):
        if line["speaker"] in speakers:
            by_speaker.setdefault(line["speaker"], []).append(line["utterance"])
    lines = []
    ordered = sorted(by_speaker)
    for i, speaker in enumerate(ordered):
        utterances = sorted(by_speaker[speaker])
        other = sorted(by_speaker[ordered[(i + 1) % len(ordered)]])
        for a, b in zip(utterances, utterances[1:]):
            lines.append(f"1 {a}.wav {b}.wav")
        lines.append(f"0 {utterances[0]}.wav {other[-1]}.wav")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def kaldi_text_dir(corpus_dir: str, out_dir: str) -> str:
    """A synthesised corpus as a Kaldi data directory with ordinary text and no IPA: wav.scp
    (paths relative to the directory), utt2spk and text. Utterance ids are Kaldi-style
    (`<speaker>-<session>-<n>`), so every split is assigned from the speaker id."""
    import shutil

    os.makedirs(out_dir, exist_ok=True)
    scp, utt2spk, text = [], [], []
    for line in read_manifest(corpus_dir):
        utterance = line["utterance"].replace("/", "-")
        target = os.path.join("audio", utterance + ".wav")
        os.makedirs(os.path.join(out_dir, "audio"), exist_ok=True)
        shutil.copyfile(os.path.join(corpus_dir, line["audio"]), os.path.join(out_dir, target))
        scp.append(f"{utterance} {target}")
        utt2spk.append(f"{utterance} {line['speaker']}")
        text.append(f"{utterance} {line['text']}")
    for name, rows in (("wav.scp", scp), ("utt2spk", utt2spk), ("text", text)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(rows)) + "\n")
    return out_dir


def write_feature_split(
    folder: str, utterances: Sequence[Tuple[str, int, List[int]]], bins: int = 8, split: str = "train"
) -> str:
    """A split folder of one feature shard: (utterance, frames, phone ids) each, zero features."""
    import tensorflow as tf

    from speechpipe.io import records

    os.makedirs(folder)
    with tf.io.TFRecordWriter(os.path.join(folder, f"{records.SHARD_PREFIX}-00000-of-00001")) as writer:
        for name, frames, ids in utterances:
            writer.write(
                records.encode_example(
                    records.UtteranceFeatures(
                        name, "spk", "s1", split, np.zeros((frames, bins), np.float32), frames / 100, ids
                    )
                )
            )
    return folder
