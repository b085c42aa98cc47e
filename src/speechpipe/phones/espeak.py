"""A ctypes binding to the libespeak-ng shipped by the `espeakng-loader` wheel.

espeak-ng keeps its state in process globals, so one `EspeakEngine` exists per process
(`EspeakEngine.get()`); parallel synthesis uses processes, never threads.

Two kinds of that state decide an utterance's samples besides its text and voice:
- espeak-ng's own random generator (`espeak_rand`: breath noise and the Klatt voices' noise
  source), which `espeak_Initialize` seeds from the clock. Voices with breath (Alicia, f2, f3,
  f5, sandro, victor) came out different in every run. `synthesize` therefore seeds it for every
  utterance (`espeak_ng_SetRandSeed`), so the samples do not depend on when a process started.
- static wave-generator state (pitch-flutter phase, gain control, Klatt filter memories) that no
  call resets, so an utterance also depends on what the process synthesised before it: the corpus
  synthesiser renders each speaker in a fresh process, in a fixed order
  (tests/regressions/test_espeak_static_state.py).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 2, 3, 4, 7

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """espeak-ng refused a call (unknown voice, bad parameter, failed initialisation)."""


@dataclass(frozen=True)
class EspeakVoice:
    """espeak-ng voice settings: a language voice plus a variant and prosody parameters."""

    language: str = "de"
    variant: Optional[str] = None
    rate_wpm: int = 175  # espeak's words per minute, 80..450
    pitch: int = 50  # 0..100, relative to the variant's base pitch
    pitch_range: int = 50  # 0..100, intonation range
    volume: int = 60  # 0..200; below 100 so that loud variants do not clip
    word_gap_10ms: int = 0  # extra pause between words, in units of 10 ms

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language


class EspeakEngine:
    """Synthesises speech and gives IPA for the same text, with the same engine and data."""

    _instance: Optional["EspeakEngine"] = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader  # imported here: only the corpus synthesiser needs it

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_ng_SetRandSeed.restype = None
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with {rate} (data path {data_path!r})")
        self.sample_rate: int = rate
        self._chunks: List[np.ndarray] = []
        # Keep a reference: ctypes callbacks are freed with their Python object.
        self._callback = _SynthCallback(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: Optional[EspeakVoice] = None

    @classmethod
    def get(cls) -> "EspeakEngine":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, n_samples: int, _events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = continue synthesis

    def _set_voice(self, voice: EspeakVoice) -> None:
        if voice == self._voice:
            return
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice.name!r}")
        for param, value in (
            (_PARAM_RATE, voice.rate_wpm),
            (_PARAM_PITCH, voice.pitch),
            (_PARAM_RANGE, voice.pitch_range),
            (_PARAM_VOLUME, voice.volume),
            (_PARAM_WORDGAP, voice.word_gap_10ms),
        ):
            if self._lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise EspeakError(f"espeak-ng refused parameter {param}={value}")
        self._voice = voice

    def synthesize(self, text: str, voice: EspeakVoice, seed: int = 0) -> np.ndarray:
        """Returns int16 samples at `self.sample_rate`. `seed` seeds espeak-ng's noise generator
        for this utterance (breath and Klatt noise), so the same seed gives the same noise."""
        with self._lock:
            self._set_voice(voice)
            self._lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
            self._chunks = []
            data = text.encode("utf-8")
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            if err != 0 or self._lib.espeak_Synchronize() != 0:
                raise EspeakError(f"espeak_Synth failed ({err}) for {text!r}")
            if not self._chunks:
                raise EspeakError(f"espeak-ng produced no audio for {text!r}")
            return np.concatenate(self._chunks)

    def phonemize(self, text: str, voice: EspeakVoice, separator: str = "") -> str:
        """IPA for `text`, clauses joined by a space; `separator` goes between espeak's phonemes."""
        mode = _PHONEMES_IPA | ((ord(separator) << 8) if separator else 0)
        with self._lock:
            self._set_voice(voice)
            # Without a trailing space espeak_TextToPhonemes holds back a final one-letter word
            # after a clause break ("a - b") and writes it at the start of the next call.
            buffer = ctypes.c_char_p((text + " ").encode("utf-8"))
            cursor = ctypes.pointer(buffer)
            clauses = []
            # espeak_TextToPhonemes returns one clause per call and advances the cursor.
            while cursor.contents.value:
                clause = self._lib.espeak_TextToPhonemes(cursor, _CHARS_UTF8, mode)
                if clause:
                    clauses.append(clause.decode("utf-8").strip())
            return " ".join(c for c in clauses if c)
