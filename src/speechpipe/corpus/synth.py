"""`speechpipe corpus synth`: the German demo corpus in VoxCeleb's layout, synthesised with
espeak-ng, with IPA transcripts from the same engine.

Layout written under the output folder:
    wav/<speaker>/<session>/<nnnnn>.wav   16-bit PCM mono at the configured rate
    manifest.jsonl                        one utterance per line, sorted by utterance id
    speakers.jsonl                        each speaker's voice settings, sessions and split
    corpus.json                           the configuration, sentence split and engine facts
Every byte is a function of the configuration: same seed, same files.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from dataclasses import dataclass
from importlib import resources
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from speechpipe.config import SPLITS, CorpusConfig, speaker_split_counts
from speechpipe.corpus.voices import SpeakerVoice, design_speakers, validate_corpus_config
from speechpipe.filenames import MANIFEST_FILE

MANIFEST = MANIFEST_FILE  # tests and the bench name it through this module too
SPEAKERS = "speakers.jsonl"
CORPUS_INFO = "corpus.json"
AUDIO_DIR = "wav"
_YOUTUBE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class SessionChannel:
    """What one recording session (a VoxCeleb video) does to the voice."""

    session: str
    peak_dbfs: float  # level of the loudest sample
    tilt: float  # first-order spectral tilt: > 0 brighter, < 0 duller
    snr_db: float  # white noise floor below the speech RMS


@dataclass(frozen=True)
class UtterancePlan:
    utterance: str
    speaker_index: int
    session_index: int
    sentence_id: int
    text: str
    split: str
    audio: str  # relative to the corpus root


def read_corpus_settings(folder: str) -> Optional[Dict[str, object]]:
    """The "config" that corpus.json in `folder` records (`CorpusConfig.content_json`), or None
    when the folder holds no synthesised corpus."""
    try:
        with open(os.path.join(folder, CORPUS_INFO), encoding="utf-8") as f:
            return dict(json.load(f)["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_sentences(path: Optional[str] = None) -> List[str]:
    """The sentence list: one per line; blank lines and lines starting with '#' are skipped."""
    if path is None:
        raw = resources.files("speechpipe.corpus").joinpath("sentences_de.txt").read_text("utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    sentences = [s.strip() for s in raw.splitlines()]
    sentences = [s for s in sentences if s and not s.startswith("#")]
    if len(set(sentences)) != len(sentences):
        raise ValueError(f"sentence file {path or 'sentences_de.txt'} repeats a sentence")
    return sentences


def _session_id(seed: int, speaker: str, index: int) -> str:
    """An 11-character id in the alphabet of YouTube video ids, as VoxCeleb's sessions are."""
    digest = hashlib.sha256(f"{seed}/{speaker}/{index}".encode()).digest()
    return "".join(_YOUTUBE_ALPHABET[b % 64] for b in digest[:11])


def session_channel(seed: int, speaker_index: int, session_index: int, session: str) -> SessionChannel:
    rng = np.random.default_rng([seed, 0xC4A, speaker_index, session_index])
    return SessionChannel(
        session=session,
        peak_dbfs=round(float(rng.uniform(-12.0, -3.0)), 2),
        tilt=round(float(rng.uniform(-0.4, 0.4)), 3),
        snr_db=round(float(rng.uniform(30.0, 45.0)), 2),
    )


def split_speakers(config: CorpusConfig) -> List[str]:
    """The split of each speaker index, drawn by seed."""
    counts = speaker_split_counts(config)
    order = np.random.default_rng([config.seed, 0x5B1]).permutation(config.speakers)
    split = [""] * config.speakers
    for rank, index in enumerate(order):
        if rank < counts.test:
            split[index] = "test"
        elif rank < counts.test + counts.validation:
            split[index] = "validation"
        else:
            split[index] = "train"
    return split


def split_sentences(config: CorpusConfig, n_sentences: int) -> Tuple[List[int], List[int]]:
    """(training sentence ids, held-out sentence ids only test speakers say)."""
    heldout = max(1, math.ceil(n_sentences * config.heldout_sentence_fraction))
    order = [int(i) for i in np.random.default_rng([config.seed, 0x5E7]).permutation(n_sentences)]
    return sorted(order[heldout:]), sorted(order[:heldout])


def _draw(pool: Sequence[int], count: int, rng: np.random.Generator) -> List[int]:
    """`count` sentence ids from `pool`, no repeat until the pool is used up."""
    out: List[int] = []
    while len(out) < count:
        out += [pool[i] for i in rng.permutation(len(pool))][: count - len(out)]
    return out


def plan_corpus(
    config: CorpusConfig, sentences: Sequence[str]
) -> Tuple[List[SpeakerVoice], List[str], List[UtterancePlan], Dict[str, List[int]]]:
    voices = design_speakers(config.speakers, config.seed)
    speaker_splits = split_speakers(config)
    train_ids, heldout_ids = split_sentences(config, len(sentences))
    plans: List[UtterancePlan] = []
    for index, voice in enumerate(voices):
        split = speaker_splits[index]
        pool = heldout_ids if split == "test" else train_ids
        rng = np.random.default_rng([config.seed, 0x07E, index])
        drawn = _draw(pool, config.utterances, rng)
        numbers = [0] * config.sessions
        for j, sentence_id in enumerate(drawn):
            session_index = j % config.sessions
            numbers[session_index] += 1
            session = _session_id(config.seed, voice.speaker, session_index)
            utterance = f"{voice.speaker}/{session}/{numbers[session_index]:05d}"
            plans.append(
                UtterancePlan(
                    utterance=utterance,
                    speaker_index=index,
                    session_index=session_index,
                    sentence_id=sentence_id,
                    text=sentences[sentence_id],
                    split=split,
                    audio=f"{AUDIO_DIR}/{utterance}.wav",
                )
            )
    plans.sort(key=lambda p: p.utterance)
    return voices, speaker_splits, plans, {"train": train_ids, "heldout": heldout_ids}


def render_utterance(
    text: str, voice: SpeakerVoice, channel: SessionChannel, sample_rate: int, noise_seed: Sequence[int]
) -> Tuple[np.ndarray, str]:
    """(int16 samples at `sample_rate`, IPA) for one utterance."""
    import soxr

    from speechpipe.phones.espeak import EspeakEngine

    engine = EspeakEngine.get()
    espeak_voice = voice.espeak_voice()
    # espeak-ng's own noise (breath, Klatt) from the utterance's seed, not from the clock.
    espeak_seed = int(np.random.default_rng([*noise_seed, 0xE5]).integers(0, 2**31))
    raw = engine.synthesize(text, espeak_voice, espeak_seed).astype(np.float64) / 32768.0
    ipa = engine.phonemize(text, espeak_voice)
    # Playing the synthesiser's output as if it had been recorded at vtl * its rate scales the
    # formants (and the pitch and tempo) by vtl: a shorter or longer vocal tract.
    source_rate = engine.sample_rate * voice.vtl_factor
    audio = soxr.resample(raw, source_rate, sample_rate, quality="HQ")
    audio = np.concatenate([audio[:1], audio[1:] - channel.tilt * audio[:-1]])  # 1 - tilt z^-1
    rms = float(np.sqrt(np.mean(audio**2)))
    rng = np.random.default_rng(list(noise_seed))
    audio = audio + rng.standard_normal(audio.shape[0]) * rms * 10 ** (-channel.snr_db / 20)
    audio *= 10 ** (channel.peak_dbfs / 20) / max(float(np.max(np.abs(audio))), 1e-9)
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16), ipa


_SpeakerJob = Tuple[str, int, int, SpeakerVoice, List[Tuple[UtterancePlan, SessionChannel]]]


def _render_speaker(job: _SpeakerJob) -> List[Tuple[str, str, int]]:
    """Renders one speaker's utterances in utterance order, in a process of its own.

    libespeak-ng keeps wave-generator state in static variables that neither a voice change nor
    espeak_Terminate resets, so an utterance's samples depend on what the process synthesised
    before. A fresh process per speaker and a fixed order make the audio a function of the
    configuration alone, whatever the number of workers.
    """
    import soundfile as sf

    root, sample_rate, seed, voice, utterances = job
    results = []
    for plan, channel in utterances:
        samples, ipa = render_utterance(
            plan.text,
            voice,
            channel,
            sample_rate,
            (seed, 0xA0D, plan.speaker_index, plan.session_index, int(plan.utterance[-5:])),
        )
        path = os.path.join(root, plan.audio)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, samples, sample_rate, subtype="PCM_16", format="WAV")
        results.append((plan.utterance, ipa, int(samples.shape[0])))
    return results


def _run_jobs(jobs: List[_SpeakerJob], workers: int, progress: bool) -> Iterator[Tuple[str, str, int]]:
    from tqdm import tqdm

    total = sum(len(job[-1]) for job in jobs)
    # spawn, not fork: the parent may hold TensorFlow or Beam threads that fork would copy.
    context = multiprocessing.get_context("spawn")
    with tqdm(total=total, desc="synthesising", unit="utt", disable=not progress) as bar:
        with context.Pool(workers, maxtasksperchild=1) as pool:
            for results in pool.imap_unordered(_render_speaker, jobs):
                yield from results
                bar.update(len(results))


def synthesize_corpus(
    config: CorpusConfig, out_dir: str, progress: bool = True, overwrite: bool = False
) -> Dict[str, object]:
    """Writes the corpus and returns a summary (counts per split, total seconds)."""
    validate_corpus_config(config)
    if os.path.exists(os.path.join(out_dir, MANIFEST)) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a corpus ({MANIFEST}); pass overwrite")
    sentences = load_sentences(config.sentences)
    voices, speaker_splits, plans, sentence_split = plan_corpus(config, sentences)
    channels = {
        (p.speaker_index, p.session_index): session_channel(
            config.seed, p.speaker_index, p.session_index, p.utterance.split("/")[1]
        )
        for p in plans
    }
    os.makedirs(out_dir, exist_ok=True)
    jobs: List[_SpeakerJob] = []
    for index, voice in enumerate(voices):
        mine = [(p, channels[(index, p.session_index)]) for p in plans if p.speaker_index == index]
        jobs.append((out_dir, config.sample_rate, config.seed, voice, mine))
    workers = min(config.workers or os.cpu_count() or 1, len(jobs))
    results = {utt: (ipa, n) for utt, ipa, n in _run_jobs(jobs, workers, progress)}

    seconds = dict.fromkeys(SPLITS, 0.0)
    with open(os.path.join(out_dir, MANIFEST), "w", encoding="utf-8", newline="\n") as f:
        for p in plans:
            ipa, n = results[p.utterance]
            duration = round(n / config.sample_rate, 6)
            seconds[p.split] += duration
            record = {
                "utterance": p.utterance,
                "audio": p.audio,
                "speaker": voices[p.speaker_index].speaker,
                "session": p.utterance.split("/")[1],
                "text": p.text,
                "phones": ipa,
                "duration": duration,
                "split": p.split,
                "sentence": p.sentence_id,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, SPEAKERS), "w", encoding="utf-8", newline="\n") as f:
        for index, voice in enumerate(voices):
            record = {
                "speaker": voice.speaker,
                "split": speaker_splits[index],
                "voice": voice.to_json(),
                "sessions": {
                    c.session: {"peak_dbfs": c.peak_dbfs, "tilt": c.tilt, "snr_db": c.snr_db}
                    for (s, _), c in sorted(channels.items())
                    if s == index
                },
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    counts = {s: sum(1 for p in plans if p.split == s) for s in SPLITS}
    summary = {
        "config": config.content_json(),
        "utterances": counts,
        "speakers": {s: speaker_splits.count(s) for s in SPLITS},
        "seconds": {s: round(v, 3) for s, v in seconds.items()},
        "sentences": {"count": len(sentences), "train": sentence_split["train"], "heldout": sentence_split["heldout"]},
        "engine": {"name": "espeak-ng", "language": "de"},
    }
    with open(os.path.join(out_dir, CORPUS_INFO), "w", encoding="utf-8", newline="\n") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    return summary
