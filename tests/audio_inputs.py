"""Generators of good, unusual and bad audio inputs for the feature job's tests."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import numpy as np
import soundfile as sf

GOOD_PHONES = "ˈapfəl ʃtˈɾʊmpf"


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A voiced-like signal: harmonics plus a little noise, so spectra are not degenerate."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    mono = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 1200), start=1))
    mono = 0.3 * mono / np.max(np.abs(mono)) + 0.01 * rng.standard_normal(t.shape[0])
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_wav(
    path: str,
    seconds: float = 1.0,
    rate: int = 16000,
    channels: int = 1,
    subtype: str = "PCM_16",
    fmt: str = "WAV",
    seed: int = 0,
) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, tone(seconds, rate, channels, seed), rate, subtype=subtype, format=fmt)
    return path


def write_m4a(path: str, seconds: float = 1.0, rate: int = 16000, samples: np.ndarray = None) -> str:
    """AAC in an MP4 container, as VoxCeleb2 ships, encoded with PyAV's bundled FFmpeg: a tone,
    or the given float32 mono `samples`."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    samples = tone(seconds, rate) if samples is None else np.asarray(samples, dtype=np.float32)
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_bytes(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


# Accepted: valid but unusual formats. name -> writer(path)
UNUSUAL = {
    "stereo": lambda p: write_wav(p + ".wav", channels=2),
    "rate8k": lambda p: write_wav(p + ".wav", rate=8000),
    "rate22k": lambda p: write_wav(p + ".wav", rate=22050),
    "rate44k": lambda p: write_wav(p + ".wav", rate=44100),
    "rate48k": lambda p: write_wav(p + ".wav", rate=48000),
    "pcm8": lambda p: write_wav(p + ".wav", subtype="PCM_U8"),
    "pcm24": lambda p: write_wav(p + ".wav", subtype="PCM_24"),
    "float": lambda p: write_wav(p + ".wav", subtype="FLOAT"),
    "flac": lambda p: write_wav(p + ".flac", fmt="FLAC"),
    "m4a": lambda p: write_m4a(p + ".m4a"),
}


def _truncated(path: str) -> str:
    full = write_wav(path + ".wav", seconds=1.0)
    data = open(full, "rb").read()
    return write_bytes(full, data[: len(data) // 2])


def _nan(path: str) -> str:
    samples = tone(1.0, 16000)
    samples[100] = np.nan
    sf.write(path + ".wav", samples, 16000, subtype="FLOAT")
    return path + ".wav"


# Rejected in the audio stage: name -> (writer(path) -> file, reason)
BAD_AUDIO = {
    "corrupt": (lambda p: write_bytes(p + ".wav", b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 20), "unreadable"),
    "notaudio": (lambda p: write_bytes(p + ".m4a", b"this is a text file with an audio name\n" * 20), "unreadable"),
    "truncated": (_truncated, "truncated"),
    "zerobytes": (lambda p: write_bytes(p + ".wav", b""), "empty"),
    "zerosamples": (
        lambda p: (sf.write(p + ".wav", np.zeros(0, np.float32), 16000, subtype="PCM_16"), p + ".wav")[1],
        "empty",
    ),
    "nan": (_nan, "non_finite"),
    "silent": (
        lambda p: (sf.write(p + ".wav", np.zeros(16000, np.float32), 16000, subtype="PCM_16"), p + ".wav")[1],
        "silent",
    ),
    "short": (lambda p: write_wav(p + ".wav", seconds=0.01), "too_short"),
    "long": (lambda p: write_wav(p + ".wav", seconds=3.0), "too_long"),  # jobs in tests use max 2 s
}


def build_mixed_manifest(root: str) -> Tuple[str, Dict[str, str], List[str]]:
    """A manifest under `root` holding every good, unusual and bad case.

    Returns (manifest path, {utterance or source tag: expected dead-letter reason}, [good ids]).
    """
    lines: List[bytes] = []
    expected: Dict[str, str] = {}
    good: List[str] = []
    outside = os.path.join(os.path.dirname(root), "outside")
    write_wav(os.path.join(outside, "secret.wav"))

    def entry(utt: str, audio: str, speaker: str = "spk1", split: str = "train", phones: str = GOOD_PHONES) -> bytes:
        return json.dumps(
            {
                "utterance": utt,
                "audio": audio,
                "speaker": speaker,
                "session": "s1",
                "text": "t",
                "phones": phones,
                "duration": 1.0,
                "split": split,
            },
            ensure_ascii=False,
        ).encode()

    for i, split in enumerate(("train", "train", "validation", "test")):
        utt = f"good{i}"
        write_wav(os.path.join(root, "audio", utt + ".wav"), seconds=1.0 + 0.1 * i, seed=i)
        lines.append(entry(utt, f"audio/{utt}.wav", speaker=f"spk{i}", split=split))
        good.append(utt)
    for name, writer in UNUSUAL.items():
        path = writer(os.path.join(root, "audio", name))
        lines.append(entry(name, os.path.relpath(path, root)))
        good.append(name)
    for name, (writer, reason) in BAD_AUDIO.items():
        path = writer(os.path.join(root, "audio", name))
        lines.append(entry(name, os.path.relpath(path, root)))
        expected[name] = reason
    lines.append(entry("missing", "audio/nowhere.wav"))
    expected["missing"] = "missing_file"
    lines.append(entry("dotdot", "../outside/secret.wav"))
    expected["dotdot"] = "outside_root"
    lines.append(entry("absolute", os.path.join(outside, "secret.wav")))
    expected["absolute"] = "outside_root"
    os.symlink(os.path.join(outside, "secret.wav"), os.path.join(root, "audio", "link.wav"))
    lines.append(entry("symlink", "audio/link.wav"))
    expected["symlink"] = "outside_root"
    lines.append(entry("badphone", "audio/good0.wav", phones="haʘo"))
    expected["badphone"] = "unknown_phone"
    lines.append(entry("badsplit", "audio/good0.wav", split="dev"))
    expected["badsplit"] = "invalid_split"
    lines.append(entry("good0", "audio/good1.wav"))  # duplicate id: the later line loses
    expected["good0#dup"] = "duplicate_utterance"
    lines.append(b'{"utterance": "nospeaker", "audio": "audio/good0.wav"}')
    expected["nospeaker"] = "missing_field"
    lines.append(b'{"utterance": "broken", "audio": ')
    expected["line:invalid_json"] = "invalid_json"
    lines.append(b'{"utterance": "latin1-\xe9", "audio": "audio/good0.wav", "speaker": "x"}')
    expected["line:invalid_utf8"] = "invalid_utf8"
    lines.append(b"[1, 2]")
    expected["line:not_object"] = "invalid_json"
    manifest = write_bytes(os.path.join(root, "manifest.jsonl"), b"\n".join(lines) + b"\n")
    return manifest, expected, good
