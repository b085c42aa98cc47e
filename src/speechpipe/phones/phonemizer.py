"""Orthographic transcripts to phones: espeak-ng's IPA, tokenised by the language's inventory.

Users' corpora carry ordinary text (German, English), while the CTC branch trains on phones. The
engine is espeak-ng, through the binding the project already ships for the demo corpus
(`speechpipe.phones.espeak`), so the demo's transcripts and a user's come from the same rules and
the same data. espeak-ng keeps its state (voice, translator, buffers) in process globals, so
there is one engine per process and one `Phonemizer` per process or Beam worker; it takes the
engine lazily, which also keeps a `Phonemizer` cheap to construct and to pickle into a DoFn.

What the text goes through, and nothing more:
- NFC, and runs of whitespace (tabs, newlines, no-break spaces) collapsed to one space, trimmed.
  No case folding, no expansion of numbers or abbreviations: espeak-ng reads those itself
  ("1984" is spelled out, "Dr." is "doctor").
- Rejected before espeak-ng: empty text, text with no letter or digit (espeak-ng would read
  "!!!" as "exclamation"), and a letter outside the language's script (espeak-ng would spell
  "Привет" letter by letter in English: names of letters, not the word).
- espeak-ng's output: a doubled length mark (ːː, which it writes for a few words such as
  "Wii") is one ː. Language switches are handled as below. Everything else is tokenised as it
  is, and a symbol outside the inventory is a `PhonemizeError` naming the word and the symbol,
  never an "unknown" phone and never dropped.

Language switches: for a word its dictionary marks as foreign, espeak-ng changes voice and
writes the change into the IPA, e.g. German "cool" -> "(en)kˈuːl(de)", with English phones in
between. By default (`language_switch="error"`) that is a `LanguageSwitchError` naming the word
and the language. With `language_switch="keep"`, the markers are removed and the foreign phones
are kept when the inventory has every one of them (else a `PhonemizeError` as for any word);
`transcribe()` lists the switched words, so a caller can count them.

Output is deterministic: a function of the text, the language, the inventory and espeak-ng's
data (pinned through the espeakng-loader wheel), the same in every call and every process.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple, Union

from speechpipe.phones.inventory import (
    LANGUAGE_INVENTORIES,
    PhoneInventory,
    UnknownPhoneError,
    load_inventory,
)

__all__ = [
    "LANGUAGE_INVENTORIES",
    "LANGUAGE_SCRIPTS",
    "LanguageSwitch",
    "LanguageSwitchError",
    "PhonemizeError",
    "Phonemizer",
    "Transcription",
    "normalise_text",
]

# The script a language's words are written in: a letter of any other script is an error, not a
# word spelled out letter by letter. Unicode character names begin with the script's name.
LANGUAGE_SCRIPTS: Dict[str, str] = {"de": "LATIN", "en-us": "LATIN"}

SWITCH_POLICIES = ("error", "keep")
# espeak-ng's voice-change marker inside its IPA: "(en)", "(de)", "(el)", "(en-us)".
_SWITCH_MARKER = re.compile(r"\(([a-z]{2,3}(?:-[a-z0-9]+)*)\)")
_LONG_MARKS = re.compile("ːː+")
_FLUSH = " "  # a text with no word: espeak-ng's output for it is what it still held back
_CONTEXT_CHARS = 120  # how much of an utterance an error message quotes


class PhonemizeError(ValueError):
    """Text that cannot become phones of the inventory. `word` is the word that fails (None when
    the text as a whole does, e.g. it is empty), `symbol` the offending symbol or character."""

    def __init__(
        self,
        message: str,
        text: str,
        word: Optional[str] = None,
        symbol: Optional[str] = None,
        ipa: Optional[str] = None,
    ) -> None:
        self.text = text
        self.word = word
        self.symbol = symbol
        self.ipa = ipa
        super().__init__(message)

    def __reduce__(self):
        # Exceptions pickle their args; these carry keyword state too (Beam and multiprocessing
        # pickle errors raised in workers).
        return type(self), (str(self), self.text, self.word, self.symbol, self.ipa)


class LanguageSwitchError(PhonemizeError):
    """espeak-ng switched to another language's voice for a word (`language`)."""

    def __init__(self, message: str, text: str, word: Optional[str], language: str, ipa: str) -> None:
        self.language = language
        super().__init__(message, text, word, f"({language})", ipa)

    def __reduce__(self):
        return type(self), (str(self), self.text, self.word, self.language, self.ipa)


@dataclass(frozen=True)
class LanguageSwitch:
    """A word espeak-ng read with another language's voice; `word` is None where the switch
    happens only in the word's context and no single word reproduces it."""

    word: Optional[str]
    language: str
    ipa: str


@dataclass(frozen=True)
class Transcription:
    text: str  # the text as normalised
    ipa: str  # espeak-ng's IPA, after the output rules in the module docstring
    phones: Tuple[str, ...]
    switches: Tuple[LanguageSwitch, ...] = ()


def normalise_text(text: str) -> str:
    """NFC and collapsed whitespace; the only changes made to a transcript before espeak-ng."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _quote(text: str) -> str:
    return repr(text if len(text) <= _CONTEXT_CHARS else text[:_CONTEXT_CHARS] + "...")


def _describe(symbol: str) -> str:
    codes = " ".join(f"U+{ord(c):04X}" for c in symbol)
    names = " + ".join(unicodedata.name(c, "?") for c in symbol)
    return f"{symbol!r} ({codes} {names})"


def _after(ipa: str, position: int) -> str:
    """For a length mark or diacritic, the symbol it follows: 'ː' alone says little, 'ɔ' + 'ː'
    says which long vowel the inventory lacks."""
    text = unicodedata.normalize("NFC", ipa)
    if 0 < position < len(text) and unicodedata.category(text[position]) in ("Lm", "Mn", "Sk"):
        return f" after {text[position - 1]!r}"
    return ""


@lru_cache(maxsize=4096)
def _in_script(letter: str, script: str) -> bool:
    return unicodedata.name(letter, "").startswith(script)


def _bare(word: str) -> str:
    """A whitespace token without the punctuation around it, to name it in an error."""
    start, end = 0, len(word)
    while start < end and not word[start].isalnum():
        start += 1
    while end > start and not word[end - 1].isalnum():
        end -= 1
    return word[start:end] or word


class Phonemizer:
    """Text -> IPA -> phones for one language. Construct one per process or Beam worker (in
    `setup()`, or in `__init__` of a DoFn: it pickles without the engine); calls are safe from
    several threads, as the engine serialises them."""

    def __init__(
        self, language: str = "de", inventory: Union[str, PhoneInventory, None] = None, language_switch: str = "error"
    ) -> None:
        if language not in LANGUAGE_INVENTORIES:
            raise ValueError(f"language {language!r}: speechpipe phonemises {', '.join(sorted(LANGUAGE_INVENTORIES))}")
        if language_switch not in SWITCH_POLICIES:
            raise ValueError(f"language_switch={language_switch!r}: expected one of {SWITCH_POLICIES}")
        self.language = language
        self.language_switch = language_switch
        if inventory is None:
            inventory = LANGUAGE_INVENTORIES[language]
        self.inventory: PhoneInventory = load_inventory(inventory) if isinstance(inventory, str) else inventory
        self._script = LANGUAGE_SCRIPTS[language]
        self._engine = None
        self._voice = None

    def __getstate__(self) -> Dict[str, object]:
        # The engine is a process-global singleton wrapping a C library: never pickled.
        state = dict(self.__dict__)
        state["_engine"] = None
        return state

    def _espeak(self):
        if self._engine is None:
            from speechpipe.phones.espeak import EspeakEngine, EspeakVoice

            engine = EspeakEngine.get()
            # Default prosody: the parameters do not change the phonemes, the language does.
            self._voice = EspeakVoice(language=self.language)
            # Whatever another caller of the shared engine left held back (see _raw_ipa) is
            # theirs: flushed here so that it cannot begin this phonemizer's first text.
            engine.phonemize(_FLUSH, self._voice)
            self._engine = engine
        return self._engine

    def _raw_ipa(self, text: str) -> str:
        """espeak-ng's IPA for one text, with nothing held over into the next call.

        espeak_TextToPhonemes holds back the last word when a clause break comes before a final
        one-letter word ("a – b", "ok, x"), and writes it at the start of the next call's output
        ("hello" then reads "bˈɛloʊ"): the word vanishes from one transcript and corrupts the
        next. A trailing space lets it finish the word (no hold-over in 6,000 random texts of
        letters, abbreviations and punctuation in de and en-us; 98 without it), and the flush
        after each text proves it: anything still held back is an error, never dropped."""
        engine = self._espeak()
        ipa = engine.phonemize(text + " ", self._voice)
        held = engine.phonemize(_FLUSH, self._voice)
        if held:
            raise PhonemizeError(
                f"espeak-ng ({self.language}) held back {held!r} of {_quote(text)} past the end of the text",
                text,
                ipa=ipa,
            )
        return _LONG_MARKS.sub("ː", unicodedata.normalize("NFC", ipa))

    # ------------------------------------------------------------------ public

    def phonemize(self, text: str) -> str:
        """espeak-ng's IPA for `text` (stress marks and word spaces included)."""
        return self.transcribe(text).ipa

    def phones(self, text: str) -> List[str]:
        """The phones of `text`, tokenised by the inventory; `PhonemizeError` when it has none or
        a word cannot be written with the inventory's phones."""
        return list(self.transcribe(text).phones)

    def transcribe(self, text: str) -> Transcription:
        """Normalised text, IPA, phones and the language switches in one result."""
        normal = normalise_text(text)
        self._check_text(text, normal)
        ipa = self._raw_ipa(normal)
        switches: Tuple[LanguageSwitch, ...] = ()
        if _SWITCH_MARKER.search(ipa):
            switches = self._switches(normal, ipa)
            ipa = " ".join(_SWITCH_MARKER.sub("", ipa).split())
        try:
            phones = self.inventory.tokenize(ipa)
        except UnknownPhoneError as error:
            raise self._locate(normal, ipa, error) from None
        if not phones:
            raise PhonemizeError(f"espeak-ng ({self.language}) gives no phones for {_quote(normal)}", normal, ipa=ipa)
        return Transcription(normal, ipa, tuple(phones), switches)

    # ------------------------------------------------------------------ checks

    def _check_text(self, original: str, normal: str) -> None:
        if not normal:
            raise PhonemizeError(f"empty transcript {_quote(original)}: nothing to phonemise", normal)
        if not any(c.isalnum() for c in normal):
            raise PhonemizeError(
                f"transcript {_quote(normal)} has no word, only punctuation or symbols "
                "(espeak-ng would read the marks themselves aloud)",
                normal,
            )
        for word in normal.split(" "):
            for c in word:
                if c.isalpha() and not _in_script(c, self._script):
                    raise PhonemizeError(
                        f"word {_bare(word)!r} in {_quote(normal)}: letter {_describe(c)} is not in the "
                        f"{self._script.title()} script of {self.language} (espeak-ng would spell it out)",
                        normal,
                        word=_bare(word),
                        symbol=c,
                    )

    def _switches(self, normal: str, ipa: str) -> Tuple[LanguageSwitch, ...]:
        """The words espeak-ng switched language for, found word by word; raises under the
        "error" policy."""
        found: List[LanguageSwitch] = []
        for word in normal.split(" "):
            if not any(c.isalnum() for c in word):
                continue
            word_ipa = self._raw_ipa(word)
            for language in self._foreign(word_ipa):
                found.append(LanguageSwitch(_bare(word), language, word_ipa))
        if not found:
            # The switch shows only in context (a word next to its neighbours): name the text.
            found = [LanguageSwitch(None, language, ipa) for language in self._foreign(ipa)]
        if found and self.language_switch == "error":
            first = found[0]
            where = (
                f"word {first.word!r} in {_quote(normal)}"
                if first.word is not None
                else f"{_quote(normal)} (no single word of it switches on its own)"
            )
            raise LanguageSwitchError(
                f"{where}: espeak-ng reads it with the {first.language} voice, not {self.language} "
                f"({first.ipa!r}); Phonemizer(language_switch='keep') keeps such phones where the "
                f"inventory {self.inventory.name} has them",
                normal,
                first.word,
                first.language,
                first.ipa,
            )
        return tuple(found)

    def _foreign(self, ipa: str) -> List[str]:
        """Languages other than this one that `ipa` switches to, in order, each once. A marker
        names espeak-ng's phoneme table: "(de)" and "(en-us)" are the way back to these
        voices, and "(en)" is British English, foreign to en-us too."""
        out: List[str] = []
        for language in _SWITCH_MARKER.findall(ipa):
            if language != self.language and language not in out:
                out.append(language)
        return out

    def _locate(self, normal: str, ipa: str, error: UnknownPhoneError) -> PhonemizeError:
        """The text's IPA does not tokenise: phonemise word by word to name the word. espeak-ng
        reads a word in context (it joins "in the" into one IPA word, spells numbers as several),
        so the IPA's words are not the text's; only the text's own words can name the culprit."""
        for word in normal.split(" "):
            if not any(c.isalnum() for c in word):
                continue
            written = self._raw_ipa(word)  # markers kept in the message: they say why
            word_ipa = _SWITCH_MARKER.sub("", written)
            try:
                self.inventory.tokenize(word_ipa)
            except UnknownPhoneError as word_error:
                return PhonemizeError(
                    f"word {_bare(word)!r} in {_quote(normal)}: espeak-ng ({self.language}) writes {written!r}, "
                    f"whose symbol {_describe(word_error.symbol)}{_after(word_ipa, word_error.position)} is not "
                    f"a phone of {self.inventory.name}",
                    normal,
                    word=_bare(word),
                    symbol=word_error.symbol,
                    ipa=word_ipa,
                )
        return PhonemizeError(
            f"{_quote(normal)}: espeak-ng ({self.language}) writes {ipa!r}, whose symbol "
            f"{_describe(error.symbol)}{_after(ipa, error.position)} at position {error.position} is not a phone "
            f"of {self.inventory.name}; "
            "no single word of the text gives it on its own",
            normal,
            symbol=error.symbol,
            ipa=ipa,
        )
